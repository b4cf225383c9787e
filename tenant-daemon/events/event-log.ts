/**
 * The tenant daemon's lifecycle event log: every VM transition (created, ready, paused, resumed,
 * suspended, restored, stopped, relaunched, expired, exited, deleted), and OOM kills inside a VM
 * that keeps running (oom), with its reason, numbered,
 * kept in a bounded ring for `Last-Event-ID` resumes and fanned out to live subscribers (the
 * `GET /events` stream, tenant-daemon/api/events-routes.ts). In memory only: a daemon restart
 * starts a new log whose ids are all above the previous run's.
 */

/**
 * The kinds of VM event: transitions, and `oom` (a guest process was OOM-killed by the VM's
 * memory limit and the VM kept running; tenant-daemon/vm/vm-exit-reason.ts).
 */
export type VmEventType =
  | "created" | "ready" | "paused" | "resumed" | "suspended" | "restored"
  | "stopped" | "relaunched" | "expired" | "exited" | "deleted" | "oom";

/**
 * Why a transition happened: `api` (a client asked), `config` (a `count:` VM at daemon start),
 * `warm_pool` (a warm VM handed out), `agent` (the guest agent answered), `expired` (the VM's
 * deadline passed), `guest_exit` (the sandbox's init ended on its own: a guest poweroff, a
 * crash), `oom` (the VM's memory cgroup counted an OOM kill: of the init or of what ended it, on
 * `exited`; of a guest process, on `oom`), `reaped` (Paddock killed the sandbox: it ignored
 * SIGTERM for `paddock.stop_timeout_seconds` and got SIGKILL, or a daemon start found it created
 * but never started), `shutdown` (an ephemeral VM shut down through the API),
 * `wait_timeout` (a create's `wait` ran out), `daemon_stop` (an ephemeral VM at daemon stop),
 * `daemon_restart` (a VM the previous run left, removed at start).
 */
export type VmEventReason =
  | "api" | "config" | "warm_pool" | "agent" | "expired" | "guest_exit" | "oom" | "reaped" | "shutdown"
  | "wait_timeout" | "daemon_stop" | "daemon_restart";

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
}

/** What a caller gives {@link EventLog.emit}; the log adds `id` and `time`. */
export type VmEventInput = Omit<VmEvent, "id" | "time">;

/** Retention defaults: the newest 1024 events, none older than 15 minutes. */
export const DEFAULT_EVENT_RETENTION = { maxEvents: 1024, maxAgeMs: 15 * 60_000 } as const;

/** What {@link EventLog.since} found for a `Last-Event-ID`. */
export type Replay =
  /** Every event after the id is still held: these are exactly the missed ones. */
  | { kind: "resume"; events: VmEvent[] }
  /** Events after the id were dropped (too old, too many, or from another daemon run): these are all that are held. */
  | { kind: "reset"; events: VmEvent[] };

/**
 * Numbered VM events in a ring bounded by count and age, and their live subscribers.
 * Ids are integers that increase by one per event; the first id of a log is its creation time
 * in microseconds, so every id of a daemon run is above every id of the runs before it (as long
 * as the clock does not go back and a run emits fewer than a million events per second).
 */
export class EventLog {
  private readonly maxEvents: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  /** Held events, oldest first (a plain array used as a ring: trimmed from the front). */
  private events: VmEvent[] = [];
  /** Id of the first event this log ever emitted. */
  readonly firstId: number;
  private nextId: number;
  /** The highest id dropped from the ring (firstId - 1 while nothing was dropped). */
  private droppedThrough: number;
  private readonly listeners = new Set<(e: VmEvent) => void>();

  /**
   * @param opts.maxEvents most events held (≥ 1); opts.maxAgeMs: oldest event held, ms;
   *   opts.now: the clock (ms since the epoch).
   */
  constructor(opts: { maxEvents?: number; maxAgeMs?: number; now?: () => number } = {}) {
    this.maxEvents = Math.max(1, opts.maxEvents ?? DEFAULT_EVENT_RETENTION.maxEvents);
    this.maxAgeMs = opts.maxAgeMs ?? DEFAULT_EVENT_RETENTION.maxAgeMs;
    this.now = opts.now ?? Date.now;
    this.firstId = Math.floor(this.now()) * 1000;
    this.nextId = this.firstId;
    this.droppedThrough = this.firstId - 1;
  }

  /** Number, timestamp, store and deliver an event to every subscriber (synchronously). @returns the stored event. */
  emit(input: VmEventInput): VmEvent {
    const event: VmEvent = { id: this.nextId++, ...input, time: new Date(this.now()).toISOString() };
    this.events.push(event);
    this.trim();
    for (const l of [...this.listeners]) l(event);
    return event;
  }

  /**
   * The events a client that saw `lastId` missed. An id in this run's range whose successors
   * are all held resumes exactly; anything else (older than the ring, from another run, not a
   * number) is a reset with every held event.
   */
  since(lastId: number | undefined): Replay {
    this.trim();
    if (lastId === undefined) return { kind: "resume", events: [] };
    const newest = this.nextId - 1;
    if (!Number.isSafeInteger(lastId) || lastId < this.droppedThrough || lastId > newest) return { kind: "reset", events: [...this.events] };
    return { kind: "resume", events: this.events.filter((e) => e.id > lastId) };
  }

  /** Call `listener` with every event emitted from now on, until the returned function is called. */
  subscribe(listener: (e: VmEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Live subscribers now. */
  subscribers(): number {
    return this.listeners.size;
  }

  /** Drop events beyond the count bound and those older than the age bound. */
  private trim(): void {
    const oldest = this.now() - this.maxAgeMs;
    let drop = Math.max(0, this.events.length - this.maxEvents);
    while (drop < this.events.length && Date.parse((this.events[drop] as VmEvent).time) < oldest) drop++;
    if (drop === 0) return;
    this.droppedThrough = (this.events[drop - 1] as VmEvent).id;
    this.events = this.events.slice(drop);
  }
}
