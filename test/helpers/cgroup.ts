/**
 * Reading a cgroup's limits for tests, on cgroup v1 and v2 alike.
 *
 * The layout comes from tenant-daemon/runtime/tenant-cgroup.ts `detectCgroupLayout`: unified v2
 * when `<root>/cgroup.controllers` exists (a pure v2 host, Debian 12's default), else the v1
 * controller mounts of a hybrid or legacy host. Every value is read from its file: a missing
 * file rejects (ENOENT), so a check built on these readers cannot pass on a host where the file
 * is not where the test thinks. File formats:
 * - v2 (https://docs.kernel.org/admin-guide/cgroup-v2.html): `cpu.max` "$MAX $PERIOD" with
 *   $MAX "max" or µs; `memory.max` and `pids.max` bytes/count or "max"; `pids.current`.
 * - v1: `cpu.cfs_quota_us` (-1 = none) and `cpu.cfs_period_us`
 *   (https://docs.kernel.org/scheduler/sched-bwc.html); `memory.limit_in_bytes` (no limit is
 *   PAGE_COUNTER_MAX pages, 9223372036854771712 on 4 KiB pages); `pids.max` and `pids.current`
 *   (https://docs.kernel.org/admin-guide/cgroup-v1/pids.html).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { CGROUP_ROOT, detectCgroupLayout, type CgroupLayout } from "../../tenant-daemon/runtime/tenant-cgroup.js";

/** "max" where the kernel says there is no limit. */
export type Limit = number | "max";

/** A cgroup's CPU, memory and pids figures, normalised across v1 and v2. */
export interface CgroupLimits {
  version: 1 | 2;
  cpuQuotaUs: Limit;
  cpuPeriodUs: number;
  memoryBytes: Limit;
  pidsMax: Limit;
  pidsCurrent: number;
}

/** v1 memory.limit_in_bytes values at or above this mean "no limit" (2^63 rounded down to pages). */
const V1_MEMORY_UNLIMITED = 2 ** 62;

function integer(text: string, file: string): number {
  const t = text.trim();
  if (!/^-?\d+$/.test(t)) throw new Error(`${file}: not an integer: ${JSON.stringify(text)}`);
  return Number(t);
}

/** A v2 single-value limit file (`memory.max`, `pids.max`): "max" or an integer. */
export function parseV2Limit(text: string, file = "limit file"): Limit {
  return text.trim() === "max" ? "max" : integer(text, file);
}

/** v2 `cpu.max`: "$MAX $PERIOD", $MAX "max" or µs. */
export function parseV2CpuMax(text: string): { quotaUs: Limit; periodUs: number } {
  const [max, period, ...rest] = text.trim().split(/\s+/);
  if (max === undefined || period === undefined || rest.length > 0) throw new Error(`cpu.max: expected "$MAX $PERIOD", got ${JSON.stringify(text)}`);
  return { quotaUs: parseV2Limit(max, "cpu.max"), periodUs: integer(period, "cpu.max") };
}

/** v1 `cpu.cfs_quota_us`: -1 is no quota. */
export function parseV1CpuQuota(text: string): Limit {
  const n = integer(text, "cpu.cfs_quota_us");
  return n === -1 ? "max" : n;
}

/** v1 `memory.limit_in_bytes`: the page counter's maximum is no limit. */
export function parseV1MemoryLimit(text: string): Limit {
  const n = integer(text, "memory.limit_in_bytes");
  return n >= V1_MEMORY_UNLIMITED ? "max" : n;
}

const read = (file: string): Promise<string> => fs.readFile(file, "utf8");

/**
 * The limits of the cgroup at `cgroupPath` (relative to each hierarchy root, e.g.
 * `/paddock/<tenant>/<hostname>`), read from the host side.
 * @param root - the cgroup file systems' root (a temp dir in unit tests).
 * @throws when the layout has no cpu/memory/pids controllers, or a file is missing or malformed.
 */
export async function readCgroupLimits(cgroupPath: string, root: string = CGROUP_ROOT, layout?: CgroupLayout): Promise<CgroupLimits> {
  const l = layout ?? (await detectCgroupLayout(root));
  if (l.version === 2) {
    const dir = path.join(l.root, cgroupPath);
    const cpu = parseV2CpuMax(await read(path.join(dir, "cpu.max")));
    return {
      version: 2,
      cpuQuotaUs: cpu.quotaUs,
      cpuPeriodUs: cpu.periodUs,
      memoryBytes: parseV2Limit(await read(path.join(dir, "memory.max")), "memory.max"),
      pidsMax: parseV2Limit(await read(path.join(dir, "pids.max")), "pids.max"),
      pidsCurrent: integer(await read(path.join(dir, "pids.current")), "pids.current"),
    };
  }
  return {
    version: 1,
    cpuQuotaUs: parseV1CpuQuota(await read(path.join(l.cpu, cgroupPath, "cpu.cfs_quota_us"))),
    cpuPeriodUs: integer(await read(path.join(l.cpu, cgroupPath, "cpu.cfs_period_us")), "cpu.cfs_period_us"),
    memoryBytes: parseV1MemoryLimit(await read(path.join(l.memory, cgroupPath, "memory.limit_in_bytes"))),
    pidsMax: parseV2Limit(await read(path.join(l.pids, cgroupPath, "pids.max")), "pids.max"),
    pidsCurrent: integer(await read(path.join(l.pids, cgroupPath, "pids.current")), "pids.current"),
  };
}

/**
 * The same figures as seen from inside a sandbox with its own cgroup namespace, where the VM's
 * cgroup is the root: the files to `cat` in the guest, in the order of {@link parseGuestCgroupFiles}.
 */
export function guestCgroupFiles(version: 1 | 2): string[] {
  return version === 2
    ? ["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max"]
    : ["/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max"];
}

/** Parse the output of `cat` over {@link guestCgroupFiles} (one value per line). */
export function parseGuestCgroupFiles(version: 1 | 2, stdout: string): Omit<CgroupLimits, "pidsCurrent" | "version"> {
  const lines = stdout.trim().split("\n");
  if (version === 2) {
    const [cpu = "", mem = "", pids = ""] = lines;
    const c = parseV2CpuMax(cpu);
    return { cpuQuotaUs: c.quotaUs, cpuPeriodUs: c.periodUs, memoryBytes: parseV2Limit(mem, "memory.max"), pidsMax: parseV2Limit(pids, "pids.max") };
  }
  const [quota = "", period = "", mem = "", pids = ""] = lines;
  return { cpuQuotaUs: parseV1CpuQuota(quota), cpuPeriodUs: integer(period, "cpu.cfs_period_us"), memoryBytes: parseV1MemoryLimit(mem), pidsMax: parseV2Limit(pids, "pids.max") };
}
