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
 *   10 per guest process), not guest processes: it is scaled by {@link runscPidsLimit}
 *   (shared/host-pids.ts, where the supervisor counts the same host pids against pid_max).
 */
import { runscPidsLimit } from "../../shared/host-pids.js";
import type { VmRuntimeSpec } from "./driver.js";
import { renderOciSpec, type OciSpec, type OciToolbox } from "./oci-spec.js";

/**
 * `config.json` of the gVisor sandbox for `spec` (see the module comment).
 * @throws RangeError as {@link renderOciSpec}.
 */
export function renderRunscSpec(spec: VmRuntimeSpec, toolbox: OciToolbox, swapAccounting: boolean): OciSpec {
  const config = renderOciSpec({ ...spec, userns: { ...spec.userns, path: undefined } }, toolbox, { swapAccounting, seccomp: undefined });
  config.linux.resources.pids.limit = runscPidsLimit(spec.pidsLimit);
  return config;
}
