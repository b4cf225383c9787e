/**
 * Disk reservation (the storage adapter's admission check): VM disks are sparse files
 * (vm-disk.ts), so a disk of `storage_size` costs almost nothing until the VM writes, and
 * nothing stops fifty VMs from each being promised more than the file system holds. The ledger
 * keeps what this daemon has promised and refuses a disk when
 *
 * ```
 * Σ unwritten(disk) + need  >  ratio × free(<stateDir>/disks)
 * unwritten(disk) = size − allocated blocks (stat(2) st_blocks × 512)
 * need            = the new disk's size, or an existing disk's own unwritten part
 * free            = statfs(2) f_bavail × f_bsize
 * ```
 *
 * What a VM already wrote has left `free` and its `unwritten` alike, so the check stays exact
 * as VMs fill their disks. The running set of disks is read from `<stateDir>/disks` once;
 * after that a check costs one statfs plus one stat per disk of this daemon (no directory
 * walk). Other tenants' disks on the same file system are not known here: they show only
 * through `free` (see the README "Disk" section: one file system per tenant, or a ratio below 1).
 *
 * See statfs(2) https://man7.org/linux/man-pages/man2/statfs.2.html and the st_blocks unit in
 * inode(7) https://man7.org/linux/man-pages/man7/inode.7.html.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { readdirOrEmpty } from "../../shared/read-dir.js";

/** The file system facts a check reads (injectable for unit tests). */
export interface DiskLedgerFs {
  /** Bytes available to unprivileged writers on the file system holding `dir`. */
  freeBytes(dir: string): Promise<number>;
  /** Apparent size and allocated bytes of `file`; undefined when it does not exist. */
  usage(file: string): Promise<{ sizeBytes: number; allocatedBytes: number } | undefined>;
  /** Names in `dir` ([] when it does not exist). */
  list(dir: string): Promise<string[]>;
}

/** The real file system. */
export const hostDiskLedgerFs: DiskLedgerFs = {
  async freeBytes(dir) {
    const st = await fs.statfs(dir);
    return st.bavail * st.bsize;
  },
  async usage(file) {
    try {
      const st = await fs.stat(file);
      return { sizeBytes: st.size, allocatedBytes: st.blocks * 512 };
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  },
  list: readdirOrEmpty,
};

/** The numbers behind a decision of {@link DiskLedger.reserve}, bytes. */
export interface DiskReservation {
  /** What this disk adds to the promise: its size when new, its unwritten part when it exists. */
  needBytes: number;
  /** Unwritten part of every other disk of this daemon. */
  reservedBytes: number;
  freeBytes: number;
  /** `ratio × freeBytes`, rounded down. */
  allowedBytes: number;
}

/** The disks this daemon has promised, by path, and the admission check against free space. */
export class DiskLedger {
  /** Disk path → apparent size, bytes (disks made, and disks being made). */
  private readonly disks = new Map<string, number>();
  /**
   * Files that never grow past what is copied into them (commit images,
   * tenant-daemon/storage/commit-store.ts): path → bytes the copy writes. Their promise is what
   * the copy has still to write, 0 once it is done.
   */
  private readonly fixed = new Map<string, number>();
  private loaded: Promise<void> | undefined;

  /**
   * @param disksDir `<stateDir>/disks`; its `*.img` files are this daemon's disks.
   * @param ratio `paddock.disk_commit_ratio` (> 0; 1 ⇒ never promise more than the free space).
   */
  constructor(private readonly disksDir: string, private readonly ratio: number, private readonly host: DiskLedgerFs = hostDiskLedgerFs) {}

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      for (const name of await this.host.list(this.disksDir)) {
        if (!name.endsWith(".img")) continue;
        const file = path.join(this.disksDir, name);
        const u = await this.host.usage(file);
        if (u !== undefined && !this.disks.has(file)) this.disks.set(file, u.sizeBytes);
      }
    })().catch((err: unknown) => {
      this.loaded = undefined;
      throw err;
    });
    return this.loaded;
  }

  /**
   * Admit the disk at `diskPath` (`sizeBytes` when it has to be made) and count it from now
   * on. Concurrent calls see each other: a disk being admitted counts with its full size.
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507) past the commit ratio; the disk is then not counted.
   */
  async reserve(diskPath: string, sizeBytes: number): Promise<DiskReservation> {
    await this.load();
    const others = [...this.disks].filter(([p]) => p !== diskPath);
    const seen = new Set(others.map(([p]) => p));
    const [freeBytes, own, unwritten] = await Promise.all([
      this.host.freeBytes(this.disksDir),
      this.host.usage(diskPath),
      Promise.all(others.map(async ([p, size]) => {
        const u = await this.host.usage(p);
        // Not made yet (a concurrent create): its whole size is promised.
        return u === undefined ? size : Math.max(0, u.sizeBytes - u.allocatedBytes);
      })),
    ]);
    let reservedBytes = unwritten.reduce((a, b) => a + b, 0) + (await this.fixedUnwritten(diskPath));
    // Disks admitted while this check awaited count whole.
    for (const [p, size] of this.disks) if (p !== diskPath && !seen.has(p)) reservedBytes += size;
    const fixedNeed = this.fixed.get(diskPath);
    const needBytes = fixedNeed !== undefined ? Math.max(0, fixedNeed - (own?.allocatedBytes ?? 0)) : own === undefined ? sizeBytes : Math.max(0, own.sizeBytes - own.allocatedBytes);
    const allowedBytes = Math.floor(this.ratio * freeBytes);
    const decision = { needBytes, reservedBytes, freeBytes, allowedBytes };
    if (reservedBytes + needBytes > allowedBytes) {
      throw new PaddockError(
        "ERR_STORAGE_OVERCOMMIT",
        `not enough disk space for a ${formatBytes(needBytes)} VM disk: this tenant's disks are already promised ${formatBytes(reservedBytes)} ` +
          `of ${formatBytes(allowedBytes)} (${this.ratio} × ${formatBytes(freeBytes)} free on the file system of ${this.disksDir}; paddock.disk_commit_ratio)`,
        { details: decision },
      );
    }
    if (!this.fixed.has(diskPath)) this.disks.set(diskPath, own?.sizeBytes ?? sizeBytes);
    return decision;
  }

  /**
   * Admit a file that a copy of `writeBytes` will fill and that never grows afterwards (a
   * commit image): it counts `writeBytes` minus what it already holds. Same check as
   * {@link reserve}.
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507) past the commit ratio; the file is then not counted.
   */
  async reserveFixed(filePath: string, writeBytes: number): Promise<DiskReservation> {
    this.fixed.set(filePath, writeBytes);
    try {
      return await this.reserve(filePath, 0);
    } catch (err) {
      this.fixed.delete(filePath);
      throw err;
    }
  }

  /** What the fixed-size files other than `except` still have to write, bytes. */
  private async fixedUnwritten(except: string): Promise<number> {
    const parts = await Promise.all([...this.fixed].map(async ([p, bytes]) => {
      if (p === except) return 0;
      const u = await this.host.usage(p);
      return Math.max(0, bytes - (u?.allocatedBytes ?? 0));
    }));
    return parts.reduce((a, b) => a + b, 0);
  }

  /** Stop counting the disk (or fixed-size file) at `diskPath` (deleted, or never made). Idempotent. */
  release(diskPath: string): void {
    this.disks.delete(diskPath);
    this.fixed.delete(diskPath);
  }

  /** Disks counted now (for tests and metrics). */
  count(): number {
    return this.disks.size;
  }
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} B`;
}
