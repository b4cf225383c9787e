/**
 * The seccomp profile of every VM: data in tenant-daemon/runtime/seccomp/default.json (generated
 * by scripts/gen-seccomp.ts: an allowlist of the kernel's system calls, from the linux-libc-dev
 * headers, minus the refused set of the policy in that script), loaded and validated once,
 * narrowed to the host's architectures and handed to renderOciSpec as the spec's `linux.seccomp`.
 * Format: https://github.com/opencontainers/runtime-spec/blob/v1.0.2/config-linux.md#seccomp
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PaddockError } from "../../shared/errors.js";

/** Path of the profile relative to the project root (read from the source tree: no build copy step). */
export const SECCOMP_PROFILE_RELPATH = "tenant-daemon/runtime/seccomp/default.json";

/** Per-VM seccomp mode: the profile, or none (`paddock.seccomp.<group>: unconfined`). */
export type SeccompMode = "default" | "unconfined";

/** Seccomp actions runc 1.1 accepts (runtime-spec v1.0.2 plus `SCMP_ACT_LOG`). */
export type SeccompAction = "SCMP_ACT_KILL" | "SCMP_ACT_KILL_PROCESS" | "SCMP_ACT_TRAP" | "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE" | "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG";
/** Argument comparison operators (runtime-spec). */
export type SeccompOperator = "SCMP_CMP_NE" | "SCMP_CMP_LT" | "SCMP_CMP_LE" | "SCMP_CMP_EQ" | "SCMP_CMP_GE" | "SCMP_CMP_GT" | "SCMP_CMP_MASKED_EQ";

const ACTIONS: readonly SeccompAction[] = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"];
const OPERATORS: readonly SeccompOperator[] = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"];

/** One argument condition: `args[index] <op> value` (MASKED_EQ: `(args[index] & value) == valueTwo`). */
export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: SeccompOperator;
}

/** One rule: `action` for every call in `names` whose arguments match all of `args`. */
export interface OciSeccompSyscall {
  names: string[];
  action: SeccompAction;
  /** errno returned by SCMP_ACT_ERRNO (default: EPERM via runc). */
  errnoRet?: number;
  args?: OciSeccompArg[];
}

/**
 * The OCI runtime config's `linux.seccomp` object (the fields Paddock uses;
 * https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md#seccomp).
 */
export interface OciSeccomp {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: OciSeccompSyscall[];
}

/**
 * Seccomp architectures per Node.js `process.arch`: the native one only. System calls of
 * compat ABIs (i386, x32, arm32) match no architecture of the filter and are refused whole:
 * the i386 `socketcall(2)` multiplexer cannot have its socket family checked by libseccomp,
 * so allowing it would reopen AF_VSOCK and AF_ALG. 32-bit programs do not run in VMs.
 */
export const SECCOMP_ARCHES: Readonly<Record<string, readonly string[]>> = {
  x64: ["SCMP_ARCH_X86_64"],
  arm64: ["SCMP_ARCH_AARCH64"],
};

function invalid(source: string, where: string, what: string): PaddockError {
  return new PaddockError("ERR_RUNTIME_UNAVAILABLE", `invalid seccomp profile ${source}: ${where} ${what}`);
}

const isUint = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Validate a parsed profile and return its OCI fields only (`comment` and other
 * documentation keys are dropped). Shape: `{defaultAction, defaultErrnoRet?, architectures:
 * string[], syscalls: [{names: string[], action, errnoRet?, args?: [{index 0-5, value,
 * valueTwo?, op}]}]}` with actions and operators from the runtime-spec lists above.
 * @param source file name for error messages
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE naming the first offending field
 */
export function parseSeccompProfile(raw: unknown, source: string): OciSeccomp {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw invalid(source, "top level", "is not an object");
  const o = raw as Record<string, unknown>;
  if (!ACTIONS.includes(o.defaultAction as SeccompAction)) throw invalid(source, "defaultAction", `is not a seccomp action: ${JSON.stringify(o.defaultAction)}`);
  if (o.defaultErrnoRet !== undefined && !isUint(o.defaultErrnoRet)) throw invalid(source, "defaultErrnoRet", "is not a non-negative integer");
  if (!Array.isArray(o.architectures) || o.architectures.length === 0 || !o.architectures.every((a) => typeof a === "string" && a.startsWith("SCMP_ARCH_"))) {
    throw invalid(source, "architectures", "is not a non-empty list of SCMP_ARCH_* names");
  }
  if (!Array.isArray(o.syscalls) || o.syscalls.length === 0) throw invalid(source, "syscalls", "is not a non-empty list");
  const syscalls = o.syscalls.map((s: unknown, i): OciSeccompSyscall => {
    const at = `syscalls[${i}]`;
    if (typeof s !== "object" || s === null) throw invalid(source, at, "is not an object");
    const r = s as Record<string, unknown>;
    if (!Array.isArray(r.names) || r.names.length === 0 || !r.names.every((n) => typeof n === "string" && /^[a-z0-9_]+$/.test(n))) {
      throw invalid(source, `${at}.names`, "is not a non-empty list of syscall names");
    }
    if (!ACTIONS.includes(r.action as SeccompAction)) throw invalid(source, `${at}.action`, `is not a seccomp action: ${JSON.stringify(r.action)}`);
    if (r.errnoRet !== undefined && !isUint(r.errnoRet)) throw invalid(source, `${at}.errnoRet`, "is not a non-negative integer");
    const rule: OciSeccompSyscall = { names: [...(r.names as string[])], action: r.action as SeccompAction };
    if (r.errnoRet !== undefined) rule.errnoRet = r.errnoRet as number;
    if (r.args !== undefined && r.args !== null) {
      if (!Array.isArray(r.args)) throw invalid(source, `${at}.args`, "is not a list");
      rule.args = r.args.map((a: unknown, j): OciSeccompArg => {
        const aw = `${at}.args[${j}]`;
        if (typeof a !== "object" || a === null) throw invalid(source, aw, "is not an object");
        const x = a as Record<string, unknown>;
        if (!isUint(x.index) || x.index > 5) throw invalid(source, `${aw}.index`, "is not 0-5");
        if (!isUint(x.value)) throw invalid(source, `${aw}.value`, "is not a non-negative integer");
        if (x.valueTwo !== undefined && !isUint(x.valueTwo)) throw invalid(source, `${aw}.valueTwo`, "is not a non-negative integer");
        if (!OPERATORS.includes(x.op as SeccompOperator)) throw invalid(source, `${aw}.op`, `is not a comparison operator: ${JSON.stringify(x.op)}`);
        return { index: x.index, value: x.value, ...(x.valueTwo !== undefined ? { valueTwo: x.valueTwo as number } : {}), op: x.op as SeccompOperator };
      });
    }
    return rule;
  });
  return {
    defaultAction: o.defaultAction as SeccompAction,
    ...(o.defaultErrnoRet !== undefined ? { defaultErrnoRet: o.defaultErrnoRet as number } : {}),
    architectures: [...(o.architectures as string[])],
    syscalls,
  };
}

/** The directory holding {@link SECCOMP_PROFILE_RELPATH}: the nearest ancestor of this module that has it (source or dist layout). */
function defaultProfilePath(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, SECCOMP_PROFILE_RELPATH);
    if (existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `seccomp profile ${SECCOMP_PROFILE_RELPATH} not found above ${start}`);
  }
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

const cache = new Map<string, OciSeccomp>();

/**
 * The VM seccomp profile (read from `<project root>/`{@link SECCOMP_PROFILE_RELPATH} unless
 * `file` is given), validated by {@link parseSeccompProfile} and with `architectures` narrowed
 * to those of `arch` (see {@link SECCOMP_ARCHES}). Read once per (file, arch); the result is
 * deep-frozen and shared.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when the file is missing or invalid, or when the
 *   profile covers none of the host architecture's seccomp architectures.
 */
export function loadSeccompProfile(options: { file?: string; arch?: string } = {}): OciSeccomp {
  const file = options.file ?? defaultProfilePath();
  const arch = options.arch ?? process.arch;
  const key = `${arch}\0${file}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `cannot read seccomp profile ${file}: ${(err as Error).message}`, { cause: err });
  }
  const profile = parseSeccompProfile(raw, file);
  const wanted = SECCOMP_ARCHES[arch] ?? [];
  const architectures = profile.architectures.filter((a) => wanted.includes(a));
  if (architectures.length === 0) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `seccomp profile ${file} has no architecture for this host (${arch}); it lists ${profile.architectures.join(", ")}`);
  }
  const result = deepFreeze({ ...profile, architectures });
  cache.set(key, result);
  return result;
}
