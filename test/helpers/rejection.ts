/**
 * The error `p` rejects with, typed as `E` (the caller's claim: e.g. `rejection<PaddockError>(…)`
 * where only PaddockErrors are thrown). @throws Error when `p` resolves.
 */
export async function rejection<E = unknown>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (err) {
    return err as E;
  }
  throw new Error("expected a rejection");
}
