/**
 * Per-VM storage on real loop devices and overlayfs over the real debian-12 image. Needs
 * root. Every mount, loop device and file made here is removed in after hooks.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { resolveImage } from "../../shared/image-store.js";
import {
  bundleMountPaths,
  isMountPoint,
  mountRootfs,
  parseLosetupJson,
  prepareDisk,
  readMounts,
  removeDisk,
  sweepStorage,
  unmountRootfs,
} from "../../tenant-daemon/storage/vm-disk.js";
import { createVmStorage } from "../../tenant-daemon/storage/vm-storage.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";

const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
const MiB = 1024 * 1024;

async function mountsUnder(dir: string): Promise<string[]> {
  return (await readMounts()).map((m) => m.mountPoint).filter((mp) => mp === dir || mp.startsWith(dir + "/"));
}

async function loopsFor(file: string): Promise<{ name: string; autoclear: boolean }[]> {
  const r = await run("losetup", ["-J", "--list"]);
  if (r.stdout.trim() === "") return [];
  const raw = JSON.parse(r.stdout) as { loopdevices: { name: string; autoclear: boolean | string }[] };
  const devices = parseLosetupJson(r.stdout);
  return devices
    .map((d, i) => ({ ...d, autoclear: String(raw.loopdevices[i]?.autoclear) === "true" || String(raw.loopdevices[i]?.autoclear) === "1" }))
    .filter((d) => d.backFile === file)
    .map((d) => ({ name: d.name, autoclear: d.autoclear }));
}

async function waitNoLoop(file: string): Promise<void> {
  for (let i = 0; i < 100 && (await loopsFor(file)).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
}

describe("per-VM storage: sparse ext4 loop disk + overlay (privileged)", function () {
  this.timeout(120_000);
  let dir: string;
  let imageRootfs: string;
  let diskPath: string;
  let bundleDir: string;

  before(async function () {
    skipUnlessRoot(this);
    imageRootfs = await resolveImage(IMAGE_DIR, "debian-12");
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-st-"));
    diskPath = path.join(dir, "state", "disks", "sbox-1.img");
    bundleDir = path.join(dir, "run", "bundles", "sbox-1");
  });

  after(async () => {
    if (dir === undefined) return;
    await sweepStorage({ runDir: dir, disksDir: dir });
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("creates a sparse ext4 disk once and keeps it on the next prepare", async () => {
    const t0 = process.hrtime.bigint();
    expect(await prepareDisk({ diskPath, sizeBytes: 64 * MiB })).to.equal(true);
    const mkfsMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const st = await fs.stat(diskPath);
    expect(st.size).to.equal(64 * MiB);
    expect(st.blocks * 512).to.be.lessThan(8 * MiB); // sparse: only metadata allocated
    expect((await run("blkid", ["-o", "value", "-s", "TYPE", diskPath])).stdout.trim()).to.equal("ext4");
    expect(await prepareDisk({ diskPath, sizeBytes: 64 * MiB })).to.equal(false);
    expect(existsSync(`${diskPath}.tmp`)).to.equal(false);
    console.log(`      truncate+mkfs.ext4 (64 MiB): ${mkfsMs.toFixed(1)} ms`);
  });

  it("refuses disks too small for ext4", async () => {
    let err: unknown;
    try {
      await prepareDisk({ diskPath: path.join(dir, "tiny.img"), sizeBytes: 1 * MiB });
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).to.equal("ERR_STORAGE_FAILED");
    expect(existsSync(path.join(dir, "tiny.img"))).to.equal(false);
  });

  it("mounts the overlay (idempotently) over the image with the upper layer on an autoclear loop disk", async () => {
    const t0 = process.hrtime.bigint();
    const rootfs = await mountRootfs({ diskPath, imageRootfs, bundleDir });
    console.log(`      loop mount + overlay mount: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`);
    expect(rootfs).to.equal(bundleMountPaths(bundleDir).rootfsDir);
    await mountRootfs({ diskPath, imageRootfs, bundleDir });
    const mounts = (await readMounts()).filter((m) => m.mountPoint.startsWith(bundleDir + "/"));
    expect(mounts.map((m) => `${m.fsType} ${path.basename(m.mountPoint)}`).sort()).to.deep.equal(["ext4 disk", "overlay rootfs"]);
    const loops = await loopsFor(diskPath);
    expect(loops).to.have.length(1);
    expect(loops[0]?.autoclear).to.equal(true);
    expect(await fs.readFile(path.join(rootfs, "etc", "debian_version"), "utf8")).to.match(/^12\./);
  });

  it("never writes to the base image: new, changed and deleted files all stay in the upper layer", async () => {
    const { rootfsDir, upperDir } = bundleMountPaths(bundleDir);
    const lowerOsRelease = await fs.readFile(path.join(imageRootfs, "etc", "os-release"), "utf8");
    await fs.writeFile(path.join(rootfsDir, "root", "new-file"), "hello\n");
    await fs.writeFile(path.join(rootfsDir, "etc", "os-release"), "changed\n");
    await fs.rm(path.join(rootfsDir, "etc", "debian_version"));
    expect(existsSync(path.join(upperDir, "root", "new-file"))).to.equal(true);
    expect(existsSync(path.join(imageRootfs, "root", "new-file"))).to.equal(false);
    expect(await fs.readFile(path.join(imageRootfs, "etc", "os-release"), "utf8")).to.equal(lowerOsRelease);
    expect(existsSync(path.join(imageRootfs, "etc", "debian_version"))).to.equal(true);
    expect(existsSync(path.join(rootfsDir, "etc", "debian_version"))).to.equal(false);
  });

  it("fills up with ENOSPC at the disk size while the host file stays bounded", async () => {
    const { rootfsDir } = bundleMountPaths(bundleDir);
    const hostFreeBefore = (await fs.statfs(path.dirname(diskPath))).bavail;
    const chunk = Buffer.alloc(MiB, 0x5a);
    const fh = await fs.open(path.join(rootfsDir, "tmp", "fill"), "w");
    let written = 0;
    let code: string | undefined;
    try {
      for (;;) {
        await fh.write(chunk);
        written += chunk.length;
        if (written > 256 * MiB) break;
      }
    } catch (err) {
      code = (err as { code?: string }).code;
    } finally {
      await fh.close().catch(() => undefined);
    }
    expect(code).to.equal("ENOSPC");
    expect(written).to.be.lessThan(64 * MiB);
    const st = await fs.stat(diskPath);
    expect(st.size).to.equal(64 * MiB);
    expect(st.blocks * 512).to.be.at.most(64 * MiB);
    const hostFreeAfter = (await fs.statfs(path.dirname(diskPath))).bavail;
    const statfs = await fs.statfs(path.dirname(diskPath));
    // The host lost at most the disk's size (others write to this disk too: allow slack, but
    // nowhere near the 256 MiB we tried to write).
    expect((hostFreeBefore - hostFreeAfter) * statfs.bsize).to.be.lessThan(128 * MiB);
    await fs.rm(path.join(rootfsDir, "tmp", "fill"));
  });

  it("unmounts to nothing (no mount, no loop device), idempotently, and keeps the data for the next mount", async () => {
    await unmountRootfs(bundleDir);
    expect(await mountsUnder(bundleDir)).to.deep.equal([]);
    await waitNoLoop(diskPath);
    expect(await loopsFor(diskPath)).to.deep.equal([]);
    await unmountRootfs(bundleDir);
    const rootfs = await mountRootfs({ diskPath, imageRootfs, bundleDir });
    expect(await fs.readFile(path.join(rootfs, "root", "new-file"), "utf8")).to.equal("hello\n");
    await unmountRootfs(bundleDir);
    await waitNoLoop(diskPath);
    expect(await loopsFor(diskPath)).to.deep.equal([]);
  });

  it("falls back to a lazy unmount when busy; the loop device goes when the last user does", async () => {
    const rootfs = await mountRootfs({ diskPath, imageRootfs, bundleDir });
    const busy = await fs.open(path.join(rootfs, "root", "new-file"), "r");
    try {
      await unmountRootfs(bundleDir);
      expect(await mountsUnder(bundleDir)).to.deep.equal([]);
    } finally {
      await busy.close();
    }
    await waitNoLoop(diskPath);
    expect(await loopsFor(diskPath)).to.deep.equal([]);
  });

  it("sweeps mounts under a run dir and loop devices of its disks, touching nothing else", async () => {
    await mountRootfs({ diskPath, imageRootfs, bundleDir });
    // A loop device without autoclear, as a crash between losetup and mount would leave.
    const extra = path.join(dir, "state", "disks", "sbox-2.img");
    await prepareDisk({ diskPath: extra, sizeBytes: 32 * MiB });
    const dev = (await run("losetup", ["--find", "--show", extra])).stdout.trim();
    expect(dev).to.match(/^\/dev\/loop\d+$/);
    const result = await sweepStorage({ runDir: path.join(dir, "run"), disksDir: path.join(dir, "state", "disks") });
    expect(result.unmounted.sort()).to.deep.equal([path.join(bundleDir, "disk"), path.join(bundleDir, "rootfs")]);
    expect(result.detached).to.include(dev);
    expect(await mountsUnder(dir)).to.deep.equal([]);
    await waitNoLoop(diskPath);
    expect(await loopsFor(diskPath)).to.deep.equal([]);
    expect(await loopsFor(extra)).to.deep.equal([]);
    await removeDisk(extra);
  });

  it("tenant VmStorage: per-hostname disks, usage, and a sweep that keeps what it is told to keep", async () => {
    const storage = createVmStorage({ stateDir: path.join(dir, "t-state"), runDir: path.join(dir, "t-run"), imageRootfs });
    try {
      const t0 = process.hrtime.bigint();
      await storage.prepare("keep-1", 64 * MiB);
      await storage.mount("keep-1");
      console.log(`      per-VM disk setup (prepare + mount, 64 MiB): ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)} ms`);
      await storage.prepare("gone-1", 64 * MiB);
      await storage.mount("gone-1");
      const usage = await storage.usage("keep-1");
      expect(usage?.totalBytes).to.be.greaterThan(40 * MiB).and.at.most(64 * MiB);
      expect(usage?.usedBytes).to.be.greaterThan(0);
      await storage.sweep(new Set(["keep-1"]));
      expect(await isMountPoint(storage.paths("keep-1").rootfsDir)).to.equal(true);
      expect(await isMountPoint(storage.paths("gone-1").rootfsDir)).to.equal(false);
      expect(await isMountPoint(storage.paths("gone-1").diskDir)).to.equal(false);
      expect(existsSync(storage.paths("gone-1").diskPath)).to.equal(false);
      expect(existsSync(storage.paths("keep-1").diskPath)).to.equal(true);
      expect(await storage.usage("gone-1")).to.equal(undefined);
      expect(() => storage.paths("../etc")).to.throw(RangeError);
    } finally {
      await storage.sweep(new Set());
    }
    expect(await mountsUnder(path.join(dir, "t-run"))).to.deep.equal([]);
    expect(await fs.readdir(path.join(dir, "t-state", "disks"))).to.deep.equal([]);
  });
  it("a new disk already holds the overlay's upper/ and work/ (both mounts in one run); a disk without them still mounts", async () => {
    const d1 = path.join(dir, "lay", "d1.img");
    await prepareDisk({ diskPath: d1, sizeBytes: 32 * MiB });
    const root = (await run("debugfs", ["-R", "ls -l /", d1])).stdout;
    expect(root).to.match(/ upper\s*$/m).and.match(/ work\s*$/m);
    expect(existsSync(`${d1}.tree`)).to.equal(false);
    const b1 = path.join(dir, "lay", "b1");
    expect(await mountRootfs({ diskPath: d1, imageRootfs, bundleDir: b1 })).to.equal(path.join(b1, "rootfs"));
    expect(await isMountPoint(path.join(b1, "rootfs"))).to.equal(true);
    await unmountRootfs(b1);
    // A disk made without the layer dirs (an older Paddock) takes the step-by-step path.
    const d2 = path.join(dir, "lay", "d2.img");
    await fs.writeFile(d2, "");
    await fs.truncate(d2, 32 * MiB);
    await run("mkfs.ext4", ["-q", "-F", d2]);
    const b2 = path.join(dir, "lay", "b2");
    await mountRootfs({ diskPath: d2, imageRootfs, bundleDir: b2 });
    expect(await isMountPoint(path.join(b2, "rootfs"))).to.equal(true);
    expect(existsSync(path.join(b2, "rootfs", "etc", "debian_version"))).to.equal(true);
    await unmountRootfs(b2);
    expect(await mountsUnder(path.join(dir, "lay"))).to.deep.equal([]);
    await waitNoLoop(d1);
    await waitNoLoop(d2);
  });

  it("with a uid range, the idmapped image bind and both mounts are one run; a failed bind mounts nothing (no overlay over an empty lower)", async () => {
    const range = { uidStart: 1_900_000_000, size: 65_536 };
    const d = path.join(dir, "idm", "d.img");
    await prepareDisk({ diskPath: d, sizeBytes: 32 * MiB, owner: { uid: range.uidStart, gid: range.uidStart } });
    const b = path.join(dir, "idm", "b");
    const rootfs = await mountRootfs({ diskPath: d, imageRootfs, bundleDir: b, idmapRange: range });
    const p = bundleMountPaths(b);
    expect(await isMountPoint(p.lowerDir)).to.equal(true);
    // The image's root-owned files show as the range's first id, through the lower bind and the overlay.
    expect((await fs.stat(path.join(rootfs, "etc", "debian_version"))).uid).to.equal(range.uidStart);
    expect(await mountRootfs({ diskPath: d, imageRootfs, bundleDir: b, idmapRange: range })).to.equal(rootfs);
    await unmountRootfs(b);
    expect(await mountsUnder(path.join(dir, "idm"))).to.deep.equal([]);
    await waitNoLoop(d);
    // The same disk mounted above (the positive control); with an image the bind cannot reach,
    // the run stops before mount(8): an error, and neither the disk nor an overlay is mounted.
    const missing = path.join(dir, "idm", "no-such-image");
    const err = await mountRootfs({ diskPath: d, imageRootfs: missing, bundleDir: b, idmapRange: range }).then(() => undefined, (e: unknown) => e);
    expect(err).to.have.property("code", "ERR_STORAGE_FAILED");
    expect(await mountsUnder(path.join(dir, "idm"))).to.deep.equal([]);
    await waitNoLoop(d);
  });

  it("spare pool: a new disk is a pre-formatted spare taken by rename; drainPool removes every spare", async () => {
    const storage = createVmStorage({ stateDir: path.join(dir, "p-state"), runDir: path.join(dir, "p-run"), imageRootfs, poolSize: 1 });
    const poolDir = path.join(dir, "p-state", "disks", ".pool");
    const spares = async (): Promise<string[]> => (await fs.readdir(poolDir).catch(() => [] as string[])).filter((f) => f.endsWith(".img"));
    try {
      storage.warmPool([32 * MiB]);
      for (let i = 0; i < 600 && (await spares()).length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      const [spare] = await spares();
      expect(spare).to.be.a("string");
      const ino = (await fs.stat(path.join(poolDir, spare as string))).ino;
      await storage.prepare("pool-1", 32 * MiB);
      expect((await fs.stat(storage.paths("pool-1").diskPath)).ino).to.equal(ino);
      await storage.mount("pool-1");
      expect((await storage.usage("pool-1"))?.totalBytes).to.be.greaterThan(20 * MiB).and.at.most(32 * MiB);
      await storage.unmount("pool-1");
      await storage.remove("pool-1");
    } finally {
      await storage.drainPool();
    }
    expect(existsSync(poolDir)).to.equal(false);
    expect(await fs.readdir(path.join(dir, "p-state", "disks"))).to.deep.equal([]);
  });
});
