/**
 * Cold fork (`POST /vm/commits/{id}/fork`): a new VM of the commit's host group whose disk is a
 * copy of the commit's image, over the same base image. It gets its own name (`<group>-N`), its
 * own address and its own disk, and records the commit it came from (`parent_commit_id`).
 *
 * After the boot (`wait=agent`: before answering; `wait=none`: in the background, and the child
 * is deleted when this fails, as Slicer's SDK documents) the fork is finalised inside the guest,
 * through its agent (the host writes nothing into the guest's tree):
 * - its secrets are delivered: exactly its grants (inherited, or the request's `secrets`); the
 *   files live on the guest's `/run` tmpfs, so a commit never carries the source's;
 * - the fix-ups it asks for: `hostname` (every boot writes the VM's own; it cannot be left
 *   out), `machine-id` (a new random /etc/machine-id when the image has one), `ssh-host-keys`
 *   (the source's /etc/ssh/ssh_host_* keys removed, and made anew with `ssh-keygen -A` when
 *   the image has it).
 */
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { agentJsonRequest } from "../agent-client/agent-http.js";
import type { CommitStore } from "../storage/commit-store.js";
import { parseForkRequest, type ForkFixup, type ForkRequest } from "./commit-request.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import { statusWord, type VmCommits } from "./vm-commit.js";
import { secretsFailure, type VmCreator } from "./vm-create.js";
import type { VmPaths } from "./vm-paths.js";
import { isPidsRefusal } from "./vm-pids-budget.js";
import { friendlyNameOf } from "./vm-request.js";
import type { LiveVm, VmTable } from "./vm-table.js";

/** `POST /vm/commits/{id}/fork` response (Go SDK SlicerForkVMResponse). */
export interface ForkResponseWire {
  hostname: string;
  source_hostname: string;
  commit_id: string;
  status: "forked";
  /** The source VM's status now; omitted when it no longer exists. */
  parent_status?: string;
  child_status: string;
  mode: "disk";
  persistent: boolean;
}

/** What {@link VmForker} works with. */
export interface VmForkerDeps {
  table: VmTable;
  creator: VmCreator;
  commits: VmCommits;
  store: CommitStore;
  agentWait: VmAgentWait;
  paths: VmPaths;
  /** Make `<disks>/<hostname>.img` a copy of `fromImage` (TenantVmStorage.seed). */
  seedDisk: (hostname: string, sizeBytes: number, fromImage: string) => Promise<void>;
  /**
   * Delete a VM and its disk (VmService.remove with force); `reason` goes to its `deleted`
   * event (default `api`): as for a create, `wait_timeout` when its wait timed out or its
   * secrets could not be delivered, `pids_limit` when the pids budget refused a process.
   */
  remove: (hostname: string, reason?: "wait_timeout" | "pids_limit") => Promise<void>;
  /**
   * The pids refusal of VM `hostname` if its pids limits refused a process (vm-pids-budget.ts
   * PidsBudgetProbe.refusal); absent: none is looked for.
   */
  pidsRefusal?: (hostname: string) => Promise<PaddockError | undefined>;
  /** The tenant's base image now (config `image`). */
  image: string;
  log: Logger;
}

/** Timeout of the in-guest fix-up command, ms. */
const FIXUP_TIMEOUT_MS = 30_000;

/** The in-guest shell command of each fix-up (run as root by the agent); hostname needs none. */
const FIXUP_SCRIPTS: Readonly<Record<ForkFixup, string | undefined>> = {
  hostname: undefined,
  "machine-id": "if [ -s /etc/machine-id ]; then od -An -tx1 -N16 /dev/urandom | tr -d ' \\n' > /etc/machine-id.new && echo >> /etc/machine-id.new && mv -f /etc/machine-id.new /etc/machine-id; fi",
  "ssh-host-keys": "rm -f /etc/ssh/ssh_host_*; if command -v ssh-keygen >/dev/null 2>&1 && [ -d /etc/ssh ]; then ssh-keygen -A >/dev/null; fi",
};

/** Forks VMs from the tenant's commits. */
export class VmForker {
  private readonly deps: VmForkerDeps;

  constructor(deps: VmForkerDeps) {
    this.deps = deps;
  }

  /**
   * Fork commit `commitId` as the query and body ask (commit-request.ts parseForkRequest).
   * @throws PaddockError ERR_COMMIT_NOT_FOUND, ERR_HOSTGROUP_NOT_FOUND (the group left the
   *   config), ERR_IMAGE_NOT_FOUND (the tenant's image changed since the commit), the parse's
   *   errors, ERR_LIMIT_EXCEEDED, ERR_VM_NAME_TAKEN, ERR_NETWORK_EXHAUSTED, ERR_STORAGE_OVERCOMMIT,
   *   ERR_VM_START_FAILED (also when the child's secrets could not be delivered, as for a
   *   create; ERR_LIMIT_EXCEEDED when the pids budget refused a process meanwhile),
   *   ERR_VM_WAIT_TIMEOUT (408); ERR_VM_NOT_RUNNING (503) while the daemon stops. Nothing of
   *   the child is left on failure: a finalisation that fails deletes it (with `wait=none`
   *   in the background).
   */
  async fork(commitId: string, query: { wait: unknown; timeout: unknown }, body: unknown): Promise<ForkResponseWire> {
    const { table, store, commits, log } = this.deps;
    if (table.stopping) throw new PaddockError("ERR_VM_NOT_RUNNING", "daemon is shutting down", { status: 503 });
    const commit = store.get(commitId);
    const group: HostGroupConfig = table.hostGroup(commit.sourceHostGroup);
    if (commit.image !== this.deps.image) {
      throw new PaddockError("ERR_IMAGE_NOT_FOUND", `commit ${commit.commitId} was made over image ${commit.image}; this tenant now runs ${this.deps.image}`);
    }
    const req = parseForkRequest(query, body, group, commit);
    const releaseName = table.claimName(friendlyNameOf(req.tags));
    commits.forking.set(commit.commitId, (commits.forking.get(commit.commitId) ?? 0) + 1);
    const started = performance.now();
    let vm: LiveVm;
    try {
      table.checkLimits(req.cpus, req.ramBytes, commit.storageSizeBytes);
      vm = await this.deps.creator.createCold(group, {
        cpus: req.cpus, ramBytes: req.ramBytes, persistent: req.persistent, tags: req.tags, userdata: undefined,
        secrets: req.secrets, network: req.network, ip: undefined,
      }, {
        fork: {
          commitId: commit.commitId, storageSizeBytes: commit.storageSizeBytes,
          seedDisk: (hostname) => this.deps.seedDisk(hostname, commit.storageSizeBytes, store.imagePath(commit.commitId)),
        },
      });
    } finally {
      releaseName();
      const n = (commits.forking.get(commit.commitId) ?? 1) - 1;
      if (n > 0) commits.forking.set(commit.commitId, n);
      else commits.forking.delete(commit.commitId);
    }
    const hostname = vm.record.hostname;
    log.info("vm forked", { hostname, commitId: commit.commitId, launchMs: Math.round(performance.now() - started) });
    const finalise = this.finalise(vm, req);
    const discard = (err: unknown): Promise<void> =>
      this.deps.remove(hostname, cleanupReason(err)).catch((e: unknown) => log.error("cleanup after a failed fork finalisation failed", { hostname, err: e }));
    if (req.wait === "agent") {
      try {
        await finalise;
      } catch (err) {
        await discard(err);
        throw err;
      }
    } else {
      finalise.catch(async (err: unknown) => {
        log.error("fork finalisation failed; deleting the child", { hostname, err });
        await discard(err);
      });
    }
    const source = table.vms.get(commit.sourceHostname);
    return {
      hostname, source_hostname: commit.sourceHostname, commit_id: commit.commitId, status: "forked",
      ...(source !== undefined && source.phase !== "deleting" ? { parent_status: statusWord(source.phase) } : {}),
      child_status: statusWord(vm.phase), mode: "disk", persistent: vm.record.persistent,
    };
  }

  /**
   * Wait for the child's agent and its secret delivery, then run the fix-ups in the guest.
   * @throws PaddockError ERR_VM_WAIT_TIMEOUT after `req.timeoutMs`, ERR_VM_START_FAILED (or
   *   ERR_LIMIT_EXCEEDED: vm-create.ts secretsFailure) when its secrets could not be delivered,
   *   ERR_VM_AGENT_UNAVAILABLE, ERR_EXEC_FAILED
   */
  private async finalise(vm: LiveVm, req: ForkRequest): Promise<void> {
    const hostname = vm.record.hostname;
    const deadline = Date.now() + req.timeoutMs;
    await this.deps.agentWait.waitForAgent(hostname, "agent", req.timeoutMs);
    const delivery = await vm.secretsDelivered;
    // Its grants, as for a create (VmService.create): not a fork without them.
    if (delivery?.delivered === false) throw secretsFailure(hostname, delivery.err, await this.deps.pidsRefusal?.(hostname));
    // One in-guest command for every fix-up asked (one agent round trip).
    const scripts = req.fixups.map((f) => FIXUP_SCRIPTS[f]).filter((x): x is string => x !== undefined);
    if (scripts.length === 0) return;
    const left = deadline - Date.now();
    if (left <= 0) throw new PaddockError("ERR_VM_WAIT_TIMEOUT", `fork ${hostname} was not finalised within the timeout`);
    const q = new URLSearchParams({ cmd: "/bin/sh", uid: "0", gid: "0", buffered: "true" });
    q.append("args", "-c");
    q.append("args", `set -e; ${scripts.join("; ")}`);
    const out = (await agentJsonRequest(this.deps.paths.endpoint(vm.record), "POST", `/v1/exec?${q.toString()}`, undefined, Math.min(left, FIXUP_TIMEOUT_MS))) as { exit_code?: unknown; stderr?: unknown };
    if (out.exit_code !== 0) {
      throw new PaddockError("ERR_EXEC_FAILED", `fork ${hostname}: fix-ups ${req.fixups.join(", ")} failed (exit ${String(out.exit_code)}): ${String(out.stderr ?? "").slice(0, 300)}`);
    }
  }
}

/**
 * The reason of the `deleted` event of a child whose finalisation failed with `err`, as a
 * create's (docs/slicer-api.md events): `pids_limit` for a pids refusal, `wait_timeout` for a
 * timeout or secrets not delivered (vm-create.ts secretsFailure: ERR_VM_START_FAILED, which
 * nothing else of the finalisation throws), else undefined (`api`). Pure.
 */
function cleanupReason(err: unknown): "wait_timeout" | "pids_limit" | undefined {
  if (isPidsRefusal(err)) return "pids_limit";
  return isPaddockError(err, "ERR_VM_WAIT_TIMEOUT") || isPaddockError(err, "ERR_VM_START_FAILED") ? "wait_timeout" : undefined;
}
