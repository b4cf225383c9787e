/**
 * The supervised tenant daemons: one {@link ManagedDaemon} per tenant (spawn, adopt, restart
 * with backoff; supervisor/process-manager.ts), what their events write to the registry, and
 * the calls into a daemon the tenant rules need (pause the running VMs, find and kill a
 * daemon the registry does not record).
 */
import { PaddockError } from "../shared/errors.js";
import { ManagedDaemon, type DaemonEvents } from "./process-manager.js";
import { killDaemonGroup } from "./daemon-process.js";
import { findDaemonPids } from "./proc-info.js";
import { pidAlive } from "../shared/proc.js";
import { listDaemonNodes, setVmPaused } from "./daemon-client.js";
import type { DaemonRecord } from "./tenant-registry.js";
import type { TenantContext } from "./tenant-context.js";

/** Live facts about a tenant's daemon, for views (falls back to the registry's record). */
export interface DaemonInfo {
  /** `running`, `starting`, `stopped`, `failed`… (supervisor/process-manager.ts). */
  state: string;
  pid: number | undefined;
  restarts: number;
  /** Whole seconds since the daemon's process started (its /proc start time, also for an adopted one); undefined when not running. */
  uptimeSeconds: number | undefined;
}

/** Poll until `pid` is gone (zombies of other parents count as gone once reaped), at most `timeoutMs`. */
async function waitForPidExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && pidAlive(pid)) await new Promise((r) => setTimeout(r, 50));
}

/** The tenants' daemons, by tenant id. */
export class TenantDaemons {
  private readonly ctx: TenantContext;
  private readonly daemons = new Map<string, ManagedDaemon>();
  /** Tenants whose daemon is being restarted after a crash, with how it ended (a `daemon_restarted` event at ready). */
  private readonly crashRestarts = new Map<string, string>();

  constructor(ctx: TenantContext) {
    this.ctx = ctx;
  }

  /** The tenant's managed daemon, if one was created in this supervisor. */
  get(id: string): ManagedDaemon | undefined {
    return this.daemons.get(id);
  }

  /** True when the tenant's daemon is running and ready. */
  isRunning(id: string): boolean {
    return this.daemons.get(id)?.state === "running";
  }

  /** The tenant's managed daemon, created (stopped, with `restarts` so far) when missing. */
  managed(id: string, restarts = 0): ManagedDaemon {
    let d = this.daemons.get(id);
    if (!d) {
      d = new ManagedDaemon(this.ctx.paths.daemonSpec(id), this.ctx.config.restart, this.events(), this.ctx.log.child({ tenant: id }), restarts);
      this.daemons.set(id, d);
    }
    return d;
  }

  /** Forget the tenant's daemon (after it was stopped for a delete). */
  forget(id: string): void {
    this.daemons.delete(id);
  }

  /**
   * Live daemon facts for views.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`.
   */
  info(id: string): DaemonInfo {
    const rec = this.ctx.registry.get(id).daemon;
    const d = this.daemons.get(id);
    const uptime = d?.uptimeMs;
    return { state: d?.state ?? rec.state, pid: d?.pid ?? rec.pid, restarts: d?.restarts ?? rec.restarts, uptimeSeconds: uptime === undefined ? undefined : Math.floor(uptime / 1000) };
  }

  /** Restarts of the tenant's daemon: the live count, else `recorded` (the registry's). */
  restarts(id: string, recorded: number): number {
    return this.daemons.get(id)?.restarts ?? recorded;
  }

  /**
   * Pause every running VM of the tenant through its daemon and record them in `pausedVms`
   * (resume resumes exactly those).
   * @returns the hostnames paused and the messages of the pauses that failed.
   * @throws when the daemon cannot list its VMs.
   */
  async pauseAll(id: string): Promise<{ paused: string[]; errors: string[] }> {
    const socketPath = this.ctx.paths.socketPath(id);
    const nodes = await listDaemonNodes(socketPath);
    const paused: string[] = [];
    const errors: string[] = [];
    for (const n of nodes.filter((n) => n.status === "Running")) {
      try {
        await setVmPaused(socketPath, n.hostname, true);
        paused.push(n.hostname);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    await this.ctx.registry.updateTenant(id, (t) => {
      t.pausedVms = [...new Set([...(t.pausedVms ?? []), ...paused])];
    });
    return { paused, errors };
  }

  /**
   * Kill every daemon process running the tenant's config that is not supervised (a stray, or
   * one spawned by a supervisor killed before it recorded the pid), each reported to
   * `onKill` first, and wait (up to 10 s each) until it is gone.
   */
  async killUnrecorded(id: string, onKill: (pid: number) => void): Promise<void> {
    for (const pid of await findDaemonPids(this.ctx.config.daemonEntry, this.ctx.paths.configPath(id))) {
      onKill(pid);
      killDaemonGroup(pid);
      // A purge or a new daemon needs the daemon's state lock: wait until the killed one is gone.
      await waitForPidExit(pid, 10_000);
    }
  }

  /**
   * Stop supervising. With `stopDaemons`, daemons are stopped gracefully; otherwise they are
   * detached and keep running. Pending registry writes are flushed either way.
   */
  async shutdown(stopDaemons: boolean): Promise<void> {
    if (stopDaemons) await Promise.allSettled([...this.daemons.values()].map((d) => d.stop()));
    else for (const d of this.daemons.values()) d.detach();
    await Promise.allSettled([...this.daemons.values()].map((d) => d.flush()));
  }

  /** What a daemon's lifecycle writes: its record, suspension on ready, `failed`. */
  private events(): DaemonEvents {
    const { registry } = this.ctx;
    return {
      record: async (id, patch) => {
        if (!registry.find(id)) return;
        await registry.updateTenant(id, (t) => {
          const d: DaemonRecord = { ...t.daemon, ...patch };
          for (const k of Object.keys(d) as Array<keyof DaemonRecord>) if (d[k] === undefined) delete d[k];
          t.daemon = d;
        }).catch((err: unknown) => {
          if (!(err instanceof PaddockError && err.code === "ERR_TENANT_NOT_FOUND")) throw err;
        });
      },
      ready: async (id) => {
        this.ctx.daemonReady(id);
        const exit = this.crashRestarts.get(id);
        if (exit !== undefined) {
          this.crashRestarts.delete(id);
          await this.ctx.publish({ type: "daemon_restarted", tenant: id, reason: "crash", exit });
        }
        const t = registry.find(id);
        if (t?.status === "suspended") await this.pauseAll(id);
      },
      failed: async (id, reason) => {
        await registry.updateTenant(id, (t) => {
          if (t.status === "active" || t.status === "provisioning") {
            t.status = "failed";
            t.statusReason = reason;
          }
        });
        this.ctx.recordAudit({ actor: "supervisor" }, "tenant.failed", id, { reason });
      },
      // The registry counts restarts (tenant-registry.ts); /metrics reads them from there.
      restarting: (id, lastExit) => {
        this.crashRestarts.set(id, lastExit);
      },
    };
  }
}
