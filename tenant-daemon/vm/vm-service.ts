/**
 * The VM lifecycle rules of one tenant daemon (seed "Lifecycle", spec §2.2–§2.3, §3.1–§3.5).
 *
 * - Names `<hostgroup>-N`, N counting up per host group, never handed out twice (the counter
 *   is persisted, so a persistent VM's name is never reused after a restart).
 * - `count: N` VMs are created at start, protected from DELETE, and brought back on every start.
 * - API VMs are ephemeral unless `persistent: true`: an ephemeral VM is gone (record, disk,
 *   links) on DELETE, on guest exit and on daemon restart; a persistent VM survives restarts
 *   (re-attached if still running), keeps its disk when stopped and comes back with relaunch.
 * - Every failure while creating rolls back what was made: no half-created VM.
 * - Warm pool (`paddock.warm_pool`, Paddock's own): per host group, N VMs are booted ahead with
 *   the group's defaults (and its userdata), agent ready, under the next names of the group's
 *   counter. A create that asks for nothing a warm VM cannot give (no `userdata`, `ip` or
 *   `network` of its own; `cpus`/`ram_bytes` at most the defaults, applied with a runtime
 *   update) is handed the warm VM with the lowest N instead of booting one, and the pool is
 *   refilled in the background. Warm VMs are not listed, not counted against the tenant's
 *   limits (the pool only fills while the limits leave room for it), get no secrets until
 *   handed out, and are removed on daemon stop and restart; their names were never handed out,
 *   so a restart may give them again.
 *
 * Operations on one VM are serialised; creates of different VMs run concurrently.
 */
import { promises as fs, watch, type FSWatcher } from "node:fs";
import path from "node:path";
import os from "node:os";
import { PaddockError, errnoCode, isPaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { pidAlive, type JsonStateStore } from "../../shared/state-store.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import { rfc3339, sleep } from "../../shared/time.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmNamespaces } from "../runtime/vm-namespaces.js";
import { removeUnmountedTree } from "../storage/vm-disk.js";
import { newAgentProof, type AgentEndpoint } from "../agent-client/agent-endpoint.js";
import {
  applyTagPatch, matchesTagFilter, type CreateVmRequest, type TagFilter, type TagPatch, type WaitOptions,
} from "./vm-request.js";
import type { CreateResponseWire, DaemonState, NodeWire, VmPhase, VmRecord, WireStatus } from "./vm-types.js";

/** Per-VM storage as the VM service needs it (implemented over tenant-daemon/storage). */
export interface VmStorage {
  /** Create the VM's disk if it does not exist yet (an existing one is kept). */
  prepare(hostname: string, sizeBytes: number): Promise<void>;
  /** Mount disk + overlay; returns the rootfs directory. Idempotent. */
  mount(hostname: string): Promise<string>;
  /** Unmount overlay and disk; idempotent. */
  unmount(hostname: string): Promise<void>;
  /** Remove the disk file; idempotent. */
  remove(hostname: string): Promise<void>;
  /** Unmount and remove what belongs to no VM in `keep`. */
  sweep(keep: ReadonlySet<string>): Promise<void>;
  /** Keep pre-formatted spare disks of these sizes (background; optional). */
  warmPool?(sizesBytes: readonly number[]): void;
  /** Delete every spare disk and stop refilling (daemon stop). */
  drainPool?(): Promise<void>;
  /** Bytes used and total of the VM's disk (for stats); undefined when not mounted. */
  usage?(hostname: string): Promise<{ usedBytes: number; totalBytes: number } | undefined>;
}

/** Health answer of the guest agent (spec §2.4), as far as the lifecycle needs it. */
export interface AgentHealthLite {
  agent_uptime: number;
  userdata_ran: boolean;
}

/** What the agent reads at boot (tenant-daemon/agent/boot.ts), as the VM service fills it in. */
export interface AgentBootInput {
  hostname: string;
  userdata: string | undefined;
  /** The guest's /etc/resolv.conf, written by the agent; undefined ⇒ the image's. */
  resolvConf: string | undefined;
  /** Per-boot proof the agent echoes on every answer. */
  proof: string;
}

/** The guest agent as the VM service needs it (implemented over tenant-daemon/agent-client). */
export interface AgentPort {
  /** @throws when the agent does not answer within `timeoutMs`, or without its proof. */
  health(endpoint: AgentEndpoint, timeoutMs: number): Promise<AgentHealthLite>;
  /** Write boot.json into the VM's host-only boot dir, owned by `owner` (the VM's root on the host), mode 0600. */
  writeBoot(bootDir: string, boot: AgentBootInput, owner: { uid: number; gid: number }): Promise<void>;
  /** Deliver secrets (all, or the named ones) once the agent answers. */
  syncSecrets(endpoint: AgentEndpoint, names: string[] | undefined): Promise<void>;
}

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
  /** Called on VM launches/deletes for metrics. */
  onEvent?: (event: "launch" | "launch_failed" | "delete", hostGroup: string) => void;
}

interface LiveVm {
  record: VmRecord;
  phase: VmPhase;
  pid: number | undefined;
  /** Secret delivery started by the last boot or hand-out; never rejects. */
  secretsDelivered?: Promise<void>;
}

/** A warm-pool VM; `ready` once its agent has answered. */
interface WarmVm extends LiveVm {
  ready: boolean;
  /** Settles when the boot ends: true once the agent answered, false when the boot failed. */
  booted: Promise<boolean>;
}

/** Longest a warm VM may take to boot and answer before it is discarded, ms. */
const WARM_BOOT_TIMEOUT_MS = 60_000;
/** Retry delays after a failed warm boot: doubling from the first, capped at the second, ms. */
const WARM_RETRY_MS = [1_000, 60_000] as const;

/** Go's GOARCH for `/info` and create responses (spec §2.1, §5 #21). */
export function goArch(): string {
  return os.arch() === "x64" ? "amd64" : os.arch();
}
/** Kernel-style arch for node lists (spec §2.2 examples: `x86_64`). */
export function unameArch(): string {
  return os.arch() === "x64" ? "x86_64" : os.arch() === "arm64" ? "aarch64" : os.arch();
}

/**
 * One tenant's VMs: create, list, pause/resume, shutdown/relaunch, delete, tags, the reaper and
 * start-up reconciliation, with the rules in this file's header. Construct with
 * {@link VmServiceDeps}; call {@link VmService.start} once, {@link VmService.stop} at shutdown.
 */
export class VmService {
  private readonly deps: VmServiceDeps;
  private readonly vms = new Map<string, LiveVm>();
  /** Warm-pool VMs by hostname (never in `vms`). */
  private readonly warm = new Map<string, WarmVm>();
  /** Highest N allocated per group, warm VMs included (in memory). */
  private readonly counters = new Map<string, number>();
  /** Highest N handed out per group (persisted: DaemonState.counters). */
  private readonly issued = new Map<string, number>();
  /** The running refill of the warm pool, if any; `refillAgain` asks it for one more pass. */
  private refilling: Promise<void> | undefined;
  private refillAgain = false;
  /** Per group: consecutive warm boot failures and when the next try may start (epoch ms). */
  private readonly warmRetry = new Map<string, { failures: number; at: number }>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private reaper: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly log: Logger;

  constructor(deps: VmServiceDeps) {
    this.deps = deps;
    this.log = deps.logger.child({ component: "vm-service" });
  }

  // ── paths and ids ──────────────────────────────────────────────────────────

  /** Runtime id of a VM: `pdk-<tenant>-<hostname>` (deterministic, so a sweep finds it). */
  containerId(hostname: string): string {
    return `${this.containerPrefix()}${hostname}`;
  }
  private containerPrefix(): string {
    return `pdk-${this.deps.config.paddock.tenantId}-`;
  }
  /** Host-only dir of the VM's agent channel (0700): the agent listener and the boot dir. Never mounted into the guest. */
  agentDir(hostname: string): string {
    return path.join(this.deps.config.paddock.runDir, "vms", hostname);
  }
  /** The boot dir (boot.json), bound read-only into the guest; owned by the VM's root. */
  bootDir(hostname: string): string {
    return path.join(this.agentDir(hostname), "boot");
  }
  /** The agent listener on the host (bound by the runtime, accepted on inside the VM). */
  agentSocket(hostname: string): string {
    return path.join(this.agentDir(hostname), "agent.sock");
  }
  /** How to reach a VM's agent, and the proof its answers carry. */
  private endpoint(r: VmRecord): AgentEndpoint {
    return { hostname: r.hostname, socketPath: this.agentSocket(r.hostname), proof: r.agentProof ?? "" };
  }
  /** The VM's console log (init, agent and userdata output). */
  consoleLogPath(hostname: string): string {
    return path.join(this.deps.config.paddock.stateDir, "logs", `${hostname}.log`);
  }
  private bundleDir(hostname: string): string {
    return path.join(this.deps.config.paddock.runDir, "bundles", hostname);
  }

  // ── queries ────────────────────────────────────────────────────────────────

  /** The configured host groups. */
  hostGroups(): readonly HostGroupConfig[] {
    return this.deps.config.hostGroups;
  }

  /** @throws PaddockError ERR_HOSTGROUP_NOT_FOUND */
  hostGroup(name: string): HostGroupConfig {
    const g = this.deps.config.hostGroups.find((h) => h.name === name);
    if (!g) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${JSON.stringify(name)} not found`);
    return g;
  }

  /** @throws PaddockError ERR_VM_NOT_FOUND */
  private live(hostname: string): LiveVm {
    const vm = this.vms.get(hostname);
    if (!vm || vm.phase === "deleting") throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
    return vm;
  }

  /** The record of a VM. @throws PaddockError ERR_VM_NOT_FOUND */
  get(hostname: string): VmRecord {
    return this.live(hostname).record;
  }

  /** Wire status of a VM. */
  status(hostname: string): WireStatus {
    return wireStatus(this.live(hostname).phase);
  }

  /** Node objects, optionally of one host group and tag-filtered, in creation order. */
  list(filter: TagFilter, hostGroup?: string): NodeWire[] {
    if (hostGroup !== undefined) this.hostGroup(hostGroup);
    const out: NodeWire[] = [];
    for (const vm of this.vms.values()) {
      if (vm.phase === "deleting") continue;
      if (hostGroup !== undefined && vm.record.hostGroup !== hostGroup) continue;
      if (!matchesTagFilter(vm.record.tags, filter)) continue;
      out.push(this.toNode(vm));
    }
    return out;
  }

  /** Node wire object of one VM. @throws ERR_VM_NOT_FOUND */
  node(hostname: string): NodeWire {
    return this.toNode(this.live(hostname));
  }

  private toNode(vm: LiveVm): NodeWire {
    const r = vm.record;
    return {
      hostname: r.hostname, hostgroup: r.hostGroup, ip: r.ipCidr.split("/")[0] ?? "", ram_bytes: r.ramBytes, cpus: r.cpus,
      created_at: r.createdAt, arch: unameArch(), tags: [...r.tags], status: wireStatus(vm.phase), persistent: r.persistent,
    };
  }

  private toCreateResponse(r: VmRecord): CreateResponseWire {
    return { hostname: r.hostname, hostgroup: r.hostGroup, ip: r.ipCidr, created_at: r.createdAt, arch: goArch(), persistent: r.persistent };
  }

  /** The agent of a running VM, for agent-backed endpoints (a paused VM answers 409, as in Slicer). */
  resolveAgent(hostname: string): AgentEndpoint {
    const vm = this.live(hostname);
    if (vm.phase === "paused") throw new PaddockError("ERR_VM_PAUSED", "VM paused");
    if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not running (status ${wireStatus(vm.phase)})`);
    return this.endpoint(vm.record);
  }

  /** Warm-pool VMs per configured group: `ready` (agent answered) and `booting`. */
  warmCounts(): Record<string, { ready: number; booting: number }> {
    const out: Record<string, { ready: number; booting: number }> = {};
    for (const g of Object.keys(this.deps.config.paddock.warmPool)) out[g] = { ready: 0, booting: 0 };
    for (const vm of this.warm.values()) {
      const c = (out[vm.record.hostGroup] ??= { ready: 0, booting: 0 });
      if (vm.ready) c.ready += 1;
      else c.booting += 1;
    }
    return out;
  }

  /** Counts of VMs by wire status (metrics, admin API). */
  countsByStatus(): Record<string, Record<WireStatus, number>> {
    const out: Record<string, Record<WireStatus, number>> = {};
    for (const g of this.deps.config.hostGroups) out[g.name] = { Running: 0, Paused: 0, Stopped: 0 };
    for (const vm of this.vms.values()) {
      const c = out[vm.record.hostGroup];
      if (c && vm.phase !== "deleting") c[wireStatus(vm.phase)] += 1;
    }
    return out;
  }

  // ── serialisation ──────────────────────────────────────────────────────────

  private withLock<T>(hostname: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(hostname) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(hostname, tail);
    void tail.then(() => {
      if (this.locks.get(hostname) === tail) this.locks.delete(hostname);
    });
    return next;
  }

  private async persist(): Promise<void> {
    const vms: Record<string, VmRecord> = {};
    for (const [h, vm] of this.vms) vms[h] = vm.record;
    for (const [h, vm] of this.warm) vms[h] = vm.record;
    const counters = Object.fromEntries(this.issued);
    await this.deps.store.update((s) => {
      s.vms = vms;
      s.counters = counters;
    });
  }

  // ── create ─────────────────────────────────────────────────────────────────

  /** Next free `<group>-N`; synchronous so concurrent creates never share a name. */
  private allocateName(group: string): { hostname: string; index: number } {
    let n = this.counters.get(group) ?? 0;
    let hostname: string;
    do {
      n += 1;
      hostname = `${group}-${n}`;
    } while (this.vms.has(hostname) || this.warm.has(hostname));
    this.counters.set(group, n);
    return { hostname, index: n };
  }

  /** Record that `<group>-index` was handed out (persisted by the next {@link persist}). */
  private markIssued(group: string, index: number): void {
    this.issued.set(group, Math.max(this.issued.get(group) ?? 0, index));
    this.counters.set(group, Math.max(this.counters.get(group) ?? 0, index));
  }

  /**
   * Check the tenant's limits (issue 4 §5) for one more VM of this size.
   * @throws PaddockError ERR_LIMIT_EXCEEDED naming the limit.
   */
  private checkLimits(cpus: number, ramBytes: number, diskBytes: number, opts: { includeWarm?: boolean } = {}): void {
    const l = this.deps.config.paddock.limits;
    let count = 0, vcpu = 0, ram = 0, disk = 0;
    for (const vm of opts.includeWarm ? [...this.vms.values(), ...this.warm.values()] : this.vms.values()) {
      if (vm.phase === "deleting") continue;
      count += 1;
      vcpu += vm.record.cpus;
      ram += vm.record.ramBytes;
      disk += vm.record.storageSizeBytes;
    }
    const over = (what: string, limit: number | undefined, used: number, add: number, unit = ""): void => {
      if (limit !== undefined && used + add > limit) {
        throw new PaddockError("ERR_LIMIT_EXCEEDED", `tenant limit ${what} exceeded: ${used}${unit} in use + ${add}${unit} requested > ${limit}${unit}`, { details: { limit: what } });
      }
    };
    over("max_vms", l.maxVms, count, 1);
    over("max_vcpu", l.maxVcpu, vcpu, cpus);
    over("max_ram_bytes", l.maxRamBytes, ram, ramBytes, " bytes");
    over("max_disk_bytes", l.maxDiskBytes, disk, diskBytes, " bytes");
  }

  /**
   * Create (and start) a VM in `groupName` (spec §2.2), handing out a warm VM when the request
   * fits one (file header). With `wait`, block until the agent answers (and userdata ran) and
   * the VM's secrets are delivered; on timeout the VM is deleted and 408 thrown.
   * @throws PaddockError ERR_HOSTGROUP_NOT_FOUND, ERR_LIMIT_EXCEEDED, ERR_NETWORK_EXHAUSTED,
   *   ERR_VM_WAIT_TIMEOUT, ERR_VM_START_FAILED (after rolling everything back).
   */
  async create(groupName: string, req: CreateVmRequest, wait: WaitOptions = { wait: undefined, timeoutMs: 0 }, options: { protected?: boolean; index?: number } = {}): Promise<CreateResponseWire> {
    if (this.stopping) throw new PaddockError("ERR_VM_NOT_RUNNING", "daemon is shutting down", { status: 503 });
    const group = this.hostGroup(groupName);
    this.checkLimits(req.cpus, req.ramBytes, group.storageSizeBytes);
    try {
      const warm = options.index === undefined ? await this.handOutWarm(group, req) : undefined;
      // A warm VM holds an address the caller cannot see: give it up when the request names it.
      if (warm === undefined && req.ip !== undefined) await this.dropWarmHolding(req.ip);
      const vm = warm ?? (await this.createCold(group, req, options));
      const record = vm.record;
      this.deps.onEvent?.("launch", group.name);
      this.log.info("vm created", { hostname: record.hostname, persistent: record.persistent, ip: record.ipCidr, warm: warm !== undefined });
      if (wait.wait) {
        const waitStarted = performance.now();
        try {
          // A warm VM's agent answered when it joined the pool and its sandbox was running at
          // hand-out; only userdata (of the group, run in the pool) may still be running.
          if (warm === undefined || wait.wait === "userdata") await this.waitForAgent(record.hostname, wait.wait, wait.timeoutMs);
          await vm.secretsDelivered;
          this.log.debug("vm wait timing", { hostname: record.hostname, wait: wait.wait, waitMs: Math.round((performance.now() - waitStarted) * 10) / 10 });
        } catch (err) {
          await this.remove(record.hostname, { force: true }).catch((e: unknown) => this.log.error("cleanup after wait failure failed", { hostname: record.hostname, err: e }));
          throw err;
        }
      }
      return this.toCreateResponse(record);
    } finally {
      // Refill after this answer is written (timers run after the response's microtasks), so
      // the refill's process spawns do not delay it.
      setTimeout(() => this.kickRefill(), 0).unref();
    }
  }

  /** Allocate, boot and record a new VM (the path without a warm VM). */
  private async createCold(group: HostGroupConfig, req: CreateVmRequest, options: { protected?: boolean; index?: number }): Promise<LiveVm> {
    const before = { counter: this.counters.get(group.name), issued: this.issued.get(group.name) };
    let hostname: string, index: number;
    if (options.index !== undefined) {
      index = options.index;
      hostname = `${group.name}-${index}`;
    } else {
      ({ hostname, index } = this.allocateName(group.name));
    }
    this.markIssued(group.name, index);
    let ipCidr: string;
    try {
      ipCidr = this.deps.network.reserve({ hostname, hostGroup: group.name, override: req.network, requestedIp: req.ip });
    } catch (err) {
      // Refused before anything existed (a bad or taken `ip`, no address left): the name was
      // never handed out, so it is not used up. Nothing ran in between (all synchronous).
      if (options.index === undefined) {
        setOrDelete(this.counters, group.name, before.counter);
        setOrDelete(this.issued, group.name, before.issued);
      }
      throw err;
    }
    const record: VmRecord = {
      hostname, hostGroup: group.name, index, cpus: req.cpus, ramBytes: req.ramBytes, storageSizeBytes: group.storageSizeBytes,
      persistent: req.persistent || options.protected === true, protected: options.protected === true, tags: [...req.tags],
      createdAt: rfc3339(), ipCidr, userdata: req.userdata, secrets: req.secrets, network: req.network, desired: "running",
    };
    const vm: LiveVm = { record, phase: "creating", pid: undefined };
    this.vms.set(hostname, vm);
    try {
      await this.saveAndBoot(vm);
    } catch (err) {
      this.deps.onEvent?.("launch_failed", group.name);
      this.log.error("create failed; rolling back", { hostname, err });
      await this.discard(vm);
      if (isPaddockError(err) && (err.isClientError || err.code === "ERR_STATE_NO_SPACE" || err.code === "ERR_STORAGE_OVERCOMMIT")) throw err;
      throw new PaddockError("ERR_VM_START_FAILED", `VM ${hostname} failed to start: ${(err as Error).message}`, { cause: err });
    }
    return vm;
  }

  /**
   * Under the VM's lock, save the state (with its new record) while the VM boots. A crash
   * mid-boot is cleaned by the start-up sweep either way: everything of a VM is found by its
   * deterministic names. @throws the boot's error first, else the save's; the caller rolls back.
   */
  private async saveAndBoot(vm: LiveVm): Promise<void> {
    await this.withLock(vm.record.hostname, async () => {
      const [saved, booted] = await Promise.allSettled([this.persist(), this.boot(vm)]);
      if (booted.status === "rejected") throw booted.reason;
      if (saved.status === "rejected") throw saved.reason;
    });
  }

  /** Tear down a VM that never became (or stopped being) one the API shows, and forget it. */
  private async discard(vm: LiveVm): Promise<void> {
    const hostname = vm.record.hostname;
    await this.withLock(hostname, () => this.teardown(vm, { removeDisk: true })).catch((e: unknown) => this.log.error("rollback failed", { hostname, err: e }));
    if (this.vms.get(hostname) === vm) this.vms.delete(hostname);
    if (this.warm.get(hostname) === vm) this.warm.delete(hostname);
    this.deps.network.release(hostname);
    await this.persist().catch(() => undefined);
  }

  // ── warm pool ──────────────────────────────────────────────────────────────

  /**
   * Hand out the warm VM of `group` with the lowest N, made the VM `req` asks for (tags,
   * persistence, secrets, a smaller size by a runtime update): a ready one if there is one,
   * else one still booting (its boot is further on than a new one would be; and right after
   * a daemon start the first create still gets `<group>-1`). Undefined when the group has no
   * warm VM, when `req` needs a boot of its own (userdata, ip, network), or when the hand-out
   * failed (the warm VM is then discarded and the caller boots one).
   */
  private async handOutWarm(group: HostGroupConfig, req: CreateVmRequest): Promise<LiveVm | undefined> {
    if (req.userdata !== undefined || req.ip !== undefined || req.network !== undefined) return undefined;
    let vm: WarmVm | undefined;
    const rank = (w: WarmVm): number => (w.ready ? 0 : 1e9) + w.record.index;
    for (const w of this.warm.values()) {
      if (w.record.hostGroup !== group.name || (w.ready ? w.phase !== "running" : w.phase !== "creating" && w.phase !== "running")) continue;
      if (vm === undefined || rank(w) < rank(vm)) vm = w;
    }
    if (vm === undefined) return undefined;
    const r = vm.record;
    // Taken synchronously: no other create can be handed the same VM.
    this.warm.delete(r.hostname);
    this.vms.set(r.hostname, vm);
    this.markIssued(group.name, r.index);
    const resize = req.cpus !== r.cpus || req.ramBytes !== r.ramBytes;
    delete r.pooled;
    Object.assign(r, { cpus: req.cpus, ramBytes: req.ramBytes, persistent: req.persistent, tags: [...req.tags], secrets: req.secrets, createdAt: rfc3339() });
    if (!(await vm.booted)) {
      // bootWarm leaves a VM it no longer holds to its new owner.
      this.log.warn("the warm VM handed out failed to boot; booting a new one", { hostname: r.hostname });
      if (this.vms.get(r.hostname) === vm) await this.discard(vm);
      return undefined;
    }
    // The agent has answered: deliver at once, alongside the state write.
    vm.secretsDelivered = this.deliverSecrets(r, { agentReady: true });
    try {
      await this.withLock(r.hostname, async () => {
        if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `warm VM ${r.hostname} stopped before it was handed out`);
        await Promise.all([resize ? this.deps.runtime.update(this.containerId(r.hostname), { cpus: r.cpus, ramBytes: r.ramBytes }) : undefined, this.persist()]);
      });
    } catch (err) {
      this.log.warn("hand-out of a warm VM failed; booting a new one", { hostname: r.hostname, err });
      await this.discard(vm);
      return undefined;
    }
    return vm;
  }

  /** Remove the warm VM holding address `ip` (a.b.c.d), if any; the pool refills later. */
  private async dropWarmHolding(ip: string): Promise<void> {
    for (const w of this.warm.values()) {
      if (w.record.ipCidr.split("/")[0] !== ip) continue;
      this.warm.delete(w.record.hostname);
      this.log.info("removing a warm VM whose address a create asks for", { hostname: w.record.hostname, ip });
      // No refill from here: it would take the address back before the caller reserves it
      // (create() refills after its answer).
      await this.discard(w);
      return;
    }
  }

  /** Start a refill of the warm pool unless one runs (then it makes one more pass). */
  private kickRefill(): void {
    if (this.stopping || Object.keys(this.deps.config.paddock.warmPool).length === 0) return;
    if (this.refilling) {
      this.refillAgain = true;
      return;
    }
    this.refillAgain = false;
    this.refilling = this.refill().finally(() => {
      this.refilling = undefined;
      if (this.refillAgain) this.kickRefill();
    });
  }

  /**
   * Boot warm VMs one at a time (a burst of boots would slow the creates the pool is for) until
   * every group has its `warm_pool` size, the tenant's limits leave no room, or a group failed
   * and waits for its retry time (doubling delays, {@link WARM_RETRY_MS}).
   */
  private async refill(): Promise<void> {
    for (;;) {
      const group = this.groupToWarm();
      if (group === undefined) return;
      try {
        await this.bootWarm(group);
        this.warmRetry.delete(group.name);
      } catch (err) {
        if (this.stopping) return;
        const failures = (this.warmRetry.get(group.name)?.failures ?? 0) + 1;
        const delay = Math.min(WARM_RETRY_MS[0] * 2 ** (failures - 1), WARM_RETRY_MS[1]);
        this.warmRetry.set(group.name, { failures, at: Date.now() + delay });
        this.log.warn("warm VM boot failed; retrying later", { hostGroup: group.name, failures, retryInMs: delay, err });
        setTimeout(() => this.kickRefill(), delay).unref();
      }
    }
  }

  /** The next host group short of warm VMs that may get one now, if any. */
  private groupToWarm(): HostGroupConfig | undefined {
    if (this.stopping) return undefined;
    for (const [name, size] of Object.entries(this.deps.config.paddock.warmPool)) {
      const retry = this.warmRetry.get(name);
      if (retry !== undefined && retry.at > Date.now()) continue;
      let have = 0;
      for (const w of this.warm.values()) if (w.record.hostGroup === name) have += 1;
      if (have >= size) continue;
      const group = this.hostGroup(name);
      try {
        this.checkLimits(group.vcpu, group.ramBytes, group.storageSizeBytes, { includeWarm: true });
      } catch {
        continue;
      }
      return group;
    }
    return undefined;
  }

  /**
   * Boot one warm VM of `group` and wait for its agent.
   * @throws whatever the boot threw (rolled back), unless the VM left the pool meanwhile.
   */
  private async bootWarm(group: HostGroupConfig): Promise<void> {
    const { hostname, index } = this.allocateName(group.name);
    const ipCidr = this.deps.network.reserve({ hostname, hostGroup: group.name, override: undefined, requestedIp: undefined });
    const record: VmRecord = {
      hostname, hostGroup: group.name, index, cpus: group.vcpu, ramBytes: group.ramBytes, storageSizeBytes: group.storageSizeBytes,
      persistent: false, protected: false, tags: [], createdAt: rfc3339(), ipCidr, userdata: undefined, secrets: undefined,
      network: undefined, desired: "running", pooled: true,
    };
    let settle: (ok: boolean) => void = () => undefined;
    const vm: WarmVm = { record, phase: "creating", pid: undefined, ready: false, booted: new Promise<boolean>((resolve) => (settle = resolve)) };
    this.warm.set(hostname, vm);
    try {
      await this.saveAndBoot(vm);
      await this.waitForAgent(hostname, "agent", WARM_BOOT_TIMEOUT_MS);
      vm.ready = true;
      settle(true);
      this.log.debug("warm VM ready", { hostname });
    } catch (err) {
      settle(false);
      if (this.warm.get(hostname) === vm) {
        await this.discard(vm);
        throw err;
      }
      // Handed out while booting: a failure, and its new owner discards it.
      if (this.vms.get(hostname) === vm) throw err;
      // Taken out of the pool on purpose meanwhile (daemon stop, a create wanting its address,
      // the reaper): whoever took it tears it down; not a failed boot.
      this.log.debug("warm VM removed while it booted", { hostname, err });
    }
  }

  /**
   * Start a VM's sandbox: disk, rootfs, network, boot info, runtime. Leaves the VM `running`.
   * On failure the caller tears down.
   */
  private async boot(vm: LiveVm): Promise<void> {
    const r = vm.record;
    // Read now: a warm VM may be handed out while it boots.
    const warmBoot = r.pooled === true;
    const group = this.hostGroup(r.hostGroup);
    vm.phase = "creating";
    // The boot's proof, set before the first await: saveAndBoot's state write runs alongside
    // this boot, and a daemon killed right after it must find the proof the agent will echo.
    r.agentProof = newAgentProof();
    const spans = new Spans();
    const range = this.deps.namespaces.range;
    const owner = { uid: range.uidStart, gid: range.uidStart };
    await Promise.all([
      fs.mkdir(path.dirname(this.consoleLogPath(r.hostname)), { recursive: true, mode: 0o700 }),
      (async () => {
        // A fresh boot dir each boot: nothing of an earlier boot survives in it.
        await fs.rm(this.bootDir(r.hostname), { recursive: true, force: true });
        await fs.mkdir(this.bootDir(r.hostname), { recursive: true, mode: 0o700 });
        await fs.chown(this.bootDir(r.hostname), owner.uid, owner.gid);
      })(),
      fs.mkdir(this.bundleDir(r.hostname), { recursive: true, mode: 0o711 }),
    ]);
    spans.mark("dirs");
    // Disk and network are independent: build them concurrently. Both settle before anything
    // else happens, so a failure never leaves one half still running while the caller tears down.
    const [disk, net] = await Promise.allSettled([
      (async () => {
        await this.deps.storage.prepare(r.hostname, r.storageSizeBytes);
        spans.mark("disk");
        const dir = await this.deps.storage.mount(r.hostname);
        spans.mark("mount");
        return dir;
      })(),
      this.deps.network.attach({ hostname: r.hostname, hostGroup: r.hostGroup, previousIp: r.ipCidr, override: r.network }).finally(() => spans.mark("network")),
    ]);
    if (disk.status === "rejected") throw disk.reason;
    if (net.status === "rejected") throw net.reason;
    const rootfsDir = disk.value;
    const attachment = net.value;
    const userdata = r.userdata ?? group.userdata ?? (group.userdataFile ? await fs.readFile(group.userdataFile, "utf8") : undefined);
    // The host writes nothing into the guest's tree: hostname and resolv.conf travel in boot.json
    // (a host-only, read-only bind) and the agent writes them from inside the VM.
    await this.deps.agent.writeBoot(this.bootDir(r.hostname), { hostname: r.hostname, userdata, resolvConf: attachment.resolvConf, proof: r.agentProof }, owner);
    spans.mark("files");
    const id = this.containerId(r.hostname);
    const st = await this.deps.runtime.run({
      id, hostname: r.hostname, cpus: r.cpus, ramBytes: r.ramBytes, pidsLimit: this.deps.vmPidsLimit ?? this.deps.config.paddock.pidsLimit,
      rootfsDir, bundleDir: this.bundleDir(r.hostname), bootDir: this.bootDir(r.hostname), agentSocketPath: this.agentSocket(r.hostname),
      netnsPath: attachment.netnsPath,
      userns: { path: attachment.netnsPath === undefined ? undefined : this.deps.namespaces.usernsPath(r.hostname), uidStart: range.uidStart, size: range.size },
      consoleLogPath: this.consoleLogPath(r.hostname), consoleLogBytes: this.deps.config.paddock.consoleLogBytes, cgroupPath: `/paddock/${this.deps.config.paddock.tenantId}/${r.hostname}`,
      seccomp: this.deps.config.paddock.seccomp[r.hostGroup] ?? "default",
    });
    spans.mark("runtime-run");
    if (st.status !== "running") throw new PaddockError("ERR_VM_START_FAILED", `sandbox ${id} is ${st.status} right after start; see the console log`);
    vm.pid = st.pid;
    vm.phase = "running";
    this.log.debug("vm boot timing", { hostname: r.hostname, totalMs: spans.totalMs(), atMs: spans.atMs });
    // A warm VM gets its secrets when it is handed out (the request names which).
    if (!warmBoot) vm.secretsDelivered = this.deliverSecrets(r);
  }

  /**
   * Deliver secrets once the agent is up (best effort, bounded by 60 s; never rejects).
   * `agentReady`: the agent is known to answer (a warm VM), so do not poll its health first.
   */
  private async deliverSecrets(r: VmRecord, opts: { agentReady?: boolean } = {}): Promise<void> {
    try {
      if (!opts.agentReady) await this.waitForAgent(r.hostname, "agent", 60_000);
      await this.deps.agent.syncSecrets(this.endpoint(r), r.secrets);
    } catch (err) {
      if (this.vms.get(r.hostname)?.phase === "running") this.log.warn("secret delivery failed", { hostname: r.hostname, err });
    }
  }

  /**
   * Poll the agent's health until `agent_uptime > 0` (and `userdata_ran` for `userdata`).
   * @throws PaddockError ERR_VM_WAIT_TIMEOUT (408) after `timeoutMs`; ERR_VM_NOT_RUNNING if the VM stops meanwhile.
   */
  async waitForAgent(hostname: string, wait: "agent" | "userdata", timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    // Until the socket exists, wake on inotify events of the agent dir (the socket appearing)
    // instead of sleeping; the timer stays as a fallback should an event be missed.
    const dirEvents = watchDir(this.agentDir(hostname));
    try {
      let delay = 5;
      for (;;) {
        const vm = this.vms.get(hostname) ?? this.warm.get(hostname);
        if (!vm || vm.phase === "deleting" || vm.phase === "stopped") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} was deleted or stopped while waiting for ${wait === "userdata" ? "its userdata" : "its agent"}`);
        if (this.stopping && vm.record.pooled) throw new PaddockError("ERR_VM_NOT_RUNNING", "daemon is shutting down", { status: 503 });
        const changed = dirEvents.next();
        let socketSeen = false;
        try {
          const h = await this.deps.agent.health(this.endpoint(vm.record), Math.max(50, Math.min(2000, deadline - Date.now())));
          socketSeen = true;
          if (h.agent_uptime > 0 && (wait === "agent" || h.userdata_ran)) return;
        } catch (err) {
          socketSeen = errnoCode(err) !== "ENOENT" && errnoCode((err as { cause?: unknown }).cause) !== "ENOENT";
        }
        if (Date.now() >= deadline) throw new PaddockError("ERR_VM_WAIT_TIMEOUT", `timed out after ${timeoutMs} ms waiting for ${wait} on ${hostname}; the VM was deleted`);
        const remaining = Math.max(1, deadline - Date.now());
        if (socketSeen || !dirEvents.watching) {
          await sleep(Math.min(delay, remaining));
          delay = Math.min(delay * 2, 100);
        } else {
          await Promise.race([changed, sleep(Math.min(250, remaining))]);
        }
      }
    } finally {
      dirEvents.close();
    }
  }

  // ── teardown ───────────────────────────────────────────────────────────────

  /** Stop the sandbox and release its runtime, links and mounts; optionally its disk. Idempotent. */
  private async teardown(vm: LiveVm, opts: { removeDisk: boolean; graceful?: boolean }): Promise<void> {
    const h = vm.record.hostname;
    const id = this.containerId(h);
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
        this.log.error(`teardown: ${what} failed`, { hostname: h, err });
      }
    };
    const spans = new Spans();
    const timeoutMs = opts.graceful === false || !this.deps.config.gracefulShutdown ? 0 : this.deps.config.paddock.stopTimeoutSeconds * 1000;
    // Without a grace period there is nothing to wait for: destroy (`runc delete --force`)
    // SIGKILLs what still runs (thawing a paused sandbox first), saving the state/kill round trips.
    if (timeoutMs > 0) {
      await step("stop", async () => {
        const st = await this.deps.runtime.state(id);
        if (st.status === "paused") await this.deps.runtime.resume(id);
        if (st.status === "running" || st.status === "paused") await this.deps.runtime.stop(id, timeoutMs);
      });
      spans.mark("stop");
    }
    await step("destroy", () => this.deps.runtime.destroy(id));
    spans.mark("destroy");
    // With the sandbox gone, links, mounts and the agent dir are independent of each other.
    await Promise.all([
      step("network", () => this.deps.network.detach(h)).finally(() => spans.mark("network")),
      step("agent dir", () => fs.rm(this.agentDir(h), { recursive: true, force: true })),
      step("user namespace", () => this.deps.namespaces.remove(h)),
      (async () => {
        await step("unmount", () => this.deps.storage.unmount(h));
        spans.mark("unmount");
        await step("bundle dir", () => removeUnmountedTree(this.bundleDir(h)));
        if (opts.removeDisk) await step("disk", () => this.deps.storage.remove(h));
      })(),
      opts.removeDisk ? step("console log", async () => {
        // The console log and its rotated part (see consoleArgv in tenant-daemon/runtime/oci-bundle.ts).
        await Promise.all([this.consoleLogPath(h), `${this.consoleLogPath(h)}.1`].map((f) => fs.rm(f, { force: true })));
      }) : undefined,
    ]);
    vm.pid = undefined;
    this.log.debug("vm teardown timing", { hostname: h, totalMs: spans.totalMs(), atMs: spans.atMs });
    if (errors.length > 0) throw new PaddockError("ERR_RUNTIME_FAILED", `cleanup of ${h} was incomplete: ${(errors[0] as Error).message}`, { cause: errors[0] });
  }

  /**
   * Delete a VM and its disk (spec §2.2 DELETE). Config VMs are protected (403) unless `force`.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_PROTECTED
   */
  async remove(hostname: string, opts: { hostGroup?: string; force?: boolean } = {}): Promise<{ diskRemoved: boolean }> {
    const vm = this.live(hostname);
    if (opts.hostGroup !== undefined && vm.record.hostGroup !== opts.hostGroup) throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
    if (vm.record.protected && !opts.force) throw new PaddockError("ERR_VM_PROTECTED", `VM ${hostname} was created from count: in the config and is protected`);
    return this.withLock(hostname, async () => {
      if (vm.phase === "deleting") throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
      vm.phase = "deleting";
      try {
        await this.teardown(vm, { removeDisk: true });
      } finally {
        this.vms.delete(hostname);
        this.deps.network.release(hostname);
        await this.persist();
      }
      this.deps.onEvent?.("delete", vm.record.hostGroup);
      this.log.info("vm deleted", { hostname });
      // The limits may have room for the warm pool again.
      this.kickRefill();
      return { diskRemoved: true };
    });
  }

  /**
   * Shut a VM down (spec §2.3). `reboot` restarts the sandbox and keeps the VM; `shutdown`
   * (and the default) leaves it stopped: a persistent VM becomes `Stopped`, an ephemeral one is
   * reaped (record and disk removed). Returns once the VM has stopped.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING
   */
  async shutdown(hostname: string, action: "shutdown" | "reboot" | undefined): Promise<void> {
    const vm = this.live(hostname);
    if (action === "reboot") {
      await this.withLock(hostname, async () => {
        if (vm.phase !== "running" && vm.phase !== "paused") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not running`);
        vm.phase = "stopping";
        await this.teardown(vm, { removeDisk: false });
        try {
          await this.boot(vm);
        } finally {
          // The new boot's proof must be on disk before a restarted daemon re-attaches the VM.
          await this.persist();
        }
      });
      return;
    }
    if (!vm.record.persistent) {
      await this.remove(hostname, { force: true });
      return;
    }
    await this.withLock(hostname, async () => {
      if (vm.phase === "stopped") return;
      vm.phase = "stopping";
      vm.record.desired = "stopped";
      try {
        await this.teardown(vm, { removeDisk: false });
      } finally {
        vm.phase = "stopped";
        await this.persist();
      }
    });
  }

  /**
   * Bring a stopped persistent VM back with its disk, name and address (spec §2.2 relaunch).
   * Waits for a stop in progress instead of answering 409.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_ALREADY_RUNNING
   */
  async relaunch(hostname: string): Promise<CreateResponseWire> {
    const vm = this.live(hostname);
    await this.withLock(hostname, async () => {
      if (vm.phase !== "stopped") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${hostname} is already running`);
      vm.record.desired = "running";
      try {
        await this.boot(vm);
      } catch (err) {
        await this.teardown(vm, { removeDisk: false }).catch(() => undefined);
        vm.phase = "stopped";
        if (isPaddockError(err, "ERR_STORAGE_OVERCOMMIT")) throw err;
        throw new PaddockError("ERR_VM_START_FAILED", `relaunch of ${hostname} failed: ${(err as Error).message}`, { cause: err });
      } finally {
        await this.persist();
      }
    });
    return this.toCreateResponse(vm.record);
  }

  /** Freeze a running VM (spec §2.3). @throws ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING */
  async pause(hostname: string): Promise<void> {
    const vm = this.live(hostname);
    await this.withLock(hostname, async () => {
      if (vm.phase === "paused") return;
      if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not running`);
      await this.deps.runtime.pause(this.containerId(hostname));
      vm.phase = "paused";
    });
  }

  /** Thaw a paused VM. @throws ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING */
  async resume(hostname: string): Promise<void> {
    const vm = this.live(hostname);
    await this.withLock(hostname, async () => {
      if (vm.phase === "running") return;
      if (vm.phase !== "paused") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not paused`);
      await this.deps.runtime.resume(this.containerId(hostname));
      vm.phase = "running";
    });
  }

  /** Apply a tags PATCH atomically (spec §2.2). @throws ERR_VM_NOT_FOUND */
  async patchTags(hostname: string, patch: TagPatch): Promise<string[]> {
    const vm = this.live(hostname);
    const previous = vm.record.tags;
    vm.record.tags = applyTagPatch(vm.record.tags, patch);
    try {
      await this.persist();
    } catch (err) {
      // Not saved (e.g. ERR_STATE_NO_SPACE): the API must not show what the state file lacks.
      vm.record.tags = previous;
      throw err;
    }
    return [...vm.record.tags];
  }

  // ── start-up reconciliation, reaper, stop ─────────────────────────────────

  /**
   * Reconcile with what the last run left (STYLE.md §11: assume SIGKILL): ephemeral VMs are
   * removed entirely; persistent VMs still running are re-attached, stopped ones stay Stopped
   * (config VMs are relaunched); sandboxes, mounts and disks that belong to no record are
   * removed; then the `count: N` VMs are created. Starts the reaper.
   */
  async start(): Promise<void> {
    const state = await this.deps.store.init();
    if (state.tenantId !== this.deps.config.paddock.tenantId) {
      throw new PaddockError("ERR_STATE_CORRUPT", `state file ${this.deps.store.file} belongs to tenant ${state.tenantId}, not ${this.deps.config.paddock.tenantId}`);
    }
    for (const [g, n] of Object.entries(state.counters)) this.markIssued(g, n);
    const groups = new Set(this.deps.config.hostGroups.map((g) => g.name));
    for (const record of Object.values(state.vms)) {
      const vm: LiveVm = { record, phase: "stopped", pid: undefined };
      const id = this.containerId(record.hostname);
      const st = await this.deps.runtime.state(id).catch(() => ({ status: "absent" as const, pid: undefined }));
      if (!record.persistent || !groups.has(record.hostGroup)) {
        this.log.info("removing VM left by the previous run", { hostname: record.hostname, persistent: record.persistent, warm: record.pooled === true });
        await this.teardown(vm, { removeDisk: true, graceful: false }).catch((err: unknown) => this.log.error("cleanup failed", { hostname: record.hostname, err }));
        continue;
      }
      this.deps.network.reserve({ hostname: record.hostname, hostGroup: record.hostGroup, previousIp: record.ipCidr, override: record.network });
      this.vms.set(record.hostname, vm);
      if (st.status === "running" || st.status === "paused") {
        vm.phase = st.status;
        vm.pid = st.pid;
        this.log.info("re-attached running VM", { hostname: record.hostname, pid: st.pid });
        continue;
      }
      await this.teardown(vm, { removeDisk: false, graceful: false }).catch((err: unknown) => this.log.error("cleanup failed", { hostname: record.hostname, err }));
      vm.phase = "stopped";
      // Config VMs come back on every start (seed); other persistent VMs wait for relaunch.
      if (record.protected) {
        await this.withLock(record.hostname, () => this.boot(vm)).catch(async (err: unknown) => {
          this.log.error("relaunch of config VM failed", { hostname: record.hostname, err });
          await this.teardown(vm, { removeDisk: false }).catch(() => undefined);
          vm.phase = "stopped";
        });
      }
    }
    await this.sweep();
    await this.persist();
    this.deps.storage.warmPool?.(this.deps.config.hostGroups.map((g) => g.storageSizeBytes));
    for (const g of this.deps.config.hostGroups) {
      for (let i = 1; i <= g.count; i++) {
        const hostname = `${g.name}-${i}`;
        if (this.vms.has(hostname)) continue;
        await this.create(g.name, { cpus: g.vcpu, ramBytes: g.ramBytes, persistent: true, tags: [], userdata: undefined, secrets: undefined, network: undefined, ip: undefined }, undefined, { protected: true, index: i });
      }
    }
    this.reaper = setInterval(() => void this.reap(), this.deps.reapIntervalMs ?? 1000);
    this.reaper.unref();
    this.kickRefill();
  }

  /**
   * Remove every VM of the tenant the state file knows, and everything of the tenant the
   * sweep finds (sandboxes, mounts, disks): used when a tenant is deleted (`purge`).
   */
  async purge(): Promise<void> {
    const state = await this.deps.store.init();
    for (const record of Object.values(state.vms)) {
      const vm: LiveVm = { record, phase: "deleting", pid: undefined };
      await this.teardown(vm, { removeDisk: true, graceful: false }).catch((err: unknown) => this.log.error("purge: cleanup failed", { hostname: record.hostname, err }));
    }
    this.vms.clear();
    await this.sweep();
    await this.persist();
  }

  /** Remove sandboxes, mounts and disks of this tenant that no record owns. */
  private async sweep(): Promise<void> {
    const keep = new Set([...this.vms.keys(), ...this.warm.keys()]);
    const prefix = this.containerPrefix();
    for (const id of await this.deps.runtime.list(prefix)) {
      const hostname = id.slice(prefix.length);
      if (keep.has(hostname)) continue;
      this.log.warn("removing orphan sandbox", { id });
      await this.deps.runtime.destroy(id).catch((err: unknown) => this.log.error("orphan removal failed", { id, err }));
    }
    await this.deps.storage.sweep(keep);
    await this.deps.namespaces.sweep(keep);
    for (const dir of ["vms", "bundles"]) {
      const base = path.join(this.deps.config.paddock.runDir, dir);
      for (const entry of await fs.readdir(base).catch(() => [] as string[])) {
        if (!keep.has(entry)) await removeUnmountedTree(path.join(base, entry)).catch((err: unknown) => this.log.error("orphan dir removal failed", { dir: path.join(base, entry), err }));
      }
    }
  }

  /**
   * Guest-exit reaper (seed: "the daemon's reaper notices and cleans up"): a running VM whose
   * sandbox has stopped is removed (ephemeral) or marked Stopped (persistent; config VMs are
   * relaunched).
   */
  private async reap(): Promise<void> {
    for (const vm of [...this.vms.values(), ...this.warm.values()]) {
      if (vm.phase !== "running" || vm.pid === undefined || pidAlive(vm.pid)) continue;
      const h = vm.record.hostname;
      await this.withLock(h, async () => {
        if (vm.phase !== "running" || (vm.pid !== undefined && pidAlive(vm.pid))) return;
        const st = await this.deps.runtime.state(this.containerId(h));
        if (st.status === "running" || st.status === "paused") {
          vm.pid = st.pid;
          return;
        }
        const pooled = vm.record.pooled === true;
        this.log.info("guest exited", { hostname: h, persistent: vm.record.persistent, warm: pooled });
        if (!vm.record.persistent) {
          vm.phase = "deleting";
          try {
            await this.teardown(vm, { removeDisk: true, graceful: false });
          } finally {
            (pooled ? this.warm : this.vms).delete(h);
            this.deps.network.release(h);
            await this.persist();
          }
          this.kickRefill();
          return;
        }
        vm.phase = "stopping";
        await this.teardown(vm, { removeDisk: false, graceful: false }).catch(() => undefined);
        vm.phase = "stopped";
        await this.persist();
      }).catch((err: unknown) => this.log.error("reaper failed", { hostname: h, err }));
    }
  }

  /**
   * Stop the service for a daemon shutdown (spec §3.5): the warm pool stops refilling; warm
   * and ephemeral VMs are stopped and deleted; persistent and config VMs keep running (sandboxes are detached) and are
   * re-attached by the next start. With `purge`, every VM and disk is removed.
   */
  async stop(opts: { purge?: boolean } = {}): Promise<void> {
    this.stopping = true;
    if (this.reaper) clearInterval(this.reaper);
    await this.refilling;
    await Promise.all([...this.locks.values()]);
    const work = [...this.vms.values(), ...this.warm.values()].map(async (vm) => {
      if (!opts.purge && vm.record.persistent) return;
      await this.withLock(vm.record.hostname, async () => {
        vm.phase = "deleting";
        await this.teardown(vm, { removeDisk: true }).catch((err: unknown) => this.log.error("teardown at stop failed", { hostname: vm.record.hostname, err }));
        (vm.record.pooled ? this.warm : this.vms).delete(vm.record.hostname);
        this.deps.network.release(vm.record.hostname);
      });
    });
    await Promise.all(work);
    await this.deps.storage.drainPool?.().catch((err: unknown) => this.log.error("spare disk removal at stop failed", { err }));
    await this.persist().catch((err: unknown) => this.log.error("state write at stop failed", { err }));
  }
}

/** `map.set(key, value)`, or delete `key` when `value` is undefined. */
function setOrDelete<K, V>(map: Map<K, V>, key: K, value: V | undefined): void {
  if (value === undefined) map.delete(key);
  else map.set(key, value);
}

function wireStatus(phase: VmPhase): WireStatus {
  if (phase === "paused") return "Paused";
  if (phase === "stopped" || phase === "stopping") return "Stopped";
  return "Running";
}

/**
 * Timestamps of the steps of one operation, for debug timing lines: `atMs[step]` = ms since the
 * operation started when the step finished (rounded to 0.1; concurrent steps overlap).
 */
class Spans {
  private readonly t0 = performance.now();
  readonly atMs: Record<string, number> = {};
  /** Record that `step` finished now. */
  mark(step: string): void {
    this.atMs[step] = this.totalMs();
  }
  /** ms since the operation started. */
  totalMs(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }
}

/**
 * inotify on a directory (fs.watch): `next()` resolves at the next event after the call (or at
 * once if one came since the previous `next()`). `watching` is false when the watch could not
 * be set up (e.g. the directory is gone); callers then fall back to polling.
 */
function watchDir(dir: string): { next(): Promise<void>; close(): void; readonly watching: boolean } {
  let pending = false;
  let wake: (() => void) | undefined;
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dir, { persistent: false }, () => {
      pending = true;
      wake?.();
    });
    watcher.on("error", () => undefined);
  } catch {
    watcher = undefined;
  }
  return {
    get watching() {
      return watcher !== undefined;
    },
    next() {
      if (pending) {
        pending = false;
        return Promise.resolve();
      }
      return new Promise<void>((resolve) => {
        wake = () => {
          wake = undefined;
          pending = false;
          resolve();
        };
      });
    },
    close() {
      watcher?.close();
      wake?.();
    },
  };
}
