/**
 * Durable JSON state files (the daemon's state.json, the supervisor's registry): read-modify-write
 * under proper-lockfile, written as temp file + fsync + rename (+ fsync of the directory), mode
 * 0600, with a schema version. A corrupt or newer-schema file is refused, never overwritten.
 */
import { promises as fs, constants as fsConstants } from "node:fs";
import path from "node:path";
import lockfile from "proper-lockfile";
import { PaddockError, errnoCode } from "./errors.js";
import { pidAlive } from "./proc.js";

/**
 * Write `data` to `file` atomically: a sibling temp file is written with `mode`, fsynced,
 * renamed over `file`, and the directory is fsynced so the rename survives a crash.
 * @throws the underlying errno error (ENOSPC, EACCES, …) with the temp file removed.
 */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, mode);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(tmp, file);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  const dirHandle = await fs.open(dir, "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/** Shape every state file has at its top level. */
export interface Versioned {
  schemaVersion: number;
}

/** Options of a {@link JsonStateStore}. */
export interface JsonStateStoreOptions<T extends Versioned> {
  /** Absolute path of the JSON file. */
  file: string;
  /** The schema version this code writes and understands. */
  schemaVersion: number;
  /** The state used when the file does not exist yet. */
  initial: () => T;
  /** Structural check of a parsed file; return a problem description or undefined. */
  validate?: (value: unknown) => string | undefined;
}

/**
 * A JSON file holding one state object, updated only through {@link update}, which runs
 * under an exclusive cross-process lock (proper-lockfile on the file itself; the file is
 * created first so the locked path exists). Reads outside `update` see the last committed
 * version.
 */
export class JsonStateStore<T extends Versioned> {
  private readonly opts: JsonStateStoreOptions<T>;
  private chain: Promise<unknown> = Promise.resolve();
  private compromised: Error | undefined;

  constructor(opts: JsonStateStoreOptions<T>) {
    this.opts = opts;
  }

  get file(): string {
    return this.opts.file;
  }

  /**
   * Create the directory (0700) and the file with the initial state if missing, then read
   * and check it.
   * @throws PaddockError `ERR_STATE_CORRUPT` when the file is not valid JSON, fails
   *   validation or has another schema version.
   */
  async init(): Promise<T> {
    await fs.mkdir(path.dirname(this.opts.file), { recursive: true, mode: 0o700 });
    try {
      await fs.access(this.opts.file);
    } catch {
      await writeFileAtomic(this.opts.file, JSON.stringify(this.opts.initial(), null, 2) + "\n");
    }
    return this.read();
  }

  /** Read and check the file (no lock; the file is only ever replaced atomically). */
  async read(): Promise<T> {
    let text: string;
    try {
      text = await fs.readFile(this.opts.file, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return this.opts.initial();
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new PaddockError("ERR_STATE_CORRUPT", `state file ${this.opts.file} is not valid JSON; refusing to start (move it aside to recover)`, { cause: err });
    }
    if (typeof parsed !== "object" || parsed === null || (parsed as Versioned).schemaVersion !== this.opts.schemaVersion) {
      throw new PaddockError(
        "ERR_STATE_CORRUPT",
        `state file ${this.opts.file} has schema version ${String((parsed as Partial<Versioned> | null)?.schemaVersion)}, expected ${this.opts.schemaVersion}; refusing to start`,
      );
    }
    const problem = this.opts.validate?.(parsed);
    if (problem) throw new PaddockError("ERR_STATE_CORRUPT", `state file ${this.opts.file} is invalid (${problem}); refusing to start`);
    return parsed as T;
  }

  /**
   * Read-modify-write under the lock. `mutate` gets a fresh copy and returns the new state
   * (or mutates and returns nothing) and a result. Calls in this process are serialised too.
   * @param options.unchanged told `mutate`'s result, true when `mutate` changed nothing: the
   *   file is then not written (no temp file, no fsync, no rename), the read under the lock
   *   still decided it (default: always written)
   * @throws whatever `mutate` throws (nothing is written then), `ERR_STATE_LOCKED` when the
   *   lock cannot be taken within ~10 s, `ERR_STATE_CORRUPT` after a compromised lock.
   */
  async update<R>(mutate: (state: T) => R | Promise<R>, options: { unchanged?: (result: R) => boolean } = {}): Promise<R> {
    const next = this.chain.then(() => this.updateLocked(mutate, options.unchanged));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async updateLocked<R>(mutate: (state: T) => R | Promise<R>, unchanged: ((result: R) => boolean) | undefined): Promise<R> {
    if (this.compromised) throw new PaddockError("ERR_STATE_CORRUPT", `lock on ${this.opts.file} was compromised`, { cause: this.compromised });
    const release = await lockWithRetry(this.opts.file, {
      what: this.opts.file,
      // proper-lockfile's default throws from a timer and kills the process; record it instead.
      onCompromised: (err) => {
        this.compromised = err;
      },
    });
    try {
      const state = await this.read();
      const result = await mutate(state);
      if (unchanged?.(result) === true) return result;
      try {
        await writeFileAtomic(this.opts.file, JSON.stringify(state, null, 2) + "\n");
      } catch (err) {
        throw noSpaceError(err, this.opts.file) ?? err;
      }
      return result;
    } finally {
      await release().catch(() => undefined);
    }
  }
}

/**
 * Take proper-lockfile's lock on `target` (which must exist), retrying while another holder has
 * it (ELOCKED) for about 10 s with doubling waits (20 → 200 ms). Any other failure (a full or
 * read-only disk) is reported at once, not after a hundred retries.
 * @param options.lockfilePath the lock's own path (default `<target>.lock`)
 * @param options.onCompromised called instead of proper-lockfile's default, which throws from a timer
 * @param options.what how messages name the locked thing
 * @returns the release function
 * @throws PaddockError ERR_STATE_NO_SPACE when the disk is full, else ERR_STATE_LOCKED
 */
export async function lockWithRetry(
  target: string,
  options: { what: string; lockfilePath?: string; onCompromised?: (err: Error) => void },
): Promise<() => Promise<void>> {
  const deadline = Date.now() + 10_000;
  let delayMs = 20;
  for (;;) {
    try {
      return await lockfile.lock(target, {
        retries: 0,
        stale: 10_000,
        realpath: false,
        ...(options.lockfilePath !== undefined ? { lockfilePath: options.lockfilePath } : {}),
        onCompromised: options.onCompromised ?? (() => undefined),
      });
    } catch (err) {
      if (errnoCode(err) === "ELOCKED" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, delayMs));
        delayMs = Math.min(delayMs * 2, 200);
        continue;
      }
      throw noSpaceError(err, target) ?? new PaddockError("ERR_STATE_LOCKED", `could not lock ${options.what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** The entries {@link acquireOwnership} keeps in the owned dir while the lock is held. */
export const OWNERSHIP_ENTRIES: readonly string[] = Object.freeze(["owner.lock", "owner.pid"]);

/**
 * Take an exclusive, long-held ownership lock on `dir` (for "one daemon per state dir").
 * The lock is proper-lockfile's `owner.lock` directory plus `owner.pid` naming the holder; a
 * lock whose holder pid is no longer alive (the holder was SIGKILLed) is taken over at once
 * instead of waiting for proper-lockfile's staleness timeout: a process may be SIGKILLed at any
 * moment, and the next one must not wait on its leftovers.
 * @returns a release function.
 * @throws PaddockError `ERR_STATE_LOCKED` naming the directory when another live process holds it.
 */
export async function acquireOwnership(dir: string, what: string): Promise<() => Promise<void>> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const lockfilePath = path.join(dir, OWNERSHIP_ENTRIES[0] as string);
  const pidFile = path.join(dir, OWNERSHIP_ENTRIES[1] as string);
  const take = () => lockfile.lock(dir, { stale: 15_000, update: 5_000, realpath: false, lockfilePath, onCompromised: () => undefined });
  let release: () => Promise<void>;
  try {
    release = await take();
  } catch (err) {
    const holder = Number((await fs.readFile(pidFile, "utf8").catch(() => "")).trim());
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && !pidAlive(holder)) {
      await fs.rm(lockfilePath, { recursive: true, force: true });
      try {
        release = await take();
      } catch (err2) {
        throw new PaddockError("ERR_STATE_LOCKED", `${what} at ${dir} is already in use by another running process`, { cause: err2 });
      }
    } else {
      const who = Number.isInteger(holder) && holder > 0 ? ` (pid ${holder})` : "";
      throw new PaddockError("ERR_STATE_LOCKED", `${what} at ${dir} is already in use by another running process${who}`, { cause: err });
    }
  }
  await writeFileAtomic(pidFile, `${process.pid}\n`, 0o600);
  return async () => {
    await fs.rm(pidFile, { force: true });
    await release();
  };
}

/**
 * `ERR_STATE_NO_SPACE` (507) for a write that failed because the state filesystem is full
 * (ENOSPC) or over quota (EDQUOT); undefined for any other error. The file was not changed
 * (writes go to a temp file renamed into place).
 */
export function noSpaceError(err: unknown, file: string): PaddockError | undefined {
  const code = errnoCode(err);
  if (code !== "ENOSPC" && code !== "EDQUOT") return undefined;
  return new PaddockError("ERR_STATE_NO_SPACE", `no space left on the state filesystem: could not write ${file} (${code}); it is unchanged; free space and retry`, { cause: err });
}

