/**
 * What the gVisor driver (runsc-driver.ts) needs from the host: the `runsc` binary and the
 * platform it runs guests on. Pure decisions ({@link chooseRunscPlatform}) are separate from the
 * probes, so unit tests check the rule without a host. Measured behaviour of the installed runsc
 * (Debian's 0.0~20221219) is in docs/gvisor-findings.md.
 */
import { accessSync, closeSync, constants as fsConstants, openSync, statSync } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";

/** runsc's `--platform` values this driver uses (`runsc help platforms` of 20221219: kvm, ptrace). */
export type RunscPlatform = "kvm" | "ptrace";

/** The install command named by every "runsc missing" error. */
export const RUNSC_INSTALL_HINT = "install it with `apt-get install runsc`";

/** The directories searched for runsc: PATH, then the standard system dirs (a supervisor may trim PATH). */
function searchDirs(envPath = process.env.PATH ?? ""): string[] {
  return [...envPath.split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter((d) => d !== "");
}

/**
 * Absolute path of the `runsc` executable on PATH or in the system dirs, or undefined.
 * Synchronous, like the daemon's start-up check of the hypervisor (tenant-daemon/main.ts).
 */
export function findRunsc(envPath?: string): string | undefined {
  for (const dir of searchDirs(envPath)) {
    const candidate = path.join(dir, "runsc");
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
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
