/**
 * How many pre-formatted spare disks of one size the spare-disk pool (vm-storage.ts `SparePool`)
 * keeps: its base size, raised for a while after a burst of creates took more disks at once
 * than the base covers. A tenant that creates one VM at a time keeps the base (2 spares); one
 * that created 20 at once keeps up to 20 for the next burst instead of running `mkfs.ext4`
 * inside 18 of its 20 creates (docs/performance.md "Creates, fourth look"). A spare costs a
 * sparse file (0.7 MB allocated for 1 GiB, 4.4 MB for 10 GiB and above, with vm-disk.ts
 * `prepareDisk`'s flags) and one background mkfs at `nice -n 19`.
 */

/** Limits of {@link SpareDemand}. */
export interface SpareDemandOptions {
  /** Spares kept without any demand (vm-storage.ts `poolSize`, default 2); 0 disables the pool. */
  base: number;
  /** Most spares a burst can raise the target to (default {@link DEFAULT_SPARE_BURST_MAX}). */
  max: number;
  /**
   * Takes at most this far apart, ms, count as one burst (default 2 000: concurrent creates
   * take their disks within a few hundred ms; creates one at a time, one every second or so,
   * stay at the base, which a background mkfs per take keeps up with).
   */
  windowMs: number;
  /** How long a burst keeps the target raised, ms (default 600 000: 10 min). */
  memoryMs: number;
  /**
   * A refill waits until no create took a disk for this long, ms, while spares are left
   * (default 1 000): the background mkfs runs after a burst rather than on its CPU.
   */
  quietMs: number;
}

/** Default {@link SpareDemandOptions.max}: figure 8's burst (docs/benchmarks.md). */
export const DEFAULT_SPARE_BURST_MAX = 20;

/**
 * The largest number of `takes` (ms timestamps, any order) that fall within one interval of
 * `windowMs` (inclusive of both ends). 0 for none.
 */
export function largestBurst(takes: readonly number[], windowMs: number): number {
  const t = [...takes].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < t.length; hi++) {
    while ((t[hi] as number) - (t[lo] as number) > windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

/**
 * Demand for spare disks of one size: {@link record} each disk a create asked for (taken from
 * the pool or not); {@link target} says how many spares to keep now: `base`, or the largest
 * burst of the last `memoryMs` (takes within `windowMs` of each other), at most `max`.
 */
export class SpareDemand {
  private takes: number[] = [];
  private readonly opts: SpareDemandOptions;

  /** @throws RangeError for a negative or non-integer base or max, or non-positive durations. */
  constructor(opts: Partial<SpareDemandOptions> & { base: number }) {
    this.opts = { max: DEFAULT_SPARE_BURST_MAX, windowMs: 2_000, memoryMs: 600_000, quietMs: 1_000, ...opts };
    const { base, max, windowMs, memoryMs } = this.opts;
    if (!Number.isInteger(base) || base < 0 || !Number.isInteger(max) || max < 0) throw new RangeError(`spare pool base ${base} and max ${max} must be integers >= 0`);
    if (!(windowMs > 0) || !(memoryMs > 0)) throw new RangeError("spare demand windowMs and memoryMs must be > 0");
  }

  /** A create asked for a disk of this size at `nowMs` (epoch or monotonic ms, used consistently). */
  record(nowMs: number): void {
    this.forget(nowMs);
    this.takes.push(nowMs);
  }

  /** Spares to keep at `nowMs`: 0 when the pool is disabled (`base` 0), else in [base, max(base, max)]. */
  target(nowMs: number): number {
    const { base, max } = this.opts;
    if (base === 0) return 0;
    this.forget(nowMs);
    return Math.max(base, Math.min(max, largestBurst(this.takes, this.opts.windowMs)));
  }

  /**
   * How long the next refill should wait at `nowMs`, ms: 0 when no spare is left (`ready` 0)
   * or no disk was taken within `quietMs`, else the rest of that quiet time.
   */
  refillDelayMs(nowMs: number, ready: number): number {
    const last = this.takes.at(-1);
    if (ready === 0 || last === undefined) return 0;
    return Math.max(0, last + this.opts.quietMs - nowMs);
  }

  private forget(nowMs: number): void {
    const cutoff = nowMs - this.opts.memoryMs;
    if (this.takes.length > 0 && (this.takes[0] as number) < cutoff) this.takes = this.takes.filter((t) => t >= cutoff);
  }
}
