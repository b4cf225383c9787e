/**
 * The one wrapper for external commands: argv arrays only, never a shell
 * string, always a timeout, and typed errors that keep the command, exit code and trimmed
 * stderr. Built on execa (https://github.com/sindresorhus/execa/blob/main/docs/errors.md).
 */
import { execa, type Options } from "execa";
import { PaddockError, type ErrorCode } from "./errors.js";

/** Result of a finished command. */
export interface RunResult {
  stdout: string;
  stderr: string;
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
  /** Extra environment variables. */
  env?: Record<string, string>;
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

/** Trim a stderr blob to its last 2 000 characters for error messages. */
export function trimStderr(stderr: string): string {
  const t = stderr.trim();
  return t.length > 2000 ? "…" + t.slice(-2000) : t;
}

/**
 * Run `file` with `args` and wait for it.
 * @throws PaddockError `options.errorCode` (default `ERR_EXEC_FAILED`) on non-zero exit, and
 *   `ERR_EXEC_TIMEOUT` on timeout; both carry `details.command`, `exitCode`, `stderr`.
 */
export async function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await execa(file, args, {
    timeout: options.timeoutMs ?? 30_000,
    input: options.input,
    reject: false,
    stripFinalNewline: false,
    env: options.env,
    cwd: options.cwd,
    encoding: "utf8",
    ...(options.stdin !== undefined ? { stdin: options.stdin } : {}),
    // execa passes a plain integer straight to child_process.spawn (no pipe) at runtime; its
    // typings only spell out the literals 1..9, hence the cast.
    ...(options.stdout !== undefined ? { stdout: options.stdout as Options["stdout"] } : {}),
    ...(options.stderr !== undefined ? { stderr: options.stderr as Options["stderr"] } : {}),
  });
  const stdout = String(result.stdout ?? "");
  const stderr = String(result.stderr ?? "");
  const exitCode = result.exitCode ?? -1;
  const command = [file, ...args].join(" ");
  if (result.timedOut) {
    throw new PaddockError("ERR_EXEC_TIMEOUT", `command timed out after ${options.timeoutMs ?? 30_000} ms: ${command}`, {
      details: { command, stderr: trimStderr(stderr) },
    });
  }
  if (exitCode !== 0 && !options.allowFailure) {
    const reason = result.failed && result.exitCode === undefined ? (result.originalMessage ?? result.shortMessage) : trimStderr(stderr);
    throw new PaddockError(options.errorCode ?? "ERR_EXEC_FAILED", `${command} failed (exit ${exitCode}): ${reason}`, {
      details: { command, exitCode, stderr: trimStderr(stderr) },
    });
  }
  return { stdout, stderr, exitCode };
}

/** True when `file` can be run (found on PATH and executable). */
export async function commandExists(file: string): Promise<boolean> {
  const r = await execa(file, ["--version"], { reject: false, timeout: 10_000 });
  return r.exitCode === 0 || (r.exitCode !== undefined && !(r.failed && r.code === "ENOENT"));
}
