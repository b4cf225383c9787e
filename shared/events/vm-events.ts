/**
 * The tenant daemon's VM lifecycle events as they go over the wire (`GET /events`,
 * docs/slicer-api.md): the daemon emits them (tenant-daemon/events/event-log.ts), the supervisor
 * reads them to feed webhooks (supervisor/webhooks/daemon-event-feed.ts).
 */

/**
 * The kinds of VM event: transitions, and `oom` (a guest process was OOM-killed by the VM's
 * memory limit and the VM kept running; tenant-daemon/vm/vm-exit-reason.ts).
 */
export const VM_EVENT_TYPES = ["created", "ready", "paused", "resumed", "suspended", "restored", "stopped", "relaunched", "expired", "exited", "deleted", "oom"] as const;

/** A kind of VM transition. */
export type VmEventType = (typeof VM_EVENT_TYPES)[number];

/**
 * Why a transition happened: `api` (a client asked), `config` (a `count:` VM at daemon start),
 * `warm_pool` (a warm VM handed out), `agent` (the guest agent answered), `expired` (the VM's
 * deadline passed), `guest_exit` (the sandbox's init ended on its own: a guest poweroff, a
 * crash), `oom` (the VM's memory cgroup counted an OOM kill: of the init or of what ended it, on
 * `exited`; of a guest process, on `oom`), `pids_limit` (a gVisor VM ended whole after its
 * cgroup counted refused forks this boot: its own pids limit, or on cgroup v1 its tenant's shared
 * budget, which another VM may have filled;
 * tenant-daemon/vm/vm-exit-reason.ts), `reaped` (Paddock killed the sandbox: it ignored
 * SIGTERM for `paddock.stop_timeout_seconds` and got SIGKILL, or a daemon start found it created
 * but never started), `shutdown` (an ephemeral VM shut down through the API),
 * `wait_timeout` (a create's `wait` ran out), `daemon_stop` (an ephemeral VM at daemon stop),
 * `daemon_restart` (a VM the previous run left, removed at start), `idle` (paused or suspended
 * after its host group's `idle_pause_after` without activity, tenant-daemon/vm/vm-idle.ts),
 * `wake` (resumed or restored because a request came for a VM idle had paused or suspended).
 */
export type VmEventReason =
  | "api" | "config" | "warm_pool" | "agent" | "expired" | "guest_exit" | "oom" | "pids_limit" | "reaped" | "shutdown"
  | "wait_timeout" | "daemon_stop" | "daemon_restart" | "idle" | "wake";

/** An event as it is stored and sent (the SSE `data:` JSON). `time` is RFC 3339. */
export interface VmEvent {
  id: number;
  type: VmEventType;
  hostname: string;
  hostgroup: string;
  reason: VmEventReason;
  time: string;
  /** For `expired`: the deadline that passed (RFC 3339) and what was done (`delete` or `shutdown`). */
  deadline?: string;
  action?: "delete" | "shutdown";
  /**
   * With reason `oom` (`exited` and `oom` events): OOM kills the VM's memory cgroup counted since
   * the VM's last event that reported some (this boot's total on the first), ≥ 1.
   */
  oom_kills?: number;
  /**
   * On a `paused` event with reason `idle`: the host group's `idle_action` was `suspend`, the
   * suspend was refused for a reason the guest controls (it holds a TCP socket, which gVisor
   * cannot checkpoint: ERR_VM_SUSPEND_REFUSED), and the VM was paused instead (a request wakes it
   * as any idle pause). tenant-daemon/vm/vm-idle.ts.
   */
  fallback_from?: "suspend";
  /** With `fallback_from`: the refusal's message (e.g. `VM dev-2 holds 1 TCP socket(s); …`). */
  refusal?: string;
}
