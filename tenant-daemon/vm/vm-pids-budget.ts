/**
 * Telling a VM boot that the tenant's pids budget refused (the tenant cgroup's `pids.max`,
 * tenant-daemon/runtime/tenant-cgroup.ts) from other boot failures, so a create answers
 * 403 ERR_LIMIT_EXCEEDED naming the limit instead of a timeout or an internal error.
 *
 * Everything read here is a kernel file of the host's pids hierarchy under /sys/fs/cgroup, never
 * anything inside a guest's tree (the guest's cgroup namespace shows it its own cgroup read-only):
 * - the VM cgroup's `pids.events` line `max <n>` (vm-exit-reason.ts `pidsEventsFile`): on cgroup
 *   v1 the forks refused in this cgroup, by its own `pids.max` or an ancestor's
 *   (https://docs.kernel.org/admin-guide/cgroup-v1/pids.html); on v2 the times its own limit
 *   was hit (https://docs.kernel.org/admin-guide/cgroup-v2.html#pid). A boot's cgroup is new,
 *   so its count starts at 0;
 * - `pids.max` and `pids.current` of the tenant cgroup and of the VM cgroup, to say which limit
 *   refused and how much of the budget is in use.
 *
 * When `runc run` itself fails (a fork of its `runc init` refused: "nsexec-0: unable to spawn
 * stage-1: Resource temporarily unavailable", or "read init-p: connection reset by peer" when
 * the init's Go runtime cannot make a thread), runc removes the VM's cgroup before it exits, so
 * its counter is gone (seen with runc 1.1.5). The boot is then put down to the budget when the
 * tenant's room left (`pids.max − pids.current`) is below {@link VM_BOOT_PIDS}.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { CGROUP_ROOT, detectCgroupLayout, tenantCgroupPath, type CgroupLayout } from "../runtime/tenant-cgroup.js";
import { parsePidsMaxCount, pidsEventsFile } from "./vm-exit-reason.js";

/**
 * The host pids one runc VM takes once booted: tini and the guest agent's threads (node's main
 * thread, its libuv pool and V8's workers), 12 as measured with the sandbox template
 * (`pids.current` of a VM cgroup right after `wait=agent`). A boot that failed while the tenant
 * had less room than this is put down to the budget.
 */
export const VM_BOOT_PIDS = 12;

/** `pids.max` (undefined for `max`: no limit) and `pids.current` of one cgroup. */
export interface PidsFigures {
  max: number | undefined;
  current: number;
}

/** Reads the pids figures of cgroups; undefined when the cgroup is not there. */
export interface PidsReader {
  /** The `pids.events` `max` count of cgroup `cgroupPath` (absolute, from the hierarchy root). */
  refusedForks(cgroupPath: string): Promise<number | undefined>;
  /** `pids.max` and `pids.current` of cgroup `cgroupPath`. */
  figures(cgroupPath: string): Promise<PidsFigures | undefined>;
}

/**
 * The host's {@link PidsReader} on the cgroup file systems under `root` (layout found once,
 * tenant-cgroup.ts `detectCgroupLayout`). A path that is relative, `/` or holds `..` reads as
 * undefined, never another file. Reads are synchronous (a few bytes the kernel makes on read).
 * @throws (from its methods) read errors other than ENOENT.
 */
export function hostPidsReader(root: string = CGROUP_ROOT): PidsReader {
  let layout: Promise<CgroupLayout | undefined> | undefined;
  const dirOf = async (cgroupPath: string): Promise<string | undefined> => {
    if (!cgroupPath.startsWith("/") || cgroupPath === "/" || cgroupPath.split("/").includes("..")) return undefined;
    layout ??= detectCgroupLayout(root).catch(() => undefined);
    const l = await layout;
    if (l === undefined) return undefined;
    return path.dirname(pidsEventsFile(l, cgroupPath));
  };
  const read = (file: string): string | undefined => {
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  };
  return {
    async refusedForks(cgroupPath) {
      const dir = await dirOf(cgroupPath);
      const text = dir === undefined ? undefined : read(path.join(dir, "pids.events"));
      return text === undefined ? undefined : parsePidsMaxCount(text);
    },
    async figures(cgroupPath) {
      const dir = await dirOf(cgroupPath);
      if (dir === undefined) return undefined;
      const max = read(path.join(dir, "pids.max"));
      const current = read(path.join(dir, "pids.current"));
      if (max === undefined || current === undefined) return undefined;
      return { max: max.trim() === "max" ? undefined : Number(max.trim()), current: Number(current.trim()) };
    },
  };
}

/** What {@link PidsBudgetProbe} reads and how it names things. */
export interface PidsBudgetProbeDeps {
  /** The tenant cgroup's path (tenant-cgroup.ts `tenantCgroupPath`). */
  tenantCgroupPath: string;
  /** The tenant's id (named in the advice of messages). */
  tenantId: string;
  /** A VM's cgroup path (vm-paths.ts `cgroupPath`). */
  cgroupPath: (hostname: string) => string;
  /** `paddock.limits.max_pids` as configured (named in messages); undefined ⇒ the tenant cgroup's pids.max is named. */
  maxPids: number | undefined;
  /** Default {@link hostPidsReader}. */
  reader?: PidsReader;
}

/**
 * Says whether a boot of a VM was refused by the tenant's pids budget (or by the VM's own
 * `paddock.pids_limit`), as an error to answer with. Holds no state.
 */
export class PidsBudgetProbe {
  private readonly deps: PidsBudgetProbeDeps;
  private readonly reader: PidsReader;

  constructor(deps: PidsBudgetProbeDeps) {
    this.deps = deps;
    this.reader = deps.reader ?? hostPidsReader();
  }

  /**
   * The refusal of VM `hostname`'s boot, if its pids limits refused one of its processes: call
   * it before the VM is torn down (its cgroup goes with it).
   * @param opts.runFailed - true when the runtime's `run` failed (its cgroup may already be
   *   gone; then the tenant's room decides, see this file's header).
   * @returns PaddockError ERR_LIMIT_EXCEEDED (403, `details.limit` `max_pids` or `pids_limit`)
   *   naming the limit and its use; undefined when no pids limit is to blame. Never rejects
   *   (an unreadable file counts as no refusal).
   */
  async refusal(hostname: string, opts: { runFailed: boolean }): Promise<PaddockError | undefined> {
    const { reader } = this;
    const vmPath = this.deps.cgroupPath(hostname);
    const refused = await reader.refusedForks(vmPath).catch(() => undefined);
    // The common case (a boot's agent not up yet, polled often): no refused fork, one file read.
    if (refused === 0 || (refused === undefined && !opts.runFailed)) return undefined;
    const [tenant, vm] = await Promise.all([
      reader.figures(this.deps.tenantCgroupPath).catch(() => undefined),
      reader.figures(vmPath).catch(() => undefined),
    ]);
    const tenantRoom = tenant?.max === undefined ? Number.POSITIVE_INFINITY : tenant.max - tenant.current;
    if (refused === undefined) {
      // The counter is gone (runc removed the cgroup of a failed run): judge by the room left.
      if (tenant === undefined || tenantRoom >= VM_BOOT_PIDS) return undefined;
    } else if (vm?.max !== undefined && vm.max - vm.current < tenantRoom) {
      return new PaddockError(
        "ERR_LIMIT_EXCEEDED",
        `the VM's pids limit (pids_limit ${vm.max}) refused a process of VM ${hostname}'s boot; raise paddock.pids_limit (then \`paddock tenant restart ${this.deps.tenantId}\`)`,
        { details: { limit: "pids_limit" } },
      );
    }
    const max = this.deps.maxPids ?? tenant?.max;
    const used = tenant === undefined ? "" : `, ${tenant.current} in use`;
    return new PaddockError(
      "ERR_LIMIT_EXCEEDED",
      `the tenant's pids budget (max_pids ${max ?? "?"}${used}) refused a process of VM ${hostname}'s boot; delete a VM or raise max_pids (\`paddock tenant update ${this.deps.tenantId} --max-pids N\`, then \`paddock tenant restart ${this.deps.tenantId}\`; a daemon run by hand: paddock.limits.max_pids in its config)`,
      { details: { limit: "max_pids" } },
    );
  }

  /**
   * The error a failed boot of VM `hostname` answers with: `err` itself, or the pids refusal
   * ({@link refusal}) when `err` is one a refused process causes (the runtime failed, the boot
   * or its agent wait timed out) and the VM's pids limits refused one. Call before teardown.
   * @param ran - true once the runtime's `run` succeeded (the VM has a pid).
   * Never rejects.
   */
  async explain(err: unknown, hostname: string, ran: boolean): Promise<unknown> {
    if (isPidsRefusal(err)) return err;
    const code = err instanceof PaddockError ? err.code : undefined;
    if (code !== "ERR_RUNTIME_FAILED" && code !== "ERR_VM_START_FAILED" && code !== "ERR_VM_WAIT_TIMEOUT") return err;
    return (await this.refusal(hostname, { runFailed: !ran })) ?? err;
  }
}

/** True for the error {@link PidsBudgetProbe.refusal} returns. Pure. */
export function isPidsRefusal(err: unknown): err is PaddockError {
  return err instanceof PaddockError && err.code === "ERR_LIMIT_EXCEEDED" && (err.details?.limit === "max_pids" || err.details?.limit === "pids_limit");
}

/**
 * The probe of a tenant daemon: the tenant cgroup `/paddock/<tenant>` and its VMs' cgroups
 * (vm-paths.ts `cgroupPath`), naming `paddock.limits.max_pids`. Pure (reads nothing yet).
 */
export function tenantPidsBudgetProbe(paddock: { tenantId: string; limits: { maxPids: number | undefined } }, cgroupPath: (hostname: string) => string, reader?: PidsReader): PidsBudgetProbe {
  return new PidsBudgetProbe({ tenantCgroupPath: tenantCgroupPath(paddock.tenantId), tenantId: paddock.tenantId, cgroupPath, maxPids: paddock.limits.maxPids, ...(reader ? { reader } : {}) });
}
