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

/**
 * Check that one tenant's pids budget fits next to every other tenant's on this host (pure).
 * @param input.tenantId - the tenant being created or changed.
 * @param input.maxPids - its requested budget, pids.
 * @param input.others - every other tenant's budget (tenants without one count as 0).
 * @param input.pidMax - the host's pid_max; input.reservePids - pids kept for the host.
 * @throws PaddockError `ERR_PIDS_BUDGET_EXCEEDED` (507) naming the totals and what is left.
 */
export function checkTenantPidsBudget(input: { tenantId: string; maxPids: number; others: ReadonlyArray<{ id: string; maxPids: number | undefined }>; pidMax: number; reservePids: number }): void {
  const room = tenantPidsRoom(input.pidMax, input.reservePids);
  const used = input.others.reduce((sum, t) => sum + (t.maxPids ?? 0), 0);
  if (used + input.maxPids > room) {
    const left = Math.max(0, room - used);
    throw new PaddockError(
      "ERR_PIDS_BUDGET_EXCEEDED",
      `tenant ${input.tenantId}: limits.max_pids ${input.maxPids} does not fit on this host: the other ${input.others.length} tenant(s) hold ${used} pids and pid_max ${input.pidMax} minus the host reserve of ${input.reservePids} leaves ${room} for tenants, so at most ${left} remain; lower limits.max_pids (or another tenant's), or raise kernel.pid_max`,
      { details: { max_pids: input.maxPids, available: left, pid_max: input.pidMax, reserve: input.reservePids } },
    );
  }
}
