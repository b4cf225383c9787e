/**
 * The nft side of tenant-daemon/network/host-net.ts against the real kernel: a daemon's start
 * reads every other tenant's `own_ranges` from one `nft -j list sets inet`, and an apply is one
 * `nft -f` with no `nft -c` before it, so a transaction that fails must leave the table exactly
 * as it was. The tables here are the test's own (`pdkhn…`), removed after each test.
 */
import crypto from "node:crypto";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { formatCidr, type Cidr } from "../../shared/cidr.js";
import { isPaddockError } from "../../shared/errors.js";
import { applyNft, nftTableExists } from "../../tenant-daemon/network/host-net.js";
import { listOwnRanges, listSetCidrs, parseSetCidrs } from "../../shared/nft-cli.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

describeWhenReady(missingPrerequisites({ images: [], dist: [] }), "host-net nft: one read of every tenant's ranges, one-process applies (privileged)", function () {
  this.timeout(300_000);
  const tables: string[] = [];
  const newTable = (): string => {
    const t = `pdkhn${crypto.randomBytes(4).toString("hex")}`;
    tables.push(t);
    return t;
  };

  /** `table inet <t>` holding one interval set, in nft's file syntax. */
  const tableText = (t: string, set: string, body: string): string => `table inet ${t} {\n\tset ${set} {\n${body.split(";").map((l) => `\t\t${l.trim()}\n`).join("")}\t}\n}\n`;

  afterEach(async () => {
    // One transaction; `table` first so that a table a failed test never made is no error.
    const text = tables.splice(0).map((t) => `table inet ${t}\ndelete table inet ${t}\n`).join("");
    if (text !== "") await run("nft", ["-f", "-"], { input: text, timeoutMs: 120_000 });
  });

  it("reads own_ranges of every table in one nft run: prefixes, a range's ends, and an empty set", async () => {
    const full = newTable();
    const empty = newTable();
    const other = newTable();
    const setup = [
      tableText(full, "own_ranges", "type ipv4_addr; flags interval; elements = { 169.254.40.0/22, 198.18.7.0/24, 198.18.9.1-198.18.9.7 }"),
      tableText(empty, "own_ranges", "type ipv4_addr; flags interval"),
      tableText(other, "not_ranges", "type ipv4_addr; flags interval; elements = { 198.18.8.0/24 }"),
    ].join("");
    await run("nft", ["-f", "-"], { input: setup, timeoutMs: 120_000 });
    const all = await listSetCidrs("own_ranges");
    expect(all.get(full)?.map(formatCidr)).to.deep.equal(["169.254.40.0/22", "198.18.7.0/24", "198.18.9.1/32", "198.18.9.7/32"]);
    expect(all.get(empty)).to.deep.equal([]);
    expect(all.has(other)).to.equal(false);
    // The same as one `nft list set` per table (the way a start read them before).
    for (const t of [full, empty]) {
      const one = await run("nft", ["-j", "list", "set", "inet", t, "own_ranges"], { timeoutMs: 120_000 });
      expect(all.get(t)).to.deep.equal(parseSetCidrs(one.stdout, "own_ranges").get(t));
    }
  });

  it("listOwnRanges reads the own_range chains; a table of the prefix with an own_ranges set but no index, with chains or without, makes it read the sets", async () => {
    const p = newTable();
    const [a, b, c, d] = [`${p}a`, `${p}b`, `${p}c`, `${p}d`];
    tables.push(a, b, c, d);
    const set = (cidr: string): string => `type ipv4_addr; flags interval; elements = { ${cidr} }`;
    const chains = (cidr: string): string => `\tchain own_ranges_index {\n\t}\n\tchain own_range_${cidr} {\n\t}\n}\n`;
    const show = (m: Map<string, Cidr[]>): Record<string, string[]> => Object.fromEntries([...m].map(([t, cs]) => [t, cs.map(formatCidr)]));
    // b's chain and set disagree here only to tell which of the two was read.
    await run("nft", ["-f", "-"], { input: tableText(a, "own_ranges", set("198.18.7.0/24")).replace(/}\n$/, chains("198.18.7.0/24")) + tableText(b, "own_ranges", set("198.18.10.0/24")).replace(/}\n$/, chains("198.18.9.0/24")), timeoutMs: 120_000 });
    expect(show(await listOwnRanges(p))).to.deep.equal({ [a]: ["198.18.7.0/24"], [b]: ["198.18.9.0/24"] });
    // A table with the set and no chain at all (no `list chains` line names it).
    await run("nft", ["-f", "-"], { input: tableText(c, "own_ranges", set("198.18.11.0/24")), timeoutMs: 120_000 });
    expect(show(await listOwnRanges(p))).to.deep.equal({ [a]: ["198.18.7.0/24"], [b]: ["198.18.10.0/24"], [c]: ["198.18.11.0/24"] });
    await run("nft", ["-f", "-"], { input: `delete table inet ${c}\n${tableText(d, "own_ranges", set("198.18.12.0/24")).replace(/}\n$/, "\tchain forward {\n\t}\n}\n")}`, timeoutMs: 120_000 });
    expect(show(await listOwnRanges(p))).to.deep.equal({ [a]: ["198.18.7.0/24"], [b]: ["198.18.10.0/24"], [d]: ["198.18.12.0/24"] });
  });

  it("nftTableExists: false for an absent table, true once it exists", async () => {
    const t = newTable();
    expect(await nftTableExists(t)).to.equal(false);
    await applyNft(tableText(t, "own_ranges", "type ipv4_addr; flags interval"));
    expect(await nftTableExists(t)).to.equal(true);
  });

  it("an apply that fails (parse error, or rejected by the kernel) leaves the table as it was", async () => {
    const t = newTable();
    const replace = (body: string): string => `table inet ${t}\ndelete table inet ${t}\n${tableText(t, "own_ranges", body)}`;
    const good = replace("type ipv4_addr; flags interval; elements = { 198.18.20.0/24 }");
    await applyNft(good);
    const before = (await run("nft", ["list", "table", "inet", t])).stdout;
    expect(before).to.contain("198.18.20.0/24"); // the control: the good apply is visible
    const unparsable = replace("type ipv4_addr; flags interval; elements = { 198.18.21.0/24, 999.1.1.1 }");
    // Parses, but the kernel refuses a set above its size: the batch's delete must not stay applied.
    const rejected = replace("type ipv4_addr; size 1; elements = { 198.18.22.1, 198.18.22.2 }");
    for (const text of [unparsable, rejected]) {
      const err = await applyNft(text).then(() => undefined, (e: unknown) => e);
      expect(isPaddockError(err) ? err.code : err).to.equal("ERR_NETWORK_SETUP_FAILED");
      expect((await run("nft", ["list", "table", "inet", t])).stdout).to.equal(before);
    }
  });
});
