/**
 * tenant-daemon/vm/vm-service.ts `writeGuestFile` (etc/hostname, etc/resolv.conf before a VM
 * starts) on a rootfs a guest prepared on an earlier boot: guest symlinks must not lead the
 * host's write outside the rootfs. A plain temp dir stands in for the rootfs; no root needed.
 * Each refusal sits next to a positive control that shows the write lands when the tree is benign.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { writeGuestFile } from "../../tenant-daemon/vm/vm-service.js";

describe("security: writeGuestFile into a guest-written rootfs", () => {
  let root = "";
  let rootfs = "";
  let outside = "";
  let victim = "";

  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-rootfs-"));
    rootfs = path.join(root, "rootfs");
    outside = path.join(root, "outside");
    victim = path.join(root, "victim");
    await fs.mkdir(rootfs);
    await fs.mkdir(outside);
    await fs.writeFile(victim, "host file\n");
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("positive control: writes etc/hostname, creating etc, and replaces an existing file", async () => {
    await writeGuestFile(rootfs, "etc/hostname", "sbox-1\n");
    expect(await fs.readFile(path.join(rootfs, "etc/hostname"), "utf8")).to.equal("sbox-1\n");
    await writeGuestFile(rootfs, "etc/hostname", "sbox-2\n");
    expect(await fs.readFile(path.join(rootfs, "etc/hostname"), "utf8")).to.equal("sbox-2\n");
  });

  it("refuses when a directory on the way (etc) is a symlink out of the rootfs", async () => {
    await fs.symlink(outside, path.join(rootfs, "etc"));
    const err = await writeGuestFile(rootfs, "etc/hostname", "sbox-1\n").then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err, "ERR_VM_START_FAILED"), String(err)).to.equal(true);
    expect(await fs.readdir(outside)).to.deep.equal([]);
  });

  it("replaces a final-component symlink instead of writing through it", async () => {
    await fs.mkdir(path.join(rootfs, "etc"));
    await fs.symlink(victim, path.join(rootfs, "etc/resolv.conf"));
    await writeGuestFile(rootfs, "etc/resolv.conf", "nameserver 10.0.0.1\n");
    expect(await fs.readFile(victim, "utf8")).to.equal("host file\n");
    const st = await fs.lstat(path.join(rootfs, "etc/resolv.conf"));
    expect(st.isFile()).to.equal(true);
    expect(await fs.readFile(path.join(rootfs, "etc/resolv.conf"), "utf8")).to.equal("nameserver 10.0.0.1\n");
  });

  it("writes hostname and resolv.conf concurrently into a rootfs without etc", async () => {
    await Promise.all([writeGuestFile(rootfs, "etc/hostname", "h\n"), writeGuestFile(rootfs, "etc/resolv.conf", "r\n")]);
    expect((await fs.readdir(path.join(rootfs, "etc"))).sort()).to.deep.equal(["hostname", "resolv.conf"]);
  });
});
