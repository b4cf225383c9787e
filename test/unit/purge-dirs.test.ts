/**
 * tenant-daemon/purge-dirs.ts on real temp dirs: a tenant dir goes with everything in it, and
 * symlinks inside are unlinked, never followed; a symlinked dir, a dir holding one of
 * Paddock's shared dirs, or one with a mount below it is left with its reason; kept entries
 * stay; only `<root>/tenants/<id>` dirs name another tenant id.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { liveTenantDirConflict, liveTenantDirConflictReal, otherTenantIdsOf, realPathOf, removeIfEmpty, removeTenantDir, sharedPaddockDirs } from "../../tenant-daemon/purge-dirs.js";

describe("purge of a tenant's dirs (tenant-daemon/purge-dirs.ts)", () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-purge-"));
  });
  afterEach(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  const exists = (p: string): Promise<boolean> => fs.lstat(p).then(() => true, () => false);

  it("removes the dir and all in it, unlinking symlinks without following them", async () => {
    const outside = path.join(tmp, "outside");
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, "precious"), "x");
    const dir = path.join(tmp, "tenants", "acme");
    await fs.mkdir(path.join(dir, "disks", "a"), { recursive: true });
    await fs.writeFile(path.join(dir, "state.json"), "{}");
    await fs.symlink(outside, path.join(dir, "disks", "a", "escape"));
    await fs.symlink(path.join(outside, "precious"), path.join(dir, "file-link"));
    expect(await removeTenantDir(dir, { shared: [], mountPoints: [] })).to.equal(undefined);
    expect(await exists(dir)).to.equal(false);
    expect(await fs.readFile(path.join(outside, "precious"), "utf8")).to.equal("x");
    expect(await removeTenantDir(dir, { shared: [], mountPoints: [] }), "absent: nothing to do").to.equal(undefined);
  });

  it("leaves a symlinked dir and its target", async () => {
    const target = path.join(tmp, "elsewhere");
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, "f"), "x");
    const link = path.join(tmp, "state");
    await fs.symlink(target, link);
    const left = await removeTenantDir(link, { shared: [], mountPoints: [] });
    expect(left?.reason).to.match(/symlink/);
    expect(await exists(link)).to.equal(true);
    expect(await exists(path.join(target, "f"))).to.equal(true);
  });

  it("leaves a dir holding a shared Paddock dir (e.g. state_dir: /var/lib/paddock), and /", async () => {
    const root = path.join(tmp, "paddock");
    await fs.mkdir(path.join(root, "images"), { recursive: true });
    const shared = sharedPaddockDirs({ PADDOCK_STATE_DIR: root, PADDOCK_RUN_DIR: path.join(tmp, "run") });
    expect(shared).to.include(path.join(root, "images")).and.include(path.join(root, "tenants"));
    expect((await removeTenantDir(root, { shared, mountPoints: [] }))?.reason).to.match(/holds/);
    expect((await removeTenantDir(tmp, { shared, mountPoints: [] }))?.reason).to.match(/holds/);
    expect((await removeTenantDir("/", { shared: [], mountPoints: [] }))?.reason).to.match(/it is \//);
    expect(await exists(path.join(root, "images"))).to.equal(true);
  });

  it("leaves a dir with something mounted at or below it", async () => {
    const dir = path.join(tmp, "run");
    await fs.mkdir(path.join(dir, "vm1", "rootfs"), { recursive: true });
    const left = await removeTenantDir(dir, { shared: [], mountPoints: ["/proc", path.join(dir, "vm1", "rootfs")] });
    expect(left?.reason).to.match(/mounted/);
    expect(await exists(path.join(dir, "vm1", "rootfs"))).to.equal(true);
  });

  it("keeps the named entries (a held lock) and then removes the dir once they are gone", async () => {
    const dir = path.join(tmp, "state");
    await fs.mkdir(path.join(dir, "owner.lock"), { recursive: true });
    await fs.writeFile(path.join(dir, "owner.pid"), "1\n");
    await fs.mkdir(path.join(dir, "disks"));
    expect(await removeTenantDir(dir, { shared: [], keep: ["owner.lock", "owner.pid"], mountPoints: [] })).to.equal(undefined);
    expect((await fs.readdir(dir)).sort()).to.deep.equal(["owner.lock", "owner.pid"]);
    expect(await removeIfEmpty(dir), "not empty yet").to.equal(false);
    await fs.rm(path.join(dir, "owner.lock"), { recursive: true });
    await fs.rm(path.join(dir, "owner.pid"));
    expect(await removeIfEmpty(dir)).to.equal(true);
    expect(await exists(dir)).to.equal(false);
  });

  it("names the other tenant ids of <root>/tenants/<id> dirs only", () => {
    expect(otherTenantIdsOf("a", ["/var/lib/paddock/tenants/a", "/run/paddock/tenants/b"])).to.deep.equal(["b"]);
    expect(otherTenantIdsOf("a", ["/tmp/pdk-x/state", "/tmp/pdk-x/run"])).to.deep.equal([]);
    expect(otherTenantIdsOf("a", ["/x/tenants/Not-An-Id"])).to.deep.equal([]);
  });

  it("names the tenant id of a <root>/tenants/<id> dir that a dir to remove is nested in (its lock is then held, or the purge refused)", () => {
    expect(otherTenantIdsOf("a", ["/var/lib/paddock/tenants/b/a-state", "/run/paddock/tenants/c/x/y/run"])).to.deep.equal(["b", "c"]);
    expect(otherTenantIdsOf("a", ["/var/lib/paddock/tenants/a/sub", "/run/paddock/tenants/a"])).to.deep.equal([]);
    expect(otherTenantIdsOf("a", ["/var/lib/paddock/tenants/b/../a"])).to.deep.equal([]);
  });

  it("refuses a dir that is, is inside, or holds a dir a live daemon of another tenant recorded as its own", () => {
    const live = [
      { tenantId: "b", pid: 4242, dirs: ["/srv/b/state", "/run/paddock/tenants/b"] },
      { tenantId: "a", pid: 4343, dirs: ["/srv/a"] },
    ];
    expect(liveTenantDirConflict("a", ["/srv/b/state/nested", "/run/a"], live)).to.equal("/srv/b/state/nested is inside /srv/b/state, a dir of tenant b whose daemon is running (pid 4242)");
    expect(liveTenantDirConflict("a", ["/var/lib/a", "/srv/b"], live)).to.equal("/srv/b holds /srv/b/state, a dir of tenant b whose daemon is running (pid 4242)");
    expect(liveTenantDirConflict("a", ["/run/paddock/tenants/b/../b"], live)).to.equal("/run/paddock/tenants/b is a dir of tenant b whose daemon is running (pid 4242)");
    // Siblings and prefixes are not inside; the purged tenant's own record does not count.
    expect(liveTenantDirConflict("a", ["/srv/b/state2", "/srv/bb", "/srv/a/x", "/run/paddock/tenants/a"], live)).to.equal(undefined);
    expect(liveTenantDirConflict("a", ["/srv/x"], [])).to.equal(undefined);
  });

  it("compares real paths too: a dir to purge under a symlinked ancestor that leads into (or around) a live tenant's dir is refused", async () => {
    const bState = path.join(await fs.realpath(tmp), "b-state");
    await fs.mkdir(path.join(bState, "vms"), { recursive: true });
    await fs.symlink(bState, path.join(tmp, "link-to-b"));
    await fs.mkdir(path.join(tmp, "real-a"));
    await fs.symlink(path.join(tmp, "real-a"), path.join(tmp, "link-to-a"));
    const live = [{ tenantId: "b", pid: 4242, dirs: [bState] }];
    // Lexically apart, really inside b's state dir (a part below the link does not exist yet).
    const inside = path.join(tmp, "link-to-b", "a-state", "more");
    expect(liveTenantDirConflict("a", [inside], live), "the lexical check alone misses it").to.equal(undefined);
    expect(await liveTenantDirConflictReal("a", [inside], live)).to.equal(
      `following symlinks (${inside} is really ${path.join(bState, "a-state", "more")}), ${path.join(bState, "a-state", "more")} is inside ${bState}, a dir of tenant b whose daemon is running (pid 4242)`,
    );
    // A live tenant's dir recorded through a symlink, and a purged dir holding its real place.
    const liveViaLink = [{ tenantId: "b", pid: 4242, dirs: [path.join(tmp, "link-to-b", "vms")] }];
    expect(await liveTenantDirConflictReal("a", [bState], liveViaLink)).to.match(new RegExp(`holds ${path.join(bState, "vms")}, a dir of tenant b`));
    // Apart as real paths too: no conflict.
    expect(await liveTenantDirConflictReal("a", [path.join(tmp, "link-to-a", "state")], live)).to.equal(undefined);
    expect(await realPathOf(path.join(tmp, "link-to-a", "x", "y"))).to.equal(path.join(await fs.realpath(tmp), "real-a", "x", "y"));
  });
});
