/**
 * A numbered event log for server-sent-event streams: every event gets an id and a time, is kept
 * in a ring bounded by count and age for `Last-Event-ID` resumes, and is fanned out to live
 * subscribers. Generic over the event type; the tenant daemon's VM events
 * (tenant-daemon/events/event-log.ts) and the supervisor's tenant events
 * (supervisor/events/tenant-events.ts) are two instances. In memory only: a new process starts
 * a new log whose ids are all above the previous run's.
 */

/** What every ring event carries: an integer id and an RFC 3339 time, set by the ring. */
export interface RingEvent {
  id: number;
  time: string;
}

/** Retention defaults: the newest 1024 events, none older than 15 minutes. */
export const DEFAULT_EVENT_RETENTION = { maxEvents: 1024, maxAgeMs: 15 * 60_000 } as const;

/** What {@link EventRing.since} found for a `Last-Event-ID`. */
export type RingReplay<E> =
  /** Every event after the id is still held: these are exactly the missed ones. */
  | { kind: "resume"; events: E[] }
  /** Events after the id were dropped (too old, too many, or from another run): these are all that are held. */
  | { kind: "reset"; events: E[] };

/** Options of an {@link EventRing}. */
export interface EventRingOptions {
  /** Most events held (≥ 1; default 1024). */
  maxEvents?: number;
  /** Oldest event held, ms (default 15 min). */
  maxAgeMs?: number;
  /** The clock, ms since the epoch (default Date.now). */
  now?: () => number;
}

/**
 * Numbered events in a ring bounded by count and age, and their live subscribers.
 * Ids are integers that increase by one per event; the first id of a ring is its creation time
 * in microseconds, so every id of a run is above every id of the runs before it (as long as the
 * clock does not go back and a run emits fewer than a million events per second).
 * `E` is the stored event; callers give it without `id` and `time`.
 */
export class EventRing<E extends RingEvent> {
  private readonly maxEvents: number;
  private readonly maxAgeMs: number;
  private readonly now: () => number;
  /** Held events, oldest first (a plain array used as a ring: trimmed from the front). */
  private events: E[] = [];
  /** Id of the first event this ring ever emitted. */
  readonly firstId: number;
  private nextId: number;
  /** The highest id dropped from the ring (firstId - 1 while nothing was dropped). */
  private droppedThrough: number;
  private readonly listeners = new Set<(e: E) => void>();

  constructor(opts: EventRingOptions = {}) {
    this.maxEvents = Math.max(1, opts.maxEvents ?? DEFAULT_EVENT_RETENTION.maxEvents);
    this.maxAgeMs = opts.maxAgeMs ?? DEFAULT_EVENT_RETENTION.maxAgeMs;
    this.now = opts.now ?? Date.now;
    this.firstId = Math.floor(this.now()) * 1000;
    this.nextId = this.firstId;
    this.droppedThrough = this.firstId - 1;
  }

  /** Number, timestamp, store and deliver an event to every subscriber (synchronously). @returns the stored event. */
  emit(input: Omit<E, "id" | "time">): E {
    const event = { id: this.nextId++, ...input, time: new Date(this.now()).toISOString() } as E;
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
  since(lastId: number | undefined): RingReplay<E> {
    this.trim();
    if (lastId === undefined) return { kind: "resume", events: [] };
    const newest = this.nextId - 1;
    if (!Number.isSafeInteger(lastId) || lastId < this.droppedThrough || lastId > newest) return { kind: "reset", events: [...this.events] };
    return { kind: "resume", events: this.events.filter((e) => e.id > lastId) };
  }

  /** Call `listener` with every event emitted from now on, until the returned function is called. */
  subscribe(listener: (e: E) => void): () => void {
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
    while (drop < this.events.length && Date.parse((this.events[drop] as E).time) < oldest) drop++;
    if (drop === 0) return;
    this.droppedThrough = (this.events[drop - 1] as E).id;
    this.events = this.events.slice(drop);
  }
}
