/**
 * The cold-fork surface of the VM service: commits (vm-commit.ts) and forks (vm-fork.ts) behind
 * the four endpoints `POST /vm/{h}/commit`, `GET /vm/commits`, `DELETE /vm/commits/{id}` and
 * `POST /vm/commits/{id}/fork`, plus the lineage of `GET /vm/{h}`. A daemon built without a
 * commit store answers every cold-fork call with 501 ERR_VM_UNSUPPORTED.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { CommitStore } from "../storage/commit-store.js";
import type { CommitListFilter, CommitRequest } from "./commit-request.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import { VmCommits, type CommitDiskPaths, type CommitInfoWire, type CommitResponseWire } from "./vm-commit.js";
import type { VmCreator } from "./vm-create.js";
import { VmForker, type ForkResponseWire } from "./vm-fork.js";
import type { VmPaths } from "./vm-paths.js";
import type { LiveVm, VmTable } from "./vm-table.js";

/** The tenant's commit store and the disk operations of commit and fork (TenantVmStorage). */
export interface ColdForkStorage {
  store: CommitStore;
  disks: CommitDiskPaths & { seed(hostname: string, sizeBytes: number, fromImage: string): Promise<void> };
}

/** What {@link VmColdFork} works with (the VM service's pieces). */
export interface VmColdForkDeps {
  table: VmTable;
  runtime: RuntimeDriver;
  creator: VmCreator;
  agentWait: VmAgentWait;
  paths: VmPaths;
  /** The tenant's base image now (config `image`). */
  image: string;
  log: Logger;
  /** Without it, the cold-fork calls answer 501. */
  cold: ColdForkStorage | undefined;
  /** Delete a VM and its disk (VmService.remove with force), emitting `deleted` with `reason`. */
  remove: (hostname: string, reason?: "wait_timeout" | "pids_limit") => Promise<void>;
  /** The pids refusal of VM `hostname`, if any (vm-pids-budget.ts PidsBudgetProbe.refusal). */
  pidsRefusal?: (hostname: string) => Promise<PaddockError | undefined>;
  /** A fork launched `vm` (metrics, lifecycle events, the expiry timer). */
  onForked: (vm: LiveVm) => void;
}

/** Commits, forks and lineage of one tenant's VMs. */
export class VmColdFork {
  private readonly parts: { commits: VmCommits; forker: VmForker } | undefined;

  constructor(private readonly deps: VmColdForkDeps) {
    const { cold, table, runtime, paths, image, log, creator, agentWait } = deps;
    if (cold === undefined) return;
    const commits = new VmCommits({ table, runtime, disks: cold.disks, store: cold.store, paths, image, log });
    const forker = new VmForker({
      table, creator, commits, store: cold.store, agentWait, paths, image, log,
      seedDisk: (h, size, from) => cold.disks.seed(h, size, from),
      remove: deps.remove,
      pidsRefusal: deps.pidsRefusal,
    });
    this.parts = { commits, forker };
  }

  private need(): { commits: VmCommits; forker: VmForker } {
    if (this.parts === undefined) throw new PaddockError("ERR_VM_UNSUPPORTED", "commits and forks are not available on this daemon");
    return this.parts;
  }

  /** Commit a VM's disk (`POST /vm/{h}/commit`); see VmCommits.commit for the errors. */
  commit(hostname: string, req: CommitRequest): Promise<CommitResponseWire> {
    return this.need().commits.commit(hostname, req);
  }

  /** The tenant's commits (`GET /vm/commits`). @throws ERR_VM_UNSUPPORTED without a commit store */
  list(filter: CommitListFilter): CommitInfoWire[] {
    return this.need().commits.list(filter);
  }

  /** Delete a commit (`DELETE /vm/commits/{id}`). @throws ERR_COMMIT_NOT_FOUND, ERR_COMMIT_IN_USE */
  remove(id: string): Promise<{ commit_id: string; status: "deleted" }> {
    return this.need().commits.remove(id);
  }

  /** Fork a commit (`POST /vm/commits/{id}/fork`); see VmForker.fork for the errors. */
  async fork(id: string, query: { wait: unknown; timeout: unknown }, body: unknown): Promise<ForkResponseWire> {
    const out = await this.need().forker.fork(id, query, body);
    const vm = this.deps.table.vms.get(out.hostname);
    if (vm !== undefined) this.deps.onForked(vm);
    return out;
  }

  /** `commit_id` and `parent_commit_id` of `GET /vm/{h}` ("" without a commit store). @throws ERR_VM_NOT_FOUND */
  lineage(hostname: string): { commit_id: string; parent_commit_id: string } {
    if (this.parts === undefined) {
      this.deps.table.live(hostname);
      return { commit_id: "", parent_commit_id: "" };
    }
    return this.parts.commits.lineage(hostname);
  }
}
