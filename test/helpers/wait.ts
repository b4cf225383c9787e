/** Polling helpers shared by the integration, privileged and reliability tests. */

/** Resolve after `ms` milliseconds. */
export async function sleepMs(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * Poll `fn` every `everyMs` until it returns a value other than undefined (a throw counts as
 * undefined: the condition is not met yet).
 * @throws Error `timed out waiting for <what>` (with the last error thrown) after `timeoutMs`.
 */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ""}`);
    await sleepMs(everyMs);
  }
}

/**
 * Poll `probe` every 20 ms until it is true.
 * @throws Error `<what>: not within <ms> ms` after `ms`.
 */
export async function untilTrue(what: string, probe: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await sleepMs(20);
  }
  throw new Error(`${what}: not within ${ms} ms`);
}
