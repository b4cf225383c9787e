/**
 * The VM lifecycle of one tenant daemon, as the Slicer REST API (https://docs.slicervm.com) and
 * README.md "How it behaves (the lifecycle)" describe it. The facade the API calls; the pieces:
 *
 * - vm-table.ts: the VM table (VMs, warm VMs, name counters, per-VM locks) and the state file;
 * - vm-boot.ts: boot and teardown of one VM against the runtime driver, storage and network;
 * - vm-create.ts: a new VM without the warm pool (name, address, record, boot, rollback);
 * - vm-power.ts: reboot, stop, relaunch, pause and resume of one VM; vm-transitions.ts: those
 *   (and suspend/restore) as the API asks them, with their events ({@link VmService.transitions});
 * - vm-suspend.ts: suspend to disk and restore (runtimes with a memory checkpoint: gVisor);
 * - vm-agent-wait.ts: waiting for a VM's agent;
 * - vm-secrets-sync.ts: delivering secrets at boot, hand-out and resume, and on every change;
 * - warm-pool.ts: the warm pool (refill, hand-out);
 * - vm-reconcile.ts: start-up reconciliation, sweep, purge and the guest-exit reaper;
 * - vm-lifecycle-events.ts: lifecycle events, the `ready` watch, and the wiring of
 *   vm-expiry.ts (deadlines: `ttl`, `expires_at=` tags) and vm-idle.ts (idle pause/suspend,
 *   wake on request);
 * - vm-cold-fork.ts: commits and forks (vm-commit.ts, vm-fork.ts) and the lineage of GET /vm/{h};
 * - vm-wire.ts: records → Slicer JSON; vm-paths.ts: per-VM paths and ids.
 *
 * The rules:
 * - Names `<hostgroup>-N`, N counting up per host group, never handed out twice (the counter
 *   is persisted, so a persistent VM's name is never reused after a restart).
 * - `count: N` VMs are created at start, protected from DELETE, and brought back on every start.
 * - API VMs are ephemeral unless `persistent: true`: an ephemeral VM is gone (record, disk,
 *   links) on DELETE, on guest exit and on daemon restart; a persistent VM survives restarts
 *   (re-attached if still running), keeps its disk when stopped and comes back with relaunch.
 * - Every failure while creating rolls back what was made: no half-created VM.
 * - Warm pool (`paddock.warm_pool`): see warm-pool.ts.
 *
 * Operations on one VM are serialised; creates of different VMs run concurrently. Every
 * transition is emitted to the tenant's event log (tenant-daemon/events/event-log.ts) through
 * {@link VmService.lifecycleEvent}.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { JsonStateStore } from "../../shared/state-store.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import type { EventLog, VmEventInput, VmEventReason, VmEventType } from "../events/event-log.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmNamespaces } from "../runtime/vm-namespaces.js";
import { VmAgentWait } from "./vm-agent-wait.js";
import { VmLauncher } from "./vm-boot.js";
import { VmCreator, secretsFailure, waitFailure } from "./vm-create.js";
import { EXPIRES_AT_TAG, checkPatchedDeadline, tagsWithDeadline } from "./vm-expiry.js";
import { VmPaths } from "./vm-paths.js";
import { isPidsRefusal, tenantPidsBudgetProbe, type PidsBudgetProbe } from "./vm-pids-budget.js";
import type { AgentPort, VmStorage } from "./vm-ports.js";
import type { VmIdle, VmIdleMetrics } from "./vm-idle.js";
import { VmLifecycleEvents } from "./vm-lifecycle-events.js";
import { VmTransitions } from "./vm-transitions.js";
import { VmPower, notRunningAdvice, vmPausedError } from "./vm-power.js";
import { VmReconciler } from "./vm-reconcile.js";
import { VmSecretsSync } from "./vm-secrets-sync.js";
import { VmSuspender } from "./vm-suspend.js";
import { applyTagPatch, friendlyNameOf, type CreateVmRequest, type TagFilter, type TagPatch, type WaitOptions } from "./vm-request.js";
import { VmTable } from "./vm-table.js";
import { VmColdFork, type ColdForkStorage } from "./vm-cold-fork.js";
import type { CreateResponseWire, DaemonState, NodeWire, VmRecord, WireStatus } from "./vm-types.js";
import { countByStatus, listNodes, toCreateResponse, toNode, wireStatus } from "./vm-wire.js";
import { WarmPool } from "./warm-pool.js";

export type { AgentBootInput, AgentHealthLite, AgentPort, VmStorage } from "./vm-ports.js";
export { goArch, unameArch } from "./vm-wire.js";

/** Everything {@link VmService} is built from (composition root: tenant-daemon/main.ts). */
export interface VmServiceDeps {
  config: TenantConfig;
  store: JsonStateStore<DaemonState>;
  runtime: RuntimeDriver;
  storage: VmStorage;
  network: TenantNetwork;
  agent: AgentPort;
  /** The VMs' user namespaces (pinned with the netns they own) and the tenant's id range. */
  namespaces: VmNamespaces;
  logger: Logger;
  /**
   * pids.max of each VM: `paddock.pids_limit` clamped to the tenant's pids budget
   * (tenant-daemon/runtime/tenant-cgroup.ts computeTenantBudget); default `paddock.pids_limit`.
   */
  vmPidsLimit?: number;
  /** Interval of the guest-exit reaper, ms (default 1000). */
  reapIntervalMs?: number;
  /** The tenant's lifecycle event log (`GET /events`); every VM transition is emitted into it. */
  events: EventLog;
  /** Called on VM launches/deletes for metrics. */
  onEvent?: (event: "launch" | "launch_failed" | "delete", hostGroup: string) => void;
  /**
   * The tenant's commits and the disk operations of commit and fork (vm-commit.ts,
   * vm-fork.ts); without them the cold-fork endpoints answer 501.
   */
  cold?: ColdForkStorage;
  /** Counters of idle pauses and wakes (vm-idle.ts). */
  idleMetrics?: VmIdleMetrics;
}

/**
 * One tenant's VMs: create, list, pause/resume, shutdown/relaunch, delete, tags, the reaper and
 * start-up reconciliation, with the rules in this file's header. Construct with
 * {@link VmServiceDeps}; call {@link VmService.start} once, {@link VmService.stop} at shutdown.
 */
export class VmService {
  private readonly deps: VmServiceDeps;
  private readonly log: Logger;
  private readonly paths: VmPaths;
  private readonly table: VmTable;
  private readonly agentWait: VmAgentWait;
  private readonly secretsSync: VmSecretsSync;
  private readonly launcher: VmLauncher;
  private readonly pool: WarmPool;
  private readonly creator: VmCreator;
  private readonly power: VmPower;
  private readonly suspender: VmSuspender;
  private readonly reconciler: VmReconciler;
  /** Tells a boot refused by the tenant's pids limits (vm-pids-budget.ts). */
  private readonly pids: PidsBudgetProbe;
  /** Commits, forks and lineage (vm-cold-fork.ts): the four cold-fork endpoints and GET /vm/{h}. */
  readonly coldFork: VmColdFork;
  /** Lifecycle events, the ready watch, expiry and idle (vm-lifecycle-events.ts). */
  private readonly lifecycle: VmLifecycleEvents;
  /** Idle pause/suspend and wake on request (vm-idle.ts); the API marks activity and wakes through it. */
  readonly idle: VmIdle;
  /** Shutdown, relaunch, pause, resume, suspend and restore of one VM (vm-transitions.ts). */
  readonly transitions: VmTransitions;

  constructor(deps: VmServiceDeps) {
    this.deps = deps;
    const log = (this.log = deps.logger.child({ component: "vm-service" }));
    const { config, store, runtime, storage, network, agent, namespaces } = deps;
    const paths = (this.paths = new VmPaths(config.paddock, runtime.agentChannel ?? "inherited-fd"));
    const table = (this.table = new VmTable({ config, store, committedBytes: () => deps.cold?.store.totalBytes() ?? 0 }));
    const pids = (this.pids = tenantPidsBudgetProbe(config.paddock, (h) => paths.cgroupPath(h)));
    const agentWait = (this.agentWait = new VmAgentWait({ table, agent, paths, log, bootRefusal: (h) => pids.refusal(h, { runFailed: false }) }));
    const secretsSync = (this.secretsSync = new VmSecretsSync({ table, agent, paths, agentWait, log }));
    const launcher = (this.launcher = new VmLauncher({
      config, table, runtime, storage, network, agent, namespaces, paths, secretsSync, log, vmPidsLimit: deps.vmPidsLimit,
      onReaped: (vm) => this.lifecycleEvent(vm.record, "exited", "reaped"),
    }));
    const pool = (this.pool = new WarmPool({ config, table, launcher, agentWait, secretsSync, network, runtime, paths, log, pids }));
    this.creator = new VmCreator({ table, network, launcher, log, onEvent: deps.onEvent, pids, onPidsRefused: (err, h) => pool.pidsRefused(err, h) });
    this.power = new VmPower({ table, launcher, runtime, paths });
    this.suspender = new VmSuspender({ config, table, runtime, storage, network, namespaces, paths, log });
    this.reconciler = new VmReconciler({
      config, store, table, launcher, runtime, storage, network, namespaces, paths, log, kickRefill: () => pool.kick(),
      onVmEvent: (record, type, reason, extra) => this.lifecycleEvent(record, type, reason, extra),
    });
    this.lifecycle = new VmLifecycleEvents({
      config, table, events: deps.events, log, agentWait, secretsSync, power: this.power, suspender: this.suspender, idleMetrics: deps.idleMetrics,
      remove: (h, reason) => this.remove(h, { force: true, reason }),
    });
    this.idle = this.lifecycle.idle;
    this.transitions = new VmTransitions({
      table, power: this.power, suspender: this.suspender, secretsSync, agentWait, events: this.lifecycle,
      remove: (h, reason) => this.remove(h, { force: true, reason }),
    });
    this.coldFork = new VmColdFork({
      table, runtime, creator: this.creator, agentWait, paths, image: config.image, log, cold: deps.cold,
      remove: async (h, reason) => void (await this.remove(h, { force: true, reason })),
      pidsRefusal: (h) => pids.refusal(h, { runFailed: false }),
      onForked: (vm) => {
        deps.onEvent?.("launch", vm.record.hostGroup);
        this.lifecycleEvent(vm.record, "created", "api");
        void this.lifecycle.watchReady(vm);
        this.lifecycle.expiry.kick();
      },
    });
  }

  // ── lifecycle events ───────────────────────────────────────────────────────

  /**
   * Emit a lifecycle event for a VM (by record, or by hostname of a VM the API shows) into the
   * event log: the one hook for every transition, including those other modules drive
   * (suspend/restore). Warm-pool VMs are invisible to the API and emit nothing.
   * @throws PaddockError ERR_VM_NOT_FOUND for an unknown hostname.
   */
  lifecycleEvent(vm: VmRecord | string, type: VmEventType, reason: VmEventReason, extra: Pick<VmEventInput, "deadline" | "action" | "oom_kills"> = {}): void {
    this.lifecycle.emit(vm, type, reason, extra);
  }

  // ── paths ──────────────────────────────────────────────────────────────────

  /** The VM's console log (init, agent and userdata output). */
  consoleLogPath(hostname: string): string {
    return this.paths.consoleLogPath(hostname);
  }

  // ── queries ────────────────────────────────────────────────────────────────

  /** The configured host groups. */
  hostGroups(): readonly HostGroupConfig[] {
    return this.deps.config.hostGroups;
  }

  /** @throws PaddockError ERR_HOSTGROUP_NOT_FOUND */
  hostGroup(name: string): HostGroupConfig {
    return this.table.hostGroup(name);
  }

  /** The record of a VM. @throws PaddockError ERR_VM_NOT_FOUND */
  get(hostname: string): VmRecord {
    return this.table.live(hostname).record;
  }

  /** Wire status of a VM. @throws PaddockError ERR_VM_NOT_FOUND */
  status(hostname: string): WireStatus {
    return wireStatus(this.table.live(hostname).phase);
  }

  /** Node objects, optionally of one host group and tag-filtered, in creation order. @throws ERR_HOSTGROUP_NOT_FOUND */
  list(filter: TagFilter, hostGroup?: string): NodeWire[] {
    if (hostGroup !== undefined) this.hostGroup(hostGroup);
    return listNodes(this.table.vms.values(), filter, hostGroup);
  }

  /** Node wire object of one VM. @throws ERR_VM_NOT_FOUND */
  node(hostname: string): NodeWire {
    return toNode(this.table.live(hostname));
  }

  /**
   * The agent of a running VM, for agent-backed endpoints (a paused VM answers 409, as in Slicer).
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_PAUSED, ERR_VM_NOT_RUNNING
   */
  resolveAgent(hostname: string): AgentEndpoint {
    const vm = this.table.live(hostname);
    if (vm.phase === "paused") throw vmPausedError(hostname);
    if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not running (status ${wireStatus(vm.phase)})${notRunningAdvice(hostname, vm.phase)}`);
    return this.paths.endpoint(vm.record);
  }

  /**
   * The VM's boot-time secret delivery (started by its boot or hand-out; it never rejects and
   * ends within its own bound), or undefined when the VM is unknown or has none. Agent routes
   * wait for it (tenant-daemon/api/agent-routes.ts).
   */
  secretsSettled(hostname: string): Promise<unknown> | undefined {
    return this.table.vms.get(hostname)?.secretsDelivered;
  }

  /** Warm-pool VMs per configured group: `ready` (agent answered) and `booting`. */
  warmCounts(): Record<string, { ready: number; booting: number }> {
    return this.pool.counts();
  }

  /** Counts of VMs by wire status (metrics, admin API). */
  countsByStatus(): Record<string, Record<WireStatus, number>> {
    return countByStatus(this.deps.config.hostGroups, this.table.vms.values());
  }

  /**
   * Poll the agent's health until `agent_uptime > 0` (and `userdata_ran` for `userdata`).
   * @throws PaddockError ERR_VM_WAIT_TIMEOUT (408) after `timeoutMs`; ERR_VM_NOT_RUNNING if the VM stops meanwhile.
   */
  waitForAgent(hostname: string, wait: "agent" | "userdata", timeoutMs: number): Promise<void> {
    return this.agentWait.waitForAgent(hostname, wait, timeoutMs);
  }

  // ── create ─────────────────────────────────────────────────────────────────

  /**
   * Create (and start) a VM in `groupName`, handing out a warm VM when the request fits one
   * (warm-pool.ts; a ready one with its secrets delivered, or one still booting: with `wait`
   * once its agent answers, without once its sandbox runs, as a cold create answers). With
   * `wait`, block until the agent answers (and userdata ran) and the VM's secrets are
   * delivered, at most `timeoutMs` from the request's start (a warm VM still booting counts; a
   * new VM's boot is not cut short: a timeout during it answers once it ends, within its own
   * bounds, 60 s per runtime start, so the VM is deleted when the 408 is sent);
   * on timeout, or when the secrets could not be delivered, the VM is deleted and the create
   * fails. `options` (start-up only): a protected config VM with a fixed index.
   * @throws PaddockError ERR_HOSTGROUP_NOT_FOUND, ERR_TTL_INVALID / ERR_TTL_OVER_MAX, ERR_VM_INVALID_REQUEST (a
   *   network override or `ip` the group cannot take), ERR_VM_NAME_TAKEN (all before the limits),
   *   ERR_LIMIT_EXCEEDED, ERR_NETWORK_EXHAUSTED, ERR_VM_WAIT_TIMEOUT, ERR_VM_START_FAILED (after rolling everything back, also for secrets not delivered within `wait`; ERR_LIMIT_EXCEEDED when the pids budget refused the boot or the delivery); ERR_VM_NOT_RUNNING (503) while stopping.
   */
  async create(groupName: string, req: CreateVmRequest, wait: WaitOptions = { wait: undefined, timeoutMs: 0 }, options: { protected?: boolean; index?: number } = {}): Promise<CreateResponseWire> {
    if (this.table.stopping) throw new PaddockError("ERR_VM_NOT_RUNNING", "daemon is shutting down", { status: 503 });
    const group = this.hostGroup(groupName);
    // The deadline (a ttl, the group's default) becomes the VM's expires_at= tag; config VMs never
    // expire. Checked before the limits: a malformed request is a 400 whatever the tenant holds.
    if (!options.protected) req = { ...req, tags: tagsWithDeadline(req.tags, req.ttlMs, this.lifecycle.expiryPolicy(group.name), Date.now()) };
    // So are the request's network fields and its name= tag (400, 409 whatever the tenant holds).
    this.deps.network.check?.({ hostGroup: group.name, override: req.network, requestedIp: req.ip });
    // Held until the VM (with its name= tag) is in the table, or the create failed.
    const releaseName = this.table.claimName(friendlyNameOf(req.tags));
    try {
      this.table.checkLimits(req.cpus, req.ramBytes, group.storageSizeBytes);
    } catch (err) {
      releaseName();
      throw err;
    }
    const deadline = wait.wait ? Date.now() + wait.timeoutMs : undefined;
    try {
      const warm = options.index === undefined ? await this.pool.handOut(group, req, deadline) : undefined;
      // A warm VM holds an address the caller cannot see: give it up when the request names it.
      if (warm === undefined && req.ip !== undefined) await this.pool.dropHolding(req.ip);
      const vm = warm ?? (await this.creator.createCold(group, req, options));
      const record = vm.record;
      this.deps.onEvent?.("launch", group.name);
      this.log.info("vm created", { hostname: record.hostname, persistent: record.persistent, ip: record.ipCidr, warm: warm !== undefined });
      this.lifecycleEvent(record, "created", options.protected ? "config" : warm !== undefined ? "warm_pool" : "api");
      // A warm VM handed out ready: its agent answered in the pool.
      if (warm?.ready === true) this.lifecycleEvent(record, "ready", "agent");
      // One still booting (a create without `wait`) is ready when its agent answers, as a cold VM.
      else if (warm !== undefined) void this.lifecycle.watchReady(vm);
      // A cold VM's `ready` (a whole boot) also ends a warm pool stopped by the pids budget (warm-pool.ts bootSucceeded).
      else void this.lifecycle.watchReady(vm).then((ready) => ready && this.pool.bootSucceeded(record.hostname));
      this.lifecycle.expiry.kick();
      if (wait.wait) {
        const waitStarted = performance.now();
        try {
          // A warm VM handed out ready: its agent answered in the pool and its sandbox was
          // running at hand-out; only userdata (of the group, run in the pool) may still be running.
          if (warm?.ready !== true || wait.wait === "userdata") await this.agentWait.waitForAgent(record.hostname, wait.wait, Math.max(1, (deadline ?? 0) - Date.now()));
          const agentMs = performance.now() - waitStarted;
          const delivery = await vm.secretsDelivered;
          // Asked for (all the tenant's secrets when `secrets` names none): not a VM without them.
          if (delivery?.delivered === false) throw secretsFailure(record.hostname, delivery.err, await this.pids.refusal(record.hostname, { runFailed: false }));
          // agentMs: the agent answered (health); waitMs: its secrets were delivered too.
          this.log.debug("vm wait timing", { hostname: record.hostname, wait: wait.wait, agentMs: Math.round(agentMs * 10) / 10, waitMs: Math.round((performance.now() - waitStarted) * 10) / 10 });
        } catch (err) {
          const removed = await this.remove(record.hostname, { force: true, reason: isPidsRefusal(err) ? "pids_limit" : "wait_timeout" }).then(() => true, (e: unknown) => this.log.error("cleanup after wait failure failed", { hostname: record.hostname, err: e }));
          if (isPidsRefusal(err)) this.pool.pidsRefused(err, record.hostname);
          throw waitFailure(err, wait.timeoutMs, removed === true);
        }
      }
      return toCreateResponse(record);
    } finally {
      releaseName();
      // Refill after this answer is written (timers run after the response's microtasks), so
      // the refill's process spawns do not delay it.
      setTimeout(() => this.pool.kick(), 0).unref();
    }
  }

  // ── operations on one VM ───────────────────────────────────────────────────

  /**
   * Delete a VM and its disk (`DELETE /hostgroup/{g}/nodes/{h}`). Config VMs are protected (403) unless `force`.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_PROTECTED
   */
  async remove(hostname: string, opts: { hostGroup?: string; force?: boolean; reason?: VmEventReason } = {}): Promise<{ diskRemoved: boolean }> {
    const table = this.table;
    const vm = table.live(hostname);
    if (opts.hostGroup !== undefined && vm.record.hostGroup !== opts.hostGroup) throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
    if (vm.record.protected && !opts.force) throw new PaddockError("ERR_VM_PROTECTED", `VM ${hostname} was created from count: in the config and is protected`);
    return table.withLock(hostname, async () => {
      if (vm.phase === "deleting") throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
      vm.phase = "deleting";
      try {
        await this.launcher.teardown(vm, { removeDisk: true });
      } finally {
        table.vms.delete(hostname);
        this.deps.network.release(hostname);
        await table.persist();
      }
      this.deps.onEvent?.("delete", vm.record.hostGroup);
      this.log.info("vm deleted", { hostname, reason: opts.reason ?? "api" });
      this.lifecycleEvent(vm.record, "deleted", opts.reason ?? "api");
      // The limits may have room for the warm pool again.
      this.pool.kick();
      return { diskRemoved: true };
    });
  }

  /**
   * A secret was created, changed or deleted (the `/secrets` routes call this after the store
   * write): push the granted set to every running VM granted `name`, at most
   * SECRET_PUSH_CONCURRENCY at a time (vm-secrets-sync.ts). Resolves when every push ended;
   * never rejects (failures are logged per VM).
   */
  secretChanged(name: string): Promise<void> {
    return this.secretsSync.secretChanged(name);
  }

  /**
   * Apply a tags PATCH atomically; returns the VM's tags after it. A `name=` tag may be added to
   * a VM without one when the name is free in the tenant (VmTable.checkNameFree).
   * @throws ERR_VM_NOT_FOUND, ERR_TAGS_INVALID (a changed name), ERR_VM_NAME_INVALID, ERR_VM_NAME_TAKEN,
   *   the state store's errors (tags unchanged)
   */
  async patchTags(hostname: string, patch: TagPatch): Promise<string[]> {
    const vm = this.table.live(hostname);
    const previous = vm.record.tags;
    // An added expires_at= tag moves the deadline: it replaces the one the VM has.
    const isDeadline = (t: string): boolean => t.startsWith(EXPIRES_AT_TAG);
    const next = applyTagPatch(patch.add.some(isDeadline) ? previous.filter((t) => !isDeadline(t)) : previous, patch);
    const name = friendlyNameOf(next);
    if (name !== undefined && !previous.includes(`name=${name}`)) this.table.checkNameFree(name, hostname);
    checkPatchedDeadline(vm.record, next, this.lifecycle.expiryPolicy(vm.record.hostGroup));
    vm.record.tags = next;
    try {
      await this.table.persist();
    } catch (err) {
      // Not saved (e.g. ERR_STATE_NO_SPACE): the API must not show what the state file lacks.
      vm.record.tags = previous;
      throw err;
    }
    this.lifecycle.expiry.kick();
    return [...vm.record.tags];
  }

  // ── start and stop ─────────────────────────────────────────────────────────

  /**
   * Reconcile with what the last run left (vm-reconcile.ts; the daemon may have been SIGKILLed),
   * start the spare-disk pool, create the missing `count: N` VMs, then start the reaper and the
   * warm pool. @throws PaddockError ERR_STATE_CORRUPT, and what a config VM's create throws.
   */
  async start(): Promise<void> {
    await this.deps.cold?.store.load();
    await this.reconciler.adopt();
    this.deps.storage.warmPool?.(this.deps.config.hostGroups.map((g) => g.storageSizeBytes));
    for (const g of this.deps.config.hostGroups) {
      for (let i = 1; i <= g.count; i++) {
        const hostname = `${g.name}-${i}`;
        if (this.table.vms.has(hostname)) continue;
        await this.create(g.name, { cpus: g.vcpu, ramBytes: g.ramBytes, persistent: true, tags: [], userdata: undefined, secrets: undefined, network: undefined, ip: undefined }, undefined, { protected: true, index: i });
      }
    }
    this.reconciler.startReaper(this.deps.reapIntervalMs ?? 1000);
    this.pool.kick();
    // Deadlines saved by the previous run: an overdue VM is acted on now.
    this.lifecycle.start();
  }

  /**
   * Remove every VM of the tenant the state file knows, and everything of the tenant the
   * sweep finds (sandboxes, mounts, disks): used when a tenant is deleted (`purge`).
   */
  async purge(): Promise<void> {
    await this.reconciler.purge();
    await this.deps.cold?.store.purge();
  }

  /**
   * Stop the service for a daemon shutdown: the warm pool stops refilling; warm and ephemeral
   * VMs are stopped and deleted; persistent and config VMs keep running (sandboxes are detached)
   * and are re-attached by the next start. With `purge`, every VM and disk is removed.
   * Teardown, spare-disk and state-write failures are logged, not thrown.
   */
  async stop(opts: { purge?: boolean } = {}): Promise<void> {
    const table = this.table;
    table.stopping = true;
    this.reconciler.stopReaper();
    this.lifecycle.stop();
    await this.pool.settled();
    await table.settled();
    const work = table.all().map(async (vm) => {
      if (!opts.purge && vm.record.persistent) return;
      await table.withLock(vm.record.hostname, async () => {
        vm.phase = "deleting";
        await this.launcher.teardown(vm, { removeDisk: true }).catch((err: unknown) => this.log.error("teardown at stop failed", { hostname: vm.record.hostname, err }));
        (vm.record.pooled ? table.warm : table.vms).delete(vm.record.hostname);
        this.deps.network.release(vm.record.hostname);
        this.lifecycleEvent(vm.record, "deleted", opts.purge ? "api" : "daemon_stop");
      });
    });
    await Promise.all(work);
    // Persistent VMs' reverse-channel listeners: their agents redial the next daemon's.
    await this.paths.dialPools.closeAll().catch((err: unknown) => this.log.error("closing agent channels at stop failed", { err }));
    await this.deps.storage.drainPool?.().catch((err: unknown) => this.log.error("spare disk removal at stop failed", { err }));
    await table.persist().catch((err: unknown) => this.log.error("state write at stop failed", { err }));
  }
}
