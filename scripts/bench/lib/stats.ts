/**
 * Order statistics of benchmark samples: percentiles (nearest-rank), mean, standard
 * deviation, min/max and interquartile range, and small timing helpers (monotonic clock).
 */

/** Summary of one sample set. Same unit as the samples. */
export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  mean: number;
  /** Sample standard deviation (n − 1); 0 for n < 2. */
  stdev: number;
  /** p75 − p25. */
  iqr: number;
}

/**
 * Nearest-rank percentile: the smallest sample with at least `q` of the samples at or below it.
 * @param q quantile in [0, 1]. @returns NaN for no samples.
 */
export function percentile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(q * s.length));
  return s[Math.min(s.length, rank) - 1] as number;
}

/** {@link Summary} of `samples` (all NaN when empty). */
export function summarize(samples: readonly number[]): Summary {
  const n = samples.length;
  const mean = n === 0 ? NaN : samples.reduce((a, b) => a + b, 0) / n;
  const variance = n < 2 ? 0 : samples.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return {
    n,
    p50: percentile(samples, 0.5),
    p95: percentile(samples, 0.95),
    p99: percentile(samples, 0.99),
    // A loop, not Math.min(...samples): spreading ~10⁵ samples overflows the call stack.
    min: n === 0 ? NaN : samples.reduce((a, b) => (b < a ? b : a)),
    max: n === 0 ? NaN : samples.reduce((a, b) => (b > a ? b : a)),
    mean,
    stdev: Math.sqrt(variance),
    iqr: percentile(samples, 0.75) - percentile(samples, 0.25),
  };
}

/** Milliseconds since an arbitrary origin (monotonic, sub-ms). */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Run `fn` and return its duration in ms with its value. */
export async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = nowMs();
  const v = await fn();
  return [nowMs() - t0, v];
}

/** Run `fn` `n` times in sequence; the durations in ms. `fn` gets the iteration index. */
export async function repeatTimed(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = nowMs();
    await fn(i);
    out.push(nowMs() - t0);
  }
  return out;
}
