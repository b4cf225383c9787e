/**
 * Parsing of the exec query parameters shared by foreground and background exec
 * (docs/slicer-api.md#exec and docs/slicer-api.md#background-exec) and the spawn plumbing both
 * use.
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { PaddockError } from "../../shared/errors.js";
import { badRequest } from "./http-util.js";
import { resolveCwd, type Identity, type UserDirectory } from "./users.js";

/** A validated exec request. */
export interface ExecSpec {
  /** `cmd` as given. */
  command: string;
  args: string[];
  /** What is actually exec'd: argv[0] and the rest. */
  file: string;
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  identity: Identity;
  stdio: "text" | "base64";
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Parse `cmd`, `args`, `env`, `uid`, `gid`, `cwd`, `shell`, `stdio`. `shellFlag` is `-c` for
 * foreground and `-lc` for background exec (Slicer's background exec runs a login shell).
 * @throws PaddockError 400 on invalid input (missing cmd, bad env, bad stdio, missing cwd).
 */
export function parseExecSpec(q: URLSearchParams, users: UserDirectory, shellFlag: "-c" | "-lc"): ExecSpec {
  const command = q.get("cmd") ?? "";
  if (command === "") throw badRequest("cmd is required", "ERR_QUERY_INVALID");
  const args = q.getAll("args");
  const stdioRaw = q.get("stdio") ?? "";
  if (stdioRaw !== "" && stdioRaw !== "text" && stdioRaw !== "base64") {
    throw badRequest(`invalid stdio ${JSON.stringify(stdioRaw)}: expected text or base64`, "ERR_QUERY_INVALID");
  }
  for (const s of [command, ...args]) if (s.includes("\0")) throw badRequest("cmd/args contain a NUL byte", "ERR_QUERY_INVALID");
  const identity = users.resolve(q);
  const account = users.byUid(identity.uid);
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: identity.home,
    USER: identity.name,
    LOGNAME: identity.name,
    SHELL: account?.shell ?? "/bin/sh",
    LANG: "C.UTF-8",
    ...users.sessionEnv,
  };
  for (const kv of q.getAll("env")) {
    const i = kv.indexOf("=");
    if (i <= 0 || kv.includes("\0")) throw badRequest(`invalid env ${JSON.stringify(kv)}: expected KEY=VALUE`, "ERR_QUERY_INVALID");
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const cwdGiven = q.get("cwd");
  let cwd = resolveCwd(cwdGiven, identity.home);
  if (!isDirectory(cwd)) {
    if (cwdGiven !== null && cwdGiven !== "") throw badRequest(`cwd does not exist or is not a directory: ${cwd}`, "ERR_PATH_INVALID");
    cwd = "/"; // the account's home is missing: fall back like login(1) does
  }
  const shell = q.get("shell") ?? "";
  const file = shell !== "" ? shell : command;
  const argv = shell !== "" ? [shellFlag, [command, ...args].join(" ")] : args;
  return { command, args, file, argv, env, cwd, identity, stdio: stdioRaw === "base64" ? "base64" : "text" };
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Spawn the process in its own session/process group (so a kill reaches its children)
 * as the requested identity.
 */
export function spawnExec(spec: ExecSpec, stdio: StdioOptions): ChildProcess {
  const sameUser = process.getuid?.() === spec.identity.uid && process.getgid?.() === spec.identity.gid;
  return spawn(spec.file, spec.argv, {
    cwd: spec.cwd,
    env: spec.env,
    stdio,
    detached: true,
    ...(sameUser ? {} : { uid: spec.identity.uid, gid: spec.identity.gid }),
  });
}

/** Exit code for a start failure: 127 not found, 126 not executable (POSIX shell convention). */
export function startFailureExitCode(err: unknown): number {
  const code = typeof err === "object" && err !== null && "code" in err ? (err as { code: unknown }).code : undefined;
  return code === "ENOENT" ? 127 : code === "EACCES" ? 126 : 1;
}

/** Message for a start failure, in the style of Go's exec errors. */
export function startFailureMessage(spec: ExecSpec, err: unknown): string {
  const code = typeof err === "object" && err !== null && "code" in err ? (err as { code: unknown }).code : undefined;
  if (code === "ENOENT") return `exec: "${spec.file}": executable file not found in $PATH`;
  if (code === "EACCES") return `exec: "${spec.file}": permission denied`;
  return `exec: "${spec.file}": ${err instanceof Error ? err.message : String(err)}`;
}

/** How a process ended. */
export interface ExitStatus {
  exitCode: number;
  /** Signal name without `SIG` (`TERM`), or "" */
  signal: string;
}

/** Convert Node's (code, signal) into {@link ExitStatus}; signals map to 128+n like shells. */
export function toExitStatus(code: number | null, signal: NodeJS.Signals | null): ExitStatus {
  if (signal) {
    const n = (osConstants.signals as Record<string, number>)[signal] ?? 0;
    return { exitCode: 128 + n, signal: signal.replace(/^SIG/, "") };
  }
  return { exitCode: code ?? 0, signal: "" };
}

/**
 * Output read from an exited command's pipes that can still be its own, bytes: what its two
 * pipes hold at most (Linux `fs.pipe-max-size`, 1 MiB by default, each). More is a
 * grandchild's.
 */
const PIPES_AFTER_EXIT_BYTES = 2 * 1024 * 1024;

/**
 * Call `done` once the child has exited and its pipes have drained. A grandchild that keeps
 * the pipes open (e.g. `daemon &`, even one that keeps writing) must not hold the exec
 * forever, so after `exit` the pipes get `drainMs` to close before they are destroyed. The time
 * restarts only while a reader paused a pipe (backpressure toward a slow client) during it, and
 * at most until {@link PIPES_AFTER_EXIT_BYTES} were read after the exit: what the command left
 * in an unpaused pipe is read at once, so bytes that keep coming without backpressure are a
 * grandchild's, however slowly they come.
 */
export function onProcessDone(child: ChildProcess, done: (status: ExitStatus) => void, drainMs = 250): void {
  let status: ExitStatus | undefined;
  let finished = false;
  const finish = (): void => {
    if (finished || !status) return;
    finished = true;
    done(status);
  };
  child.once("exit", (code, signal) => {
    status = toExitStatus(code, signal);
    let t: NodeJS.Timeout;
    const pipes = [child.stdout, child.stderr].filter((p): p is NonNullable<typeof p> => p !== null);
    const read = (): number => pipes.reduce((n, p) => n + ((p as { bytesRead?: number }).bytesRead ?? 0), 0);
    const atExit = read();
    // Whether a reader paused a pipe since the last look (it may have resumed by then).
    let pausedSinceLook = pipes.some((p) => p.isPaused());
    const onPause = (): void => {
      pausedSinceLook = true;
    };
    for (const p of pipes) p.on("pause", onPause);
    const arm = (): void => {
      t = setTimeout(() => {
        // A pipe its reader paused holds output that will be read once the client catches
        // up, as long as that is within what the command's pipes can hold: look again later.
        // Anything else still open is a grandchild holding the pipe.
        const backpressure = pausedSinceLook || pipes.some((p) => p.isPaused());
        pausedSinceLook = false;
        if (backpressure && read() - atExit <= PIPES_AFTER_EXIT_BYTES) {
          arm();
          return;
        }
        for (const p of pipes) p.off("pause", onPause);
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish();
      }, drainMs);
    };
    arm();
    child.once("close", () => {
      clearTimeout(t);
      for (const p of pipes) p.off("pause", onPause);
      finish();
    });
  });
}

/** Send `signal` to the whole process group of `pid`; ESRCH (already gone) is ignored. */
export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    const code = typeof err === "object" && err !== null && "code" in err ? (err as { code: unknown }).code : undefined;
    if (code !== "ESRCH") throw new PaddockError("ERR_EXEC_FAILED", `kill ${signal} ${pid} failed`, { cause: err });
  }
}
