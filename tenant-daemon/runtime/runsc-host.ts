/**
 * What the gVisor driver (runsc-driver.ts) needs from the host: the `runsc` binary and the
 * platform it runs guests on. Pure decisions ({@link chooseRunscPlatform}) are separate from the
 * probes, so unit tests check the rule without a host. Measured behaviour of the installed runsc
 * (Debian's 0.0~20221219) is in docs/gvisor-findings.md.
 */
import { closeSync, constants as fsConstants, openSync, readFileSync } from "node:fs";
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

/** True when `/dev/kvm` exists and this process can open it read-write (what runsc's kvm platform does first). */
export function kvmUsable(device = "/dev/kvm"): boolean {
  try {
    closeSync(openSync(device, fsConstants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

/** What decides whether runsc's kvm platform can run here ({@link hostKvmFacts}). */
export interface KvmFacts {
  /** /dev/kvm opens read-write ({@link kvmUsable}). */
  device: boolean;
  /**
   * The CPU has hardware virtualisation ({@link cpuHardwareVirt}): true/false on x86, undefined
   * where this is not read from /proc/cpuinfo (other architectures: the open check decides).
   */
  hardwareVirt: boolean | undefined;
}

/** No /dev/kvm (or not checked). */
export const NO_KVM: KvmFacts = { device: false, hardwareVirt: undefined };

/**
 * Whether the CPU offers hardware virtualisation, from the text of /proc/cpuinfo (pure). On x86
 * (`arch` `x64` or `ia32`): true when a `flags` line names `vmx` (Intel VT-x) or `svm` (AMD-V),
 * else false. A /dev/kvm without them is a paravirtual KVM of a guest kernel (e.g. PVM), on which
 * runsc 0.0~20221219's kvm platform hangs instead of failing (docs/gvisor-status.md). Other
 * architectures: undefined (arm64 has no such flag).
 */
export function cpuHardwareVirt(cpuinfo: string, arch: string = process.arch): boolean | undefined {
  if (arch !== "x64" && arch !== "ia32") return undefined;
  return /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
}

/** This host's {@link KvmFacts}: /dev/kvm opened read-write, /proc/cpuinfo read (unreadable ⇒ `hardwareVirt` undefined). */
export function hostKvmFacts(device = "/dev/kvm", cpuinfoPath = "/proc/cpuinfo"): KvmFacts {
  if (!kvmUsable(device)) return NO_KVM;
  let cpuinfo: string | undefined;
  try {
    cpuinfo = readFileSync(cpuinfoPath, "utf8");
  } catch {
    cpuinfo = undefined;
  }
  return { device: true, hardwareVirt: cpuinfo === undefined ? undefined : cpuHardwareVirt(cpuinfo) };
}

/**
 * The platform to pass as `--platform` (pure). `auto` ⇒ `kvm` when /dev/kvm opens read-write
 * AND the CPU has hardware virtualisation (where that is known, {@link cpuHardwareVirt}), else
 * `ptrace`. An explicit `kvm` that cannot work is an error rather than a silent fallback, and
 * the message says why and to use ptrace.
 * @param kvm - the host's facts ({@link hostKvmFacts}).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE (`kvm` asked for: /dev/kvm not usable, or no
 *   vmx/svm on x86).
 */
export function chooseRunscPlatform(preference: "auto" | RunscPlatform, kvm: KvmFacts): RunscPlatform {
  if (preference === "ptrace") return "ptrace";
  const works = kvm.device && kvm.hardwareVirt !== false;
  if (preference === "kvm" && !works) {
    const why = !kvm.device
      ? "/dev/kvm is missing or cannot be opened read-write"
      : "the CPU reports no hardware virtualisation (no vmx or svm in /proc/cpuinfo flags), so /dev/kvm here is no hardware KVM (e.g. a guest kernel's paravirtual KVM) and runsc's kvm platform hangs on it";
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `paddock.gvisor.platform is kvm, but ${why}; use platform ptrace (or auto, which picks ptrace here)`);
  }
  return works ? "kvm" : "ptrace";
}
