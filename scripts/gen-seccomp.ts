/**
 * Regenerate tenant-daemon/runtime/seccomp/default.json, the seccomp profile of every VM, from
 * moby's default profile (an allowlist in moby's own format with `includes`/`excludes`):
 *
 * ```
 * node dist/scripts/gen-seccomp.js <moby default.json> [out.json]
 * ```
 *
 * The input is not part of this repository: take it from moby/profiles (`seccomp/default.json`,
 * https://github.com/moby/profiles, vendored in moby/moby at
 * `vendor/github.com/moby/profiles/seccomp/default.json`; Apache-2.0).
 *
 * Resolution (what moby's daemon does per container, done once here for Paddock's fixed guest):
 * - `includes.caps`: kept only when every listed capability is in {@link GUEST_CAPABILITIES};
 *   `excludes.caps`: dropped when any listed capability is.
 * - `includes.arches`/`excludes.arches`: resolved for the two host architectures Paddock runs
 *   on (Go names amd64 and arm64); an entry for either is kept, so the x86-only and arm-only
 *   entries are both present (runc skips names the host's libseccomp cannot resolve).
 * - `includes.minKernel`: resolved as satisfied for {@link MIN_HOST_KERNEL} (Debian 12's 6.1).
 * - Paddock's additions: the calls in {@link ALWAYS_BLOCKED} are removed from every allow rule
 *   (a guard: moby's profile allows none of them to a guest without CAP_SYS_ADMIN/CAP_BPF/…).
 * - `architectures`: the native and compat architectures of x86_64 and aarch64 (moby's
 *   `archMap`); tenant-daemon/runtime/seccomp.ts narrows them to the host's at load time.
 *
 * Rerun it when GUEST_CAPABILITIES (tenant-daemon/runtime/oci-spec.ts) changes: the unit test
 * test/unit/seccomp.test.ts fails while the profile's `resolvedFor.capabilities` differs.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GUEST_CAPABILITIES } from "../tenant-daemon/runtime/oci-spec.js";

/** Go architecture names of the hosts the profile is resolved for. */
const GO_ARCHES = ["amd64", "arm64"] as const;
/** The lowest host kernel assumed when resolving `includes.minKernel`. */
const MIN_HOST_KERNEL = "6.1";
/** Never allowed, whatever moby's profile says (see the README's seccomp section). */
const ALWAYS_BLOCKED = [
  "add_key", "bpf", "clone3", "io_uring_enter", "io_uring_register", "io_uring_setup", "kexec_file_load", "kexec_load",
  "keyctl", "open_by_handle_at", "perf_event_open", "request_key", "setns", "unshare", "userfaultfd",
];

interface MobyFilter {
  caps?: string[];
  arches?: string[];
  minKernel?: string;
}
interface MobySyscall {
  names: string[];
  action: string;
  args?: unknown[] | null;
  errnoRet?: number;
  comment?: string;
  includes?: MobyFilter;
  excludes?: MobyFilter;
}
interface MobyProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap: { architecture: string; subArchitectures: string[] | null }[];
  syscalls: MobySyscall[];
}

function kernelAtLeast(have: string, need: string): boolean {
  const a = have.split(".").map(Number);
  const b = need.split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x > y;
  }
  return true;
}

function applies(s: MobySyscall, caps: readonly string[]): boolean {
  const inc = s.includes ?? {};
  const exc = s.excludes ?? {};
  if (inc.caps?.length && !inc.caps.every((c) => caps.includes(c))) return false;
  if (inc.arches?.length && !GO_ARCHES.some((a) => inc.arches?.includes(a))) return false;
  if (inc.minKernel !== undefined && !kernelAtLeast(MIN_HOST_KERNEL, inc.minKernel)) return false;
  if (exc.caps?.length && exc.caps.some((c) => caps.includes(c))) return false;
  if (exc.arches?.length && GO_ARCHES.every((a) => exc.arches?.includes(a))) return false;
  return true;
}

function main(): void {
  const [input, outArg] = process.argv.slice(2);
  if (input === undefined) {
    process.stderr.write("usage: node dist/scripts/gen-seccomp.js <moby seccomp/default.json> [out.json]\n");
    process.exit(2);
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
  const out = path.resolve(outArg ?? path.join(root, "tenant-daemon/runtime/seccomp/default.json"));
  const moby = JSON.parse(readFileSync(input, "utf8")) as MobyProfile;

  const syscalls: Record<string, unknown>[] = [];
  const removed = new Set<string>();
  for (const s of moby.syscalls) {
    if (!applies(s, GUEST_CAPABILITIES)) continue;
    let names = s.names;
    if (s.action === "SCMP_ACT_ALLOW") {
      names = names.filter((n) => !ALWAYS_BLOCKED.includes(n) || (removed.add(n), false));
      if (names.length === 0) continue;
    }
    const arches = s.includes?.arches;
    const comment = [s.comment, arches?.length ? `only on ${arches.filter((a) => (GO_ARCHES as readonly string[]).includes(a)).join("/")} (moby includes.arches)` : undefined]
      .filter((c) => c !== undefined && c !== "")
      .join("; ");
    syscalls.push({
      names: [...names],
      action: s.action,
      ...(s.args && s.args.length > 0 ? { args: s.args } : {}),
      ...(s.errnoRet !== undefined ? { errnoRet: s.errnoRet } : {}),
      ...(comment !== "" ? { comment } : {}),
    });
  }

  const archOf = (goArch: string): string => (goArch === "amd64" ? "SCMP_ARCH_X86_64" : "SCMP_ARCH_AARCH64");
  const architectures = GO_ARCHES.flatMap((a) => {
    const m = moby.archMap.find((e) => e.architecture === archOf(a));
    if (m === undefined) throw new Error(`moby archMap has no ${archOf(a)}`);
    return [m.architecture, ...(m.subArchitectures ?? [])];
  });

  const profile = {
    comment: [
      "Paddock's seccomp profile for every VM (OCI runtime-spec linux.seccomp, config-linux.md#seccomp).",
      "Derived from moby's default profile (https://github.com/moby/profiles seccomp/default.json, Apache-2.0, Copyright The Moby Authors),",
      "resolved by scripts/gen-seccomp.ts for the capabilities in resolvedFor (GUEST_CAPABILITIES in tenant-daemon/runtime/oci-spec.ts),",
      "the x86_64 and aarch64 architectures and host kernels >= resolvedFor.minKernel. Do not edit by hand: rerun the generator.",
      `Removed from moby's allow rules: ${[...removed].sort().join(", ") || "nothing"}; also never allowed: ${ALWAYS_BLOCKED.filter((n) => !removed.has(n)).join(", ")}.`,
      "Per-host-group opt-out: paddock.seccomp.<group>: unconfined (shared/tenant-config.ts).",
    ],
    resolvedFor: { capabilities: [...GUEST_CAPABILITIES], goArches: [...GO_ARCHES], minKernel: MIN_HOST_KERNEL },
    defaultAction: moby.defaultAction,
    defaultErrnoRet: moby.defaultErrnoRet ?? 1,
    architectures,
    syscalls,
  };
  writeFileSync(out, JSON.stringify(profile, null, 2) + "\n");
  process.stderr.write(`wrote ${out}: ${syscalls.length} rules, ${syscalls.reduce((n, s) => n + (s.names as string[]).length, 0)} names\n`);
}

main();
