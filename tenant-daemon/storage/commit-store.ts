/**
 * The tenant's commits (Slicer's cold fork: `POST /vm/{h}/commit`): immutable copies of a VM's
 * disk, kept in the tenant's state dir so they survive daemon restarts, counted by the disk
 * ledger while they are written (disk-ledger.ts) and by `paddock.limits.max_disk_bytes` for
 * what they hold (tenant-daemon/vm/vm-table.ts).
 *
 * ```
 * <stateDir>/commits/<id>/disk.img      copy of the VM's .img (its overlay upper layer), sparse
 * <stateDir>/commits/<id>/commit.json   CommitRecord (written last: a dir without it is half-made)
 * <stateDir>/commits/<id>.tmp/          a commit being made (removed by load() after a crash)
 * ```
 *
 * A commit is the VM's `.img` plus the name of the base image it was layered on: a fork boots a
 * copy of the image over the same base image. Ids are `cmt-` + 16 hex digits, made here; an id
 * from a request is only ever looked up in the in-memory map, never joined to a path unchecked.
 */
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { writeFileAtomic } from "../../shared/state-store.js";
import type { VmNetworkOverride } from "../network/network.js";
import { allocatedBytes, copyDiskImage } from "./disk-copy.js";
import type { DiskLedger } from "./disk-ledger.js";

/** What `commit.json` holds about one commit. */
export interface CommitRecord {
  schemaVersion: 1;
  /** `cmt-<16 hex>`. */
  commitId: string;
  sourceHostname: string;
  sourceHostGroup: string;
  /** RFC3339. */
  createdAt: string;
  /** Always `disk`: the disk is carried, processes and memory are not. */
  mode: "disk";
  tags: string[];
  labels: Record<string, string>;
  /** "" when none. */
  cacheKey: string;
  /** The base image (config `image`) the disk's upper layer sits on. */
  image: string;
  /** Apparent size of the disk image = the source VM's `storage_size`, bytes. */
  storageSizeBytes: number;
  /** Bytes the image holds on the host file system (st_blocks × 512). */
  allocatedBytes: number;
  /** What a fork inherits from the source VM unless its request says otherwise. */
  source: {
    cpus: number;
    ramBytes: number;
    tags: string[];
    secrets: string[] | undefined;
    network: VmNetworkOverride | undefined;
  };
}

/** The commit id pattern (also what the routes accept: anything else cannot exist). */
export const COMMIT_ID_PATTERN = /^cmt-[0-9a-f]{16}$/;

/** The tenant's commits on disk and in memory. */
export class CommitStore {
  private readonly dir: string;
  private readonly commits = new Map<string, CommitRecord>();
  private loaded = false;

  /**
   * @param stateDir the tenant's state dir (commits live in `<stateDir>/commits/`)
   * @param ledger the tenant's disk ledger (the same one its VM disks are admitted by)
   */
  constructor(stateDir: string, private readonly ledger: DiskLedger, private readonly log: Logger) {
    this.dir = path.join(stateDir, "commits");
  }

  /**
   * Read every `<id>/commit.json`; remove half-made commits (`*.tmp` dirs, dirs without a
   * readable record). Idempotent.
   * @throws PaddockError ERR_STATE_CORRUPT when a record does not parse (nothing removed).
   */
  async load(): Promise<void> {
    if (this.loaded) return;
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    for (const entry of await fs.readdir(this.dir)) {
      const full = path.join(this.dir, entry);
      if (!COMMIT_ID_PATTERN.test(entry)) {
        this.log.warn("removing a half-made commit", { entry });
        await fs.rm(full, { recursive: true, force: true });
        continue;
      }
      let text: string;
      try {
        text = await fs.readFile(path.join(full, "commit.json"), "utf8");
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
        this.log.warn("removing a commit without its record", { entry });
        await fs.rm(full, { recursive: true, force: true });
        continue;
      }
      let rec: CommitRecord;
      try {
        rec = JSON.parse(text) as CommitRecord;
      } catch (err) {
        throw new PaddockError("ERR_STATE_CORRUPT", `commit record ${path.join(full, "commit.json")} is not JSON`, { cause: err });
      }
      if (rec.schemaVersion !== 1 || rec.commitId !== entry) throw new PaddockError("ERR_STATE_CORRUPT", `commit record ${path.join(full, "commit.json")} has an unknown schema or id`);
      this.commits.set(entry, rec);
    }
    this.loaded = true;
  }

  /** Every commit, oldest first. */
  list(): CommitRecord[] {
    return [...this.commits.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.commitId.localeCompare(b.commitId));
  }

  /** One commit. @throws PaddockError ERR_COMMIT_NOT_FOUND (also for an id that is not `cmt-<16 hex>`). */
  get(id: string): CommitRecord {
    const rec = COMMIT_ID_PATTERN.test(id) ? this.commits.get(id) : undefined;
    if (rec === undefined) throw new PaddockError("ERR_COMMIT_NOT_FOUND", `commit ${JSON.stringify(id)} not found`);
    return rec;
  }

  /** Host path of a commit's disk image (read-only use: forks copy it). */
  imagePath(id: string): string {
    return path.join(this.dir, this.get(id).commitId, "disk.img");
  }

  /** Bytes every commit holds on the host file system (for `paddock.limits.max_disk_bytes`). */
  totalBytes(): number {
    let n = 0;
    for (const c of this.commits.values()) n += c.allocatedBytes;
    return n;
  }

  /** A fresh commit id. */
  newId(): string {
    for (;;) {
      const id = `cmt-${crypto.randomBytes(8).toString("hex")}`;
      if (!this.commits.has(id)) return id;
    }
  }

  /**
   * Admit a commit of `writeBytes` in the disk ledger before its copy starts.
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (nothing counted).
   */
  async reserve(id: string, writeBytes: number): Promise<void> {
    await fs.mkdir(path.join(this.dir, `${id}.tmp`), { recursive: true, mode: 0o700 });
    try {
      await this.ledger.reserveFixed(this.tmpImage(id), writeBytes);
    } catch (err) {
      await fs.rm(path.join(this.dir, `${id}.tmp`), { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Copy `diskPath` into the commit `rec.commitId` (reserved with {@link reserve}) and write its
   * record: `<id>.tmp/` is filled, then renamed to `<id>/`. On any failure nothing of the commit
   * is left (files and ledger entry).
   * @returns the stored record (with `allocatedBytes` filled in).
   * @throws PaddockError ERR_STORAGE_FAILED, the state writer's errors.
   */
  async write(diskPath: string, rec: Omit<CommitRecord, "allocatedBytes">): Promise<CommitRecord> {
    const id = rec.commitId;
    const tmpDir = path.join(this.dir, `${id}.tmp`);
    try {
      await copyDiskImage(diskPath, this.tmpImage(id));
      const full: CommitRecord = { ...rec, allocatedBytes: await allocatedBytes(this.tmpImage(id)) };
      await writeFileAtomic(path.join(tmpDir, "commit.json"), JSON.stringify(full, null, 2) + "\n");
      await fs.rename(tmpDir, path.join(this.dir, id));
      this.ledger.release(this.tmpImage(id));
      this.commits.set(id, full);
      return full;
    } catch (err) {
      this.ledger.release(this.tmpImage(id));
      await fs.rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** Give up a {@link reserve} whose copy never started. */
  async abandon(id: string): Promise<void> {
    this.ledger.release(this.tmpImage(id));
    await fs.rm(path.join(this.dir, `${id}.tmp`), { recursive: true, force: true });
  }

  /**
   * Remove a commit: out of the map first (no fork can start from it any more), then its dir.
   * @throws PaddockError ERR_COMMIT_NOT_FOUND
   */
  async remove(id: string): Promise<void> {
    const rec = this.get(id);
    this.commits.delete(rec.commitId);
    await fs.rm(path.join(this.dir, rec.commitId), { recursive: true, force: true });
  }

  /** Remove every commit (tenant purge). */
  async purge(): Promise<void> {
    this.commits.clear();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  private tmpImage(id: string): string {
    return path.join(this.dir, `${id}.tmp`, "disk.img");
  }
}
