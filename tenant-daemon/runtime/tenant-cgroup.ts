/**
 * The tenant's parent cgroup `/paddock/<tenant>`: its kernel-enforced budget of pids, memory
 * and CPU. Every VM's cgroup (`/paddock/<tenant>/<hostname>`, created by the OCI runtime from
 * renderOciSpec's cgroupsPath) lies below it, and cgroup limits are hierarchical, so the sum
 * of a tenant's VMs can never exceed the parent's limit whatever each VM does.
 *
 * Pure renderers say which directories to create and what to write into which file, for the
 * cgroup v1 hierarchies of a hybrid host and for the unified v2 hierarchy; {@link applyTenantCgroup}
 * performs the steps. Files and semantics:
 * - v1 (https://docs.kernel.org/admin-guide/cgroup-v1/): `pids.max`
 *   (https://docs.kernel.org/admin-guide/cgroup-v1/pids.html), `memory.limit_in_bytes` and
 *   `memory.memsw.limit_in_bytes` where swap is accounted
 *   (https://docs.kernel.org/admin-guide/cgroup-v1/memory.html; memsw must stay ≥ the memory
 *   limit, so it is opened to -1 first; `memory.use_hierarchy` is always 1 on modern kernels, so a
 *   parent limit covers its children), `cpu.cfs_period_us` / `cpu.cfs_quota_us`
 *   (https://docs.kernel.org/scheduler/sched-bwc.html: a child's quota may not exceed its
 *   parent's, hence the parent's quota is at least the largest VM's).
 * - v2 (https://docs.kernel.org/admin-guide/cgroup-v2.html): controllers enabled top-down through
 *   `cgroup.subtree_control`, then `pids.max`, `memory.max`, `memory.swap.max` (0: no swap beyond
 *   memory, like v1's memsw = memory), `cpu.max` ("$QUOTA $PERIOD").
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { MIN_PIDS_BUDGET, tenantPidsRoom } from "../../shared/host-pids.js";
import type { TenantLimits } from "../../shared/tenant-config.js";
import { DEFAULT_VM_PIDS_LIMIT } from "../../shared/tenant-config-paddock.js";
import { CPU_PERIOD_US } from "./oci-spec.js";

/** Root of the cgroup file systems on a standard host (v2 mount, or the tmpfs holding v1 mounts). */
export const CGROUP_ROOT = "/sys/fs/cgroup";

/** Smallest memory budget written (a 0 limit would OOM the runtime's own init). */
export const MIN_MEMORY_BUDGET_BYTES = 16 * 2 ** 20;

/** A tenant's budget, as written into its parent cgroup. */
export interface TenantBudget {
  /** pids.max: processes and threads of all the tenant's VMs together. */
  pidsMax: number;
  /** Memory (and memory+swap) limit in bytes; undefined ⇒ unlimited. */
  memoryBytes: number | undefined;
  /** CFS quota per period, µs; undefined ⇒ unlimited. */
  cpuQuotaUs: number | undefined;
  /** CFS period, µs. */
  cpuPeriodUs: number;
}

/** What {@link computeTenantBudget} derives from the tenant's config and the host. */
export interface TenantBudgetPlan {
  budget: TenantBudget;
  /** pids.max of each VM: the configured per-VM limit, never above the tenant's budget. */
  vmPidsLimit: number;
  /** Clamps that were applied, in words (logged as warnings). */
  notes: string[];
}

/**
 * Derive the tenant's budget (pure).
 * - pids: `limits.maxPids`, clamped to `pidMax − reservePids` (standalone daemons cannot see
 *   other tenants; the supervisor checks the sum, shared/host-pids.ts); absent ⇒ that room.
 * - memory: `limits.maxRamBytes` (at least {@link MIN_MEMORY_BUDGET_BYTES}); absent ⇒ unlimited.
 * - cpu: `limits.maxVcpu` × period, raised to the largest host group's vCPUs (a child's quota
 *   may not exceed its parent's); absent ⇒ unlimited.
 * - host tasks: with `hostTasks` (runtimes whose sandboxes count their own host threads in the
 *   cgroup, e.g. gVisor's sentry, gofer and stubs: shared/host-pids.ts `runscTenantPidsMax`), the
 *   written pids.max is `hostTasks(guest budget)`, clamped to the same room; the per-VM limit
 *   stays in guest processes (the runtime scales it per VM).
 * @param input.hostGroupVcpus - each host group's (maximum) vCPUs per VM.
 * @param input.vmPidsLimit - configured pids.max per VM (`paddock.pids_limit`); clamping it is
 *   noted unless it is the default ({@link DEFAULT_VM_PIDS_LIMIT}).
 */
export function computeTenantBudget(input: { limits: TenantLimits; hostGroupVcpus: readonly number[]; vmPidsLimit: number; pidMax: number; reservePids: number; hostTasks?: (guestPids: number) => number }): TenantBudgetPlan {
  const notes: string[] = [];
  const room = Math.max(MIN_PIDS_BUDGET, tenantPidsRoom(input.pidMax, input.reservePids));
  let guestPids = Math.max(MIN_PIDS_BUDGET, input.limits.maxPids ?? room);
  if (guestPids > room) {
    notes.push(`paddock.limits.max_pids ${guestPids} exceeds what pid_max ${input.pidMax} leaves after the host reserve of ${input.reservePids}; the tenant's pids budget is ${room}`);
    guestPids = room;
  }
  const vmPidsLimit = Math.min(input.vmPidsLimit, guestPids);
  let pidsMax = guestPids;
  if (input.hostTasks !== undefined) {
    pidsMax = input.hostTasks(guestPids);
    if (pidsMax > room) {
      // Without max_pids the guest budget is the whole room already: clamping is expected, not news.
      if (input.limits.maxPids !== undefined) notes.push(`the host tasks of ${guestPids} guest processes (${pidsMax}) exceed what pid_max ${input.pidMax} leaves after the host reserve of ${input.reservePids}; the tenant's pids.max is ${room}`);
      pidsMax = room;
    }
  }
  // The default per-VM limit is above the supervisor's default budget by design: clamping it is
  // expected (each tenant start logged it), only a pids_limit the config set is news.
  if (vmPidsLimit < input.vmPidsLimit && input.vmPidsLimit !== DEFAULT_VM_PIDS_LIMIT) notes.push(`paddock.pids_limit ${input.vmPidsLimit} exceeds the tenant's pids budget; each VM gets ${vmPidsLimit}`);
  const maxRam = input.limits.maxRamBytes;
  const memoryBytes = maxRam === undefined ? undefined : Math.max(MIN_MEMORY_BUDGET_BYTES, maxRam);
  const maxVcpu = input.limits.maxVcpu;
  const cpuQuotaUs = maxVcpu === undefined ? undefined : Math.max(1, maxVcpu, ...input.hostGroupVcpus) * CPU_PERIOD_US;
  if (maxVcpu !== undefined && cpuQuotaUs !== undefined && cpuQuotaUs > maxVcpu * CPU_PERIOD_US) {
    notes.push(`paddock.limits.max_vcpu ${maxVcpu} is below a host group's vCPUs; the tenant's CPU quota is ${cpuQuotaUs / CPU_PERIOD_US} CPUs`);
  }
  return { budget: { pidsMax, memoryBytes, cpuQuotaUs, cpuPeriodUs: CPU_PERIOD_US }, vmPidsLimit, notes };
}

/** The cgroup file systems of a host: v1 controller mounts (hybrid or legacy), or unified v2. */
export type CgroupLayout =
  | { version: 1; pids: string; memory: string; cpu: string; /** `memory.memsw.*` exists (swap accounting). */ memsw: boolean }
  | { version: 2; root: string; /** Controllers listed in `<root>/cgroup.controllers`. */ controllers: readonly string[] };

/** Controllers a tenant budget needs. */
const BUDGET_CONTROLLERS = ["cpu", "memory", "pids"] as const;

/**
 * Find the cgroup layout under `root`: v2 when `<root>/cgroup.controllers` exists (pure
 * unified mode; a hybrid host has it only under `<root>/unified`), else the v1 mounts
 * `<root>/pids`, `<root>/memory` and `<root>/cpu` (or `cpu,cpuacct`).
 * @throws PaddockError `ERR_CGROUP_SETUP_FAILED` when a needed controller is missing.
 */
export async function detectCgroupLayout(root: string = CGROUP_ROOT): Promise<CgroupLayout> {
  const controllersFile = path.join(root, "cgroup.controllers");
  if (existsSync(controllersFile)) {
    const controllers = (await fs.readFile(controllersFile, "utf8")).split(/\s+/).filter(Boolean);
    const missing = BUDGET_CONTROLLERS.filter((c) => !controllers.includes(c));
    if (missing.length > 0) throw new PaddockError("ERR_CGROUP_SETUP_FAILED", `cgroup v2 at ${root} lacks the ${missing.join(", ")} controller(s) (cgroup.controllers: ${controllers.join(" ") || "empty"}); tenant budgets need cpu, memory and pids`);
    return { version: 2, root, controllers };
  }
  const find = (names: string[], marker: string): string | undefined => names.map((n) => path.join(root, n)).find((d) => existsSync(path.join(d, marker)));
  const pids = find(["pids"], "cgroup.procs");
  const memory = find(["memory"], "memory.limit_in_bytes");
  const cpu = find(["cpu", "cpu,cpuacct", "cpuacct,cpu"], "cpu.cfs_quota_us");
  const missing = [pids === undefined ? "pids" : "", memory === undefined ? "memory" : "", cpu === undefined ? "cpu" : ""].filter(Boolean);
  if (pids === undefined || memory === undefined || cpu === undefined) {
    throw new PaddockError("ERR_CGROUP_SETUP_FAILED", `no cgroup v1 hierarchy for ${missing.join(", ")} under ${root} (and no cgroup v2 at ${controllersFile}); tenant budgets need cpu, memory and pids`);
  }
  return { version: 1, pids, memory, cpu, memsw: existsSync(path.join(memory, "memory.memsw.limit_in_bytes")) };
}

/** One step of a cgroup plan: create a directory (with parents), or write one value. */
export type CgroupStep =
  | { op: "mkdir"; path: string }
  /** `optional`: skip when the file does not exist (e.g. memory.swap.max without swap accounting). */
  | { op: "write"; path: string; value: string; optional?: boolean };

/** `/paddock/<tenant>`: the tenant's cgroup path relative to a hierarchy root. */
export function tenantCgroupPath(tenantId: string): string {
  return `/paddock/${tenantId}`;
}

/**
 * Steps for cgroup v1 (pure): per controller, create `<mount>/paddock/<tenant>` and write the
 * budget. Memory opens memsw first (-1) so the memory limit may be lowered or raised past the
 * old memsw value, then sets memsw = memory (no swap beyond the limit).
 */
export function renderTenantCgroupV1(budget: TenantBudget, layout: Extract<CgroupLayout, { version: 1 }>, tenantId: string): CgroupStep[] {
  const rel = tenantCgroupPath(tenantId);
  const pids = path.join(layout.pids, rel);
  const mem = path.join(layout.memory, rel);
  const cpu = path.join(layout.cpu, rel);
  const memValue = budget.memoryBytes === undefined ? "-1" : String(budget.memoryBytes);
  return [
    { op: "mkdir", path: pids },
    { op: "write", path: path.join(pids, "pids.max"), value: String(budget.pidsMax) },
    { op: "mkdir", path: mem },
    ...(layout.memsw ? [{ op: "write" as const, path: path.join(mem, "memory.memsw.limit_in_bytes"), value: "-1" }] : []),
    { op: "write", path: path.join(mem, "memory.limit_in_bytes"), value: memValue },
    ...(layout.memsw ? [{ op: "write" as const, path: path.join(mem, "memory.memsw.limit_in_bytes"), value: memValue }] : []),
    { op: "mkdir", path: cpu },
    { op: "write", path: path.join(cpu, "cpu.cfs_period_us"), value: String(budget.cpuPeriodUs) },
    { op: "write", path: path.join(cpu, "cpu.cfs_quota_us"), value: budget.cpuQuotaUs === undefined ? "-1" : String(budget.cpuQuotaUs) },
  ];
}

/**
 * Steps for cgroup v2 (pure): enable cpu, memory and pids in the root's and `/paddock`'s
 * `cgroup.subtree_control`, create `/paddock/<tenant>`, write its limits, and enable the
 * controllers for its children (the VMs). Neither `/paddock` nor the tenant cgroup holds
 * processes, as v2's no-internal-process rule wants.
 */
export function renderTenantCgroupV2(budget: TenantBudget, layout: Extract<CgroupLayout, { version: 2 }>, tenantId: string): CgroupStep[] {
  const enable = BUDGET_CONTROLLERS.filter((c) => layout.controllers.includes(c)).map((c) => `+${c}`).join(" ");
  const paddock = path.join(layout.root, "paddock");
  const dir = path.join(layout.root, tenantCgroupPath(tenantId));
  const mem = budget.memoryBytes === undefined ? "max" : String(budget.memoryBytes);
  return [
    { op: "write", path: path.join(layout.root, "cgroup.subtree_control"), value: enable },
    { op: "mkdir", path: paddock },
    { op: "write", path: path.join(paddock, "cgroup.subtree_control"), value: enable },
    { op: "mkdir", path: dir },
    { op: "write", path: path.join(dir, "pids.max"), value: String(budget.pidsMax) },
    { op: "write", path: path.join(dir, "memory.max"), value: mem },
    { op: "write", path: path.join(dir, "memory.swap.max"), value: budget.memoryBytes === undefined ? "max" : "0", optional: true },
    { op: "write", path: path.join(dir, "cpu.max"), value: `${budget.cpuQuotaUs === undefined ? "max" : budget.cpuQuotaUs} ${budget.cpuPeriodUs}` },
    { op: "write", path: path.join(dir, "cgroup.subtree_control"), value: enable },
  ];
}

/** The steps for `layout` (pure); see {@link renderTenantCgroupV1} and {@link renderTenantCgroupV2}. */
export function renderTenantCgroup(budget: TenantBudget, layout: CgroupLayout, tenantId: string): CgroupStep[] {
  return layout.version === 1 ? renderTenantCgroupV1(budget, layout, tenantId) : renderTenantCgroupV2(budget, layout, tenantId);
}

/**
 * Perform the steps in order. A cgroup file takes one value per write(2), so each value is
 * written with one `writeFile` (no truncation issue: cgroup files ignore O_TRUNC).
 * @throws PaddockError `ERR_CGROUP_SETUP_FAILED` naming the file, the value and the kernel's
 *   error (e.g. EBUSY for a memory limit below what the tenant's running VMs use, EINVAL for a
 *   CPU quota below a running VM's).
 */
export async function applyTenantCgroup(steps: readonly CgroupStep[]): Promise<void> {
  for (const step of steps) {
    try {
      if (step.op === "mkdir") await fs.mkdir(step.path, { recursive: true });
      else {
        if (step.optional && !existsSync(step.path)) continue;
        await fs.writeFile(step.path, step.value);
      }
    } catch (err) {
      const what = step.op === "mkdir" ? `cannot create cgroup ${step.path}` : `cannot write ${JSON.stringify(step.value)} to ${step.path}`;
      throw new PaddockError("ERR_CGROUP_SETUP_FAILED", `${what}: ${errnoCode(err) ?? ""} ${(err as Error).message}`.trim(), { cause: err });
    }
  }
}

/** Current values of the tenant cgroup's budget files on a v1 layout, for checks and tests. */
export async function readTenantCgroupV1(layout: Extract<CgroupLayout, { version: 1 }>, tenantId: string): Promise<Record<string, string>> {
  const rel = tenantCgroupPath(tenantId);
  const files: Array<[string, string]> = [
    ["pids.max", path.join(layout.pids, rel, "pids.max")],
    ["pids.current", path.join(layout.pids, rel, "pids.current")],
    ["memory.limit_in_bytes", path.join(layout.memory, rel, "memory.limit_in_bytes")],
    ...(layout.memsw ? [["memory.memsw.limit_in_bytes", path.join(layout.memory, rel, "memory.memsw.limit_in_bytes")] as [string, string]] : []),
    ["cpu.cfs_period_us", path.join(layout.cpu, rel, "cpu.cfs_period_us")],
    ["cpu.cfs_quota_us", path.join(layout.cpu, rel, "cpu.cfs_quota_us")],
  ];
  const out: Record<string, string> = {};
  for (const [k, f] of files) out[k] = (await fs.readFile(f, "utf8")).trim();
  return out;
}
