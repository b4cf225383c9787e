/**
 * supervisor/audit-log.ts on temp files: size-capped rotation keeping N files, and paged reads
 * that walk backwards across the rotated files reading about one chunk per page.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AuditLog, type AuditEntry } from "../../supervisor/audit-log.js";

describe("audit log rotation and paging", () => {
  let dir = "";
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-audit-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const fill = async (log: AuditLog, n: number, pad = 0): Promise<void> => {
    for (let i = 0; i < n; i++) void log.record({ actor: "admin", action: i % 2 === 0 ? "token.issue" : "tenant.create", tenant: `t${i % 3}`, details: { i, pad: "p".repeat(pad) } });
    await log.record({ actor: "admin", action: "last" });
  };

  it("rotates at maxBytes and keeps `keep` files", async () => {
    const file = path.join(dir, "audit.log");
    const log = new AuditLog(file, { maxBytes: 100_000, keep: 2 });
    await fill(log, 5000);
    const sizes = await Promise.all([file, `${file}.1`, `${file}.2`, `${file}.3`].map((f) => fs.stat(f).then((s) => s.size, () => -1)));
    expect(sizes[0]).to.be.within(1, 100_000);
    expect(sizes[1]).to.be.within(99_000, 100_000);
    expect(sizes[2]).to.be.within(99_000, 100_000);
    expect(sizes[3]).to.equal(-1);
  });

  it("pages newest first across rotated files, reading about one chunk per small page", async () => {
    const file = path.join(dir, "audit.log");
    const log = new AuditLog(file, { maxBytes: 150_000, keep: 3 });
    await fill(log, 6000);
    const first = await log.read({ limit: 10 });
    expect(first.entries.map((e) => e.action).at(-1)).to.equal("last");
    expect(first.bytesRead, "a 10-entry page reads one chunk").to.be.at.most(64 * 1024);
    // Walk everything kept, 500 at a time: strictly descending i, no duplicates, no gaps.
    const all: AuditEntry[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await log.read({ limit: 500, cursor });
      all.unshift(...page.entries);
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== undefined && pages < 100);
    const is = all.filter((e) => e.action !== "last").map((e) => (e.details as { i: number }).i);
    expect(is.at(-1)).to.equal(5999);
    for (let k = 1; k < is.length; k++) expect(is[k], `entry after ${is[k - 1]}`).to.equal((is[k - 1] as number) + 1);
    // Every kept line, once.
    const keptLines = (await Promise.all([file, `${file}.1`, `${file}.2`, `${file}.3`].map((f) => fs.readFile(f, "utf8").catch(() => "")))).join("").split("\n").filter(Boolean).length;
    expect(all.length).to.equal(keptLines);
    expect(keptLines, "some entries were rotated away").to.be.below(6001);
  });

  it("filters by tenant and action prefix, and carries lines longer than a chunk", async () => {
    const file = path.join(dir, "audit.log");
    const log = new AuditLog(file, { maxBytes: 10_000_000, keep: 1 });
    await fill(log, 30, 100_000);
    const page = await log.read({ tenant: "t1", action: "token", limit: 100 });
    const is = page.entries.map((e) => (e.details as { i: number }).i);
    expect(is).to.deep.equal([4, 10, 16, 22, 28]);
    expect(page.nextCursor).to.equal(undefined);
    const two = await log.read({ tenant: "t1", action: "token", limit: 2 });
    expect(two.entries.map((e) => (e.details as { i: number }).i)).to.deep.equal([22, 28]);
    const rest = await log.read({ tenant: "t1", action: "token", limit: 10, cursor: two.nextCursor });
    expect(rest.entries.map((e) => (e.details as { i: number }).i)).to.deep.equal([4, 10, 16]);
  });

  it("answers an empty page for a cursor whose file was rotated away", async () => {
    const file = path.join(dir, "audit.log");
    const log = new AuditLog(file, { maxBytes: 70_000, keep: 1 });
    await fill(log, 100);
    const page = await log.read({ limit: 5 });
    await fill(log, 2000);
    expect((await log.read({ limit: 5, cursor: page.nextCursor })).entries).to.deep.equal([]);
  });
});
