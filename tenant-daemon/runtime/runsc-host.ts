/**
 * What the gVisor driver (runsc-driver.ts) needs from the host: the `runsc` binary and the
 * platform it runs guests on. Pure decisions ({@link chooseRunscPlatform}) are separate from the
 * probes, so unit tests check the rule without a host. Measured behaviour of the installed runsc
 * (Debian's 0.0~20221219) is in docs/gvisor-findings.md.
 */
import { closeSync, constants as fsConstants, openSync } from "node:fs";
import { PaddockError } from "../../shared/errors.js";
import { RUNSC_INSTALL_HINT, findRunscBinary } from "../../shared/runsc-binary.js";

export { RUNSC_INSTALL_HINT };

/** runsc's `--platform` values this driver uses (`runsc help platforms` of 20221219: kvm, ptrace). */
export type RunscPlatform = "kvm" | "ptrace";

/**
 * Absolute path of the `runsc` executable on PATH (or `envPath`) or in the system dirs, or
 * undefined. The search is shared with the supervisor's check before it creates a gVisor tenant
 * (shared/runsc-binary.ts), so both refuse a missing runsc alike.
 */
export function findRunsc(envPath?: string): string | undefined {
  return findRunscBinary(envPath);
}

/**
 * The runsc binary, or an error naming the install command.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when runsc is not installed.
 */
export function requireRunsc(envPath?: string): string {
  const binary = findRunsc(envPath);
  if (binary === undefined) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `hypervisor gvisor needs runsc, which is not on PATH; ${RUNSC_INSTALL_HINT}`);
  return binary;
}

/** True when `/dev/kvm` exists and this process can open it read-write (what runsc's kvm platform does). */
export function kvmUsable(device = "/dev/kvm"): boolean {
  try {
    closeSync(openSync(device, fsConstants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

/**
 * The platform to pass as `--platform` (pure). `auto` ⇒ `kvm` when KVM is usable, else
 * `ptrace`. An explicit `kvm` without KVM is an error rather than a silent fallback.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE (`kvm` asked for, /dev/kvm not usable).
 */
export function chooseRunscPlatform(preference: "auto" | RunscPlatform, kvm: boolean): RunscPlatform {
  if (preference === "ptrace") return "ptrace";
  if (preference === "kvm" && !kvm) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", "paddock.gvisor.platform is kvm, but /dev/kvm is missing or cannot be opened read-write; use platform ptrace (or auto)");
  }
  return kvm ? "kvm" : "ptrace";
}
