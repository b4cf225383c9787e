/**
 * The tenant's VM storage, by hostname: the adapter the VM service uses (its `VmStorage` port)
 * over the disk and mount primitives of vm-disk.ts.
 *
 * ```
 * <stateDir>/disks/<hostname>.img     <runDir>/bundles/<hostname>/{disk,rootfs}
 * ```
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { readdirOrEmpty } from "../../shared/read-dir.js";
import { runCommand as run } from "../vm/spawn-server.js";
import {
  bundleMountPaths,
  isMountPoint,
  isPathUnder,
  mountRootfs,
  parseLosetupJson,
  prepareDisk,
  readMounts,
  removeDisk,
  unmountPath,
  unmountRootfs,
} from "./vm-disk.js";
import { copyDiskImage } from "./disk-copy.js";
import { DiskLedger } from "./disk-ledger.js";
import type { UidRange } from "../../shared/uid-ranges.js";

/** Options of {@link createVmStorage}. */
export interface VmStorageOptions {
  /** Tenant state dir; disks live in `<stateDir>/disks/`. */
  stateDir: string;
  /** Tenant run dir; mounts live in `<runDir>/bundles/<hostname>/`. */
  runDir: string;
  /** The base image rootfs (overlay lower layer), from `resolveImage`. */
  imageRootfs: string;
  /**
   * The tenant's id range. When given, the image is bound idmapped (on-disk ids 0.. shown as
   * `uidStart`..) at `<bundle>/lower` and that bind is the overlay's lower layer, and each disk's
   * `upper/` belongs to `uidStart`: inside the VM's user namespace the whole rootfs is root's,
   * on the host it is an unprivileged uid's. Undefined ⇒ the image itself (host-root owned).
   */
  uidRange?: UidRange;
  logger?: Logger;
  /**
   * Pre-formatted spare disks kept per disk size (default 2; 0 disables the pool). A new VM
   * takes one by rename instead of waiting for mkfs; the pool is refilled in the background.
   */
  poolSize?: number;
  /**
   * `paddock.disk_commit_ratio` (default 1): how much of the disks file system's free space
   * this daemon's disks may be promised; see disk-ledger.ts.
   */
  diskCommitRatio?: number;
}

/** Per-VM storage by hostname (see the VM service's `VmStorage` port). */
export interface TenantVmStorage {
  /**
   * Create `<stateDir>/disks/<hostname>.img` if missing (sparse ext4 of `sizeBytes`); an
   * existing disk is kept. Either way the disk is first admitted by the disk ledger.
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507) when the disks file system cannot back it.
   */
  prepare(hostname: string, sizeBytes: number): Promise<void>;
  /** Mount disk + overlay; returns the rootfs dir. Idempotent. */
  mount(hostname: string): Promise<string>;
  /** Unmount overlay then disk. Idempotent. */
  unmount(hostname: string): Promise<void>;
  /** Delete the disk file. Idempotent. */
  remove(hostname: string): Promise<void>;
  /**
   * Crash cleanup: unmount every mount under `<runDir>/bundles/<h>` and detach every loop
   * device backed by `<stateDir>/disks/<h>.img`, then delete the disk file, for each
   * hostname `h` not in `keep`. Mounts of kept VMs are left alone.
   */
  sweep(keep: ReadonlySet<string>): Promise<void>;
  /** Used and total bytes of the VM's disk filesystem; undefined when not mounted. */
  usage(hostname: string): Promise<{ usedBytes: number; totalBytes: number } | undefined>;
  /**
   * Admit `path` (absolute, on the state file system: a VM's suspend image directory), about
   * to be written with at most `maxBytes`, in the disk ledger: counted whole until it exists,
   * then by its unwritten part like a disk, until {@link releaseFile}.
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507) when the file system cannot back it.
   */
  reserveFile(path: string, maxBytes: number): Promise<void>;
  /** Stop counting `path` in the disk ledger (removed, or never written). Idempotent. */
  releaseFile(path: string): void;
  /**
   * Fill the spare-disk pool for these sizes in the background (see
   * {@link VmStorageOptions.poolSize}). Spares live in `<stateDir>/disks/.pool/`.
   */
  warmPool(sizesBytes: readonly number[]): void;
  /** Stop refilling, wait for mkfs runs in flight and delete every spare disk. Idempotent. */
  drainPool(): Promise<void>;
  /** Host paths of one VM's storage (for logs and tests). */
  paths(hostname: string): { diskPath: string; bundleDir: string; diskDir: string; rootfsDir: string };
  /**
   * Make `<stateDir>/disks/<hostname>.img` a copy of the disk image `fromImage` (a commit's; a
   * fork), admitted first by the disk ledger as a disk of `sizeBytes`. The disk must not exist.
   * On failure nothing is left (no file, not counted).
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507), ERR_STORAGE_FAILED (the copy, or a disk already there).
   */
  seed(hostname: string, sizeBytes: number, fromImage: string): Promise<void>;
  /** The disk ledger the tenant's disks and commits are admitted by (disk-ledger.ts). */
  readonly ledger: DiskLedger;
}

/** Hostnames are `<hostgroup>-N`; refuse anything that could escape the tenant's dirs. */
function checkHostname(hostname: string): void {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/i.test(hostname)) throw new RangeError(`invalid hostname ${JSON.stringify(hostname)}`);
}

/** Build the tenant's VM storage (no I/O until used). */
export function createVmStorage(options: VmStorageOptions): TenantVmStorage {
  const log = options.logger ?? silentLogger;
  const disksDir = path.join(options.stateDir, "disks");
  const bundlesDir = path.join(options.runDir, "bundles");
  const paths = (hostname: string): { diskPath: string; bundleDir: string; diskDir: string; rootfsDir: string } => {
    checkHostname(hostname);
    const bundleDir = path.join(bundlesDir, hostname);
    const m = bundleMountPaths(bundleDir);
    return { diskPath: path.join(disksDir, `${hostname}.img`), bundleDir, diskDir: m.diskDir, rootfsDir: m.rootfsDir };
  };

  const owner = options.uidRange === undefined ? undefined : { uid: options.uidRange.uidStart, gid: options.uidRange.uidStart };
  const ledger = new DiskLedger(disksDir, options.diskCommitRatio ?? 1);
  const pool = new SparePool(path.join(disksDir, ".pool"), options.poolSize ?? 2, log, owner);
  return {
    paths,
    ledger,
    async seed(hostname, sizeBytes, fromImage) {
      const p = paths(hostname);
      await fs.mkdir(disksDir, { recursive: true, mode: 0o700 });
      if (await fileExists(p.diskPath)) throw new PaddockError("ERR_STORAGE_FAILED", `disk ${p.diskPath} already exists`);
      await ledger.reserve(p.diskPath, sizeBytes);
      try {
        await copyDiskImage(fromImage, p.diskPath);
      } catch (err) {
        ledger.release(p.diskPath);
        await removeDisk(p.diskPath).catch(() => undefined);
        throw err;
      }
    },
    async prepare(hostname, sizeBytes) {
      const p = paths(hostname);
      const started = Date.now();
      await fs.mkdir(disksDir, { recursive: true, mode: 0o700 });
      await ledger.reserve(p.diskPath, sizeBytes);
      if (await fileExists(p.diskPath)) return;
      try {
        const spare = await pool.take(sizeBytes, p.diskPath);
        if (spare) log.debug("disk taken from the spare pool", { hostname, sizeBytes, ms: Date.now() - started });
        else if (await prepareDisk({ diskPath: p.diskPath, sizeBytes, owner })) log.info("disk created", { hostname, sizeBytes, ms: Date.now() - started });
      } catch (err) {
        if (!(await fileExists(p.diskPath))) ledger.release(p.diskPath);
        throw err;
      }
      pool.refill(sizeBytes);
    },
    warmPool(sizesBytes) {
      for (const size of new Set(sizesBytes)) pool.refill(size);
    },
    drainPool() {
      return pool.drain();
    },
    async mount(hostname) {
      const p = paths(hostname);
      await fs.mkdir(bundlesDir, { recursive: true, mode: 0o711 });
      await fs.chmod(bundlesDir, 0o711);
      // mountRootfs makes the bundle dir 0711. With a uid range the lower layer is the image bound idmapped at `<bundle>/lower` (one
      // bind per VM, so everything a VM mounts lives under its bundle dir and goes with it).
      return mountRootfs({ diskPath: p.diskPath, imageRootfs: options.imageRootfs, bundleDir: p.bundleDir, ...(options.uidRange === undefined ? {} : { idmapRange: options.uidRange }) });
    },
    async unmount(hostname) {
      await unmountRootfs(paths(hostname).bundleDir);
    },
    async remove(hostname) {
      const { diskPath } = paths(hostname);
      await removeDisk(diskPath);
      ledger.release(diskPath);
    },

    async reserveFile(file, maxBytes) {
      await ledger.reserve(file, maxBytes);
    },
    releaseFile(file) {
      ledger.release(file);
    },
    async usage(hostname) {
      const p = paths(hostname);
      if (!(await isMountPoint(p.diskDir))) return undefined;
      const st = await fs.statfs(p.diskDir);
      return { usedBytes: (st.blocks - st.bfree) * st.bsize, totalBytes: st.blocks * st.bsize };
    },
    async sweep(keep) {
      // 1. Mounts under bundles/<h> for h not kept, deepest first.
      const orphanMounts = (await readMounts())
        .map((m) => m.mountPoint)
        .filter((mp) => {
          if (!isPathUnder(mp, bundlesDir) || mp === path.resolve(bundlesDir)) return false;
          const h = path.relative(bundlesDir, mp).split(path.sep)[0] ?? "";
          return !keep.has(h);
        })
        .sort((a, b) => b.split("/").length - a.split("/").length || b.localeCompare(a));
      for (const mp of orphanMounts) {
        log.warn("unmounting orphan mount", { mountPoint: mp });
        await unmountPath(mp).catch((err: unknown) => log.error("orphan unmount failed", { mountPoint: mp, err }));
      }
      // 2. Loop devices backed by orphan disks (left when a lazy unmount or a crash skipped autoclear).
      // A tenant whose disks dir was never made (its first start) has none to scan for.
      const losetup = (await fileExists(disksDir)) ? await run("losetup", ["-J", "--list"], { allowFailure: true }) : undefined;
      if (losetup?.exitCode === 0) {
        for (const dev of parseLosetupJson(losetup.stdout)) {
          if (!isPathUnder(dev.backFile, disksDir)) continue;
          const h = path.basename(dev.backFile).replace(/\.img(\.tmp)?$/, "");
          if (keep.has(h)) continue;
          log.warn("detaching orphan loop device", { device: dev.name, backFile: dev.backFile });
          await run("losetup", ["-d", dev.name], { allowFailure: true });
        }
      }
      // 3. Spare disks (left by a crash; the pool refills on demand), then disk files of no VM.
      await pool.drain();
      pool.reopen();
      for (const entry of await readdirOrEmpty(disksDir)) {
        const h = entry.replace(/\.img(\.tmp)?$/, "");
        if (h === entry || keep.has(h)) continue;
        log.warn("removing orphan disk", { disk: entry });
        await fs.rm(path.join(disksDir, entry), { force: true });
        ledger.release(path.join(disksDir, entry));
      }
    },
  };
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}

/**
 * Pre-formatted spare disks, `<dir>/<sizeBytes>-<n>.img`, made with the same
 * {@link prepareDisk} as a VM's own disk (so a spare is exactly what mkfs would have made) and
 * handed out by rename(2) on the same filesystem. Refills run one mkfs at a time in the
 * background. Everything is deleted by {@link drain} (daemon stop, purge, start-up sweep).
 */
class SparePool {
  private readonly ready = new Map<number, string[]>();
  private readonly wanted = new Set<number>();
  private running: Promise<void> | undefined;
  private closed = false;
  private seq = 0;

  constructor(private readonly dir: string, private readonly size: number, private readonly log: Logger, private readonly owner: { uid: number; gid: number } | undefined) {}

  /** Move a spare of `sizeBytes` to `target`; false when none is ready. */
  async take(sizeBytes: number, target: string): Promise<boolean> {
    const list = this.ready.get(sizeBytes);
    const spare = list?.shift();
    if (spare === undefined) return false;
    try {
      await fs.rename(spare, target);
      return true;
    } catch (err) {
      this.log.warn("spare disk unusable; formatting a new one", { spare, err });
      await fs.rm(spare, { force: true }).catch(() => undefined);
      return false;
    }
  }

  /** Top the pool of `sizeBytes` up to its size, in the background. */
  refill(sizeBytes: number): void {
    if (this.size <= 0 || this.closed) return;
    this.wanted.add(sizeBytes);
    this.running ??= this.fill().finally(() => {
      this.running = undefined;
    });
  }

  private async fill(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (;;) {
      const size = [...this.wanted].find((s) => (this.ready.get(s)?.length ?? 0) < this.size);
      if (size === undefined || this.closed) return;
      const file = path.join(this.dir, `${size}-${++this.seq}.img`);
      try {
        await prepareDisk({ diskPath: file, sizeBytes: size, background: true, owner: this.owner });
      } catch (err) {
        this.log.warn("spare disk could not be made; the pool stops refilling this size", { sizeBytes: size, err });
        this.wanted.delete(size);
        continue;
      }
      if (this.closed) {
        await fs.rm(file, { force: true });
        return;
      }
      const list = this.ready.get(size) ?? [];
      list.push(file);
      this.ready.set(size, list);
    }
  }

  /** Stop refilling, wait for the mkfs in flight, delete the pool dir. */
  async drain(): Promise<void> {
    this.closed = true;
    await this.running?.catch(() => undefined);
    this.ready.clear();
    this.wanted.clear();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  /** Allow refills again after a {@link drain}. */
  reopen(): void {
    this.closed = false;
  }
}
