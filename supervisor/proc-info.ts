/**
 * Linux process facts from /proc (proc(5)), used to adopt daemons after a supervisor
 * restart only when they are provably ours (never touch what is not): pid alive, same program and
 * config, and (when recorded) the same start time, which rules out pid reuse.
 */
import { closeSync, openSync, promises as fs, readFileSync, readSync } from "node:fs";
import { procStatFields } from "../shared/proc.js";

/**
 * The argv of a process, read like the scan reads it ({@link findDaemonPids}): at most
 * {@link CMDLINE_MAX_BYTES}, one synchronous read of a /proc file. The supervisor adopts a
 * recorded daemon pid by it (daemon-process.ts); a longer cmdline is no daemon's, and reading a
 * guest process's megabytes of argv whole (the pid may have been reused by one) would hold the
 * supervisor's event loop.
 * @returns undefined when the process is gone, its cmdline is empty (a zombie) or longer than
 *   {@link CMDLINE_MAX_BYTES}.
 */
export async function readCmdline(pid: number): Promise<string[] | undefined> {
  return readCmdlineSync(pid, undefined, Buffer.allocUnsafe(CMDLINE_MAX_BYTES + 1));
}

/**
 * Field 22 `starttime` of /proc/<pid>/stat (clock ticks after boot) and the state letter.
 * Parsed after the last `)` because `comm` may contain spaces and parentheses.
 */
export async function readProcStat(pid: number): Promise<{ startTicks: number; state: string } | undefined> {
  try {
    return parseProcStat(await fs.readFile(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/**
 * {@link readProcStat} read synchronously, for pollers: one small read of a file the kernel
 * makes on read (a few µs), where the promise API takes five thread-pool round trips (open,
 * fstat, two reads, close) and their wake-ups. The supervisor polls every adopted daemon this
 * way twice a second (daemon-process.ts `watchPid`).
 * @returns undefined when the process is gone or the text is not a stat line.
 */
export function readProcStatSync(pid: number): { startTicks: number; state: string } | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return undefined;
  }
}

/** The state letter and start time of a /proc/<pid>/stat line (pure); undefined when the start time is not a number. */
function parseProcStat(raw: string): { startTicks: number; state: string } | undefined {
  const rest = procStatFields(raw);
  // rest[0] is field 3 (state); field 22 is rest[19].
  const startTicks = Number(rest[19]);
  return Number.isFinite(startTicks) ? { startTicks, state: rest[0] ?? "?" } : undefined;
}

/**
 * USER_HZ, the unit of field 22 `starttime` of /proc/<pid>/stat (`sysconf(_SC_CLK_TCK)`, proc(5):
 * https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html). It is part of the kernel's ABI and
 * 100 on every architecture Node runs on (the guest agent assumes the same:
 * tenant-daemon/agent/guest-stats.ts).
 */
export const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The boot time from a /proc/stat text (pure): its `btime` line, seconds since the epoch
 * (proc(5): https://man7.org/linux/man-pages/man5/proc_stat.5.html).
 * @returns undefined when the text has no `btime` line.
 */
export function parseBootTimeSec(procStat: string): number | undefined {
  const m = /^btime\s+(\d+)$/m.exec(procStat);
  return m ? Number(m[1]) : undefined;
}

/**
 * The wall-clock time a process started (pure), ms since the epoch: the boot time plus its
 * `starttime` (clock ticks after boot) in ms. `btime` is whole seconds, so the result is
 * exact to about a second.
 * @param startTicks - field 22 of /proc/<pid>/stat ({@link readProcStat} `startTicks`).
 * @param bootTimeSec - `btime` of /proc/stat ({@link parseBootTimeSec}).
 */
export function procStartWallMs(startTicks: number, bootTimeSec: number, ticksPerSecond = CLOCK_TICKS_PER_SECOND): number {
  return bootTimeSec * 1000 + Math.round((startTicks * 1000) / ticksPerSecond);
}

/**
 * When a process with this start time (clock ticks after boot) started, ms since the epoch:
 * /proc/stat's `btime` read now (the kernel derives it from the current wall clock, so a
 * clock step since boot is followed) plus {@link procStartWallMs}. One small synchronous read,
 * done when a daemon is spawned or adopted (process-manager.ts), never per request.
 * @returns undefined when /proc/stat is unreadable or has no `btime`.
 */
export function readProcStartWallMs(startTicks: number): number | undefined {
  try {
    const btime = parseBootTimeSec(readFileSync("/proc/stat", "utf8"));
    return btime === undefined ? undefined : procStartWallMs(startTicks, btime);
  } catch {
    return undefined;
  }
}

/**
 * The entry files that run the same tenant daemon as `entry`: itself and, for the two entry
 * points of one build (`dist/tenant-daemon/launch.js`, the bundled default, and `main.js`, the
 * module graph that supervisors before the bundle started), the other one in the same directory,
 * so a supervisor upgraded across that change still adopts (and never doubles) a running daemon.
 */
export function daemonEntryVariants(entry: string): string[] {
  const m = /^(.*\/)(launch|main)\.js$/.exec(entry);
  if (!m) return [entry];
  return [entry, `${m[1]}${m[2] === "launch" ? "main" : "launch"}.js`];
}

/**
 * True when `argv` is `<node> [node flags] <entry> up <configPath>` (the daemon contract), where
 * `entry` may be any of {@link daemonEntryVariants}: everything between the program and the entry
 * is a flag (starts with `-`). So the daemon's log reader, whose argv holds the daemon's whole
 * command after its own words (`paddock-nsutil logcap FILE BYTES KEEP <node> … <entry> up
 * <config>`, supervisor/daemon-process.ts `spawnDaemon`; it lives until the daemon and what
 * inherited its output have closed the pipe), is no daemon.
 */
export function isDaemonCmdline(argv: readonly string[] | undefined, entry: string, configPath: string): boolean {
  if (!argv) return false;
  return daemonEntryVariants(entry).some((e) => {
    const i = argv.indexOf(e);
    return i >= 0 && argv[i + 1] === "up" && argv[i + 2] === configPath && argv.slice(1, i).every((a) => a.startsWith("-"));
  });
}

/**
 * The most of a /proc/<pid>/cmdline that {@link findDaemonPids} and {@link readCmdline} read (bytes). A daemon's argv is
 * `<node> [node flags] <entry> up <config>`: three paths of at most PATH_MAX (4096) and a few
 * flags. Any process may make its argv megabytes long (execve(2) allows a quarter of the stack
 * limit, and a VM's processes are host processes), so a longer cmdline is no daemon and is not
 * read on: the scan runs on the supervisor's event loop, gateway included.
 */
export const CMDLINE_MAX_BYTES = 32 * 1024;

/**
 * The argv of a process read synchronously (see {@link findDaemonPids}), when its cmdline holds
 * `needle` (any cmdline without one): at most {@link CMDLINE_MAX_BYTES} are read, and only a
 * cmdline that fits (and holds the needle) is split. The one reader of both
 * {@link readCmdline} and {@link findDaemonPids}.
 * @param buf - scratch space of {@link CMDLINE_MAX_BYTES} + 1 bytes, reusable across calls.
 * @returns undefined when the process is gone, its cmdline is empty or longer than the bound,
 *   or does not hold `needle`.
 */
function readCmdlineSync(pid: number, needle: Buffer | undefined, buf: Buffer): string[] | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(`/proc/${pid}/cmdline`, "r");
    let len = 0;
    for (let n = -1; n !== 0 && len < buf.length; len += n) n = readSync(fd, buf, len, buf.length - len, null);
    if (len === 0 || len > CMDLINE_MAX_BYTES) return undefined;
    const raw = buf.subarray(0, len);
    if (needle !== undefined && raw.indexOf(needle) < 0) return undefined;
    return raw.toString("utf8").replace(/\0$/, "").split("\0");
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * True when process `pid` runs as this process's real uid (the `Uid:` line of
 * /proc/<pid>/status, proc(5)): a daemon is spawned by the supervisor as itself
 * (daemon-process.ts `spawnDaemon`). A runc VM's processes are host processes too, with argv
 * their guest root chooses (a script at the daemon's entry path run with `up <config>` has the
 * daemon's very shape), but they run as the tenant's mapped uids (oci-spec.ts `uidMappings`:
 * host uid `uidStart` ≥ 65536 and up), never as the supervisor's. Read synchronously like the
 * cmdline (a small file the kernel makes on read), and only for a cmdline of the daemon's shape.
 * @returns false when the process is gone or its status has no `Uid:` line.
 */
export function runsAsUs(pid: number): boolean {
  try {
    const line = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return line !== null && Number(line[1]) === process.getuid?.();
  } catch {
    return false;
  }
}

/** Processes whose cmdline {@link findDaemonPids} reads between two turns of the event loop. */
const SCAN_SLICE = 256;

/**
 * Pids whose cmdline runs `entry` with `configPath` ({@link isDaemonCmdline}: daemons, not their
 * log readers) as this process's uid ({@link runsAsUs}: not a VM's process forging the shape),
 * for leftovers no registry entry owns (the caller SIGKILLs each and waits for its exit).
 * Every process on the host is read, so this grows with the host's processes (every tenant's
 * daemon and VMs): each cmdline is read synchronously, {@link SCAN_SLICE} at a time with a turn
 * of the event loop between slices. A read of a small /proc file costs ~10 µs that way against
 * ~200 µs of the supervisor's CPU through the thread pool (fs.readFile's open/fstat/read/close
 * round trips): at 2,000 processes ~25 ms instead of ~0.4 s per call. A cmdline is read only up
 * to {@link CMDLINE_MAX_BYTES} and split only when it holds `\0up\0<configPath>`, so a process
 * with a huge argv (a VM's, say) costs one bounded read, not a block of the event loop.
 */
export async function findDaemonPids(entry: string, configPath: string): Promise<number[]> {
  const out: number[] = [];
  const needle = Buffer.from(`\0up\0${configPath}`);
  const buf = Buffer.allocUnsafe(CMDLINE_MAX_BYTES + 1);
  const pids = (await fs.readdir("/proc")).filter((n) => /^\d+$/.test(n)).map(Number).filter((p) => p !== process.pid);
  for (let i = 0; i < pids.length; i += SCAN_SLICE) {
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    for (const pid of pids.slice(i, i + SCAN_SLICE)) if (isDaemonCmdline(readCmdlineSync(pid, needle, buf), entry, configPath) && runsAsUs(pid)) out.push(pid);
  }
  return out;
}
