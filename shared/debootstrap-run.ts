/**
 * Running debootstrap for an image build (shared/image-store.ts `buildImage`) and saying why it
 * failed. debootstrap writes its own messages (`I:`, `W:`, `E:`) to its stdout and the output of
 * everything it runs (wget, dpkg in the chroot) to `<target>/debootstrap/debootstrap.log`; its
 * stderr is "used in exceptional circumstances only" (/usr/sbin/debootstrap, the comment above
 * `exec 4>&1`; https://salsa.debian.org/installer-team/debootstrap). So a failure's reason is
 * in stdout and the log, and a message made of stderr alone is usually empty.
 */
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "./errors.js";
import { commandExists, run } from "./exec.js";

/** Most lines of debootstrap's stdout quoted in a failure. */
const STDOUT_LINES = 6;
/** Most lines of the debootstrap log quoted in a failure. */
const LOG_LINES = 12;
/** Most bytes read from the end of the debootstrap log. */
const LOG_TAIL_BYTES = 16_384;
/** Most characters of one quoted part (stderr, stdout, log). */
const PART_CHARS = 1_500;

/** Where debootstrap keeps its log in `target` until it succeeds (it then becomes /var/log/bootstrap.log). */
export function debootstrapLogPath(target: string): string {
  return path.join(target, "debootstrap", "debootstrap.log");
}

/** The last `n` non-blank lines of `text`, trimmed, joined with " | ", at most {@link PART_CHARS} characters (the end kept). */
function lastLines(text: string, n: number): string {
  const joined = text.split("\n").map((l) => l.trim()).filter((l) => l !== "").slice(-n).join(" | ");
  return joined.length > PART_CHARS ? "…" + joined.slice(-PART_CHARS) : joined;
}

/**
 * The last lines of debootstrap's log in `target`, or undefined when it cannot be read as a
 * plain file. `target` is a build directory of the image store, written only by debootstrap and
 * the package scripts it ran (no VM ever ran on it); still, a symlink at `debootstrap/` or at the
 * log is not followed, and at most {@link LOG_TAIL_BYTES} are read.
 */
export async function readDebootstrapLogTail(target: string): Promise<string | undefined> {
  const file = debootstrapLogPath(target);
  try {
    if (!(await fs.lstat(path.dirname(file))).isDirectory()) return undefined;
    const handle = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
    try {
      const st = await handle.stat();
      if (!st.isFile()) return undefined;
      const length = Math.min(st.size, LOG_TAIL_BYTES);
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, st.size - length);
      const tail = lastLines(buf.subarray(0, bytesRead).toString("utf8"), LOG_LINES);
      return tail === "" ? undefined : tail;
    } finally {
      await handle.close();
    }
  } catch {
    return undefined;
  }
}

/**
 * The reason of a failed debootstrap run, for its error message (pure): its stderr if it wrote
 * any; its `E:`/`W:` lines on stdout, else the last lines of stdout; then the last lines of its
 * log (`log.tail` of the file `log.path`, read before the build directory holding it is
 * removed). "no output" when there is none of these.
 */
export function debootstrapFailureReason(out: { stdout: string; stderr: string; log?: { path: string; tail: string } }): string {
  const parts: string[] = [];
  const stderr = lastLines(out.stderr, STDOUT_LINES);
  if (stderr !== "") parts.push(stderr);
  const said = out.stdout.split("\n").filter((l) => /^[EW]: /.test(l)).join("\n");
  const stdout = lastLines(said !== "" ? said : out.stdout, STDOUT_LINES);
  if (stdout !== "") parts.push(stdout);
  if (out.log !== undefined) parts.push(`the end of its log ${out.log.path} (removed with the build directory): ${out.log.tail}`);
  return parts.length > 0 ? parts.join("; ") : "no output";
}

/**
 * Run `debootstrap args…` building into `target` (the last-but-one argument).
 * @throws PaddockError `ERR_IMAGE_BUILD_FAILED` on a non-zero exit, with
 *   {@link debootstrapFailureReason} (`details`: command, exitCode, stderr, stdout, log: the
 *   quoted tails) or, when it could not be started, that debootstrap is not installed;
 *   `ERR_EXEC_TIMEOUT` after `timeoutMs`.
 */
export async function runDebootstrap(args: readonly string[], target: string, timeoutMs: number): Promise<void> {
  const r = await run("debootstrap", args, { timeoutMs, allowFailure: true, errorCode: "ERR_IMAGE_BUILD_FAILED" });
  if (r.exitCode === 0) return;
  const command = ["debootstrap", ...args].join(" ");
  if (r.exitCode === -1 && r.stdout === "" && r.stderr === "" && !(await commandExists("debootstrap"))) {
    throw new PaddockError("ERR_IMAGE_BUILD_FAILED", `${command} failed: debootstrap is not installed or not on PATH (apt-get install debootstrap)`, { details: { command, exitCode: -1 } });
  }
  const logTail = await readDebootstrapLogTail(target);
  const reason = debootstrapFailureReason({ stdout: r.stdout, stderr: r.stderr, ...(logTail !== undefined ? { log: { path: debootstrapLogPath(target), tail: logTail } } : {}) });
  const exit = r.exitCode === -1 ? "killed by a signal" : `exit ${r.exitCode}`;
  throw new PaddockError("ERR_IMAGE_BUILD_FAILED", `${command} failed (${exit}): ${reason}`, {
    details: { command, exitCode: r.exitCode, stderr: lastLines(r.stderr, STDOUT_LINES), stdout: lastLines(r.stdout, STDOUT_LINES), ...(logTail !== undefined ? { log: logTail } : {}) },
  });
}
