/**
 * Waiting for a VM's guest agent to answer (secret delivery, which waits with it, is
 * vm-secrets-sync.ts). Holds no state of its own: it reads the VM table (a VM deleted or stopped
 * meanwhile ends the wait).
 */
import { watch, type FSWatcher } from "node:fs";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { sleep } from "../../shared/time.js";
import type { AgentPort } from "./vm-ports.js";
import type { VmPaths } from "./vm-paths.js";
import type { VmTable } from "./vm-table.js";

/** One poll of a VM's agent shared by every concurrent wait for `agent` on that VM. */
interface SharedPoll {
  done: Promise<void>;
  waiters: number;
  /** Set when the last waiter left before the agent answered: the poll stops. */
  abandoned: boolean;
}

/**
 * Health polling of the agents of the VMs of `table`. Concurrent waits for `agent` on one VM
 * (a create's own wait, its secret delivery and its `ready` event each wait at boot) share one
 * poll, so a booting agent answers one health check instead of one per waiter.
 */
export class VmAgentWait {
  private readonly table: VmTable;
  private readonly agent: AgentPort;
  private readonly paths: VmPaths;
  private readonly log: Logger;
  private readonly polls = new Map<string, SharedPoll>();
  private readonly bootRefusal: ((hostname: string) => Promise<PaddockError | undefined>) | undefined;

  /** @param deps.bootRefusal - while the agent does not answer, checked on each poll: an error ends the wait at once (vm-pids-budget.ts). */
  constructor(deps: { table: VmTable; agent: AgentPort; paths: VmPaths; log: Logger; bootRefusal?: (hostname: string) => Promise<PaddockError | undefined> }) {
    this.bootRefusal = deps.bootRefusal;
    this.table = deps.table;
    this.agent = deps.agent;
    this.paths = deps.paths;
    this.log = deps.log;
  }

  /**
   * Poll the agent's health until `agent_uptime > 0` (and `userdata_ran` for `userdata`).
   * @throws PaddockError ERR_VM_WAIT_TIMEOUT (408) after `timeoutMs` (its message does not say
   *   what became of the VM: the caller says so); ERR_VM_NOT_RUNNING if the VM stops meanwhile,
   *   or (503) if the daemon stops while a warm VM is awaited; the `bootRefusal` error.
   */
  async waitForAgent(hostname: string, wait: "agent" | "userdata", timeoutMs: number): Promise<void> {
    if (wait === "userdata") return this.poll(hostname, wait, Date.now() + timeoutMs, () => false, timeoutMs);
    let shared = this.polls.get(hostname);
    // An abandoned poll may still be on its last health check: never join it.
    if (shared === undefined || shared.abandoned) {
      const poll: SharedPoll = { done: Promise.resolve(), waiters: 0, abandoned: false };
      // No deadline of its own: it ends when the agent answers, the VM goes, or no one waits.
      poll.done = this.poll(hostname, "agent", Number.POSITIVE_INFINITY, () => poll.abandoned, timeoutMs).finally(() => {
        if (this.polls.get(hostname) === poll) this.polls.delete(hostname);
      });
      poll.done.catch(() => undefined);
      this.polls.set(hostname, poll);
      shared = poll;
    }
    const poll = shared;
    poll.waiters++;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        poll.done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new PaddockError("ERR_VM_WAIT_TIMEOUT", `timed out after ${timeoutMs} ms waiting for agent on ${hostname}`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
      if (--poll.waiters === 0) poll.abandoned = true;
    }
  }

  /**
   * The poll itself: until the agent answers as `wait` asks, the VM is gone, `deadline` (epoch
   * ms) passes or `abandoned()` says so (then it resolves: nobody waits for it any more).
   */
  private async poll(hostname: string, wait: "agent" | "userdata", deadline: number, abandoned: () => boolean, timeoutMs: number): Promise<void> {
    // Until the socket exists, wake on inotify events of the agent dir (the socket appearing)
    // instead of sleeping; the timer stays as a fallback should an event be missed.
    const dirEvents = watchDir(this.paths.agentDir(hostname));
    try {
      let delay = 5;
      for (;;) {
        if (abandoned()) return;
        const vm = this.table.lookup(hostname);
        if (!vm || vm.phase === "deleting" || vm.phase === "stopped") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} was deleted or stopped while waiting for ${wait === "userdata" ? "its userdata" : "its agent"}`);
        if (this.table.stopping && vm.record.pooled) throw new PaddockError("ERR_VM_NOT_RUNNING", "daemon is shutting down", { status: 503 });
        const changed = dirEvents.next();
        let socketSeen = false;
        try {
          const h = await this.agent.health(this.paths.endpoint(vm.record), Math.max(50, Math.min(2000, deadline - Date.now())));
          socketSeen = true;
          if (h.agent_uptime > 0 && (wait === "agent" || h.userdata_ran)) return;
        } catch (err) {
          socketSeen = errnoCode(err) !== "ENOENT" && errnoCode((err as { cause?: unknown }).cause) !== "ENOENT";
          const refused = await this.bootRefusal?.(hostname);
          if (refused) throw refused;
        }
        if (Date.now() >= deadline) throw new PaddockError("ERR_VM_WAIT_TIMEOUT", `timed out after ${timeoutMs} ms waiting for ${wait} on ${hostname}`);
        const remaining = Math.max(1, Math.min(deadline - Date.now(), 2_000));
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
