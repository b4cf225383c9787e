/**
 * Ending a child process the harness started, by its handle (never by name): the one way the
 * daemon harness (scripts/lib/daemon-harness.ts) and the tests' supervisor fixture
 * (test/helpers/supervisor.ts) stop, or kill -9, what they spawned.
 */
import type { ChildProcess } from "node:child_process";

/** Whether `child` has ended (its exit code or the signal that ended it is known). */
export function childEnded(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Send `signal` to `child` and wait for its `exit` event; with `killAfterMs`, SIGKILL it when it
 * is still there after that many milliseconds.
 * @returns false, at once, when there is no child or it has ended already; true once it exited
 *   (its `exitCode` / `signalCode` tell how).
 */
export async function endChild(child: ChildProcess | undefined, signal: NodeJS.Signals, killAfterMs?: number): Promise<boolean> {
  if (!child || childEnded(child)) return false;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  await exited;
  clearTimeout(timer);
  return true;
}
