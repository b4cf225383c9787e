/**
 * Idle pause and wake on request. A host group with `idle_pause_after` (shared/
 * tenant-config-groups.ts `readIdle`) has its running VMs paused (cgroup freezer) or, with
 * `idle_action: suspend` under gVisor, suspended to disk (vm-suspend.ts) once nothing addressed
 * them for that long; the next request for such a VM waits while it is resumed or restored
 * (and, after a restore, until its agent answers), then goes on.
 *
 * - Activity is tracked in memory per VM ({@link VmIdle.begin}): the last time a request for it
 *   ended, and how many are open now. An open request or stream (an exec stream, a shell or
 *   forward WebSocket, a follow of logs) keeps the VM awake for its whole life. Which routes
 *   count is decided by the API layer (tenant-daemon/api/wake.ts). At daemon start, and on
 *   every created, ready, resumed, restored or relaunched event, a VM counts as just active.
 * - With `idle_cpu_threshold` (milli-CPUs) the VM must also have used less than that on
 *   average over the window, read from its cgroup (`cpuacct.usage`, or `usage_usec` of
 *   `cpu.stat` on cgroup v2) at the window's start and end.
 * - One scheduler, like vm-expiry.ts: a single unref'd timer at the earliest idle deadline
 *   (deadline-timer.ts).
 * - A VM the idle rule paused or suspended carries `record.idle` (persisted, so a restarted
 *   daemon still wakes it); a VM a client paused or suspended does not, and requests do not wake
 *   it (the client asked for it; they answer 409 as before). Any transition by someone else
 *   (resume, restore, stop, exit, …) clears the mark; so do an explicit pause or suspend of an
 *   idled VM ({@link VmIdle.claim}).
 * - `idle_action: suspend` that the guest refuses (ERR_VM_SUSPEND_REFUSED: it holds a TCP
 *   socket, which gVisor cannot checkpoint: tenant-daemon/runtime/runsc-checkpoint.ts) falls back
 *   to the idle pause, once per idle period: event `paused` reason `idle` with `fallback_from:
 *   "suspend"` and the refusal, a warn line, `paddock_vm_idle_failures_total{action="suspend"}`
 *   and `paddock_vm_idle_total{action="pause"}`. The next idle period tries the suspend again
 *   (the socket may be gone by then). Any other failure leaves the VM running and is retried
 *   with a doubling delay ({@link idleRetryDelayMs}).
 * - Concurrent requests share one wake. A request arriving while the idle rule is acting waits
 *   for it, then wakes the VM: it never reaches a VM that is being frozen.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { GroupIdleConfig } from "../../shared/tenant-config.js";
import { isVmEvent, type EventLog, type VmEvent, type VmEventInput, type VmEventReason, type VmEventType } from "../events/event-log.js";
import { CGROUP_ROOT } from "../runtime/tenant-cgroup.js";
import { DeadlineTimer } from "./deadline-timer.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { VmRecord } from "./vm-types.js";

/** Delay before trying again to idle out a VM whose pause or suspend failed the first time, ms. */
const RETRY_MS = 30_000;
/** Longest delay between tries to idle out a VM whose pause or suspend keeps failing, ms. */
const RETRY_MAX_MS = 30 * 60_000;
/** How long a wake from suspend waits for the restored VM's agent, ms. */
const RESTORE_AGENT_WAIT_MS = 60_000;

/** Metric hooks of {@link VmIdle} (tenant-daemon/api/metrics.ts). */
export interface VmIdleMetrics {
  /** A VM of `hostGroup` was idled out with `action`. */
  idled(hostGroup: string, action: "pause" | "suspend"): void;
  /** A VM of `hostGroup` idled out with `action` was woken in `seconds`. */
  woke(hostGroup: string, action: "pause" | "suspend", seconds: number): void;
  /**
   * Idling out a VM of `hostGroup` with `action` failed with error code `code` (a PaddockError's
   * code, else `error`). ERR_VM_SUSPEND_REFUSED on `suspend` is then followed by a pause.
   */
  failed(hostGroup: string, action: "pause" | "suspend", code: string): void;
}

/** What {@link VmIdle} works with (VmService builds it). */
export interface VmIdleDeps {
  table: VmTable;
  log: Logger;
  /** The tenant's event log: VmIdle listens to it for activity and to clear idle marks. */
  events: EventLog;
  /** The idle rule of a host group (undefined: its VMs never idle out). */
  policy(hostGroup: string): GroupIdleConfig | undefined;
  /** Freeze a running VM (VmPower.pause). */
  pause(vm: LiveVm): Promise<void>;
  /** Thaw a paused VM (VmPower.resume). */
  resume(vm: LiveVm): Promise<void>;
  /** Suspend a running VM to disk (VmSuspender.suspend). */
  suspend(vm: LiveVm): Promise<unknown>;
  /** Restore a suspended VM (VmSuspender.restore). */
  restore(vm: LiveVm): Promise<void>;
  /** After a wake: push secrets again (as a resume/restore through the API does). */
  afterWake(vm: LiveVm, action: "pause" | "suspend"): void;
  /** Wait for the VM's agent, ms. @throws PaddockError ERR_VM_WAIT_TIMEOUT */
  waitForAgent(hostname: string, timeoutMs: number): Promise<void>;
  /** Emit a lifecycle event (VmLifecycleEvents.emit), with `extra` fields on a fallback pause. */
  emit(record: VmRecord, type: VmEventType, reason: VmEventReason, extra?: Pick<VmEventInput, "fallback_from" | "refusal">): void;
  /** Save the VM table (record.idle changed). */
  persist(): Promise<void>;
  /** CPU time the VM's cgroup used so far, ns; undefined when unreadable. Default {@link readCgroupCpuNs} of `/paddock/<tenant>/<hostname>`. */
  cpuNs(hostname: string): Promise<number | undefined>;
  metrics?: VmIdleMetrics;
  /** The clock, ms (default Date.now). */
  now?: () => number;
}

/** A VM's activity: when a request for it last ended, how many are open, and a CPU sample. */
interface Activity {
  lastMs: number;
  open: number;
  /** CPU time at the start of the current window (with `idle_cpu_threshold`). */
  cpu?: { ns: number; atMs: number };
  /** Not before this (a failed idle-out waits {@link idleRetryDelayMs}), ms. */
  retryAtMs?: number;
  /** Idle-outs of this VM that failed in a row (not counting refusals that fell back to a pause). */
  failures: number;
}

/**
 * Delay before the next try to idle out a VM after `failures` (≥ 1) failed tries in a row, ms:
 * 30 s, doubling, at most 30 min (a VM whose pause or suspend keeps failing is not retried, nor
 * logged, every 30 s forever).
 */
export function idleRetryDelayMs(failures: number): number {
  return Math.min(RETRY_MAX_MS, RETRY_MS * 2 ** Math.max(0, Math.min(failures, 20) - 1));
}

/**
 * Whether `err` is a suspend refused for a reason the guest controls (ERR_VM_SUSPEND_REFUSED:
 * it holds TCP sockets, or its TCP tables are too large to read): the idle rule then pauses.
 */
export function isGuestRefusal(err: unknown): err is PaddockError {
  return err instanceof PaddockError && err.code === "ERR_VM_SUSPEND_REFUSED";
}

/**
 * CPU time used by the cgroup `rel` (e.g. `/paddock/<tenant>/<hostname>`), ns: `cpuacct.usage`
 * of the v1 cpuacct hierarchy, else `usage_usec` of the v2 `cpu.stat`. Undefined when neither
 * can be read (the VM has no cgroup now).
 */
export async function readCgroupCpuNs(rel: string, root: string = CGROUP_ROOT): Promise<number | undefined> {
  const v2 = existsSync(path.join(root, "cgroup.controllers"));
  try {
    if (v2) {
      const m = /^usage_usec (\d+)$/m.exec(await fs.readFile(path.join(root, rel, "cpu.stat"), "utf8"));
      return m ? Number(m[1]) * 1000 : undefined;
    }
    for (const h of ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]) {
      const file = path.join(root, h, rel, "cpuacct.usage");
      if (existsSync(file)) return Number((await fs.readFile(file, "utf8")).trim());
    }
  } catch {
    // gone meanwhile
  }
  return undefined;
}

/** Average CPU use between two samples, milli-CPUs (1000 = one CPU busy all the time). */
export function milliCpus(from: { ns: number; atMs: number }, to: { ns: number; atMs: number }): number {
  const wallMs = Math.max(1, to.atMs - from.atMs);
  return Math.max(0, to.ns - from.ns) / (wallMs * 1000);
}

/** The idle tracker and scheduler of one tenant's VMs (see the file header). */
export class VmIdle {
  private readonly deps: VmIdleDeps;
  private readonly now: () => number;
  private readonly activity = new Map<string, Activity>();
  /** Idle-outs in progress (deciding, pausing or suspending), by hostname. */
  private readonly acting = new Map<string, Promise<void>>();
  /** Wakes in progress, by hostname: concurrent requests share one. */
  private readonly waking = new Map<string, Promise<void>>();
  private readonly timer: DeadlineTimer<LiveVm>;
  private unsubscribe: (() => void) | undefined;
  private cpuWarned = false;

  constructor(deps: VmIdleDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.timer = new DeadlineTimer<LiveVm>({
      items: () => this.deps.table.vms.values(),
      deadline: (vm) => this.deadline(vm),
      due: (vm) => this.act(vm),
      now: this.now,
    });
  }

  /** Start: every VM counts as just active; listen to the event log; arm the timer. */
  start(): void {
    const now = this.now();
    for (const vm of this.deps.table.vms.values()) this.touchAt(vm.record, now);
    this.unsubscribe = this.deps.events.subscribe((e) => { if (isVmEvent(e)) this.onEvent(e); });
    this.kick();
  }

  /** Stop the timer and the listener (daemon stop); nothing idles out after this. */
  stop(): void {
    this.timer.stop();
    this.unsubscribe?.();
  }

  /**
   * An activity for VM `hostname` starts (a request, a stream, a WebSocket session): the VM is
   * not idle until the returned function is called (once; later calls do nothing). A hostname
   * the table does not have is ignored.
   */
  begin(hostname: string): () => void {
    const vm = this.deps.table.vms.get(hostname);
    if (vm === undefined) return () => undefined;
    const a = this.entry(hostname);
    a.open++;
    a.lastMs = this.now();
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      a.open = Math.max(0, a.open - 1);
      if (a.open === 0) this.touchAt(vm.record, this.now());
      this.kick();
    };
  }

  /**
   * Make VM `hostname` usable if the idle rule paused or suspended it: resume it, or restore it
   * and wait for its agent; emit `resumed`/`restored` with reason `wake`. Waits for an idle-out
   * in progress first. Resolves at once for a VM that is not idled (running, paused by a client,
   * unknown: the route answers as it would). `onlyPaused`: leave a suspended VM as it is.
   * @throws the runtime's, network's and storage's errors of the resume or restore (the VM stays
   *   idled), PaddockError ERR_VM_WAIT_TIMEOUT (503 here: restored, agent not answering).
   */
  wake(hostname: string, opts: { onlyPaused?: boolean } = {}): Promise<void> {
    const vm = this.deps.table.vms.get(hostname);
    if (vm === undefined) return Promise.resolve();
    const inFlight = this.waking.get(hostname);
    if (inFlight !== undefined) return inFlight;
    const acting = this.acting.get(hostname);
    if (acting === undefined && !this.idled(vm)) return Promise.resolve();
    const p = (async () => {
      await acting?.catch(() => undefined);
      if (!this.idled(vm) || (opts.onlyPaused && vm.phase !== "paused")) return;
      await this.wakeNow(vm);
    })().finally(() => this.waking.delete(hostname));
    this.waking.set(hostname, p);
    return p;
  }

  /**
   * A client paused or suspended VM `vm` explicitly: if the idle rule had done it, it is the
   * client's now (requests no longer wake it).
   * @returns the idle action the VM was under (`pause`: it was idle-paused; `suspend`:
   *   idle-suspended), undefined when the idle rule had not paused or suspended it.
   */
  claim(vm: LiveVm): "pause" | "suspend" | undefined {
    const was = this.idled(vm) ? vm.record.idle?.action : undefined;
    this.clearMark(vm.record);
    return was;
  }

  /**
   * Idle out every VM whose idle deadline passed and re-arm the timer for the earliest
   * remaining one. Cheap: one pass over the table.
   */
  kick(): void {
    this.timer.kick();
  }

  /** Whether the idle rule paused or suspended `vm` and it is still so. */
  private idled(vm: LiveVm): boolean {
    const mark = vm.record.idle;
    return mark !== undefined && ((mark.action === "pause" && vm.phase === "paused") || (mark.action === "suspend" && vm.phase === "suspended"));
  }

  private entry(hostname: string): Activity {
    let a = this.activity.get(hostname);
    if (a === undefined) {
      a = { lastMs: this.now(), open: 0, failures: 0 };
      this.activity.set(hostname, a);
    }
    return a;
  }

  /** The VM was active at `atMs`: its window restarts (a new CPU sample when its group has a threshold). */
  private touchAt(record: VmRecord, atMs: number): void {
    const a = this.entry(record.hostname);
    a.lastMs = atMs;
    a.cpu = undefined;
    if (this.deps.policy(record.hostGroup)?.cpuMilli !== undefined) this.sampleCpu(record.hostname, a);
  }

  private sampleCpu(hostname: string, a: Activity): void {
    const atMs = this.now();
    void this.deps.cpuNs(hostname).then((ns) => {
      // Only if no newer activity restarted the window meanwhile.
      if (ns !== undefined && a.lastMs <= atMs && a.cpu === undefined) a.cpu = { ns, atMs };
    });
  }

  /** When `vm` idles out (ms), or undefined: not running, no rule, open activity, already acting. */
  private deadline(vm: LiveVm): number | undefined {
    const r = vm.record;
    const policy = this.deps.policy(r.hostGroup);
    if (policy === undefined || vm.phase !== "running" || r.pooled || this.acting.has(r.hostname) || this.waking.has(r.hostname)) return undefined;
    const a = this.entry(r.hostname);
    if (a.open > 0) return undefined;
    // With a CPU threshold the window starts at the CPU sample (taken right after the activity).
    const start = policy.cpuMilli !== undefined && a.cpu !== undefined ? Math.max(a.lastMs, a.cpu.atMs) : a.lastMs;
    return Math.max(start + policy.afterMs, a.retryAtMs ?? 0);
  }

  /** Decide (CPU check) and idle `vm` out, unless activity arrives first. */
  private act(vm: LiveVm): void {
    const r = vm.record;
    const h = r.hostname;
    const policy = this.deps.policy(r.hostGroup);
    if (policy === undefined) return;
    const a = this.entry(h);
    const decidedAt = a.lastMs;
    /** What is being tried, for the failure's log line. */
    let attempt: string = policy.action;
    const p = (async () => {
      if (policy.cpuMilli !== undefined) {
        const ns = await this.deps.cpuNs(h);
        const sample = ns === undefined ? undefined : { ns, atMs: this.now() };
        if (sample === undefined) {
          if (!this.cpuWarned) this.deps.log.warn("cannot read the VM's cgroup CPU time: idle_cpu_threshold keeps it awake", { hostname: h });
          this.cpuWarned = true;
          a.retryAtMs = this.now() + RETRY_MS;
          return;
        }
        const from = a.cpu;
        if (from === undefined || milliCpus(from, sample) >= policy.cpuMilli) {
          // No sample yet, or busy: the window restarts now.
          if (from !== undefined) this.deps.log.debug("vm busy, not idle", { hostname: h, milliCpus: Math.round(milliCpus(from, sample)) });
          a.cpu = sample;
          return;
        }
      }
      // A request came while deciding: it is not idle (the request waits for this to end).
      const stillIdle = (): boolean => a.open === 0 && a.lastMs === decidedAt && vm.phase === "running" && this.deps.table.vms.get(h) === vm;
      if (!stillIdle()) return;
      const idleForMs = this.now() - a.lastMs;
      let refusal: PaddockError | undefined;
      if (policy.action === "suspend") {
        try {
          await this.deps.suspend(vm);
        } catch (err) {
          if (!isGuestRefusal(err)) throw err;
          refusal = err;
          this.deps.metrics?.failed(r.hostGroup, "suspend", err.code);
        }
        if (refusal !== undefined) {
          // The refusal's check took a while: a request that came meanwhile keeps it running.
          if (!stillIdle()) {
            this.deps.log.info("idle suspend refused by the guest; a request came meanwhile, so not paused either", { hostname: h, reason: "idle", code: refusal.code, refusal: refusal.message });
            return;
          }
          attempt = "pause (the fallback of a refused suspend)";
          await this.deps.pause(vm);
        }
      } else {
        await this.deps.pause(vm);
      }
      const action = refusal === undefined ? policy.action : "pause";
      r.idle = { action, at: new Date(this.now()).toISOString() };
      await this.deps.persist().catch((err: unknown) => this.deps.log.error("saving the idle mark failed", { hostname: h, err }));
      if (refusal !== undefined) {
        this.deps.log.warn("idle suspend refused by the guest; paused instead (a request wakes it; the next idle period tries the suspend again)", {
          hostname: h, reason: "idle", idleForMs, idle_action: "suspend", fallback: "pause", code: refusal.code, refusal: refusal.message,
        });
      } else {
        this.deps.log.info(action === "suspend" ? "vm suspended (idle)" : "vm paused (idle)", { hostname: h, reason: "idle", idleForMs });
      }
      this.deps.metrics?.idled(r.hostGroup, action);
      this.deps.emit(r, action === "suspend" ? "suspended" : "paused", "idle", refusal === undefined ? undefined : { fallback_from: "suspend", refusal: refusal.message });
      a.retryAtMs = undefined;
      a.failures = 0;
    })();
    this.acting.set(h, p.then(() => undefined, () => undefined));
    void p
      .catch((err: unknown) => {
        a.failures++;
        const delayMs = idleRetryDelayMs(a.failures);
        a.retryAtMs = this.now() + delayMs;
        const code = err instanceof PaddockError ? err.code : "error";
        this.deps.metrics?.failed(r.hostGroup, attempt.startsWith("pause") ? "pause" : "suspend", code);
        this.deps.log.error(`idle ${attempt} failed; retrying in ${Math.round(delayMs / 1000)} s`, { hostname: h, reason: "idle", failures: a.failures, code, err });
      })
      .finally(() => {
        this.acting.delete(h);
        this.kick();
      });
  }

  /** Resume or restore an idled VM (the caller checked {@link idled}). */
  private async wakeNow(vm: LiveVm): Promise<void> {
    const r = vm.record;
    const action = (r.idle as NonNullable<VmRecord["idle"]>).action;
    const t0 = performance.now();
    if (action === "suspend") await this.deps.restore(vm);
    else await this.deps.resume(vm);
    delete r.idle;
    await this.deps.persist().catch((err: unknown) => this.deps.log.error("saving the cleared idle mark failed", { hostname: r.hostname, err }));
    this.touchAt(r, this.now());
    this.deps.emit(r, action === "suspend" ? "restored" : "resumed", "wake");
    this.deps.afterWake(vm, action);
    if (action === "suspend") await this.deps.waitForAgent(r.hostname, RESTORE_AGENT_WAIT_MS);
    const seconds = (performance.now() - t0) / 1000;
    this.deps.metrics?.woke(r.hostGroup, action, seconds);
    this.deps.log.info(action === "suspend" ? "vm restored (wake)" : "vm resumed (wake)", { hostname: r.hostname, reason: "wake", ms: Math.round(seconds * 1000) });
    this.kick();
  }

  private clearMark(record: VmRecord): void {
    if (record.idle === undefined) return;
    delete record.idle;
    void this.deps.persist().catch((err: unknown) => this.deps.log.error("saving the cleared idle mark failed", { hostname: record.hostname, err }));
  }

  /** Activity and idle marks from the lifecycle events of the whole daemon. */
  private onEvent(e: VmEvent): void {
    if (e.type === "deleted") {
      this.activity.delete(e.hostname);
      return;
    }
    if (e.reason === "idle" || e.reason === "wake") return;
    const vm = this.deps.table.vms.get(e.hostname);
    if (vm === undefined) return;
    // Someone else moved the VM: a mark left by the idle rule no longer holds.
    if (e.type !== "ready" && e.type !== "created") this.clearMark(vm.record);
    if (e.type === "created" || e.type === "ready" || e.type === "resumed" || e.type === "restored" || e.type === "relaunched") {
      this.touchAt(vm.record, this.now());
      this.kick();
    }
  }
}
