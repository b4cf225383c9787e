/**
 * A bounded job pool for the bench figures (figures/provisioning.ts, figures/density.ts).
 */

/**
 * Run `jobs` with at most `limit` in flight and return their results in job order. After the
 * first job fails no further job starts (at 100 tenants one failed create would otherwise be
 * followed by minutes of doomed ones); the jobs already running are awaited, then that first
 * error is thrown.
 * @throws whatever the first failing job threw.
 */
export async function pool<T>(limit: number, jobs: ReadonlyArray<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array<T>(jobs.length);
  let next = 0;
  let failed = false;
  let firstErr: unknown;
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, async () => {
    while (!failed && next < jobs.length) {
      const i = next++;
      try {
        out[i] = await (jobs[i] as () => Promise<T>)();
      } catch (err) {
        if (!failed) firstErr = err;
        failed = true;
      }
    }
  }));
  if (failed) throw firstErr;
  return out;
}
