/**
 * tenant-daemon/storage/disk-ledger.ts with an in-memory file system: the commit ratio, what
 * written blocks do to the promise, concurrent admissions, release, and the start-up load.
 */
import { expect } from "chai";
import { DiskLedger, type DiskLedgerFs } from "../../tenant-daemon/storage/disk-ledger.js";
import { isPaddockError } from "../../shared/errors.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";

const MiB = 2 ** 20;

/** Files by path: apparent size and allocated bytes; `free` is the file system's free space. */
function memFs(free: number, files: Record<string, { size: number; alloc: number }> = {}): DiskLedgerFs & { free: number; files: typeof files } {
  const fsState = {
    free,
    files,
    async freeBytes() {
      await Promise.resolve();
      return fsState.free;
    },
    async usage(file: string) {
      await Promise.resolve();
      const f = fsState.files[file];
      return f === undefined ? undefined : { sizeBytes: f.size, allocatedBytes: f.alloc };
    },
    async list() {
      await Promise.resolve();
      return Object.keys(fsState.files).map((p) => p.slice("/d/".length));
    },
  };
  return fsState;
}

async function refused(p: Promise<unknown>): Promise<boolean> {
  try {
    await p;
    return false;
  } catch (err) {
    if (isPaddockError(err, "ERR_STORAGE_OVERCOMMIT") && err.status === 507) return true;
    throw err;
  }
}

describe("disk ledger", () => {
  it("admits disks until their unwritten parts would pass ratio × free, and counts written blocks as spent", async () => {
    const host = memFs(1000 * MiB);
    const ledger = new DiskLedger("/d", 1, host);
    await ledger.reserve("/d/a.img", 600 * MiB);
    host.files["/d/a.img"] = { size: 600 * MiB, alloc: 0 };
    expect(await refused(ledger.reserve("/d/b.img", 500 * MiB)), "600 + 500 > 1000").to.equal(true);
    expect(await refused(ledger.reserve("/d/b.img", 400 * MiB)), "600 + 400 = 1000 fits").to.equal(false);
    host.files["/d/b.img"] = { size: 400 * MiB, alloc: 0 };
    // a writes 300 MiB: free drops by 300, its unwritten part too; nothing new fits.
    host.files["/d/a.img"] = { size: 600 * MiB, alloc: 300 * MiB };
    host.free = 700 * MiB;
    expect(await refused(ledger.reserve("/d/c.img", 1 * MiB))).to.equal(true);
    // Deleting b releases its promise.
    ledger.release("/d/b.img");
    delete host.files["/d/b.img"];
    expect(await refused(ledger.reserve("/d/c.img", 400 * MiB))).to.equal(false);
  });

  it("applies the ratio (below 1 leaves room, above 1 overcommits)", async () => {
    expect(await refused(new DiskLedger("/d", 0.5, memFs(1000 * MiB)).reserve("/d/a.img", 600 * MiB))).to.equal(true);
    expect(await refused(new DiskLedger("/d", 2, memFs(1000 * MiB)).reserve("/d/a.img", 1500 * MiB))).to.equal(false);
  });

  it("sees concurrent admissions: two disks that only fit one at a time are not both admitted", async () => {
    const ledger = new DiskLedger("/d", 1, memFs(1000 * MiB));
    const results = await Promise.all([refused(ledger.reserve("/d/a.img", 600 * MiB)), refused(ledger.reserve("/d/b.img", 600 * MiB))]);
    expect(results.filter((r) => r)).to.have.length(1);
    expect(ledger.count()).to.equal(1);
  });

  it("loads the disks already in the directory at first use, and checks an existing disk by its own unwritten part", async () => {
    const host = memFs(1000 * MiB, { "/d/a.img": { size: 900 * MiB, alloc: 100 * MiB }, "/d/notes.txt": { size: 1, alloc: 1 } });
    const ledger = new DiskLedger("/d", 1, host);
    expect(await refused(ledger.reserve("/d/b.img", 300 * MiB)), "800 unwritten + 300 > 1000").to.equal(true);
    expect(ledger.count()).to.equal(1);
    // Relaunch of a (stopped) a: its 800 MiB unwritten still fit.
    expect(await refused(ledger.reserve("/d/a.img", 900 * MiB))).to.equal(false);
    // The fs shrank under it (another tenant wrote): the same relaunch is refused.
    host.free = 500 * MiB;
    expect(await refused(ledger.reserve("/d/a.img", 900 * MiB))).to.equal(true);
  });
});

describe("disk, console and secrets bounds in the tenant config", () => {
  const tree = (paddock: Record<string, unknown>) => ({
    config: { host_groups: [{ name: "sbox", network: { mode: "isolated" } }], hypervisor: "oci", api: { bind_address: "/run/x/api.sock" } },
    paddock: { tenant_id: "acme", ...paddock },
  });

  it("defaults console_log_bytes 4 MiB, disk_commit_ratio 1, max_secrets 256, max_secret_bytes 16 MiB", () => {
    const p = parseTenantConfig(tree({}), "<t>", { baseDir: "/" }).paddock;
    expect([p.consoleLogBytes, p.diskCommitRatio, p.maxSecrets, p.maxSecretBytes]).to.deep.equal([4 * MiB, 1, 256, 16 * MiB]);
    const q = parseTenantConfig(tree({ console_log_bytes: 65536, disk_commit_ratio: 0.5, max_secrets: 3, max_secret_bytes: 1000 }), "<t>", { baseDir: "/" }).paddock;
    expect([q.consoleLogBytes, q.diskCommitRatio, q.maxSecrets, q.maxSecretBytes]).to.deep.equal([65536, 0.5, 3, 1000]);
  });

  it("refuses bad values with their YAML paths", () => {
    expect(() => parseTenantConfig(tree({ console_log_bytes: 100, disk_commit_ratio: 0, max_secrets: -1 }), "<t>", { baseDir: "/" }))
      .to.throw(/paddock\.console_log_bytes[\s\S]*paddock\.disk_commit_ratio|paddock\.disk_commit_ratio[\s\S]*paddock\.console_log_bytes/)
      .and.satisfy((e: Error) => /paddock\.max_secrets/.test(e.message));
  });

  it("a fixed-size file (a commit image) counts what its copy still has to write, and nothing once written or released", async () => {
    const host = memFs(1000 * MiB);
    const ledger = new DiskLedger("/d", 1, host);
    await ledger.reserveFixed("/c/x.tmp/disk.img", 300 * MiB);
    expect(await refused(ledger.reserve("/d/a.img", 800 * MiB)), "300 to write + 800 > 1000").to.equal(true);
    // The copy wrote its 300 MiB (free went down with it): nothing of it is promised any more.
    host.files["/c/x.tmp/disk.img"] = { size: 2048 * MiB, alloc: 300 * MiB };
    host.free = 700 * MiB;
    await ledger.reserve("/d/a.img", 700 * MiB);
    ledger.release("/d/a.img");
    ledger.release("/c/x.tmp/disk.img");
    expect(ledger.count()).to.equal(0);
    expect(await refused(ledger.reserveFixed("/c/y.tmp/disk.img", 800 * MiB)), "800 > 700 free").to.equal(true);
  });
});
