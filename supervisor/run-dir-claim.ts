/**
 * One supervisor state per run dir. A supervisor's run dir holds its tenants' sockets, VM
 * bundles and agent listeners, and at start the supervisor removes what its registry does not
 * know there (tenant-lifecycle.ts `removeLeftovers`). A second supervisor with its own state dir
 * but the same run dir (`paddock up --state-dir /tmp/x` keeps the default `/run/paddock`) would
 * take the first one's tenants for leftovers and delete their run dirs, even while the first
 * one is stopped and its VMs run on. So the run dir records the state dir it belongs to, in
 * `<run dir>/state-dir`, and a supervisor of another state dir is refused before it touches it.
 */
import path from "node:path";
import { promises as fs } from "node:fs";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { writeFileAtomic } from "../shared/state-store.js";

/** The file in a run dir naming the state dir it belongs to (one absolute path and a newline). */
export const RUN_DIR_OWNER_FILE = "state-dir";

/**
 * Claim `runDir` for the supervisor of `stateDir`, or confirm it is its own. Call with the
 * state dir's ownership lock held (main.ts), before anything reads or removes below `runDir`.
 * A run dir that names another state dir is taken over only when that state dir holds no
 * supervisor state any more (no `<state dir>/supervisor/`: removed, or never a supervisor's);
 * its leftovers are then this supervisor's to clean.
 * @param runDir - the supervisor's run dir (exists).
 * @param stateDir - the supervisor's state dir (exists); compared by real path.
 * @returns true when this call created `<runDir>/state-dir` (a refused start removes it again,
 *   start-footprint.ts); false when the run dir was already this state's or was taken over.
 * @throws PaddockError `ERR_STATE_LOCKED` when the run dir belongs to another supervisor state
 *   (the message names both and the way out); `ERR_STORAGE_FAILED` when the claim cannot be read
 *   or written.
 */
export async function claimRunDir(runDir: string, stateDir: string): Promise<boolean> {
  const own = await fs.realpath(stateDir);
  const file = path.join(runDir, RUN_DIR_OWNER_FILE);
  try {
    await fs.writeFile(file, `${own}\n`, { flag: "wx", mode: 0o600 });
    return true;
  } catch (err) {
    if (errnoCode(err) !== "EEXIST") throw storageError(file, err);
  }
  const recorded = (await fs.readFile(file, "utf8").catch((err: unknown) => { throw storageError(file, err); })).trim();
  if (recorded === own) return false;
  const otherHasState = recorded.startsWith("/") && (await fs.stat(path.join(recorded, "supervisor")).then((s) => s.isDirectory(), () => false));
  if (otherHasState) {
    throw new PaddockError(
      "ERR_STATE_LOCKED",
      `run dir ${runDir} belongs to the supervisor whose state dir is ${recorded} (its tenants' sockets and VMs live there); ` +
        `give this supervisor (state dir ${own}) its own run dir with --run-dir, run_dir or PADDOCK_RUN_DIR`,
      { details: { run_dir: runDir, owner_state_dir: recorded } },
    );
  }
  await writeFileAtomic(file, `${own}\n`, 0o600).catch((err: unknown) => { throw storageError(file, err); });
  return false;
}

function storageError(file: string, err: unknown): PaddockError {
  return new PaddockError("ERR_STORAGE_FAILED", `cannot claim the run dir: ${file}: ${(err as Error).message}`, { cause: err });
}
