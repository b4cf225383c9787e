/**
 * The earliest-deadline scheduler VmExpiry (vm-expiry.ts) and VmIdle (vm-idle.ts) share: one
 * unref'd timer for the earliest deadline among a set of items, instead of a timer per item.
 * Each {@link DeadlineTimer.kick} scans the items once, hands every item whose deadline has
 * passed to `due`, and arms the timer for the earliest deadline still ahead. The owner calls
 * `kick` again after anything that may move a deadline; the timer itself kicks at the deadline.
 */

/** Longest delay Node's setTimeout takes (2^31-1 ms, about 24.8 days); a later deadline is re-armed on the way. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What a {@link DeadlineTimer} schedules. */
export interface DeadlineTimerDeps<T> {
  /** The items to scan (read again at every kick). */
  items(): Iterable<T>;
  /** When `item` is due, ms since the epoch; undefined: not scheduled now. */
  deadline(item: T): number | undefined;
  /**
   * Act on `item`, whose deadline `deadlineMs` has passed. Called during a kick: it should
   * start the work and mark the item so that `deadline` answers undefined until the work ends,
   * then kick again (from a promise, not synchronously).
   */
  due(item: T, deadlineMs: number): void;
  /** The clock, ms since the epoch (default Date.now). */
  now?: () => number;
}

/** One timer at the earliest deadline of a set of items. */
export class DeadlineTimer<T> {
  private readonly deps: DeadlineTimerDeps<T>;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private scanning = false;
  private again = false;

  constructor(deps: DeadlineTimerDeps<T>) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Hand every item whose deadline has passed to `due` and re-arm the timer for the earliest
   * deadline ahead (none: no timer). Cheap: one pass over the items. Does nothing after
   * {@link stop}. A kick from inside `due` runs once the current scan ends.
   */
  kick(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.again = true;
      return;
    }
    this.scanning = true;
    try {
      do {
        this.again = false;
        this.scan();
      } while (this.again && !this.stopped);
    } finally {
      this.scanning = false;
    }
  }

  /** Whether the timer is armed (a deadline lies ahead). */
  get armed(): boolean {
    return this.timer !== undefined;
  }

  /** Stop: clear the timer; kicks do nothing from now on. Idempotent. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private scan(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.now();
    let next: number | undefined;
    for (const item of this.deps.items()) {
      const d = this.deps.deadline(item);
      if (d === undefined) continue;
      if (d <= now) this.deps.due(item, d);
      else if (next === undefined || d < next) next = d;
    }
    if (next === undefined || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, Math.min(MAX_TIMER_MS, Math.max(0, next - now)));
    this.timer.unref();
  }
}
