/**
 * Per-VM storage (`storage: image`): a sparse ext4 file of `storage_size` per
 * VM, loop-mounted, holding the upper and work dirs of an overlay whose lower layer is the
 * read-only base image rootfs.
 *
 * ```
 * <stateDir>/disks/<hostname>.img          sparse ext4 file (kept for persistent VMs)
 * <runDir>/bundles/<hostname>/disk/        loop mount of the .img (upper/, work/ inside)
 * <runDir>/bundles/<hostname>/lower/       the image bound idmapped to the tenant's uid range (vm-storage.ts)
 * <runDir>/bundles/<hostname>/rootfs/      overlay lowerdir=lower (or the image),upperdir=disk/upper,workdir=disk/work
 * ```
 *
 * A full disk is ENOSPC inside the VM only: every write the VM makes lands in the upper layer,
 * i.e. on the loop filesystem, whose size is fixed. The lower layer is never written through
 * an overlay (overlayfs copies up on write), so the VM can neither see beyond nor modify the
 * base image. See https://docs.kernel.org/filesystems/overlayfs.html.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode, isPaddockError } from "../../shared/errors.js";
import { trimStderr } from "../../shared/exec.js";
import { runCommand as run } from "../vm/spawn-server.js";
import { sleep } from "../../shared/time.js";
import type { UidRange } from "../../shared/uid-ranges.js";
import { idmapPrefix } from "../runtime/nsutil.js";

/** Smallest disk Paddock makes: ext4 with a journal needs a few MiB; 16 MiB leaves room for a useful upper layer. */
export const MIN_DISK_BYTES = 16 * 1024 * 1024;
const MKFS_TIMEOUT_MS = 120_000;
const MOUNT_TIMEOUT_MS = 30_000;
const UNMOUNT_RETRIES = 5;
const UNMOUNT_RETRY_DELAY_MS = 200;

/** Paths of one VM's mounts inside its bundle dir. */
export function bundleMountPaths(bundleDir: string): { diskDir: string; rootfsDir: string; upperDir: string; workDir: string; lowerDir: string } {
  const diskDir = path.join(bundleDir, "disk");
  return {
    diskDir, rootfsDir: path.join(bundleDir, "rootfs"), upperDir: path.join(diskDir, LAYER_DIRS.upper), workDir: path.join(diskDir, LAYER_DIRS.work),
    lowerDir: path.join(bundleDir, "lower"),
  };
}

/** The overlay's upper and work dirs at the root of a VM disk. */
const LAYER_DIRS = { upper: "upper", work: "work" } as const;

/** fstab(5) field: spaces, tabs, newlines and backslashes as octal escapes. */
function fstabField(text: string): string {
  return text.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

/** One line of /proc/self/mountinfo (the fields Paddock reads). */
export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Undo the octal escapes (`\040` = space, `\012` = newline) of /proc/self/mountinfo paths. */
function unescapeMountField(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/**
 * Parse /proc/self/mountinfo text (pure). Format: proc(5) — `id parent major:minor root
 * mountpoint options [optional…] - fstype source superoptions`.
 */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const post = line.slice(sep + 3).split(" ");
    const mountPoint = pre[4];
    if (mountPoint === undefined) continue;
    out.push({ mountPoint: unescapeMountField(mountPoint), fsType: post[0] ?? "", source: unescapeMountField(post[1] ?? "") });
  }
  return out;
}

/** The current mount table of this process's mount namespace. */
export async function readMounts(): Promise<MountInfo[]> {
  return parseMountInfo(await fs.readFile("/proc/self/mountinfo", "utf8"));
}

/** True when `dir` is a mount point (exact path match in /proc/self/mountinfo). */
export async function isMountPoint(dir: string): Promise<boolean> {
  const abs = path.resolve(dir);
  return (await readMounts()).some((m) => m.mountPoint === abs);
}

/** True when `child` is `parent` or inside it (pure, on resolved paths). */
export function isPathUnder(child: string, parent: string): boolean {
  const c = path.resolve(child);
  const p = path.resolve(parent);
  return c === p || c.startsWith(p.endsWith("/") ? p : p + "/");
}

/** overlayfs separates options with `,` and lower dirs with `:`; such paths cannot be passed safely. */
function checkOverlayPath(what: string, p: string): void {
  if (/[,:\\\n]/.test(p)) throw new PaddockError("ERR_STORAGE_FAILED", `${what} ${JSON.stringify(p)} contains a character overlayfs options cannot carry (, : \\ newline)`);
}

/**
 * Create the VM's disk when missing: a sparse file of `sizeBytes`, formatted ext4. An existing
 * disk is kept as is (persistent VM restart). Creation happens on `<diskPath>.tmp` and is
 * renamed into place only after mkfs succeeded, so a crash never leaves a half-made disk
 * under the real name.
 *
 * mkfs flags, for speed and safety on a fresh sparse file:
 * - `-E lazy_itable_init=1,lazy_journal_init=1`: skip zeroing inode tables and the journal;
 *   the file is sparse (reads as zeros) so there is nothing stale to zero, and mkfs stays
 *   well under a second instead of writing every table.
 * - `-E nodiscard`: discard on a fresh sparse file is a no-op that only costs time.
 * - `-m 0`: no blocks reserved for root; the VM's root is its main user and a 5 % reserve
 *   would silently shrink `storage_size`.
 * - a journal is kept (default ext4 features) so a persistent VM's disk survives a host crash.
 * - `-F`: the target is a regular file, not a block device.
 *
 * `background`: run mkfs at the lowest CPU priority (`nice -n 19`; the spare-disk pool).
 * `owner`: host uid/gid of the VM's root (its user namespace); `upper/` is made theirs, so the
 * overlay's root directory belongs to the guest's root. The rest stays host root's.
 * @returns true when a new disk was made, false when an existing one was kept
 * @throws PaddockError ERR_STORAGE_FAILED (mkfs error, size below {@link MIN_DISK_BYTES})
 */
export async function prepareDisk(options: { diskPath: string; sizeBytes: number; background?: boolean; owner?: { uid: number; gid: number } }): Promise<boolean> {
  const { diskPath, sizeBytes } = options;
  try {
    const st = await fs.stat(diskPath);
    if (st.isFile()) return false;
    throw new PaddockError("ERR_STORAGE_FAILED", `disk path ${diskPath} exists and is not a regular file`);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_DISK_BYTES) {
    throw new PaddockError("ERR_STORAGE_FAILED", `disk size ${sizeBytes} bytes is below the minimum of ${MIN_DISK_BYTES} bytes`);
  }
  await fs.mkdir(path.dirname(diskPath), { recursive: true, mode: 0o700 });
  const tmp = `${diskPath}.tmp`;
  const tree = `${diskPath}.tree`;
  await fs.rm(tmp, { force: true });
  await fs.rm(tree, { recursive: true, force: true });
  try {
    const handle = await fs.open(tmp, "wx", 0o600);
    try {
      await handle.truncate(sizeBytes); // sparse: no blocks allocated yet
    } finally {
      await handle.close();
    }
    // The overlay's upper/ and work/ are made by mkfs (-d copies a directory tree into the new
    // filesystem), so the first mount can do disk and overlay in one mount(8) run.
    await fs.mkdir(path.join(tree, LAYER_DIRS.upper), { recursive: true, mode: 0o755 });
    await fs.mkdir(path.join(tree, LAYER_DIRS.work), { mode: 0o700 });
    if (options.owner !== undefined) await fs.chown(path.join(tree, LAYER_DIRS.upper), options.owner.uid, options.owner.gid);
    await fs.chmod(tree, 0o755);
    const mkfs = ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "paddock-vm", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-d", tree, tmp];
    // A background disk (spare pool) runs at the lowest CPU priority: it must not slow a create in progress.
    const argv = options.background ? ["nice", "-n", "19", ...mkfs] : mkfs;
    await run(argv[0] as string, argv.slice(1), {
      timeoutMs: MKFS_TIMEOUT_MS,
      errorCode: "ERR_STORAGE_FAILED",
    });
    await fs.rename(tmp, diskPath);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    await fs.rm(tree, { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof PaddockError) throw err;
    throw new PaddockError("ERR_STORAGE_FAILED", `creating disk ${diskPath} failed: ${(err as Error).message}`, { cause: err });
  }
  await fs.rm(tree, { recursive: true, force: true });
  return true;
}

/**
 * Mount the VM's root filesystem:
 * 1. with `idmapRange`, bind the image idmapped at `<bundle>/lower` (nsutil.ts `idmapBind`; the
 *    overlay's lower layer), else use `imageRootfs` itself as the lower layer;
 * 2. loop-mount the disk at `<bundle>/disk` (`mount -o loop` sets autoclear, so the loop
 *    device goes away with the last unmount);
 * 3. make `upper/` and `work/` on it;
 * 4. mount the overlay at `<bundle>/rootfs`.
 * The common case (nothing mounted yet, a disk made by {@link prepareDisk}) is one process:
 * `paddock-nsutil idmap … mount --fstab <bundle>/fstab -a`. Idempotent: a step whose mount is
 * already there is skipped.
 * @returns the rootfs directory (the overlay mount point)
 * @throws PaddockError ERR_STORAGE_FAILED with mount's or the helper's stderr (e.g. a corrupt
 *   disk); the disk mount made by this call is undone, an idmapped bind is left for
 *   {@link unmountRootfs}.
 */
export async function mountRootfs(options: { diskPath: string; imageRootfs: string; bundleDir: string; idmapRange?: UidRange }): Promise<string> {
  // The disk and the overlay are nosuid,nodev: no setuid file or device node on a VM's disk
  // means anything, in the guest or should the host ever touch it.
  const p = bundleMountPaths(options.bundleDir);
  const lower = options.idmapRange === undefined ? path.resolve(options.imageRootfs) : p.lowerDir;
  checkOverlayPath("image rootfs", lower);
  checkOverlayPath("bundle dir", p.upperDir);
  // The VM's root (an unprivileged host uid) must traverse the bundle dir to reach its rootfs
  // while the runtime sets it up: 0711 (no listing); the disk's mount point stays 0700.
  await fs.mkdir(options.bundleDir, { recursive: true, mode: 0o711 });
  await fs.chmod(options.bundleDir, 0o711);
  await Promise.all([
    fs.mkdir(p.diskDir, { recursive: true, mode: 0o700 }),
    fs.mkdir(p.rootfsDir, { recursive: true, mode: 0o755 }),
    options.idmapRange === undefined ? undefined : fs.mkdir(p.lowerDir, { recursive: true, mode: 0o755 }),
  ]);
  let mounted = new Set((await readMounts()).map((m) => m.mountPoint));
  // The idmapped lower bind, when it is still to be made: as the prefix of the mount run below,
  // or on its own when that run is skipped.
  const bindLower = options.idmapRange !== undefined && !mounted.has(p.lowerDir) ? idmapPrefix(path.resolve(options.imageRootfs), p.lowerDir, options.idmapRange) : [];
  let mountedDiskNow = false;
  try {
    const overlayOptions = `nosuid,nodev,lowerdir=${lower},upperdir=${p.upperDir},workdir=${p.workDir}`;
    if (!mounted.has(p.diskDir) && !mounted.has(p.rootfsDir)) {
      // Fast path: the lower bind and both mounts in one process, mount(8) over a two-line fstab
      // (the disk's upper/ and work/ exist when prepareDisk made it). If anything is missing (a
      // disk from an older Paddock without them) the step-by-step path below finishes the job.
      const fstab = path.join(options.bundleDir, "fstab");
      await fs.writeFile(fstab, [
        `${fstabField(path.resolve(options.diskPath))} ${fstabField(p.diskDir)} ext4 loop,noatime,nosuid,nodev 0 0`,
        `overlay ${fstabField(p.rootfsDir)} overlay ${fstabField(overlayOptions)} 0 0`,
      ].join("\n") + "\n", { mode: 0o600 });
      const argv = [...bindLower, "mount", "--fstab", fstab, "-a"];
      const r = await run(argv[0] as string, argv.slice(1), { timeoutMs: MOUNT_TIMEOUT_MS, allowFailure: true });
      mounted = new Set((await readMounts()).map((m) => m.mountPoint));
      mountedDiskNow = mounted.has(p.diskDir);
      // Never an overlay over the empty mount point: without the bind, stop here.
      if (bindLower.length > 0 && !mounted.has(p.lowerDir)) throw new PaddockError("ERR_STORAGE_FAILED", `idmapped bind of ${options.imageRootfs} at ${p.lowerDir} failed: ${trimStderr(r.stderr)}`);
      if (r.exitCode === 0 && mountedDiskNow && mounted.has(p.rootfsDir)) return p.rootfsDir;
    } else if (bindLower.length > 0) {
      await run(bindLower[0] as string, bindLower.slice(1), { timeoutMs: MOUNT_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
    }
    if (!mounted.has(p.diskDir)) {
      await run("mount", ["-t", "ext4", "-o", "loop,noatime,nosuid,nodev", options.diskPath, p.diskDir], { timeoutMs: MOUNT_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
      mountedDiskNow = true;
    }
    await fs.mkdir(p.upperDir, { recursive: true, mode: 0o755 });
    await fs.mkdir(p.workDir, { recursive: true, mode: 0o700 });
    if (!mounted.has(p.rootfsDir)) {
      await run("mount", ["-t", "overlay", "overlay", "-o", overlayOptions, p.rootfsDir], {
        timeoutMs: MOUNT_TIMEOUT_MS,
        errorCode: "ERR_STORAGE_FAILED",
      });
    }
  } catch (err) {
    if (mountedDiskNow) await unmountPath(p.diskDir).catch(() => undefined);
    if (err instanceof PaddockError) throw err;
    throw new PaddockError("ERR_STORAGE_FAILED", `mounting the rootfs in ${options.bundleDir} failed: ${(err as Error).message}`, { cause: err });
  }
  return p.rootfsDir;
}

/**
 * Unmount `dir` if it is a mount point: retries while busy, then a lazy unmount (detached
 * now, released when the last user goes) as the last resort.
 * @returns "unmounted" | "lazy" | "not-mounted"
 * @throws PaddockError ERR_STORAGE_FAILED when even the lazy unmount fails
 */
export async function unmountPath(dir: string): Promise<"unmounted" | "lazy" | "not-mounted"> {
  const abs = path.resolve(dir);
  let lastErr: unknown;
  for (let attempt = 0; attempt < UNMOUNT_RETRIES; attempt++) {
    if (!(await isMountPoint(abs))) return attempt === 0 ? "not-mounted" : "unmounted";
    try {
      await run("umount", [abs], { timeoutMs: MOUNT_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
    } catch (err) {
      if (!isPaddockError(err)) throw err;
      lastErr = err;
      await sleep(UNMOUNT_RETRY_DELAY_MS);
    }
  }
  if (!(await isMountPoint(abs))) return "unmounted";
  try {
    await run("umount", ["-l", abs], { timeoutMs: MOUNT_TIMEOUT_MS, errorCode: "ERR_STORAGE_FAILED" });
  } catch (err) {
    throw new PaddockError("ERR_STORAGE_FAILED", `cannot unmount ${abs}: ${(err as Error).message}`, { cause: lastErr ?? err });
  }
  return "lazy";
}

/**
 * Unmount the VM's overlay, then its disk (which frees the autoclear loop device), then its
 * idmapped image bind when there is one.
 * Idempotent: what is not mounted is skipped. Stop the VM first; while its sandbox runs, the
 * sandbox's own mount namespace keeps the filesystems alive.
 * @throws PaddockError ERR_STORAGE_FAILED
 */
export async function unmountRootfs(bundleDir: string): Promise<void> {
  const p = bundleMountPaths(path.resolve(bundleDir));
  // Common case, both mounted: one `umount rootfs disk` (in that order). Anything else, or a
  // failure (busy), takes the per-mount path with its retries and lazy fallback.
  const mounted = new Set((await readMounts()).map((m) => m.mountPoint));
  if (mounted.has(p.rootfsDir) && mounted.has(p.diskDir)) {
    const targets = [p.rootfsDir, p.diskDir, ...(mounted.has(p.lowerDir) ? [p.lowerDir] : [])];
    const r = await run("umount", targets, { timeoutMs: MOUNT_TIMEOUT_MS, allowFailure: true });
    if (r.exitCode === 0) return;
  }
  await unmountPath(p.rootfsDir);
  await unmountPath(p.diskDir);
  await unmountPath(p.lowerDir);
}

/**
 * `rm -r` of a host directory that held a VM's mounts (its bundle dir, its agent dir), only when
 * nothing is mounted at or below it any more: with a guest rootfs or disk still mounted there, a
 * recursive removal would walk into the guest's own tree. Symlinks are removed, never followed
 * (fs.rm). No-op when missing.
 * @throws PaddockError ERR_STORAGE_FAILED naming the mounts still there (nothing removed).
 */
export async function removeUnmountedTree(dir: string): Promise<void> {
  const abs = path.resolve(dir);
  const still = (await readMounts()).map((m) => m.mountPoint).filter((mp) => isPathUnder(mp, abs));
  if (still.length > 0) throw new PaddockError("ERR_STORAGE_FAILED", `not removing ${abs}: still mounted below it: ${still.join(", ")}`);
  await fs.rm(abs, { recursive: true, force: true });
}

/** Delete the VM's disk file (and a leftover `.tmp`); no-op when missing. */
export async function removeDisk(diskPath: string): Promise<void> {
  await fs.rm(diskPath, { force: true });
  await fs.rm(`${diskPath}.tmp`, { force: true });
}

/** One loop device of `losetup -J`. */
export interface LoopDevice {
  name: string;
  backFile: string;
}

/** Parse `losetup -J --list` output (pure). Empty output (no loop devices) ⇒ []. The kernel appends " (deleted)" to removed backing files. */
export function parseLosetupJson(text: string): LoopDevice[] {
  if (text.trim() === "") return [];
  const parsed = JSON.parse(text) as { loopdevices?: { name?: unknown; "back-file"?: unknown }[] };
  return (parsed.loopdevices ?? []).map((d) => ({
    name: String(d.name ?? ""),
    backFile: String(d["back-file"] ?? "").replace(/ \(deleted\)$/, ""),
  }));
}

/**
 * Crash cleanup: unmount everything mounted under `runDir` (deepest first; nothing outside
 * it is touched), then detach loop devices whose backing file lies under `disksDir`.
 * @returns what was cleaned, for the log
 * @throws PaddockError ERR_STORAGE_FAILED when an unmount or detach fails
 */
export async function sweepStorage(options: { runDir: string; disksDir?: string }): Promise<{ unmounted: string[]; detached: string[] }> {
  const runDir = path.resolve(options.runDir);
  const under = (await readMounts()).map((m) => m.mountPoint).filter((mp) => mp !== runDir && isPathUnder(mp, runDir));
  // Deepest first; the same path may be stacked several times.
  under.sort((a, b) => b.split("/").length - a.split("/").length || b.localeCompare(a));
  const unmounted: string[] = [];
  for (const mp of under) {
    if ((await unmountPath(mp)) !== "not-mounted") unmounted.push(mp);
  }
  const detached: string[] = [];
  if (options.disksDir !== undefined) {
    const disksDir = path.resolve(options.disksDir);
    const r = await run("losetup", ["-J", "--list"], { errorCode: "ERR_STORAGE_FAILED" });
    for (const dev of parseLosetupJson(r.stdout)) {
      if (dev.backFile === "" || !isPathUnder(dev.backFile, disksDir)) continue;
      const d = await run("losetup", ["-d", dev.name], { allowFailure: true });
      // A device that vanished meanwhile (autoclear) is fine.
      if (d.exitCode !== 0 && !/No such device/i.test(d.stderr)) {
        throw new PaddockError("ERR_STORAGE_FAILED", `losetup -d ${dev.name} failed: ${d.stderr.trim()}`);
      }
      detached.push(dev.name);
    }
  }
  return { unmounted, detached };
}
