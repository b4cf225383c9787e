/**
 * Whole-file copies of VM disks (commits and forks, tenant-daemon/vm/vm-commit.ts) and the
 * file-system freeze that makes a copy of a running VM's disk consistent.
 *
 * The host copies the `.img` file as a whole, a host-owned file in `<stateDir>/disks/`; it never
 * opens anything inside the VM's file system (see docs/security.md).
 *
 * Copy: cp(1) of coreutils ≥ 9 tries a reflink first (`--reflink=auto`: instant on btrfs/XFS,
 * a no-op on ext4) and otherwise copies only the data extents it finds with SEEK_DATA/SEEK_HOLE,
 * through copy_file_range(2), leaving holes as holes (`--sparse=auto`), so a 2 GiB disk with
 * 100 MB written costs about 100 MB of I/O. See
 * https://www.gnu.org/software/coreutils/manual/html_node/cp-invocation.html and
 * lseek(2) https://man7.org/linux/man-pages/man2/lseek.2.html.
 *
 * Freeze: fsfreeze(8) on the host's loop mount of the disk (FIFREEZE flushes the journal and
 * dirty data and blocks new writes), thawed in a `finally`, with a timeout on the freeze.
 * https://man7.org/linux/man-pages/man8/fsfreeze.8.html
 */
import { promises as fs } from "node:fs";
import { PaddockError } from "../../shared/errors.js";
import { run } from "../../shared/exec.js";
import { readMounts } from "./vm-disk.js";

const FREEZE_TIMEOUT_MS = 15_000;
/** A copy of a disk of a few GiB runs well under this on any disk; past it something is wrong. */
const COPY_TIMEOUT_MS = 10 * 60_000;

/** How {@link copyDiskImage} copies: `extents` (the default; reflink when the fs has it) or `sparse-always` (the bench's comparison). */
export type DiskCopyMode = "extents" | "sparse-always";

/**
 * Copy the disk image `src` to `dst` (which must not exist), mode 0600, holes kept. Written to
 * `<dst>.tmp` and renamed into place, so `dst` either does not exist or is the whole copy.
 * @throws PaddockError ERR_STORAGE_FAILED with cp's stderr (e.g. ENOSPC); nothing is left at `dst`.
 */
export async function copyDiskImage(src: string, dst: string, mode: DiskCopyMode = "extents"): Promise<void> {
  const tmp = `${dst}.tmp`;
  await fs.rm(tmp, { force: true });
  const flags = mode === "extents" ? ["--reflink=auto", "--sparse=auto"] : ["--reflink=never", "--sparse=always"];
  try {
    await run("cp", [...flags, "--no-preserve=all", "--", src, tmp], { timeoutMs: COPY_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
    await fs.chmod(tmp, 0o600);
    await fs.rename(tmp, dst);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    if (err instanceof PaddockError) throw err;
    throw new PaddockError("ERR_STORAGE_FAILED", `copying disk ${src} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** Bytes a file holds on disk (st_blocks × 512; a sparse file's holes cost nothing). */
export async function allocatedBytes(file: string): Promise<number> {
  return (await fs.stat(file)).blocks * 512;
}

/**
 * Freeze the ext4 file system mounted at `mountDir` (fsfreeze --freeze: the journal and dirty
 * data are written out, new writes block). `mountDir` must be a mount point of type ext4 that
 * the host made (the VM's `<bundle>/disk`), checked in /proc/self/mountinfo first. Always pair
 * with {@link thawMount} in a `finally`.
 * @throws PaddockError ERR_STORAGE_FAILED when `mountDir` is not an ext4 mount, or the freeze
 *   fails or takes longer than 15 s.
 */
export async function freezeMount(mountDir: string): Promise<void> {
  const m = (await readMounts()).filter((x) => x.mountPoint === mountDir).pop();
  if (m === undefined || m.fsType !== "ext4") throw new PaddockError("ERR_STORAGE_FAILED", `${mountDir} is not the ext4 mount of a VM disk`);
  await run("fsfreeze", ["--freeze", mountDir], { timeoutMs: FREEZE_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
}

/**
 * Thaw what {@link freezeMount} froze (fsfreeze --unfreeze). A file system that is not frozen
 * (the freeze itself failed) is fine.
 * @throws PaddockError ERR_STORAGE_FAILED when the thaw fails otherwise.
 */
export async function thawMount(mountDir: string): Promise<void> {
  const thaw = await run("fsfreeze", ["--unfreeze", mountDir], { timeoutMs: FREEZE_TIMEOUT_MS, allowFailure: true });
  // EINVAL: it was not frozen.
  if (thaw.exitCode !== 0 && !/Invalid argument/i.test(thaw.stderr)) {
    throw new PaddockError("ERR_STORAGE_FAILED", `fsfreeze --unfreeze ${mountDir} failed: ${thaw.stderr.trim()}`);
  }
}
