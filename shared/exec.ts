/**
 * The one wrapper for external commands: argv arrays only, never a shell
 * string, always a timeout, and typed errors that keep the command, exit code and trimmed
 * stderr. Built on node:child_process `spawn` (https://nodejs.org/docs/latest-v20.x/api/child_process.html),
 * not execa: both apps run it and it is on every tenant daemon's hot path, where execa and its
 * dependencies cost ~7.7 MiB of private memory per idle daemon (docs/performance.md, "Daemon
 * memory and start, third look"). The supervisor still spawns the daemons themselves with execa
 * (supervisor/daemon-process.ts).
 *
 * What it keeps from the execa version it replaces: the timeout sends SIGTERM, then SIGKILL
 * 5 s later if the command is still there; the result waits for the command's stdout and
 * stderr to close (so a child that hands its stdio on must be given `"ignore"` or an fd); the
 * environment extends the daemon's own; stdin is an open pipe unless `input` or `"ignore"`.
 */
import { spawn, type StdioOptions } from "node:child_process";
import { PaddockError, type ErrorCode } from "./errors.js";

/** Result of a finished command. */
export interface RunResult {
  stdout: string;
  stderr: string;
  /** The exit code; -1 when the command could not be started or was ended by a signal. */
  exitCode: number;
}

/** Options for {@link run}. */
export interface RunOptions {
  /** Kill the command after this many milliseconds (default 30 000). */
  timeoutMs?: number;
  /** Bytes written to the command's stdin. */
  input?: string | Buffer;
  /** Do not throw on non-zero exit; return the result instead. */
  allowFailure?: boolean;
  /** Error code used when the command fails (default `ERR_EXEC_FAILED`). */
  errorCode?: ErrorCode;
  /** Extra environment variables; one whose value is `undefined` is left out of the child's (node's spawn skips it). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Child stdin instead of a pipe: `"ignore"` (/dev/null). Not combinable with `input`. */
  stdin?: "ignore";
  /**
   * Child stdout/stderr instead of a pipe: `"ignore"` or an open file descriptor (the child
   * inherits it; output sent there is not captured). Needed for commands whose children
   * outlive them, e.g. `runc create` hands its stdio to the sandbox: a pipe would never close.
   */
  stdout?: "ignore" | number;
  stderr?: "ignore" | number;
}

/** Default timeout of {@link run}, ms. */
const DEFAULT_TIMEOUT_MS = 30_000;
/** After the timeout's SIGTERM, SIGKILL follows this many ms later. */
const FORCE_KILL_AFTER_MS = 5_000;
/** Most bytes kept of one captured stream; past it the command is killed and fails. */
const MAX_CAPTURE_BYTES = 100_000_000;

/** Trim a stderr blob to its last 2 000 characters for error messages. */
export function trimStderr(stderr: string): string {
  const t = stderr.trim();
  return t.length > 2000 ? "…" + t.slice(-2000) : t;
}

/** How a spawned command ended, before {@link run} turns it into a result or an error. */
interface Finished {
  stdout: string;
  stderr: string;
  /** Null when the command did not exit by itself (not started, or killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Why the command has no exit code of its own: spawn error, capture overflow. */
  failure?: string;
}

/** Spawn and wait for exit and for the captured streams to close. Never rejects. */
function spawnAndWait(file: string, args: readonly string[], options: RunOptions): Promise<Finished> {
  return new Promise((resolve) => {
    const stdio: StdioOptions = [options.stdin ?? "pipe", options.stdout ?? "pipe", options.stderr ?? "pipe"];
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let failure: string | undefined;
    let forceKill: NodeJS.Timeout | undefined;
    let settled = false;
    const child = spawn(file, args, {
      stdio,
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      ...(options.env !== undefined ? { env: { ...process.env, ...options.env } } : {}),
    });
    const kill = (): void => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      forceKill = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }, FORCE_KILL_AFTER_MS);
      forceKill.unref();
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const capture = (into: Buffer[], name: string) => {
      let size = 0;
      return (chunk: Buffer): void => {
        size += chunk.length;
        if (size > MAX_CAPTURE_BYTES) {
          if (failure === undefined) failure = `${name} larger than ${MAX_CAPTURE_BYTES} bytes`;
          kill();
          return;
        }
        into.push(chunk);
      };
    };
    child.stdout?.on("data", capture(out, "stdout"));
    child.stderr?.on("data", capture(err, "stderr"));
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (forceKill !== undefined) clearTimeout(forceKill);
      resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8"), code, signal, timedOut, ...(failure !== undefined ? { failure } : {}) });
    };
    child.on("error", (e: NodeJS.ErrnoException) => {
      // Not started (ENOENT, EACCES): no exit or close follows for certain; settle here.
      if (child.pid === undefined) {
        failure = e.message;
        finish(null, null);
      }
    });
    child.on("close", finish);
    if (child.stdin) {
      // The command may exit without reading its input (EPIPE): its exit status says why.
      child.stdin.on("error", () => undefined);
      if (options.input !== undefined) child.stdin.end(options.input);
    }
  });
}

/**
 * Run `file` with `args` and wait for it.
 * @throws PaddockError `options.errorCode` (default `ERR_EXEC_FAILED`) on non-zero exit, a
 *   command that cannot be started (`spawn <file> ENOENT`) or is ended by a signal, and
 *   `ERR_EXEC_TIMEOUT` on timeout; both carry `details.command`, `exitCode`, `stderr`.
 */
export async function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const r = await spawnAndWait(file, args, options);
  const exitCode = r.code ?? -1;
  const command = [file, ...args].join(" ");
  if (r.timedOut) {
    throw new PaddockError("ERR_EXEC_TIMEOUT", `command timed out after ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms: ${command}`, {
      details: { command, stderr: trimStderr(r.stderr) },
    });
  }
  const failed = exitCode !== 0 || r.failure !== undefined;
  if (failed && !options.allowFailure) {
    const reason = r.failure ?? (r.signal !== null ? `killed by ${r.signal}` : trimStderr(r.stderr));
    throw new PaddockError(options.errorCode ?? "ERR_EXEC_FAILED", `${command} failed (exit ${exitCode}): ${reason}`, {
      details: { command, exitCode, stderr: trimStderr(r.stderr) },
    });
  }
  return { stdout: r.stdout, stderr: r.stderr, exitCode };
}

/** True when `file` can be run (found on PATH and executable). */
export async function commandExists(file: string): Promise<boolean> {
  const r = await spawnAndWait(file, ["--version"], { timeoutMs: 10_000 });
  // Any exit status means it ran; not starting (ENOENT, EACCES) or a signal means it cannot.
  return r.code !== null;
}
