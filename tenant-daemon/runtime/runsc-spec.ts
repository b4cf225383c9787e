/**
 * The OCI spec of a gVisor sandbox: oci-spec.ts's {@link renderOciSpec} with the changes runsc
 * 0.0~20221219 needs (measured in docs/gvisor-findings.md §2, §4, §9):
 * - the user namespace is always a new one from `uidMappings` (runsc cannot join a pinned one
 *   by path: setns from its multithreaded gofer fails with EINVAL). The gofer then runs as the
 *   tenant's id-range root, as runc's init does;
 * - no `linux.seccomp`: runsc ignores it without `--oci-seccomp`, and with it node aborts.
 *   Guest syscalls are served by gVisor's sentry; only the sentry's own filtered set reaches
 *   the host kernel;
 * - `pids.max` counts host threads of the sentry, gofer and ptrace stubs (about 57 idle, about
 *   10 per guest process), not guest processes: it is scaled by {@link runscPidsLimit}.
 */
import type { VmRuntimeSpec } from "./driver.js";
import { renderOciSpec, type OciSpec, type OciToolbox } from "./oci-spec.js";

/** Host tasks of an idle sandbox (sentry, gofer, stubs), with headroom; measured 57 on ptrace. */
const SANDBOX_BASE_TASKS = 96;
/** Host tasks per guest process, with headroom; measured about 10 on ptrace. */
const TASKS_PER_GUEST_PROCESS = 12;

/**
 * The cgroup `pids.max` of a sandbox whose guest may run `guestPids` processes:
 * {@link SANDBOX_BASE_TASKS} + {@link TASKS_PER_GUEST_PROCESS} × `guestPids`.
 * gVisor 20221219 has no guest-side pid limit, so the guest's own count is not capped exactly.
 */
export function runscPidsLimit(guestPids: number): number {
  return SANDBOX_BASE_TASKS + TASKS_PER_GUEST_PROCESS * guestPids;
}

/** Guest processes every VM runs at least (tini and the agent): bounds how many VMs a guest pids budget allows. */
const MIN_GUEST_PROCESSES_PER_VM = 2;

/**
 * The host tasks a gVisor tenant whose VMs may run `guestPids` guest processes together needs:
 * {@link SANDBOX_BASE_TASKS} per VM plus {@link TASKS_PER_GUEST_PROCESS} per guest process,
 * as {@link runscPidsLimit} does for one VM. The number of VMs is `maxVms`, and never more than
 * the budget can start (each VM runs tini and the agent), so an unset `maxVms` stays bounded.
 * @param guestPids - the tenant's pids budget in guest processes (`paddock.limits.max_pids`).
 * @param maxVms - `paddock.limits.max_vms`, undefined ⇒ unbounded.
 */
export function runscTenantPidsMax(guestPids: number, maxVms: number | undefined): number {
  const vms = Math.min(maxVms ?? Infinity, Math.max(1, Math.floor(guestPids / MIN_GUEST_PROCESSES_PER_VM)));
  return SANDBOX_BASE_TASKS * vms + TASKS_PER_GUEST_PROCESS * guestPids;
}

/**
 * `config.json` of the gVisor sandbox for `spec` (see the module comment).
 * @throws RangeError as {@link renderOciSpec}.
 */
export function renderRunscSpec(spec: VmRuntimeSpec, toolbox: OciToolbox, swapAccounting: boolean): OciSpec {
  const config = renderOciSpec({ ...spec, userns: { ...spec.userns, path: undefined } }, toolbox, { swapAccounting, seccomp: undefined });
  config.linux.resources.pids.limit = runscPidsLimit(spec.pidsLimit);
  return config;
}
