/**
 * Processes for the benchmark: timed one-shot commands (raw `child_process.spawn`, so a
 * baseline is not charged execa's overhead), long-running children stopped by pid, and memory
 * figures read from /proc (RSS from `status`, PSS from `smaps_rollup`).
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { promises as fs } from "node:fs";
import { nowMs } from "./stats.js";

/** Result of {@link spawnTimed}. */
export interface TimedRun {
  /** Wall time from spawn to exit, ms. */
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Spawn `argv` (no shell) and wait for it to exit. stdout/stderr are collected (first 64 KiB).
 * `input` is written to stdin when given, else stdin is /dev/null.
 * @throws Error when the command cannot be spawned or (unless `allowFailure`) exits non-zero.
 */
export function spawnTimed(argv: readonly string[], opts: { input?: string; allowFailure?: boolean; cwd?: string } = {}): Promise<TimedRun> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"], cwd: opts.cwd });
    let stdout = "";
    let stderr = "";
    child.stdout?.on("data", (c: Buffer) => { if (stdout.length < 65536) stdout += c.toString(); });
    child.stderr?.on("data", (c: Buffer) => { if (stderr.length < 65536) stderr += c.toString(); });
    child.once("error", reject);
    child.once("close", (code) => {
      const ms = nowMs() - t0;
      if (code !== 0 && !opts.allowFailure) reject(new Error(`${argv.join(" ")} exited ${code}: ${stderr.trim().slice(-2000)}`));
      else resolve({ ms, code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** A long-running child the bench started; {@link stopChild} ends it by pid. */
export interface BenchChild {
  child: ChildProcess;
  /** Its combined stdout+stderr (last 64 KiB). */
  output: () => string;
}

/** Start a long-running child, collecting its output. */
export function startChild(argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; stdio?: StdioOptions } = {}): BenchChild {
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: opts.stdio ?? ["ignore", "pipe", "pipe"], env: opts.env ?? process.env });
  let out = "";
  const add = (c: Buffer): void => {
    out = (out + c.toString()).slice(-65536);
  };
  child.stdout?.on("data", add);
  child.stderr?.on("data", add);
  child.once("error", (err) => add(Buffer.from(String(err))));
  return { child, output: () => out };
}

/** SIGTERM (or `signal`) the child by pid and wait for its exit; SIGKILL after `timeoutMs`. */
export async function stopChild(c: BenchChild, signal: NodeJS.Signals = "SIGTERM", timeoutMs = 60_000): Promise<void> {
  const child = c.child;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  process.kill(child.pid, signal);
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, "SIGKILL");
  }, timeoutMs);
  await done;
  clearTimeout(timer);
}

/** Resident set size of `pid`, bytes (VmRSS); NaN when the process is gone. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}

/** Proportional set size of `pid`, bytes (shared pages divided among sharers); NaN when gone. */
export async function pssBytes(pid: number): Promise<number> {
  const text = await fs.readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? NaN) * 1024;
}

/** Pids listed in a cgroup v1 hierarchy's `cgroup.procs` for `cgroupPath` (e.g. `/paddock/t1/sbox-1`). */
export async function cgroupPids(cgroupPath: string, hierarchy = "pids"): Promise<number[]> {
  const text = await fs.readFile(`/sys/fs/cgroup/${hierarchy}${cgroupPath}/cgroup.procs`, "utf8").catch(async () =>
    fs.readFile(`/sys/fs/cgroup${cgroupPath}/cgroup.procs`, "utf8").catch(() => ""));
  return text.split("\n").filter(Boolean).map(Number);
}

/**
 * Private anonymous resident memory of `pid` (RssAnon: heap, stacks — what this process alone
 * costs; shared file pages such as the node binary excluded), bytes; NaN when gone.
 */
export async function anonBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(/RssAnon:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}

/** Sum of RSS, RssAnon and PSS over `pids`, bytes (gone processes count 0). */
export async function memoryOf(pids: readonly number[]): Promise<{ rssBytes: number; anonBytes: number; pssBytes: number }> {
  let rss = 0;
  let anon = 0;
  let pss = 0;
  for (const pid of pids) {
    rss += (await rssBytes(pid)) || 0;
    anon += (await anonBytes(pid)) || 0;
    pss += (await pssBytes(pid)) || 0;
  }
  return { rssBytes: rss, anonBytes: anon, pssBytes: pss };
}

/** Bytes → MiB. */
export function mib(bytes: number): number {
  return bytes / 2 ** 20;
}

/** CPU time (user + system) `pid` has used so far, ms (clock ticks of 10 ms); NaN when gone. */
export async function cpuMs(pid: number): Promise<number> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After "(comm) ": state is field 3, utime 14, stime 15 → indexes 11 and 12 here.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks * 10;
}
