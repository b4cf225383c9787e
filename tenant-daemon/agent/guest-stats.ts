/**
 * Guest-side counters for `GET /nodes/stats` (docs/slicer-api.md#stats), served as `GET /v1/stats`.
 * Only what the host cannot see cheaply from outside is read here, from the guest's own /proc (its
 * PID and network namespaces): uptime of the guest's PID 1, open files of the guest's processes,
 * established TCP connections and interface byte counters of the guest's network namespace.
 * `loadAvg*` and `entropy` are kernel-wide (a container shares the host kernel).
 */
import { readFileSync, readdirSync } from "node:fs";

/** The `/v1/stats` answer. Counts are integers; uptime in seconds (float). */
export interface GuestStats {
  uptimeSeconds: number;
  loadAvg1: number;
  loadAvg5: number;
  loadAvg15: number;
  openFiles: number;
  openConnections: number;
  networkReadTotal: number;
  networkWriteTotal: number;
  entropy: number;
}

/** USER_HZ: the unit of /proc/<pid>/stat start times (100 on every Linux architecture Node runs on). */
const CLOCK_TICKS_PER_SECOND = 100;

function read(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** Seconds since PID 1 of this PID namespace started: host uptime − PID 1 start time. */
export function pid1UptimeSeconds(procUptime: string, pid1Stat: string): number {
  const up = parseFloat(procUptime.split(" ")[0] ?? "");
  // Field 22 (starttime) counted after the `(comm)` field, which may contain spaces.
  const rest = pid1Stat.slice(pid1Stat.lastIndexOf(")") + 2).split(" ");
  const start = Number(rest[19]);
  if (!Number.isFinite(up) || !Number.isFinite(start)) return 0;
  return Math.max(0, up - start / CLOCK_TICKS_PER_SECOND);
}

/** Sum of receive/transmit bytes of every non-loopback interface in `/proc/net/dev` text. */
export function parseNetDev(text: string): { rx: number; tx: number } {
  let rx = 0;
  let tx = 0;
  for (const line of text.split("\n").slice(2)) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    const name = line.slice(0, i).trim();
    if (name === "lo") continue;
    const f = line.slice(i + 1).trim().split(/\s+/).map(Number);
    rx += f[0] ?? 0;
    tx += f[8] ?? 0;
  }
  return { rx, tx };
}

/** Established TCP connections (state `01`) in `/proc/net/tcp{,6}` text. */
export function countEstablished(text: string): number {
  let n = 0;
  for (const line of text.split("\n").slice(1)) if (line.trim().split(/\s+/)[3] === "01") n++;
  return n;
}

/** Read the guest counters (synchronous, a few ms for a small VM). */
export function readGuestStats(): GuestStats {
  const load = read("/proc/loadavg").split(" ").map(Number);
  let openFiles = 0;
  let pids: string[] = [];
  try {
    pids = readdirSync("/proc").filter((n) => /^\d+$/.test(n));
  } catch {
    pids = [];
  }
  for (const pid of pids) {
    try {
      openFiles += readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      // exited meanwhile
    }
  }
  const net = parseNetDev(read("/proc/net/dev"));
  return {
    uptimeSeconds: pid1UptimeSeconds(read("/proc/uptime"), read("/proc/1/stat")),
    loadAvg1: load[0] ?? 0,
    loadAvg5: load[1] ?? 0,
    loadAvg15: load[2] ?? 0,
    openFiles,
    openConnections: countEstablished(read("/proc/net/tcp")) + countEstablished(read("/proc/net/tcp6")),
    networkReadTotal: net.rx,
    networkWriteTotal: net.tx,
    entropy: Math.max(0, Math.trunc(Number(read("/proc/sys/kernel/random/entropy_avail").trim()) || 0)),
  };
}
