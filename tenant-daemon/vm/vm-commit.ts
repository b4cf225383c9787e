/**
 * Commits of Slicer's cold fork (`POST /vm/{h}/commit`, `GET /vm/commits`,
 * `DELETE /vm/commits/{id}`; the fork itself is vm-fork.ts): an immutable copy of a VM's disk,
 * stored by tenant-daemon/storage/commit-store.ts.
 *
 * A commit of a running VM is consistent: under the VM's lock,
 * 1. the sandbox is paused (cgroup freezer: `runc pause`), so no guest process writes;
 * 2. the VM's disk mount (`<bundle>/disk`, a host mount) is frozen with fsfreeze, which flushes
 *    the journal and dirty data to the `.img`;
 * 3. the `.img` is copied as a whole (a host file; nothing inside the guest's tree is opened);
 * 4. the file system is thawed (in a `finally`) and the sandbox resumed (in a `finally`), so the
 *    VM runs again whatever failed.
 * A paused VM is frozen and copied but stays paused; a stopped VM's disk is copied as it is.
 * Under gVisor (`runsc`) a running or paused VM is refused with 501: its sentry may hold file
 * data it has not written to the host's mount yet, which a host-side freeze cannot flush.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { rfc3339 } from "../../shared/time.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import { allocatedBytes, freezeMount, thawMount } from "../storage/disk-copy.js";
import type { CommitRecord, CommitStore } from "../storage/commit-store.js";
import { matchesCommitFilter, type CommitListFilter, type CommitRequest } from "./commit-request.js";
import type { VmPaths } from "./vm-paths.js";
import type { VmTable } from "./vm-table.js";
import { wireStatus } from "./vm-wire.js";

/** Where a VM's disk is on the host: its `.img` and the host mount of it (tenant-daemon/storage/vm-storage.ts `paths`). */
export interface CommitDiskPaths {
  paths(hostname: string): { diskPath: string; diskDir: string };
}

/** `POST /vm/{h}/commit` response (Go SDK SlicerCommitVMResponse). */
export interface CommitResponseWire {
  hostname: string;
  commit_id: string;
  status: "committed";
  parent_status: string;
  mode: "disk";
  tags: string[];
  labels: Record<string, string>;
  cache_key: string;
}

/** One `GET /vm/commits` entry (Go SDK SlicerCommitInfo). */
export interface CommitInfoWire {
  commit_id: string;
  source_hostname: string;
  source_host_group: string;
  created_at: string;
  mode: "disk";
  tags: string[];
  labels: Record<string, string>;
  cache_key: string;
}

/** What {@link VmCommits} works with. */
export interface VmCommitsDeps {
  table: VmTable;
  runtime: RuntimeDriver;
  disks: CommitDiskPaths;
  store: CommitStore;
  paths: VmPaths;
  /** The tenant's base image (config `image`), recorded in each commit. */
  image: string;
  log: Logger;
}

/** The lower-case wire status of a VM phase (`running`, `paused`, `stopped`), as Slicer's `parent_status`. */
export function statusWord(phase: Parameters<typeof wireStatus>[0]): string {
  return wireStatus(phase).toLowerCase();
}

/** Commit, list and delete the tenant's commits. */
export class VmCommits {
  private readonly deps: VmCommitsDeps;
  /** Cache keys of commits being made (a second commit claiming one is refused). */
  private readonly claimedKeys = new Set<string>();
  /** Commits forks are being made from now (count per id): not deletable meanwhile. */
  readonly forking = new Map<string, number>();

  constructor(deps: VmCommitsDeps) {
    this.deps = deps;
  }

  /**
   * Commit the disk of VM `hostname`, running, paused or stopped (see the file header).
   * @returns the Slicer response; `parent_status` is the VM's status afterwards.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_COMMIT_CACHE_KEY_TAKEN (409), ERR_VM_UNSUPPORTED
   *   (501, a running gVisor VM), ERR_VM_NOT_RUNNING (409, a VM being created or stopped),
   *   ERR_LIMIT_EXCEEDED (403, `max_disk_bytes`), ERR_STORAGE_OVERCOMMIT (507),
   *   ERR_STORAGE_FAILED, ERR_RUNTIME_FAILED (the VM could not be resumed: no commit is kept).
   */
  async commit(hostname: string, req: CommitRequest): Promise<CommitResponseWire> {
    const { table, store, runtime, log } = this.deps;
    const vm = table.live(hostname);
    if (req.cacheKey !== "") {
      const holder = store.list().find((c) => c.cacheKey === req.cacheKey);
      if (holder !== undefined || this.claimedKeys.has(req.cacheKey)) {
        throw new PaddockError("ERR_COMMIT_CACHE_KEY_TAKEN", `cache_key ${JSON.stringify(req.cacheKey)} is ${holder ? `held by commit ${holder.commitId}` : "being committed now"}`);
      }
      this.claimedKeys.add(req.cacheKey);
    }
    try {
      return await table.withLock(hostname, async () => {
        if (vm.phase === "deleting") throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
        if (vm.phase !== "running" && vm.phase !== "paused" && vm.phase !== "stopped") {
          throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is ${vm.phase}; commit it once it is running or stopped`);
        }
        if (runtime.name === "runsc" && vm.phase !== "stopped") {
          throw new PaddockError("ERR_VM_UNSUPPORTED", "commit of a running gVisor VM is not supported (its sentry may hold unwritten file data); stop it first");
        }
        const r = vm.record;
        const { diskPath, diskDir } = this.deps.disks.paths(hostname);
        const writeBytes = await allocatedBytes(diskPath).catch((err: unknown) => {
          throw new PaddockError("ERR_STORAGE_FAILED", `VM ${hostname} has no disk to commit`, { cause: err });
        });
        table.checkLimits(0, 0, writeBytes, { vms: 0 });
        const id = store.newId();
        await store.reserve(id, writeBytes);
        const rec: Omit<CommitRecord, "allocatedBytes"> = {
          schemaVersion: 1, commitId: id, sourceHostname: hostname, sourceHostGroup: r.hostGroup, createdAt: rfc3339(), mode: "disk",
          tags: req.tags, labels: req.labels, cacheKey: req.cacheKey, image: this.deps.image, storageSizeBytes: r.storageSizeBytes,
          source: { cpus: r.cpus, ramBytes: r.ramBytes, tags: [...r.tags], secrets: r.secrets, network: r.network },
        };
        const started = performance.now();
        const atMs: Record<string, number> = {};
        let stored: CommitRecord;
        try {
          stored = vm.phase === "stopped" ? await store.write(diskPath, rec) : await this.copyLive(hostname, vm.phase === "running", diskDir, () => store.write(diskPath, rec), atMs);
        } catch (err) {
          await store.abandon(id).catch(() => undefined);
          if (err instanceof PaddockError && err.code === "ERR_RUNTIME_FAILED") await store.remove(id).catch(() => undefined);
          throw err;
        }
        log.info("vm committed", { hostname, commitId: id, bytes: stored.allocatedBytes, ms: Math.round(performance.now() - started), atMs });
        return {
          hostname, commit_id: id, status: "committed", parent_status: statusWord(vm.phase), mode: "disk",
          tags: [...stored.tags], labels: { ...stored.labels }, cache_key: stored.cacheKey,
        };
      });
    } finally {
      if (req.cacheKey !== "") this.claimedKeys.delete(req.cacheKey);
    }
  }

  /**
   * Steps 1–4 of the file header around `copy`: pause (when `pause`), freeze, copy, then thaw
   * and resume together (a process resumed before the thaw only waits for it). `spans` gets the
   * ms at which each step ended.
   * @throws what the pause, freeze or copy threw; ERR_STORAGE_FAILED when the thaw failed;
   *   ERR_RUNTIME_FAILED when the resume failed.
   */
  private async copyLive<T>(hostname: string, pause: boolean, diskDir: string, copy: () => Promise<T>, spans: Record<string, number>): Promise<T> {
    const id = this.deps.paths.containerId(hostname);
    const t0 = performance.now();
    const mark = (step: string): void => {
      spans[step] = Math.round(performance.now() - t0);
    };
    if (pause) await this.deps.runtime.pause(id);
    mark("paused");
    let result: T;
    try {
      await freezeMount(diskDir);
      mark("frozen");
      result = await copy();
      mark("copied");
    } finally {
      const [thawed, resumed] = await Promise.allSettled([thawMount(diskDir), pause ? this.deps.runtime.resume(id) : Promise.resolve()]);
      mark("thawed+resumed");
      if (resumed.status === "rejected") {
        this.deps.log.error("resume after commit failed", { hostname, err: resumed.reason });
        // eslint-disable-next-line no-unsafe-finally
        throw new PaddockError("ERR_RUNTIME_FAILED", `VM ${hostname} could not be resumed after its commit: ${(resumed.reason as Error).message}`, { cause: resumed.reason });
      }
      if (thawed.status === "rejected") {
        this.deps.log.error("thaw after commit failed", { hostname, err: thawed.reason });
        // eslint-disable-next-line no-unsafe-finally
        throw thawed.reason;
      }
    }
    return result;
  }

  /** The commits passing `filter`, oldest first, as `GET /vm/commits` shows them. */
  list(filter: CommitListFilter): CommitInfoWire[] {
    return this.deps.store.list().filter((c) => matchesCommitFilter(c, filter)).map((c) => ({
      commit_id: c.commitId, source_hostname: c.sourceHostname, source_host_group: c.sourceHostGroup, created_at: c.createdAt,
      mode: c.mode, tags: [...c.tags], labels: { ...c.labels }, cache_key: c.cacheKey,
    }));
  }

  /**
   * Delete a commit and its files. As in Slicer, refused while its source VM or a VM forked
   * from it exists, or a fork from it is under way.
   * @throws PaddockError ERR_COMMIT_NOT_FOUND, ERR_COMMIT_IN_USE (409)
   */
  async remove(id: string): Promise<{ commit_id: string; status: "deleted" }> {
    const { store, table } = this.deps;
    const c = store.get(id);
    const users = [...table.vms.values()]
      .filter((vm) => vm.phase !== "deleting" && (vm.record.hostname === c.sourceHostname || vm.record.parentCommitId === c.commitId))
      .map((vm) => vm.record.hostname);
    if (users.length > 0 || (this.forking.get(c.commitId) ?? 0) > 0) {
      throw new PaddockError("ERR_COMMIT_IN_USE", `commit ${c.commitId} is in use by ${users.length > 0 ? users.join(", ") : "a fork under way"}; delete those VMs first`);
    }
    await store.remove(c.commitId);
    this.deps.log.info("commit deleted", { commitId: c.commitId });
    return { commit_id: c.commitId, status: "deleted" };
  }

  /**
   * The lineage `GET /vm/{h}` shows: `commit_id` = the newest commit taken of this VM that still
   * exists ("" when none), `parent_commit_id` = the commit it was forked from ("" when none).
   */
  lineage(hostname: string): { commit_id: string; parent_commit_id: string } {
    const r = this.deps.table.live(hostname).record;
    const own = this.deps.store.list().filter((c) => c.sourceHostname === hostname).pop();
    return { commit_id: own?.commitId ?? "", parent_commit_id: r.parentCommitId ?? "" };
  }
}
