/**
 * One tenant daemon OS process (an adapter over execa): spawn with execa in its own
 * process group, readiness handshake (`GET /healthz` on its socket) raced against exit and a
 * timeout, graceful-then-forced stop of the whole group, and adoption of a live daemon left
 * by a previous supervisor.
 *
 * The daemon's stdout and stderr never go through the supervisor: a pipe to the supervisor
 * would break when the supervisor dies and the daemon would then fail writing its logs. With
 * `logRotation` (and the helper built), the daemon is started behind `paddock-nsutil logcap`
 * (tenant-daemon/runtime/native/paddock-nsutil.c): a reader in its own session, independent of
 * both the supervisor and the daemon's process group, appends to `logs/daemon.log` and rotates
 * it at the configured size, exiting when the daemon has exited. Without, `logs/daemon.log` is
 * opened O_APPEND and handed over as a file descriptor (unbounded). A failed start reports the
 * daemon's own error, one line (supervisor/daemon-start-reason.ts), and the log lines written
 * since the spawn in `details.stderr`.
 */
import { existsSync, openSync, closeSync, promises as fs } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { sleep } from "../shared/time.js";
import { daemonHealthy } from "./daemon-client.js";
import { daemonStartCode, daemonStartReason } from "./daemon-start-reason.js";
import { isDaemonCmdline, readCmdline, readProcStat, readProcStatSync, runsAsUs } from "./proc-info.js";
import { findProjectRoot, pidAlive } from "../shared/proc.js";
import { DAEMON_NODE_FLAGS } from "../shared/daemon-node-flags.js";
import { readBuildVersion } from "../shared/build-info.js";

/** How to run one tenant's daemon. */
export interface DaemonSpec {
  tenantId: string;
  /** `<root>/dist/tenant-daemon/launch.js` (or main.js); run as `node DAEMON_NODE_FLAGS <entry> up <config>`. */
  entry: string;
  configPath: string;
  socketPath: string;
  /** `<state>/tenants/<id>/logs/daemon.log`. */
  logFile: string;
  /**
   * Extension of the supervisor's environment (PADDOCK_STATE_DIR, PADDOCK_RUN_DIR,
   * PADDOCK_IMAGE_DIR, and shared/daemon-env.ts `daemonProcessEnv`'s CA keys); a key whose value
   * is `undefined` is left out of the daemon's environment.
   */
  env: Record<string, string | undefined>;
  /** Rotate `logFile` at `rotateBytes`, keeping `keep` rotated files; undefined ⇒ no rotation. */
  logRotation?: { rotateBytes: number; keep: number };
}

/** The built `paddock-nsutil` (`<root>/dist/bin/paddock-nsutil`), or undefined when it was not built. */
export function logcapHelper(): string | undefined {
  try {
    const p = path.join(findProjectRoot(), "dist", "bin", "paddock-nsutil");
    return existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The build a daemon entry runs: `dist/build-info.json` of the project it lies in
 * (shared/build-info.ts; `<root>/dist/tenant-daemon/launch.js` ⇒ `<root>/dist/build-info.json`),
 * read once per spawn, just before it (the daemon reads its code right after; only a rebuild
 * racing a start could tell them apart).
 * @returns undefined when there is no project root or no readable build-info.json.
 */
export function entryBuildVersion(entry: string): string | undefined {
  try {
    return readBuildVersion(path.join(findProjectRoot(path.dirname(entry)), "dist"));
  } catch {
    return undefined;
  }
}

/** How a daemon ended. `code`/`signal` are unknown for adopted (non-child) daemons. */
export interface DaemonExit {
  code: number | undefined;
  signal: string | undefined;
  adopted: boolean;
}

/** A live daemon process, spawned by us or adopted. */
export interface DaemonHandle {
  pid: number;
  procStartTicks: number | undefined;
  adopted: boolean;
  /**
   * The build a spawned daemon runs (shared/build-info.ts `readBuildVersion` of the entry's
   * dist/, read just before the spawn); undefined for an adopted one (its spawner recorded it)
   * or when the build has no build-info.json.
   */
  version?: string;
  /** Resolves once when the process is gone. */
  exited: Promise<DaemonExit>;
  /** Stop watching (adopted daemons are polled). */
  unwatch(): void;
}

/** Describe an exit for logs and the registry (`exit 1`, `signal SIGKILL`, `gone`). */
export function describeExit(e: DaemonExit): string {
  if (e.signal) return `signal ${e.signal}`;
  if (e.code !== undefined) return `exit ${e.code}`;
  return "process gone";
}

/**
 * The last `maxLines` lines of `file` from byte `fromByte` on; with `fromByte` 0, a short file
 * is preceded by the tail of its rotated part `<file>.1` (see {@link DaemonSpec.logRotation}).
 */
export async function readLogTail(file: string, maxLines: number, fromByte = 0): Promise<string[]> {
  const lines = await readOneTail(file, maxLines, fromByte);
  if (fromByte > 0 || lines.length >= maxLines) return lines;
  return [...(await readOneTail(`${file}.1`, maxLines - lines.length, 0)), ...lines];
}

async function readOneTail(file: string, maxLines: number, fromByte: number): Promise<string[]> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(file, "r");
    const size = (await handle.stat()).size;
    // A file shorter than `fromByte` was rotated since: all of it is newer.
    const start = Math.max(fromByte > size ? 0 : fromByte, size - 256 * 1024);
    const buf = Buffer.alloc(Math.max(0, size - start));
    if (buf.length > 0) await handle.read(buf, 0, buf.length, start);
    const lines = buf.toString("utf8").split("\n").filter((l) => l.length > 0);
    return lines.slice(-maxLines);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  } finally {
    await handle?.close();
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    if (errnoCode(err) !== "ESRCH") throw err;
    try {
      process.kill(pid, signal);
    } catch {}
  }
}

/** An adopted daemon's pid under watch, and how to tell its watcher it is gone. */
interface WatchedPid {
  pid: number;
  startTicks: number | undefined;
  gone: () => void;
}

/**
 * Adopted pids polled together: per poll interval (ms), one timer for every pid watched at it.
 * A supervisor restarted over 200 daemons polls 400 times a second; one timer per daemon cost
 * ~55 µs a poll in timers and their re-arming (docs/performance.md, "Idle CPU").
 */
const pidPolls = new Map<number, { timer: NodeJS.Timeout; watched: Set<WatchedPid> }>();

/**
 * Whether a watched pid is gone: with a start time known, one read of /proc/<pid>/stat decides
 * (a zombie or a reused pid is gone); without one, kill(0) and the state letter (shared/proc.ts
 * pidAlive).
 */
function pidGone(w: WatchedPid): boolean {
  if (w.startTicks === undefined) return !pidAlive(w.pid);
  const st = readProcStatSync(w.pid);
  return st === undefined || st.startTicks !== w.startTicks || st.state === "Z" || st.state === "X";
}

/** Stop watching `w`; the interval's timer goes with its last pid. */
function unwatchPid(intervalMs: number, w: WatchedPid): void {
  const poll = pidPolls.get(intervalMs);
  if (poll === undefined || !poll.watched.delete(w)) return;
  if (poll.watched.size === 0) {
    clearInterval(poll.timer);
    pidPolls.delete(intervalMs);
  }
}

/** Poll an adopted pid (not our child, so no exit event) every `intervalMs` until it is gone or reused. */
function watchPid(pid: number, startTicks: number | undefined, intervalMs: number): { exited: Promise<DaemonExit>; unwatch: () => void } {
  let entry: WatchedPid | undefined;
  const exited = new Promise<DaemonExit>((resolve) => {
    const w: WatchedPid = { pid, startTicks, gone: () => resolve({ code: undefined, signal: undefined, adopted: true }) };
    if (pidGone(w)) {
      w.gone();
      return;
    }
    entry = w;
    let poll = pidPolls.get(intervalMs);
    if (poll === undefined) {
      const watched = new Set<WatchedPid>();
      const timer = setInterval(() => {
        for (const x of [...watched]) {
          if (!pidGone(x)) continue;
          unwatchPid(intervalMs, x);
          x.gone();
        }
      }, intervalMs);
      timer.unref();
      poll = { timer, watched };
      pidPolls.set(intervalMs, poll);
    }
    poll.watched.add(w);
  });
  return { exited, unwatch: () => { if (entry !== undefined) unwatchPid(intervalMs, entry); } };
}

/** Pause between readiness polls while a start usually completes, ms. */
const READY_POLL_FAST_MS = 10;
/** How long after the spawn readiness is polled every {@link READY_POLL_FAST_MS}, ms; then the pause doubles up to 250 ms. */
const READY_POLL_FAST_FOR_MS = 1000;

/**
 * Spawn the daemon and wait until it is ready.
 * Steps: 1. open the log (append, 0600); 2. spawn `node <entry> up <config>` detached (its
 * own process group, session leader) with stdio on the log; 3. poll `GET /healthz` (every
 * 10 ms for 1 s, then backing off to 250 ms) until 200, the process exits, or
 * `readyTimeoutMs` passes; 4. on failure kill the group and throw with the daemon's own
 * error on one line (its error-level NDJSON lines, else its last line:
 * daemon-start-reason.ts).
 * @throws PaddockError `ERR_DAEMON_START_FAILED`, a one-line message of at most ~600
 *   characters, with `details.stderr` (the last 20 log lines as written), `details.tenant` and,
 *   when the daemon's fatal log line had one, its code `details.daemon_code` (e.g.
 *   `ERR_IMAGE_NOT_FOUND`; the message ends with it in parentheses).
 */
export async function spawnDaemon(spec: DaemonSpec, readyTimeoutMs: number): Promise<DaemonHandle> {
  await fs.mkdir(path.dirname(spec.logFile), { recursive: true, mode: 0o700 });
  const logStart = await fs.stat(spec.logFile).then((s) => s.size, () => 0);
  // execa's option types only accept file descriptor numbers as literal types; the
  // value is the real descriptor of the opened log (execa passes integers to the child as is).
  const fd = openSync(spec.logFile, "a", 0o600) as 3;
  // The helper opens the log itself; until it execs node, its own errors go to `fd` (the log).
  const helper = spec.logRotation === undefined ? undefined : logcapHelper();
  const version = entryBuildVersion(spec.entry);
  const argv = [process.execPath, ...DAEMON_NODE_FLAGS, spec.entry, "up", spec.configPath];
  if (helper !== undefined && spec.logRotation !== undefined) argv.unshift(helper, "logcap", spec.logFile, String(spec.logRotation.rotateBytes), String(spec.logRotation.keep));
  const spawnChild = () => execa(argv[0] as string, argv.slice(1), {
    detached: true,
    cleanup: false,
    reject: false,
    stdin: "ignore",
    stdout: fd,
    stderr: fd,
    env: spec.env,
    extendEnv: true,
  });
  let child: ReturnType<typeof spawnChild>;
  try {
    child = spawnChild();
  } finally {
    closeSync(fd);
  }
  child.unref();
  const pid = child.pid;
  const exited: Promise<DaemonExit> = child.then(
    (r) => ({ code: r.exitCode, signal: r.signal, adopted: false }),
    () => ({ code: undefined, signal: undefined, adopted: false }),
  );
  if (pid === undefined) {
    await exited;
    throw new PaddockError("ERR_DAEMON_START_FAILED", `could not spawn the daemon of tenant ${spec.tenantId} (${process.execPath} ${spec.entry})`);
  }
  const st = await readProcStat(pid);
  const handle: DaemonHandle = { pid, procStartTicks: st?.startTicks, adopted: false, ...(version !== undefined ? { version } : {}), exited, unwatch: () => undefined };

  const deadline = Date.now() + readyTimeoutMs;
  let exitInfo: DaemonExit | undefined;
  void exited.then((e) => { exitInfo = e; });
  // Polled every READY_POLL_FAST_MS while a start usually completes, then backing off: a poll
  // before the socket exists is one refused connect, and a ready daemon is seen within 10 ms
  // (the earlier 25 ms doubling to 250 ms read a 450 ms start as ready at ~625 ms).
  const fastUntil = Date.now() + READY_POLL_FAST_FOR_MS;
  let delayMs = READY_POLL_FAST_MS;
  while (exitInfo === undefined && Date.now() < deadline) {
    if (await daemonHealthy(spec.socketPath, 1000)) return handle;
    await Promise.race([sleep(delayMs), exited]);
    if (Date.now() >= fastUntil) delayMs = Math.min(delayMs * 2, 250);
  }
  let reason: string;
  if (exitInfo !== undefined) reason = `exited (${describeExit(exitInfo)}) before it was ready`;
  else {
    reason = `did not answer GET /healthz on ${spec.socketPath} within ${readyTimeoutMs} ms`;
    signalGroup(pid, "SIGKILL");
    await exited;
  }
  const tail = await readLogTail(spec.logFile, 20, logStart);
  // One line: the daemon's own error (daemon-start-reason.ts), not its raw log; the log lines
  // stay in `details.stderr` and in `paddock tenant logs`.
  const said = daemonStartReason(tail);
  const daemonCode = daemonStartCode(tail);
  throw new PaddockError("ERR_DAEMON_START_FAILED", `daemon of tenant ${spec.tenantId} ${reason}${said === undefined ? "; it wrote nothing" : `: ${said}`}`, {
    details: { stderr: tail, tenant: spec.tenantId, ...(daemonCode !== undefined ? { daemon_code: daemonCode } : {}) },
  });
}

/**
 * Adopt a daemon a previous supervisor started, if it is provably the same program:
 * alive, cmdline `<node> <entry> up <config>` run as this process's uid (proc-info.ts
 * `runsAsUs`), and (when recorded) the same start time.
 * @returns a handle watched by polling, or undefined when it is not ours / not alive.
 */
export async function adoptDaemon(spec: DaemonSpec, pid: number, procStartTicks: number | undefined, pollMs = 500): Promise<DaemonHandle | undefined> {
  if (!pidAlive(pid)) return undefined;
  if (!isDaemonCmdline(await readCmdline(pid), spec.entry, spec.configPath) || !runsAsUs(pid)) return undefined;
  const st = await readProcStat(pid);
  if (procStartTicks !== undefined && st?.startTicks !== procStartTicks) return undefined;
  const w = watchPid(pid, st?.startTicks, pollMs);
  return { pid, procStartTicks: st?.startTicks, adopted: true, exited: w.exited, unwatch: w.unwatch };
}

/**
 * Stop a daemon: SIGTERM to its process group, wait up to `timeoutMs`, then SIGKILL and
 * wait for the exit (idempotent: a gone process is fine).
 * @returns how it ended and whether it had to be killed.
 */
export async function stopDaemon(handle: DaemonHandle, timeoutMs: number): Promise<{ exit: DaemonExit; forced: boolean }> {
  signalGroup(handle.pid, "SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), timeoutMs); });
  const first = await Promise.race([handle.exited, timeout]);
  clearTimeout(timer);
  if (first !== undefined) {
    handle.unwatch();
    return { exit: first, forced: false };
  }
  signalGroup(handle.pid, "SIGKILL");
  const exit = await handle.exited;
  handle.unwatch();
  return { exit, forced: true };
}

/** Send SIGKILL to a daemon's group (for leftovers and tests of crash handling). */
export function killDaemonGroup(pid: number): void {
  signalGroup(pid, "SIGKILL");
}
