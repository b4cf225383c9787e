/**
 * The host's process-id budget: the kernel hands out at most `/proc/sys/kernel/pid_max` pids
 * (proc(5)), shared by the host and every tenant. Tenants' pids budgets (the `pids.max` of
 * their parent cgroups, tenant-daemon/runtime/tenant-cgroup.ts) must together leave a reserve,
 * so the host can still fork while every tenant is at its budget.
 */
import { promises as fs } from "node:fs";
import { PaddockError } from "./errors.js";

/** Where the kernel publishes the highest pid + 1 (proc(5) `/proc/sys/kernel/pid_max`). */
export const PID_MAX_FILE = "/proc/sys/kernel/pid_max";

/** Pids kept for the host by default: no tenant budget may take them (config `host_pids_reserve`). */
export const DEFAULT_PIDS_RESERVE = 8192;

/** Smallest pids budget of a tenant or VM: runc, the init and the agent need a few processes. */
export const MIN_PIDS_BUDGET = 16;

/**
 * Read `pid_max`.
 * @param file - the file to read (tests pass a temp file); default {@link PID_MAX_FILE}.
 * @returns pid_max, a positive integer (32768 on a default x86_64 kernel).
 * @throws PaddockError `ERR_INTERNAL` when the file is unreadable or not a positive integer.
 */
export async function readPidMax(file: string = PID_MAX_FILE): Promise<number> {
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    throw new PaddockError("ERR_INTERNAL", `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n <= 0) throw new PaddockError("ERR_INTERNAL", `${file} holds ${JSON.stringify(text.trim())}, not a positive integer`);
  return n;
}

/**
 * Pids all tenants together may hold (pure): `pidMax − reservePids`, never below 0.
 * @param pidMax - the host's pid_max.
 * @param reservePids - pids kept for the host.
 */
export function tenantPidsRoom(pidMax: number, reservePids: number): number {
  return Math.max(0, pidMax - reservePids);
}

/** Host tasks of an idle gVisor sandbox (sentry, gofer, ptrace stubs), with headroom; measured 57 on ptrace. */
export const GVISOR_SANDBOX_BASE_TASKS = 96;
/** Host tasks per guest process of a gVisor sandbox, with headroom; measured about 10 on ptrace. */
export const GVISOR_TASKS_PER_GUEST_PROCESS = 12;

/**
 * The cgroup `pids.max` of one gVisor sandbox whose guest may run `guestPids` processes:
 * {@link GVISOR_SANDBOX_BASE_TASKS} + {@link GVISOR_TASKS_PER_GUEST_PROCESS} × `guestPids`
 * (its host threads count, not its guest processes). gVisor 20221219 has no guest-side pid
 * limit, so the guest's own count is not capped exactly.
 */
export function runscPidsLimit(guestPids: number): number {
  return GVISOR_SANDBOX_BASE_TASKS + GVISOR_TASKS_PER_GUEST_PROCESS * guestPids;
}

/** Guest processes every VM runs at least (tini and the agent): bounds how many VMs a guest pids budget allows. */
const MIN_GUEST_PROCESSES_PER_VM = 2;

/**
 * The host tasks a gVisor tenant whose VMs may run `guestPids` guest processes together needs:
 * {@link GVISOR_SANDBOX_BASE_TASKS} per VM plus {@link GVISOR_TASKS_PER_GUEST_PROCESS} per guest
 * process, as {@link runscPidsLimit} does for one VM. The number of VMs is `maxVms`, and never
 * more than the budget can start (each VM runs tini and the agent), so an unset `maxVms` stays bounded.
 * @param guestPids - the tenant's pids budget in guest processes (`paddock.limits.max_pids`).
 * @param maxVms - `paddock.limits.max_vms`, undefined ⇒ unbounded.
 */
export function runscTenantPidsMax(guestPids: number, maxVms: number | undefined): number {
  const vms = Math.min(maxVms ?? Infinity, Math.max(1, Math.floor(guestPids / MIN_GUEST_PROCESSES_PER_VM)));
  return GVISOR_SANDBOX_BASE_TASKS * vms + GVISOR_TASKS_PER_GUEST_PROCESS * guestPids;
}

/**
 * The host pids a tenant's parent cgroup may hold for a budget of `maxPids` guest processes:
 * `maxPids` itself on runc (`oci`, and records without a runtime), {@link runscTenantPidsMax}
 * under gVisor. This, not `max_pids`, is what the tenant takes of the host's pid_max.
 * @param t.hypervisor - the tenant's runtime (`oci`, `gvisor`; undefined ⇒ oci).
 * @param t.maxPids - `limits.max_pids`, guest processes. @param t.maxVms - `limits.max_vms`.
 */
export function tenantHostPids(t: { hypervisor?: string | undefined; maxPids: number; maxVms?: number | undefined }): number {
  return t.hypervisor === "gvisor" ? runscTenantPidsMax(t.maxPids, t.maxVms) : t.maxPids;
}

/**
 * The largest `max_pids` (guest processes) whose host pids ({@link tenantHostPids}) fit in
 * `hostPids`: `hostPids` itself on runc; under gVisor the largest `g` with
 * `runscTenantPidsMax(g, maxVms) ≤ hostPids` (0 when not even a budget of 0 fits). Pure.
 */
export function largestGuestPids(t: { hypervisor?: string | undefined; maxVms?: number | undefined }, hostPids: number): number {
  if (t.hypervisor !== "gvisor") return Math.max(0, hostPids);
  // runscTenantPidsMax grows with g: binary search over [0, hostPids].
  let lo = 0;
  let hi = Math.max(0, hostPids);
  if (runscTenantPidsMax(0, t.maxVms) > hostPids) return 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (runscTenantPidsMax(mid, t.maxVms) <= hostPids) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** One tenant's share of the host's pids: its `max_pids`, runtime and `max_vms`, from which {@link tenantHostPids} derives the host pids it takes. */
export interface TenantPidsShare {
  id: string;
  /** `limits.max_pids` (guest processes); undefined ⇒ no budget set, counted as 0. */
  maxPids: number | undefined;
  /** The tenant's runtime (`oci`, `gvisor`; undefined ⇒ oci). */
  hypervisor?: string | undefined;
  /** `limits.max_vms` (counts under gVisor); undefined ⇒ unbounded. */
  maxVms?: number | undefined;
}

/** The host pids of a share: 0 without a budget, else {@link tenantHostPids}. */
function hostPidsOf(t: TenantPidsShare): number {
  return t.maxPids === undefined ? 0 : tenantHostPids({ hypervisor: t.hypervisor, maxPids: t.maxPids, maxVms: t.maxVms });
}

/**
 * Check that one tenant's pids budget fits next to every other tenant's on this host (pure):
 * the host pids of all of them (gVisor's sentry, gofer and stubs included, {@link tenantHostPids})
 * must leave `reservePids` of `pidMax`.
 * @param input.tenant - the tenant being created or changed, with its requested budget.
 * @param input.others - every other tenant's share (tenants without a budget count as 0).
 * @param input.pidMax - the host's pid_max; input.reservePids - pids kept for the host.
 * @param input.gvisorTemplate - a template made for gVisor (limits sized for its host threads,
 *   templates/sandbox-gvisor.yaml) that a refused gVisor tenant could be created from instead:
 *   named in the refusal as `--template NAME`; undefined ⇒ none named (e.g. at an update).
 * @throws PaddockError `ERR_PIDS_BUDGET_EXCEEDED` (507) naming the totals and what is left.
 */
export function checkTenantPidsBudget(input: { tenant: TenantPidsShare & { maxPids: number }; others: readonly TenantPidsShare[]; pidMax: number; reservePids: number; gvisorTemplate?: string | undefined }): void {
  const room = tenantPidsRoom(input.pidMax, input.reservePids);
  const used = input.others.reduce((sum, t) => sum + hostPidsOf(t), 0);
  const { tenant } = input;
  const need = hostPidsOf(tenant);
  if (used + need > room) {
    const left = Math.max(0, room - used);
    const gvisor = tenant.hypervisor === "gvisor";
    const host = gvisor ? ` (${need} host pids under gVisor: 96 per VM of max_vms ${tenant.maxVms ?? "(unset)"} + 12 per guest process, for its sentry's, gofer's and stubs' threads)` : "";
    // What fits, in the unit the operator sets (guest processes, with this max_vms under gVisor).
    const fits = largestGuestPids(tenant, left);
    const fitText = gvisor ? `; with max_vms ${tenant.maxVms ?? "(unset)"} at most max_pids ${fits} fits (fewer max_vms leave more)` : "";
    const templateText = gvisor && input.gvisorTemplate !== undefined ? `, or create it from the template made for gVisor (paddock tenant create --template ${input.gvisorTemplate}, its limits sized for gVisor's host threads)` : "";
    throw new PaddockError(
      "ERR_PIDS_BUDGET_EXCEEDED",
      `tenant ${tenant.id}: limits.max_pids ${tenant.maxPids}${host} does not fit on this host: the other ${input.others.length} tenant(s) hold ${used} pids and pid_max ${input.pidMax} minus the host reserve of ${input.reservePids} leaves ${room} for tenants, so at most ${left} host pids remain${fitText}; lower limits.max_pids (paddock tenant create --max-pids)${gvisor ? " or max_vms" : ""}${templateText}, or lower another tenant's, or raise kernel.pid_max`,
      { details: { max_pids: tenant.maxPids, host_pids: need, available: left, max_pids_that_fits: fits, pid_max: input.pidMax, reserve: input.reservePids } },
    );
  }
}
