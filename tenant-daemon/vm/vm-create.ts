/**
 * A new VM the slow way, without the warm pool: a name (`<group>-N`, or the fixed N of a config
 * VM), an address, the record in the VM table, a boot while the state is saved, and on any
 * failure a rollback that leaves no half-created VM. Holds no state of its own.
 */
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { rfc3339 } from "../../shared/time.js";
import type { TenantNetwork } from "../network/network.js";
import type { VmLauncher } from "./vm-boot.js";
import { isPidsRefusal, type PidsBudgetProbe } from "./vm-pids-budget.js";
import type { CreateVmRequest } from "./vm-request.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { VmRecord } from "./vm-types.js";

/** What {@link VmCreator} works with. */
export interface VmCreatorDeps {
  table: VmTable;
  network: TenantNetwork;
  launcher: VmLauncher;
  log: Logger;
  /** Told of a failed launch (metrics). */
  onEvent?: (event: "launch_failed", hostGroup: string) => void;
  /** Tells a boot refused by the tenant's pids limits (vm-pids-budget.ts), read before the rollback. */
  pids?: PidsBudgetProbe;
  /** Told of such a refusal (the warm pool stops filling: warm-pool.ts `pidsRefused`). */
  onPidsRefused?: (err: PaddockError, hostname: string) => void;
}

/** Creates VMs of the table by booting them (the path without a warm VM). */
export class VmCreator {
  private readonly deps: VmCreatorDeps;

  constructor(deps: VmCreatorDeps) {
    this.deps = deps;
  }

  /**
   * Allocate, boot and record a new VM of `group` as `req` asks. `options.index`: a config VM's
   * fixed N (start-up); `options.protected`: a config VM (persistent, DELETE ⇒ 403);
   * `options.fork`: a fork of a commit (tenant-daemon/vm/vm-commit.ts): its disk is made by
   * `seedDisk(hostname)` before the boot, and it records its commit. Returns the VM, `running`.
   * @throws the network's errors (e.g. PaddockError ERR_NETWORK_EXHAUSTED; the name is then
   *   not used up), client errors, ERR_STATE_NO_SPACE and ERR_STORAGE_OVERCOMMIT as they were,
   *   ERR_LIMIT_EXCEEDED (403) when the tenant's pids budget (or the VM's pids limit) refused a
   *   process of the boot, anything else as ERR_VM_START_FAILED; always after rolling back.
   */
  async createCold(
    group: HostGroupConfig,
    req: CreateVmRequest,
    options: { protected?: boolean; index?: number; fork?: { commitId: string; storageSizeBytes: number; seedDisk: (hostname: string) => Promise<void> } },
  ): Promise<LiveVm> {
    const { table, launcher, log } = this.deps;
    const before = table.countersOf(group.name);
    let hostname: string, index: number;
    if (options.index !== undefined) {
      index = options.index;
      hostname = `${group.name}-${index}`;
    } else {
      ({ hostname, index } = table.allocateName(group.name));
    }
    table.markIssued(group.name, index);
    let ipCidr: string;
    try {
      ipCidr = this.deps.network.reserve({ hostname, hostGroup: group.name, override: req.network, requestedIp: req.ip });
    } catch (err) {
      // Refused before anything existed (a bad or taken `ip`, no address left): the name was
      // never handed out, so it is not used up. Nothing ran in between (all synchronous).
      if (options.index === undefined) table.restoreCounters(group.name, before);
      throw err;
    }
    const record: VmRecord = {
      hostname, hostGroup: group.name, index, cpus: req.cpus, ramBytes: req.ramBytes, storageSizeBytes: options.fork?.storageSizeBytes ?? group.storageSizeBytes,
      persistent: req.persistent || options.protected === true, protected: options.protected === true, tags: [...req.tags],
      createdAt: rfc3339(), ipCidr, userdata: req.userdata, secrets: req.secrets, network: req.network, desired: "running",
    };
    if (options.fork) record.parentCommitId = options.fork.commitId;
    const vm: LiveVm = { record, phase: "creating", pid: undefined };
    table.vms.set(hostname, vm);
    try {
      if (options.fork) await options.fork.seedDisk(hostname);
      await launcher.saveAndBoot(vm);
    } catch (caught) {
      this.deps.onEvent?.("launch_failed", group.name);
      // Read before the rollback: the VM's cgroup goes with it.
      const err = this.deps.pids ? await this.deps.pids.explain(caught, hostname, vm.pid !== undefined) : caught;
      log.error("create failed; rolling back", { hostname, err: caught, ...(err !== caught ? { answer: (err as Error).message } : {}) });
      await launcher.discard(vm);
      if (isPidsRefusal(err)) {
        this.deps.onPidsRefused?.(err, hostname);
        throw err;
      }
      if (isPaddockError(err) && (err.isClientError || err.code === "ERR_STATE_NO_SPACE" || err.code === "ERR_STORAGE_OVERCOMMIT")) throw err;
      throw new PaddockError("ERR_VM_START_FAILED", `VM ${hostname} failed to start: ${(err as Error).message}`, { cause: err });
    }
    return vm;
  }
}

/**
 * The error a create answers with when its `wait` failed and the VM was cleaned up: a timeout
 * names the request's `timeoutMs` and says the VM was deleted when `removed` (and only then);
 * any other error as it is. Pure.
 */
export function waitFailure(err: unknown, timeoutMs: number, removed: boolean): unknown {
  if (!isPaddockError(err, "ERR_VM_WAIT_TIMEOUT")) return err;
  const message = err.message.replace(/^timed out after \d+ ms/, `timed out after ${timeoutMs} ms`).replace(/; the VM was deleted$/, "");
  return new PaddockError("ERR_VM_WAIT_TIMEOUT", removed ? `${message}; the VM was deleted` : `${message}; deleting the VM failed`, { cause: err });
}

/**
 * The error a create with `wait` answers with when the VM's secrets could not be delivered
 * (`err`, vm-secrets-sync.ts SecretsDelivery): `refusal` when the tenant's pids limits refused a
 * process meanwhile (vm-pids-budget.ts; a full budget makes the agent fail the push), else
 * PaddockError ERR_VM_START_FAILED naming the VM and the cause. The caller deletes the VM (and
 * says nothing of it: a create's log and its `deleted` event tell). Pure.
 */
export function secretsFailure(hostname: string, err: unknown, refusal: PaddockError | undefined): PaddockError {
  if (refusal !== undefined) return refusal;
  const why = err instanceof Error ? err.message : String(err);
  return new PaddockError("ERR_VM_START_FAILED", `the secrets of VM ${hostname} could not be delivered: ${why}`, { cause: err });
}
