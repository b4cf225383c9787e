/**
 * shared/uid-ranges.ts on temp claims dirs and temp subuid/subgid files (never the host's
 * /var/lib/paddock-uid-ranges or /etc/subuid). No root needed.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { isPaddockError } from "../../shared/errors.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import {
  UID_RANGE_BASE, UID_RANGE_SIZE, UID_RANGE_SLOTS, claimUidRange, listUidClaims, parseSubordinateIds, releaseUidRange, uidClaimsDir, uidRangesOverlap,
  type ClaimUidRangeOptions, type UidRange,
} from "../../shared/uid-ranges.js";

const slot = (k: number): UidRange => ({ uidStart: UID_RANGE_BASE + k * UID_RANGE_SIZE, size: UID_RANGE_SIZE });

describe("uid ranges (shared/uid-ranges.ts)", () => {
  let root = "";
  let claimsDir = "";
  let subuidFile = "";
  let subgidFile = "";
  const claim = (tenantId: string, extra: Partial<ClaimUidRangeOptions> = {}) =>
    claimUidRange({ tenantId, stateDir: path.join(root, "state", tenantId), claimsDir, subuidFile, subgidFile, ...extra });
  const refusal = async (p: Promise<unknown>): Promise<unknown> => p.then(() => expect.fail("expected a refusal"), (e: unknown) => e);

  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-uid-"));
    claimsDir = path.join(root, "claims");
    subuidFile = path.join(root, "subuid");
    subgidFile = path.join(root, "subgid");
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("constants stay between systemd-nspawn's range and the foreign-UID range", () => {
    expect(UID_RANGE_BASE).to.be.greaterThan(1_879_048_191);
    expect(UID_RANGE_BASE + UID_RANGE_SLOTS * UID_RANGE_SIZE).to.be.at.most(0x7ffe0000);
  });

  it("allocates the lowest free slot and writes a 0600 claim file in a 0700 dir", async () => {
    expect(await claim("ta")).to.deep.equal(slot(0));
    expect(await claim("tb")).to.deep.equal(slot(1));
    const file = path.join(claimsDir, `${UID_RANGE_BASE}.json`);
    expect((await fs.stat(file)).mode & 0o777).to.equal(0o600);
    expect((await fs.stat(claimsDir)).mode & 0o777).to.equal(0o700);
    const body = JSON.parse(await fs.readFile(file, "utf8")) as Record<string, unknown>;
    expect(body).to.deep.include({ tenant_id: "ta", state_dir: await fs.realpath(path.join(root, "state", "ta")), uid_start: UID_RANGE_BASE, size: UID_RANGE_SIZE });
    expect(Number.isNaN(Date.parse(body.claimed_at as string))).to.equal(false);
    // A released slot is the lowest free one again.
    await releaseUidRange({ tenantId: "ta", stateDir: path.join(root, "state", "ta"), claimsDir });
    expect(await claim("tc")).to.deep.equal(slot(0));
  });

  it("returns the same range to the same owner (tenant id and state dir), another to another state dir", async () => {
    const first = await claim("ta");
    expect(await claim("ta")).to.deep.equal(first);
    expect(await claim("ta", { stateDir: path.join(root, "state", "ta", "..", "ta") })).to.deep.equal(first);
    expect(await claim("ta", { stateDir: path.join(root, "elsewhere") })).to.deep.equal(slot(1));
    expect((await listUidClaims(claimsDir)).length).to.equal(2);
  });

  it("20 parallel claims of distinct tenants get 20 distinct, non-overlapping ranges", async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `t${i}`);
    const ranges = await Promise.all(ids.map((id) => claim(id)));
    for (let a = 0; a < ranges.length; a++) for (let b = a + 1; b < ranges.length; b++) expect(uidRangesOverlap(ranges[a]!, ranges[b]!), `${a} vs ${b}`).to.equal(false);
    expect(ranges.map((r) => r.uidStart).sort((x, y) => x - y)).to.deep.equal(Array.from({ length: 20 }, (_, k) => slot(k).uidStart));
    const claims = await listUidClaims(claimsDir);
    expect(claims.filter((c) => c.stale === undefined).length).to.equal(20);
  });

  it("4 processes claiming 5 ranges each at once get 20 distinct ranges (cross-process lock)", async function () {
    this.timeout(20_000);
    const mod = path.join(PROJECT_ROOT, "dist/shared/uid-ranges.js");
    const script = `const m = await import(${JSON.stringify(mod)}); const [dir, root, p] = process.argv.slice(1);
      const out = await Promise.all([0, 1, 2, 3, 4].map((i) => m.claimUidRange({ tenantId: "p" + p + "x" + i, stateDir: root + "/state/p" + p + "x" + i, claimsDir: dir, subuidFile: root + "/none", subgidFile: root + "/none" })));
      process.stdout.write(JSON.stringify(out));`;
    const runOne = (p: number) => new Promise<UidRange[]>((resolve, reject) => {
      execFile(process.execPath, ["--input-type=module", "-e", script, claimsDir, root, String(p)], (err, stdout) => (err ? reject(err) : resolve(JSON.parse(stdout) as UidRange[])));
    });
    const ranges = (await Promise.all([0, 1, 2, 3].map(runOne))).flat();
    expect(ranges.map((r) => r.uidStart).sort((x, y) => x - y)).to.deep.equal(Array.from({ length: 20 }, (_, k) => slot(k).uidStart));
  });

  it("claims a requested range, returns it to its owner, and refuses an overlap naming the owner", async () => {
    const want = { uidStart: 3_000_000_000, size: 131_072 };
    expect(await claim("ta", { requested: want })).to.deep.equal(want);
    expect(await claim("ta", { requested: want })).to.deep.equal(want);
    const err = await refusal(claim("tb", { requested: { uidStart: 3_000_065_536, size: 65_536 } }));
    expect(isPaddockError(err, "ERR_USERNS_RANGE_TAKEN"), String(err)).to.equal(true);
    const msg = (err as Error).message;
    expect(msg).to.contain("tenant ta").and.contain(path.join(root, "state", "ta")).and.contain("3000000000-3000131071").and.contain("paddock.userns.uid_start");
    expect((err as { status: number }).status).to.equal(409);
    // An automatic claim skips the requested range; a requested slot is refused to others.
    expect(await claim("tc")).to.deep.equal(slot(0));
    expect(isPaddockError(await refusal(claim("td", { requested: { uidStart: UID_RANGE_BASE + 100, size: 65_536 } })), "ERR_USERNS_RANGE_TAKEN")).to.equal(true);
    expect((await listUidClaims(claimsDir)).map((c) => c.stale === "unparsable" ? "?" : c.tenantId)).to.deep.equal(["tc", "ta"]);
  });

  it("an owner that requests another range moves to it (one range per owner)", async () => {
    expect(await claim("ta")).to.deep.equal(slot(0));
    expect(await claim("ta", { requested: slot(5) })).to.deep.equal(slot(5));
    expect(await claim("ta")).to.deep.equal(slot(5));
    expect((await listUidClaims(claimsDir)).map((c) => c.file)).to.deep.equal([path.join(claimsDir, `${slot(5).uidStart}.json`)]);
  });

  it("refuses invalid requested ranges as config errors", async () => {
    for (const r of [{ uidStart: 1000, size: 65_536 }, { uidStart: 100_000, size: 1000 }, { uidStart: 4_294_967_000, size: 65_536 }, { uidStart: 1.5e5 + 0.5, size: 65_536 }]) {
      expect(isPaddockError(await refusal(claim("ta", { requested: r })), "ERR_CONFIG_INVALID"), JSON.stringify(r)).to.equal(true);
    }
    expect(await listUidClaims(claimsDir)).to.deep.equal([]);
  });

  it("reuses a stale claim once its state dir is removed, and drops unparsable claim files", async () => {
    expect(await claim("ta")).to.deep.equal(slot(0));
    await fs.writeFile(path.join(claimsDir, `${slot(1).uidStart}.json`), "{ half-writ");
    const listed = await listUidClaims(claimsDir);
    expect(listed.map((c) => c.stale)).to.deep.equal([undefined, "unparsable"]);
    await fs.rm(path.join(root, "state", "ta"), { recursive: true });
    expect((await listUidClaims(claimsDir))[0]?.stale).to.equal("state-dir-missing");
    expect(await claim("tb")).to.deep.equal(slot(0));
    expect(await claim("tc")).to.deep.equal(slot(1));
    expect((await listUidClaims(claimsDir)).map((c) => (c.stale === "unparsable" ? "?" : c.tenantId))).to.deep.equal(["tb", "tc"]);
  });

  it("refuses ranges in /etc/subuid or /etc/subgid, skips them when allocating, and ignores malformed lines", async () => {
    await fs.writeFile(subuidFile, `# comment\nbogus line\nalice:x:65536\ncarol:100000:65536\nbob:${UID_RANGE_BASE + 10}:10\n`);
    await fs.writeFile(subgidFile, `bob:${slot(1).uidStart}:1\n`);
    expect(parseSubordinateIds(await fs.readFile(subuidFile, "utf8"), subuidFile).map((e) => e.name)).to.deep.equal(["carol", "bob"]);
    const err = await refusal(claim("ta", { requested: { uidStart: 150_000, size: 65_536 } }));
    expect(isPaddockError(err, "ERR_USERNS_RANGE_TAKEN")).to.equal(true);
    expect((err as Error).message).to.contain(subuidFile).and.contain("carol:100000:65536");
    expect(await claim("ta")).to.deep.equal(slot(2));
    expect(await claim("tb", { requested: { uidStart: 200_000, size: 65_536 } })).to.deep.equal({ uidStart: 200_000, size: 65_536 });
  });

  it("release is idempotent and touches only the owner's claims", async () => {
    await claim("ta");
    await claim("tb");
    const rel = { tenantId: "ta", stateDir: path.join(root, "state", "ta"), claimsDir };
    await releaseUidRange(rel);
    await releaseUidRange(rel);
    await releaseUidRange({ ...rel, claimsDir: path.join(root, "no-such-dir") });
    expect((await listUidClaims(claimsDir)).map((c) => (c.stale === "unparsable" ? "?" : c.tenantId))).to.deep.equal(["tb"]);
  });

  it("reports exhaustion (507) when every slot is taken", async () => {
    expect(await claim("ta", { slots: 2 })).to.deep.equal(slot(0));
    expect(await claim("tb", { slots: 2 })).to.deep.equal(slot(1));
    const err = await refusal(claim("tc", { slots: 2 }));
    expect(isPaddockError(err, "ERR_USERNS_EXHAUSTED"), String(err)).to.equal(true);
    expect((err as { status: number }).status).to.equal(507);
    expect(await claim("ta", { slots: 2 })).to.deep.equal(slot(0));
  });

  it("honours PADDOCK_UID_CLAIMS_DIR when no claimsDir is given", () => {
    expect(uidClaimsDir(undefined, { PADDOCK_UID_CLAIMS_DIR: "/tmp/x" })).to.equal("/tmp/x");
    expect(uidClaimsDir(undefined, {})).to.equal("/var/lib/paddock-uid-ranges");
    expect(uidClaimsDir("/a/b", { PADDOCK_UID_CLAIMS_DIR: "/tmp/x" })).to.equal("/a/b");
  });
});
