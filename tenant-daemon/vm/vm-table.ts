/**
 * The VM table of one tenant daemon and its persistence: the live VMs, the warm-pool VMs, the
 * name counters, the per-VM locks, and the state file (`<state>/state.json`, {@link DaemonState})
 * they are saved to. Every other piece of tenant-daemon/vm/ reads and changes VMs through one
 * shared {@link VmTable}.
 */
import { PaddockError } from "../../shared/errors.js";
import type { JsonStateStore } from "../../shared/state-store.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import type { DaemonState, SecretsDelivery, VmPhase, VmRecord } from "./vm-types.js";

/** A VM in memory: its record (persisted), its live phase and the pid of its sandbox's init. */
export interface LiveVm {
  record: VmRecord;
  phase: VmPhase;
  pid: number | undefined;
  /** Secret delivery started by the last boot or hand-out, and what it came to; never rejects. */
  secretsDelivered?: Promise<SecretsDelivery>;
}

/** A warm-pool VM; `ready` once its agent has answered. */
export interface WarmVm extends LiveVm {
  ready: boolean;
  /** Settles when the boot ends: true once the agent answered, false when the boot failed. */
  booted: Promise<boolean>;
  /**
   * Settles when the sandbox is up: true once it runs (its agent may still be starting), false
   * when the boot failed before. A create without `wait` is handed the VM then, as a cold
   * create answers once its sandbox runs.
   */
  launched: Promise<boolean>;
  /** Set (before `booted` settles false) when the tenant's pids limits refused the boot (vm-pids-budget.ts). */
  bootError?: PaddockError;
}

/**
 * The tenant's VMs by hostname (`vms`: the ones the API shows; `warm`: the warm pool, never in
 * `vms`), the name counters, the per-VM locks and the state store they persist to.
 */
export class VmTable {
  /** VMs the API shows (and those being created or deleted), in creation order. */
  readonly vms = new Map<string, LiveVm>();
  /** Warm-pool VMs by hostname (never in `vms`). */
  readonly warm = new Map<string, WarmVm>();
  /**
   * Set once by a daemon stop (VmService.stop), never cleared: no new VMs, the warm pool stops
   * refilling, and a wait for a warm VM's agent gives up.
   */
  stopping = false;
  /** Highest N allocated per group, warm VMs included (in memory). */
  private readonly counters = new Map<string, number>();
  /** Highest N handed out per group (persisted: DaemonState.counters). */
  private readonly issued = new Map<string, number>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Friendly names claimed by creates still on their way into {@link vms}. */
  private readonly pendingNames = new Set<string>();
  private readonly config: TenantConfig;
  private readonly store: JsonStateStore<DaemonState>;

  /** Bytes the tenant's commits hold (tenant-daemon/storage/commit-store.ts); they count against `max_disk_bytes`. */
  private readonly committedBytes: () => number;

  constructor(deps: { config: TenantConfig; store: JsonStateStore<DaemonState>; committedBytes?: () => number }) {
    this.config = deps.config;
    this.store = deps.store;
    this.committedBytes = deps.committedBytes ?? (() => 0);
  }

  // ── lookups ────────────────────────────────────────────────────────────────

  /** A configured host group by name. @throws PaddockError ERR_HOSTGROUP_NOT_FOUND */
  hostGroup(name: string): HostGroupConfig {
    const g = this.config.hostGroups.find((h) => h.name === name);
    if (!g) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${JSON.stringify(name)} not found`);
    return g;
  }

  /** A VM the API shows (not one being deleted, not a warm one). @throws PaddockError ERR_VM_NOT_FOUND */
  live(hostname: string): LiveVm {
    const vm = this.vms.get(hostname);
    if (!vm || vm.phase === "deleting") throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
    return vm;
  }

  /** The VM or warm VM named `hostname`, in any phase; undefined when there is none. */
  lookup(hostname: string): LiveVm | undefined {
    return this.vms.get(hostname) ?? this.warm.get(hostname);
  }

  /** Every VM, then every warm VM (a snapshot: safe to change the table while iterating it). */
  all(): LiveVm[] {
    return [...this.vms.values(), ...this.warm.values()];
  }

  /** Drop `vm` from whichever map still holds this very object (not a newer VM of the same name). */
  forget(vm: LiveVm): void {
    const hostname = vm.record.hostname;
    if (this.vms.get(hostname) === vm) this.vms.delete(hostname);
    if (this.warm.get(hostname) === vm) this.warm.delete(hostname);
  }

  // ── serialisation and persistence ──────────────────────────────────────────

  /**
   * Run `fn` after every earlier operation on `hostname` has settled (whatever their outcome),
   * so operations on one VM never overlap; different VMs run concurrently.
   * @returns `fn`'s result. @throws what `fn` throws.
   */
  withLock<T>(hostname: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(hostname) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(hostname, tail);
    void tail.then(() => {
      if (this.locks.get(hostname) === tail) this.locks.delete(hostname);
    });
    return next;
  }

  /** Settles once every per-VM operation queued so far has settled; never rejects. */
  async settled(): Promise<void> {
    await Promise.all([...this.locks.values()]);
  }

  /**
   * Save every record (warm ones included) and the issued counters to the state file. Resolves
   * once a write that began after this call has reached the disk, so a change made to the table
   * before the call is durable when it resolves. Calls made while a write runs share the one
   * write that follows it (20 concurrent creates cost about two writes, not 20, each a locked
   * read-modify-write with two fsyncs: shared/state-store.ts).
   * @throws the state store's errors (e.g. PaddockError ERR_STATE_NO_SPACE), to every caller that
   *   shared the failed write.
   */
  persist(): Promise<void> {
    // A write queued behind the running one snapshots the table when it starts, after this call:
    // join it. The running write may have snapshotted before this call's change, so never join that.
    if (this.queuedWrite !== undefined) return this.queuedWrite;
    const running = this.runningWrite;
    if (running === undefined) return this.startWrite();
    const queued = running.catch(() => undefined).then(() => {
      this.queuedWrite = undefined;
      return this.startWrite();
    });
    this.queuedWrite = queued;
    return queued;
  }

  /** The write in progress, if any, and the one that starts when it ends ({@link persist}). */
  private runningWrite: Promise<void> | undefined;
  private queuedWrite: Promise<void> | undefined;

  /** Snapshot the table and write it (one store update); tracked as {@link runningWrite}. */
  private startWrite(): Promise<void> {
    const write = this.store.update((s) => {
      const vms: Record<string, VmRecord> = {};
      for (const [h, vm] of this.vms) vms[h] = vm.record;
      for (const [h, vm] of this.warm) vms[h] = vm.record;
      s.vms = vms;
      s.counters = Object.fromEntries(this.issued);
    });
    this.runningWrite = write;
    void write.catch(() => undefined).then(() => {
      if (this.runningWrite === write) this.runningWrite = undefined;
    });
    return write;
  }

  // ── names ──────────────────────────────────────────────────────────────────

  /** Next free `<group>-N`; synchronous so concurrent creates never share a name. */
  allocateName(group: string): { hostname: string; index: number } {
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
  markIssued(group: string, index: number): void {
    this.issued.set(group, Math.max(this.issued.get(group) ?? 0, index));
    this.counters.set(group, Math.max(this.counters.get(group) ?? 0, index));
  }

  /** The group's counters now, to give back a name with {@link restoreCounters}. */
  countersOf(group: string): { counter: number | undefined; issued: number | undefined } {
    return { counter: this.counters.get(group), issued: this.issued.get(group) };
  }

  /** Put the group's counters back to what {@link countersOf} returned (a name never handed out). */
  restoreCounters(group: string, before: { counter: number | undefined; issued: number | undefined }): void {
    setOrDelete(this.counters, group, before.counter);
    setOrDelete(this.issued, group, before.issued);
  }

  // ── friendly names ─────────────────────────────────────────────────────────

  /**
   * Check that friendly name `name` (a `name=` tag value, already a DNS label) is free for VM
   * `self` (undefined: a VM not yet in the table): no other listed VM carries it, no VM or warm
   * VM has it as hostname, it is not `<group>-<N>` of a host group (N without leading zeros: a
   * hostname the daemon may still hand out), and no create in flight has claimed it. Synchronous, so it and the change
   * that follows happen in one turn.
   * @throws PaddockError ERR_VM_NAME_TAKEN naming the holder.
   */
  checkNameFree(name: string, self?: string): void {
    const taken = (why: string): PaddockError => new PaddockError("ERR_VM_NAME_TAKEN", `name ${JSON.stringify(name)} ${why}`);
    if (this.vms.has(name) || this.warm.has(name)) throw taken("is a VM's hostname");
    // The daemon's hostnames carry the index without leading zeros (`sbox-7`, never `sbox-07`).
    const group = this.config.hostGroups.find((g) => name.startsWith(`${g.name}-`) && /^(0|[1-9][0-9]*)$/.test(name.slice(g.name.length + 1)));
    if (group) throw taken(`has the form of a hostname of host group ${group.name}`);
    if (this.pendingNames.has(name)) throw taken("is being given to a VM created now");
    for (const vm of this.vms.values()) {
      if (vm.phase !== "deleting" && vm.record.hostname !== self && vm.record.tags.includes(`name=${name}`)) throw taken(`is taken by ${vm.record.hostname}`);
    }
  }

  /**
   * Claim friendly name `name` for a create until the returned release is called (once the VM
   * is in {@link vms}, or the create failed). Undefined `name`: nothing to claim.
   * @returns the release function. @throws PaddockError ERR_VM_NAME_TAKEN as {@link checkNameFree}.
   */
  claimName(name: string | undefined): () => void {
    if (name === undefined) return () => undefined;
    this.checkNameFree(name);
    this.pendingNames.add(name);
    return () => this.pendingNames.delete(name);
  }

  // ── limits ─────────────────────────────────────────────────────────────────

  /**
   * Check the tenant's limits (`paddock.limits`: VMs, vCPUs, RAM and disk bytes) for one more VM
   * of this size, against the VMs the API shows (and the warm ones with `includeWarm`). Disk
   * bytes also count what the tenant's commits hold. `opts.vms: 0` checks a commit (no VM added).
   * @throws PaddockError ERR_LIMIT_EXCEEDED naming the limit.
   */
  checkLimits(cpus: number, ramBytes: number, diskBytes: number, opts: { includeWarm?: boolean; vms?: 0 | 1 } = {}): void {
    const l = this.config.paddock.limits;
    let count = 0, vcpu = 0, ram = 0, disk = this.committedBytes();
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
    over("max_vms", l.maxVms, count, opts.vms ?? 1);
    over("max_vcpu", l.maxVcpu, vcpu, cpus);
    over("max_ram_bytes", l.maxRamBytes, ram, ramBytes, " bytes");
    over("max_disk_bytes", l.maxDiskBytes, disk, diskBytes, " bytes");
  }
}

/** `map.set(key, value)`, or delete `key` when `value` is undefined. */
function setOrDelete<K, V>(map: Map<K, V>, key: K, value: V | undefined): void {
  if (value === undefined) map.delete(key);
  else map.set(key, value);
}
