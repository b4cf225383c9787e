/**
 * The part of VmService (vm-service.ts) that speaks of VMs rather than to them: every transition
 * as an event into the tenant's event log (tenant-daemon/events/event-log.ts), the `ready` watch
 * after a boot, and the two schedulers that act on VMs by themselves — expiry (vm-expiry.ts) and
 * idle pause/suspend with wake on request (vm-idle.ts) — wired to the power, suspend and delete
 * operations they drive.
 */
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import type { EventLog, VmEventInput, VmEventReason, VmEventType } from "../events/event-log.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import { VmExpiry, expiryPolicy, type ExpiryPolicy } from "./vm-expiry.js";
import { VmIdle, readCgroupCpuNs, type VmIdleMetrics } from "./vm-idle.js";
import type { VmPower } from "./vm-power.js";
import type { VmSecretsSync } from "./vm-secrets-sync.js";
import type { VmSuspender } from "./vm-suspend.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { VmRecord } from "./vm-types.js";

/** How long the `ready` watch waits for a booted VM's agent before giving up on the event, ms. */
const READY_WAIT_MS = 120_000;

/** What {@link VmLifecycleEvents} works with (VmService builds it). */
export interface VmLifecycleEventsDeps {
  config: TenantConfig;
  table: VmTable;
  /** The tenant's event log (`GET /events`). */
  events: EventLog;
  log: Logger;
  agentWait: VmAgentWait;
  secretsSync: VmSecretsSync;
  power: VmPower;
  suspender: VmSuspender;
  /** Counters of idle pauses and wakes. */
  idleMetrics?: VmIdleMetrics;
  /** Delete VM `hostname` whatever it is (VmService.remove with force), emitting `deleted` with `reason`. */
  remove(hostname: string, reason: VmEventReason): Promise<unknown>;
}

/** Lifecycle events, the ready watch, and the expiry and idle schedulers of one tenant's VMs. */
export class VmLifecycleEvents {
  private readonly deps: VmLifecycleEventsDeps;
  /** Deadlines (`ttl`, `expires_at=` tags): kick after anything that may move one. */
  readonly expiry: VmExpiry;
  /** Idle pause/suspend and wake on request; the API marks activity and wakes through it. */
  readonly idle: VmIdle;

  constructor(deps: VmLifecycleEventsDeps) {
    this.deps = deps;
    const { config, table, log, agentWait, secretsSync, power, suspender } = deps;
    this.expiry = new VmExpiry({
      table, log, expire: (vm, deadlineMs) => this.expire(vm, deadlineMs),
      expiresWhileSuspended: (vm) => !vm.record.persistent || this.expiryPolicy(vm.record.hostGroup).action === "delete",
    });
    this.idle = new VmIdle({
      table, log, events: deps.events, metrics: deps.idleMetrics,
      policy: (group) => config.hostGroups.find((g) => g.name === group)?.idle,
      pause: (vm) => power.pause(vm),
      resume: (vm) => power.resume(vm),
      suspend: (vm) => suspender.suspend(vm),
      restore: (vm) => suspender.restore(vm),
      afterWake: (vm, action) => {
        if (action === "pause") void secretsSync.request(vm, { agentReady: true });
        else vm.secretsDelivered = secretsSync.request(vm, { agentReady: false });
        this.expiry.kick();
      },
      waitForAgent: (h, timeoutMs) => agentWait.waitForAgent(h, "agent", timeoutMs),
      emit: (record, type, reason, extra) => this.emit(record, type, reason, extra),
      persist: () => table.persist(),
      cpuNs: (h) => readCgroupCpuNs(`/paddock/${config.paddock.tenantId}/${h}`),
    });
  }

  /**
   * Emit a lifecycle event for a VM (by record, or by hostname of a VM the API shows) into the
   * event log. Warm-pool VMs are invisible to the API and emit nothing.
   * @throws PaddockError ERR_VM_NOT_FOUND for an unknown hostname.
   */
  emit(vm: VmRecord | string, type: VmEventType, reason: VmEventReason, extra: Pick<VmEventInput, "deadline" | "action" | "oom_kills" | "fallback_from" | "refusal"> = {}): void {
    const record = typeof vm === "string" ? this.deps.table.live(vm).record : vm;
    if (record.pooled) return;
    this.deps.events.emit({ type, hostname: record.hostname, hostgroup: record.hostGroup, reason, ...extra });
  }

  /** The expiry rules of a host group with the tenant's folded in (vm-expiry.ts). @throws ERR_HOSTGROUP_NOT_FOUND */
  expiryPolicy(groupName: string): ExpiryPolicy {
    return expiryPolicy(this.deps.table.hostGroup(groupName), this.deps.config.paddock.expiry);
  }

  /**
   * Emit `ready` once the agent of this boot of `vm` answers (nothing when the VM goes first).
   * @returns resolves true when `ready` was emitted, false otherwise; never rejects.
   */
  watchReady(vm: LiveVm): Promise<boolean> {
    const proof = vm.record.agentProof;
    return this.deps.agentWait.waitForAgent(vm.record.hostname, "agent", READY_WAIT_MS).then(() => {
      if (this.deps.table.vms.get(vm.record.hostname) !== vm || vm.record.agentProof !== proof || vm.phase !== "running") return false;
      this.emit(vm.record, "ready", "agent");
      return true;
    }, () => false);
  }

  /** Start both schedulers: deadlines saved by the previous run act now; every VM counts as just active. */
  start(): void {
    this.expiry.kick();
    this.idle.start();
  }

  /** Stop both schedulers (daemon stop): nothing expires or idles out after this. */
  stop(): void {
    this.expiry.stop();
    this.idle.stop();
  }

  /**
   * A VM's deadline passed (VmExpiry): an ephemeral VM, or a persistent one of a group with
   * `expiry_action: delete`, is deleted; another persistent VM is shut down (Stopped, disk kept).
   * Logged and emitted with reason `expired`.
   * @throws what remove or stop throw (VmExpiry logs it and retries).
   */
  private async expire(vm: LiveVm, deadlineMs: number): Promise<void> {
    const r = vm.record;
    const action = !r.persistent || this.expiryPolicy(r.hostGroup).action === "delete" ? "delete" : "shutdown";
    const deadline = new Date(deadlineMs).toISOString();
    this.deps.log.info("vm expired", { hostname: r.hostname, reason: "expired", deadline, action });
    this.emit(r, "expired", "expired", { deadline, action });
    if (action === "delete") {
      await this.deps.remove(r.hostname, "expired");
      return;
    }
    await this.deps.power.stop(vm);
    this.emit(r, "stopped", "expired");
  }
}
