/**
 * NodeStat snapshots for `GET /nodes/stats` and `GET /node/{hostname}/stats` (the Slicer REST
 * API's NodeStat objects).
 *
 * Sources (no in-guest `slicer-vmmeter` exists for OCI sandboxes, so the daemon assembles it):
 * - memory and CPU time: the VM's cgroup (`/paddock/<tenant>/<hostname>`; v1 `memory`,
 *   `cpuacct` hierarchies, or the v2 unified one). `memoryUsed` = usage − inactive file cache
 *   (the figure `docker stats` shows); `totalMemory` = the cgroup limit (the VM's `ram_bytes`
 *   when unlimited);
 * - disk space: statfs of the VM's disk mount (storage `usage`); disk I/O: the counters of the
 *   VM's loop device (`/sys/block/loopN/stat`, sectors × 512, and its in-flight requests);
 * - uptime, open files, connections, network bytes, load, entropy: the guest agent's
 *   `/v1/stats` (its own /proc: PID and network namespace); `loadAvg*` and `entropy` are
 *   kernel-wide figures because a container shares the host kernel.
 * A stopped VM gets `snapshot: null` and an `error`; a paused VM (its agent is frozen) gets
 * the host-side figures and an `error` naming the missing guest ones.
 */
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import { promises as fs } from "node:fs";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { rfc3339 } from "../../shared/time.js";
import type { GuestStats } from "../agent/guest-stats.js";
import { unameArch, type VmService } from "../vm/vm-service.js";

/** The `snapshot` object (camelCase keys, as the Slicer REST API names them). */
export interface NodeSnapshot {
  hostname: string;
  arch: string;
  timestamp: string;
  /** Go duration string, e.g. `6m53s`. */
  uptime: string;
  totalCpus: number;
  totalMemory: number;
  memoryUsed: number;
  memoryAvailable: number;
  memoryUsedPercent: number;
  loadAvg1: number;
  loadAvg5: number;
  loadAvg15: number;
  diskReadTotal: number;
  diskWriteTotal: number;
  networkReadTotal: number;
  networkWriteTotal: number;
  diskIOInflight: number;
  openConnections: number;
  openFiles: number;
  entropy: number;
  diskSpaceTotal: number;
  diskSpaceUsed: number;
  diskSpaceFree: number;
  diskSpaceUsedPercent: number;
  /** Extra (clients ignore unknown fields): CPU time consumed by the VM's cgroup, seconds. */
  cpuUsageSeconds: number;
}

/** One NodeStat; `status` is an extra field. */
export interface NodeStat {
  hostname: string;
  ip: string;
  created_at: string;
  status: string;
  snapshot: NodeSnapshot | null;
  error: string;
}

/** What the collector reads from. */
export interface VmStatsDeps {
  vms: VmService;
  /** Used/total bytes of the VM's disk filesystem; undefined when not mounted. */
  diskUsage(hostname: string): Promise<{ usedBytes: number; totalBytes: number } | undefined>;
  /** Mount point of the VM's disk (its loop device's I/O counters are found from it). */
  diskMountDir(hostname: string): string;
  /** cgroup path of the VM relative to each hierarchy root, e.g. `/paddock/<tenant>/<hostname>`. */
  cgroupPath(hostname: string): string;
  /** The guest agent's `/v1/stats`. @throws when unreachable within `timeoutMs`. */
  agentStats(endpoint: AgentEndpoint, timeoutMs: number): Promise<GuestStats>;
  /** mountinfo text (default: /proc/self/mountinfo), for tests. */
  readMountinfo?: () => Promise<string>;
}

/** A line of mountinfo reduced to what is needed here. */
export interface MountEntry {
  mountPoint: string;
  fsType: string;
  source: string;
  superOptions: string[];
}

/** Parse `/proc/self/mountinfo` (octal escapes in paths decoded). */
export function parseMountinfo(text: string): MountEntry[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const right = line.slice(sep + 3).split(" ");
    out.push({ mountPoint: unescape(left[4] ?? ""), fsType: right[0] ?? "", source: unescape(right[1] ?? ""), superOptions: (right[2] ?? "").split(",") });
  }
  return out;
}

/** Go `Duration.String()` of whole seconds: `0s`, `45s`, `6m53s`, `2h0m5s`. */
export function goDurationString(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h}h${m}m${r}s`;
  if (m > 0) return `${m}m${r}s`;
  return `${r}s`;
}

/** `key value` lines (cgroup memory.stat, cpu.stat) into a map. */
export function parseKeyValues(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

/** `/sys/block/<dev>/stat` ⇒ bytes read, bytes written, requests in flight. */
export function parseBlockStat(text: string): { readBytes: number; writeBytes: number; inflight: number } {
  const f = text.trim().split(/\s+/).map(Number);
  return { readBytes: (f[2] ?? 0) * 512, writeBytes: (f[6] ?? 0) * 512, inflight: f[8] ?? 0 };
}

const round2 = (x: number): number => Math.round(x * 100) / 100;
const nonNegInt = (x: number): number => (Number.isFinite(x) && x > 0 ? Math.trunc(x) : 0);

async function readText(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, "utf8");
  } catch {
    return undefined;
  }
}

/** Memory and CPU of a cgroup; undefined fields when the hierarchy or file is missing. */
async function cgroupFigures(mounts: MountEntry[], cgroupPath: string): Promise<{ usage?: number; limit?: number; inactiveFile: number; cpuNs?: number }> {
  const v1 = (controller: string): string | undefined => mounts.find((m) => m.fsType === "cgroup" && m.superOptions.includes(controller))?.mountPoint;
  const v2 = mounts.find((m) => m.fsType === "cgroup2")?.mountPoint;
  const memV1 = v1("memory");
  const cpuV1 = v1("cpuacct");
  const num = (t: string | undefined): number | undefined => (t !== undefined && /^\d+$/.test(t.trim()) ? Number(t.trim()) : undefined);
  const out: { usage?: number; limit?: number; inactiveFile: number; cpuNs?: number } = { inactiveFile: 0 };
  if (memV1) {
    const dir = path.join(memV1, cgroupPath);
    out.usage = num(await readText(path.join(dir, "memory.usage_in_bytes")));
    out.limit = num(await readText(path.join(dir, "memory.limit_in_bytes")));
    out.inactiveFile = parseKeyValues((await readText(path.join(dir, "memory.stat"))) ?? "").get("total_inactive_file") ?? 0;
  } else if (v2) {
    const dir = path.join(v2, cgroupPath);
    out.usage = num(await readText(path.join(dir, "memory.current")));
    out.limit = num(await readText(path.join(dir, "memory.max")));
    out.inactiveFile = parseKeyValues((await readText(path.join(dir, "memory.stat"))) ?? "").get("inactive_file") ?? 0;
  }
  if (cpuV1) out.cpuNs = num(await readText(path.join(cpuV1, cgroupPath, "cpuacct.usage")));
  else if (v2) {
    const usec = parseKeyValues((await readText(path.join(v2, cgroupPath, "cpu.stat"))) ?? "").get("usage_usec");
    out.cpuNs = usec === undefined ? undefined : usec * 1000;
  }
  return out;
}

/** Builds NodeStat objects. */
export class VmStatsCollector {
  constructor(private readonly deps: VmStatsDeps) {}

  /** NodeStat of every VM, in list order. */
  async all(): Promise<NodeStat[]> {
    const hostnames = this.deps.vms.list({ kind: "none" }).map((n) => n.hostname);
    const mounts = await this.mounts();
    const stats = await Promise.all(
      hostnames.map((h) =>
        this.one(h, mounts).catch((err: unknown) => {
          if (isPaddockError(err, "ERR_VM_NOT_FOUND")) return undefined; // deleted meanwhile
          throw err;
        }),
      ),
    );
    return stats.filter((s): s is NodeStat => s !== undefined);
  }

  /** NodeStat of one VM. @throws PaddockError ERR_VM_NOT_FOUND */
  async forVm(hostname: string): Promise<NodeStat> {
    this.deps.vms.get(hostname);
    return this.one(hostname, await this.mounts());
  }

  private async mounts(): Promise<MountEntry[]> {
    return parseMountinfo(await (this.deps.readMountinfo?.() ?? fs.readFile("/proc/self/mountinfo", "utf8")));
  }

  private async one(hostname: string, mounts: MountEntry[]): Promise<NodeStat> {
    const node = this.deps.vms.node(hostname);
    const base = { hostname, ip: node.ip, created_at: node.created_at, status: node.status };
    if (node.status === "Stopped" || node.status === "Suspended") return { ...base, snapshot: null, error: `VM ${hostname} is not running (status ${node.status})` };
    const record = this.deps.vms.get(hostname);
    const problems: string[] = [];

    const cg = await cgroupFigures(mounts, this.deps.cgroupPath(hostname));
    if (cg.usage === undefined) problems.push("cgroup memory figures unavailable");
    const limit = cg.limit !== undefined && cg.limit > 0 && cg.limit < 2 ** 60 ? cg.limit : record.ramBytes;
    const used = Math.min(limit, Math.max(0, (cg.usage ?? 0) - cg.inactiveFile));

    const disk = await this.deps.diskUsage(hostname).catch(() => undefined);
    if (!disk) problems.push("disk not mounted");
    const dev = mounts.find((m) => m.mountPoint === this.deps.diskMountDir(hostname))?.source ?? "";
    const blk = /^\/dev\/(loop\d+)$/.exec(dev) ? parseBlockStat((await readText(`/sys/block/${path.basename(dev)}/stat`)) ?? "") : { readBytes: 0, writeBytes: 0, inflight: 0 };

    let guest: GuestStats | undefined;
    if (node.status === "Paused") problems.push("VM paused: guest counters (uptime, load, files, connections, network) unavailable");
    else {
      try {
        guest = await this.deps.agentStats(this.deps.vms.resolveAgent(hostname), 3000);
      } catch (err) {
        problems.push(`guest agent: ${err instanceof Error ? err.message : String(err)}`);
      }
    }

    const diskTotal = nonNegInt(disk?.totalBytes ?? 0);
    const diskUsed = nonNegInt(disk?.usedBytes ?? 0);
    const snapshot: NodeSnapshot = {
      hostname,
      arch: unameArch(),
      timestamp: rfc3339(),
      uptime: goDurationString(guest?.uptimeSeconds ?? 0),
      totalCpus: nonNegInt(record.cpus),
      totalMemory: nonNegInt(limit),
      memoryUsed: nonNegInt(used),
      memoryAvailable: nonNegInt(limit - used),
      memoryUsedPercent: limit > 0 ? round2((used / limit) * 100) : 0,
      loadAvg1: guest?.loadAvg1 ?? 0,
      loadAvg5: guest?.loadAvg5 ?? 0,
      loadAvg15: guest?.loadAvg15 ?? 0,
      diskReadTotal: blk.readBytes,
      diskWriteTotal: blk.writeBytes,
      networkReadTotal: guest?.networkReadTotal ?? 0,
      networkWriteTotal: guest?.networkWriteTotal ?? 0,
      diskIOInflight: nonNegInt(blk.inflight),
      openConnections: nonNegInt(guest?.openConnections ?? 0),
      openFiles: nonNegInt(guest?.openFiles ?? 0),
      entropy: nonNegInt(guest?.entropy ?? 0),
      diskSpaceTotal: diskTotal,
      diskSpaceUsed: diskUsed,
      diskSpaceFree: nonNegInt(diskTotal - diskUsed),
      diskSpaceUsedPercent: diskTotal > 0 ? round2((diskUsed / diskTotal) * 100) : 0,
      cpuUsageSeconds: cg.cpuNs !== undefined ? round2(cg.cpuNs / 1e9) : 0,
    };
    return { ...base, snapshot, error: problems.join("; ") };
  }
}
