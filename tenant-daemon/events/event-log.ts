/**
 * The tenant daemon's lifecycle event log: every VM transition (created, ready, paused, resumed,
 * suspended, restored, stopped, relaunched, expired, exited, deleted) with its reason, numbered,
 * kept in a bounded ring for `Last-Event-ID` resumes and fanned out to live subscribers (the
 * `GET /events` stream, tenant-daemon/api/events-routes.ts). In memory only: a daemon restart
 * starts a new log whose ids are all above the previous run's.
 */

/** The kinds of VM transition. */
export type VmEventType =
  | "created" | "ready" | "paused" | "resumed" | "suspended" | "restored"
  | "stopped" | "relaunched" | "expired" | "exited" | "deleted";

/**
 * Why a transition happened: `api` (a client asked), `config` (a `count:` VM at daemon start),
 * `warm_pool` (a warm VM handed out), `agent` (the guest agent answered), `expired` (the VM's
 * deadline passed), `guest_exit` (the sandbox's init ended: a guest poweroff, a crash, an OOM
 * kill of init), `shutdown` (an ephemeral VM shut down through the API),
 * `wait_timeout` (a create's `wait` ran out), `daemon_stop` (an ephemeral VM at daemon stop),
 * `daemon_restart` (a VM the previous run left, removed at start).
 */
export type VmEventReason =
  | "api" | "config" | "warm_pool" | "agent" | "expired" | "guest_exit" | "shutdown"
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
}

/** What a caller gives {@link EventLog.emit}; the log adds `id` and `time`. */
export type VmEventInput = Omit<VmEvent, "id" | "time">;

/**
 * An egress proxy event (tenant-daemon/proxy/egress-telemetry.ts): `egress_denied` (a request
 * the proxy refused) or `egress_audit` (one it would have refused, let through in audit mode).
 * Rate-limited: at most one per client and host per window, `suppressed` counting the like
 * ones the window swallowed before it, and a cap on all of them per window.
 */
export interface EgressEvent {
  id: number;
  type: "egress_denied" | "egress_audit";
  /** The proxy client (from the VM's address or its proxy token). */
  client: string;
  host: string;
  port: number;
  /** Why: `no_rule`, `method_path`, `sni_mismatch`, `upstream_refused`, `not_tls`, `bad_host_header`. */
  reason: string;
  method?: string;
  /** The request path without its query (TLS-intercepted and plain HTTP requests). */
  path?: string;
  /** Like events of this client and host not sent since the previous one. */
  suppressed: number;
  time: string;
}

/** What the proxy gives {@link EventLog.emit} for an egress event. */
export type EgressEventInput = Omit<EgressEvent, "id" | "time">;

/** Every event of the log. */
export type DaemonEvent = VmEvent | EgressEvent;

/** Retention defaults: the newest 1024 events, none older than 15 minutes. */
export const DEFAULT_EVENT_RETENTION = { maxEvents: 1024, maxAgeMs: 15 * 60_000 } as const;

/** What {@link EventLog.since} found for a `Last-Event-ID`. */
export type Replay =
  /** Every event after the id is still held: these are exactly the missed ones. */
  | { kind: "resume"; events: DaemonEvent[] }
  /** Events after the id were dropped (too old, too many, or from another daemon run): these are all that are held. */
  | { kind: "reset"; events: DaemonEvent[] };

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
  private events: DaemonEvent[] = [];
  /** Id of the first event this log ever emitted. */
  readonly firstId: number;
  private nextId: number;
  /** The highest id dropped from the ring (firstId - 1 while nothing was dropped). */
  private droppedThrough: number;
  private readonly listeners = new Set<(e: DaemonEvent) => void>();

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
  emit(input: VmEventInput): VmEvent;
  emit(input: EgressEventInput): EgressEvent;
  emit(input: VmEventInput | EgressEventInput): DaemonEvent {
    const event = { id: this.nextId++, ...input, time: new Date(this.now()).toISOString() } as DaemonEvent;
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
  subscribe(listener: (e: DaemonEvent) => void): () => void {
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
    while (drop < this.events.length && Date.parse((this.events[drop] as DaemonEvent).time) < oldest) drop++;
    if (drop === 0) return;
    this.droppedThrough = (this.events[drop - 1] as DaemonEvent).id;
    this.events = this.events.slice(drop);
  }
}
