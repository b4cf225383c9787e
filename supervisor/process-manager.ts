/**
 * Supervision of tenant daemons (restart, adoption after a supervisor restart, stop): one
 * {@link ManagedDaemon} per tenant runs a small typed state machine
 *
 *   stopped → starting → running → (crash) → backoff → starting → …
 *                                  (crash loop) → failed
 *   any → stopping → stopped        (admin stop / delete / restart)
 *
 * with capped exponential backoff (initial · 2^(n-1), at most max) and crash-loop detection
 * (`maxCrashes` crashes inside `crashWindowMs` ⇒ `failed`). A run longer than
 * `stableAfterMs` resets the backoff. The handle is cleared before a deliberate stop so the
 * exit watcher never restarts what we stop.
 */
import type { Logger } from "../shared/logger.js";
import { isPaddockError } from "../shared/errors.js";
import type { RestartPolicy } from "./supervisor-config.js";
import type { DaemonRecord, DaemonState } from "./tenant-registry.js";
import { readProcStartWallMs } from "./proc-info.js";
import { adoptDaemon, describeExit, spawnDaemon, stopDaemon, type DaemonHandle, type DaemonSpec } from "./daemon-process.js";

/** What the manager reports to the rest of the supervisor (persisting, metrics, suspend). */
export interface DaemonEvents {
  /** Persist a change of the daemon record (awaited in order, errors logged). */
  record(tenantId: string, patch: Partial<DaemonRecord>): Promise<void>;
  /** The daemon answered /healthz after a (re)start or adoption. */
  ready(tenantId: string): Promise<void>;
  /** A crash loop: the tenant is to be marked failed. */
  failed(tenantId: string, reason: string): Promise<void>;
  /** A restart after a crash is being attempted; `lastExit` says how the daemon ended (`daemon exited with code 9`). */
  restarting(tenantId: string, lastExit: string): void;
}

/** One tenant's daemon under supervision. */
export class ManagedDaemon {
  private stateValue: DaemonState = "stopped";
  private handle: DaemonHandle | undefined;
  private generation = 0;
  private backoffTimer: NodeJS.Timeout | undefined;
  private crashTimesMs: number[] = [];
  private consecutiveCrashes = 0;
  private startedAtMs: number | undefined;
  private persistChain: Promise<void> = Promise.resolve();
  private restartsValue: number;
  /** How the last crash ended, for {@link DaemonEvents.restarting}. */
  private lastCrash = "";

  constructor(
    readonly spec: DaemonSpec,
    private readonly policy: RestartPolicy,
    private readonly events: DaemonEvents,
    private readonly log: Logger,
    restarts = 0,
  ) {
    this.restartsValue = restarts;
  }

  get state(): DaemonState {
    return this.stateValue;
  }

  get pid(): number | undefined {
    return this.handle?.pid;
  }

  get restarts(): number {
    return this.restartsValue;
  }

  /** Milliseconds since the current process started (undefined when not running; see {@link markRunning}). */
  get uptimeMs(): number | undefined {
    return this.stateValue === "running" && this.startedAtMs !== undefined ? Date.now() - this.startedAtMs : undefined;
  }

  /** Wait until every queued registry write of this daemon is done. */
  flush(): Promise<void> {
    return this.persistChain;
  }

  private setState(state: DaemonState, extra: Partial<DaemonRecord> = {}): void {
    this.stateValue = state;
    const patch: Partial<DaemonRecord> = { state, restarts: this.restartsValue, ...extra };
    this.persistChain = this.persistChain
      .then(() => this.events.record(this.spec.tenantId, patch))
      .catch((err: unknown) => this.log.error("could not persist daemon state", { err }));
  }

  private watch(handle: DaemonHandle): void {
    const gen = ++this.generation;
    this.handle = handle;
    void handle.exited.then((exit) => {
      if (gen !== this.generation || this.handle !== handle) return;
      this.handle = undefined;
      this.onCrash(`daemon ${describeExit(exit)}`);
    });
  }

  /**
   * Running from now on: `startedAt` and {@link uptimeMs} count from the process's own start
   * (/proc/<pid>/stat, proc-info.ts `readProcStartWallMs`), so an adopted daemon shows when it
   * really started, not when this supervisor adopted it; now when that is unknown (no procfs).
   */
  private markRunning(handle: DaemonHandle): void {
    const procStartMs = handle.procStartTicks === undefined ? undefined : readProcStartWallMs(handle.procStartTicks);
    // btime is whole seconds rounded down, so this is at most ~1 s early; never later than now (a clock stepped back).
    this.startedAtMs = Math.min(procStartMs ?? Date.now(), Date.now());
    this.watch(handle);
    this.setState("running", {
      pid: handle.pid,
      procStartTicks: handle.procStartTicks,
      startedAt: new Date(this.startedAtMs).toISOString(),
      // An adopted daemon keeps the build its spawner recorded (tenant-registry.ts DaemonRecord `version`).
      ...(handle.adopted ? {} : { version: handle.version }),
    });
    void this.events.ready(this.spec.tenantId).catch((err: unknown) => this.log.warn("post-ready hook failed", { err }));
  }

  /**
   * Start the daemon and wait for readiness (first start, admin restart, resume from failed).
   * Resets crash-loop accounting.
   * @throws PaddockError `ERR_DAEMON_START_FAILED` with the daemon's output; state is `failed`.
   */
  async start(): Promise<void> {
    this.cancelBackoff();
    this.crashTimesMs = [];
    this.consecutiveCrashes = 0;
    this.generation++;
    this.setState("starting", { pid: undefined, lastError: undefined });
    let handle: DaemonHandle;
    try {
      handle = await spawnDaemon(this.spec, this.policy.readyTimeoutMs);
    } catch (err) {
      const msg = (err as Error).message;
      this.setState("failed", { pid: undefined, lastError: msg });
      throw err;
    }
    this.markRunning(handle);
  }

  /**
   * Adopt a live daemon left by a previous supervisor (same pid, program, config, start time).
   * @returns false when it is not ours or not alive (then call {@link start}).
   */
  async adopt(pid: number, procStartTicks: number | undefined): Promise<boolean> {
    const handle = await adoptDaemon(this.spec, pid, procStartTicks);
    if (!handle) return false;
    this.log.info("adopted live daemon", { pid });
    this.markRunning(handle);
    return true;
  }

  private onCrash(reason: string): void {
    this.lastCrash = reason;
    const now = Date.now();
    if (this.startedAtMs !== undefined && now - this.startedAtMs >= this.policy.stableAfterMs) this.consecutiveCrashes = 0;
    this.crashTimesMs = this.crashTimesMs.filter((t) => now - t < this.policy.crashWindowMs);
    this.crashTimesMs.push(now);
    this.consecutiveCrashes++;
    if (this.crashTimesMs.length >= this.policy.maxCrashes) {
      const msg = `crash loop: ${this.crashTimesMs.length} crashes within ${this.policy.crashWindowMs} ms (last: ${reason})`;
      this.log.error("tenant daemon crash loop; giving up", { reason });
      this.setState("failed", { pid: undefined, lastExit: reason, lastError: msg });
      void this.events.failed(this.spec.tenantId, msg).catch((err: unknown) => this.log.error("could not mark tenant failed", { err }));
      return;
    }
    const delayMs = Math.min(this.policy.initialBackoffMs * 2 ** (this.consecutiveCrashes - 1), this.policy.maxBackoffMs);
    this.log.warn("tenant daemon exited unexpectedly; restarting after backoff", { reason, delayMs, crashes: this.crashTimesMs.length });
    this.setState("backoff", { pid: undefined, lastExit: reason });
    const gen = this.generation;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      if (gen === this.generation) void this.relaunch();
    }, delayMs);
  }

  private async relaunch(): Promise<void> {
    this.restartsValue++;
    this.events.restarting(this.spec.tenantId, this.lastCrash);
    const gen = ++this.generation;
    this.setState("starting", { pid: undefined });
    try {
      const handle = await spawnDaemon(this.spec, this.policy.readyTimeoutMs);
      if (gen !== this.generation) {
        // Stopped while starting: do not keep what nobody wants.
        await stopDaemon(handle, this.policy.stopTimeoutMs);
        return;
      }
      this.markRunning(handle);
    } catch (err) {
      if (gen !== this.generation) return;
      this.log.warn("restart failed", { err: isPaddockError(err) ? err.message : err });
      this.startedAtMs = undefined;
      this.onCrash((err as Error).message.split("\n")[0] ?? "start failed");
    }
  }

  private cancelBackoff(): void {
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
  }

  /**
   * Stop the daemon gracefully (SIGTERM to its group, then SIGKILL after the grace), and
   * do not restart it. Idempotent.
   */
  async stop(): Promise<void> {
    this.cancelBackoff();
    this.generation++;
    const handle = this.handle;
    this.handle = undefined;
    if (handle) {
      this.setState("stopping");
      const { exit, forced } = await stopDaemon(handle, this.policy.stopTimeoutMs);
      this.log.info("daemon stopped", { exit: describeExit(exit), forced });
    }
    this.startedAtMs = undefined;
    this.setState("stopped", { pid: undefined });
    await this.flush();
  }

  /**
   * Stop supervising without touching the process (supervisor shutdown that leaves daemons
   * running): the registry keeps pid and start time so the next supervisor adopts it.
   */
  detach(): void {
    this.cancelBackoff();
    this.generation++;
    this.handle?.unwatch();
    this.handle = undefined;
  }
}
