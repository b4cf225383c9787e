/**
 * Generate tenant-daemon/runtime/seccomp/default.json, the seccomp profile of every VM:
 *
 * ```
 * node dist/scripts/gen-seccomp.js            # writes the profile in the source tree
 * node dist/scripts/gen-seccomp.js out.json   # writes it elsewhere
 * ```
 *
 * Paddock's own profile, made of two inputs only:
 * - the kernel's system call table as this machine's kernel ABI headers give it (Debian's
 *   `linux-libc-dev`, which gcc's `libc6-dev` pulls in; scripts/setup.sh installs it): every
 *   `#define __NR_<name>` of {@link HEADERS}, `asm/unistd_64.h` for x86_64 and the generic
 *   `asm-generic/unistd.h` that aarch64 uses (all its `#ifdef` branches: names the host's
 *   libseccomp does not know are skipped by runc);
 * - {@link POLICY} below: the calls refused (each with its reason; mostly what a container
 *   runtime withholds with the capabilities the guest does not get) and the calls allowed only
 *   for some arguments.
 *
 * The profile is an allowlist: `defaultAction` SCMP_ACT_ERRNO with EPERM, one ALLOW rule with
 * every table name the policy does not mention, then the conditional rules. Output is sorted
 * and depends only on the headers, so regenerating on a box with the same headers gives the
 * same bytes (test/unit/seccomp.test.ts checks the committed file against this generator).
 * tenant-daemon/runtime/seccomp.ts keeps only the host's native architecture at load time.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseSeccompProfile, type OciSeccompArg } from "../tenant-daemon/runtime/seccomp.js";

/** The kernel ABI headers the table is read from, per seccomp architecture. */
export const HEADERS = {
  SCMP_ARCH_X86_64: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
  SCMP_ARCH_AARCH64: "/usr/include/asm-generic/unistd.h",
} as const;

/** `__NR_*` macros of the generic header that are not system calls. */
const NOT_SYSCALLS = new Set(["syscalls", "arch_specific_syscall"]);

/** One policy decision. `refuse`: left out of the allowlist (EPERM); `allow`: kept (recorded for the reader); `rules`: only these rules. */
export interface PolicyEntry {
  names: string[];
  reason: string;
  verdict: "refuse" | "allow" | { rules: { action: "SCMP_ACT_ALLOW" | "SCMP_ACT_ERRNO"; errnoRet?: number; args?: OciSeccompArg[] }[] };
  /** Names of the 32-bit x86 ABI only: absent from both 64-bit tables, refused by the default action anyway. */
  i386Only?: boolean;
}

const EQ = (index: number, value: number): OciSeccompArg => ({ index, value, op: "SCMP_CMP_EQ" });
const MASKED_EQ = (index: number, mask: number, value: number): OciSeccompArg => ({ index, value: mask, valueTwo: value, op: "SCMP_CMP_MASKED_EQ" });

/** CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET. */
export const CLONE_NAMESPACE_FLAGS = 0x7e020000;
const AF_ALG = 38;
const AF_VSOCK = 40;
/** Socket families the filter lets through: below 64 (AF_MAX is 46 in Linux 6.1; the kernel refuses the rest). */
const SOCKET_FAMILY_LIMIT = 64;

/**
 * `[lo, hi]` as aligned power-of-two blocks, each a MASKED_EQ on the low 32 bits of arg 0.
 * The kernel reads `socket(int family, …)` as 32 bits, so a comparison such as `arg0 > 40`
 * on the whole 64-bit register would let `(1 << 32) | AF_VSOCK` through; a mask on the low
 * 32 bits does not.
 */
function familyBlocks(lo: number, hi: number): OciSeccompArg[] {
  const out: OciSeccompArg[] = [];
  for (let v = lo; v <= hi; ) {
    let size = 1;
    while (v % (size * 2) === 0 && v + size * 2 - 1 <= hi) size *= 2;
    out.push(MASKED_EQ(0, (0xffffffff - (size - 1)) >>> 0, v));
    v += size;
  }
  return out;
}

/** Paddock's seccomp policy. Every table name not named here is allowed. */
export const POLICY: readonly PolicyEntry[] = [
  // Namespaces and the mount API: the VM's namespaces and mounts are set up by the runtime, never by the guest.
  { names: ["unshare", "setns"], verdict: "refuse", reason: "new or other namespaces (a user namespace reopens mount, bpf and netfilter code to the guest)" },
  { names: ["mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"], verdict: "refuse", reason: "the mount API: the guest's mounts are fixed by the runtime (CAP_SYS_ADMIN is withheld)" },
  // Kernel surfaces with a record of exploitable bugs that guests do not need.
  { names: ["keyctl", "add_key", "request_key"], verdict: "refuse", reason: "kernel keyrings are not namespaced" },
  { names: ["bpf"], verdict: "refuse", reason: "eBPF programs in the kernel (CAP_BPF is withheld)" },
  { names: ["perf_event_open"], verdict: "refuse", reason: "performance counters: a side channel onto other tenants" },
  { names: ["userfaultfd"], verdict: "refuse", reason: "stalls kernel page faults at will, a building block of kernel race exploits" },
  { names: ["io_uring_setup", "io_uring_enter", "io_uring_register"], verdict: "refuse", reason: "io_uring bypasses per-call filtering; programs fall back to ordinary I/O" },
  { names: ["open_by_handle_at", "name_to_handle_at"], verdict: "refuse", reason: "file handles reach files outside the guest's root (CAP_DAC_READ_SEARCH is withheld)" },
  { names: ["kcmp", "pidfd_getfd", "process_madvise"], verdict: "refuse", reason: "inspect or act on another process's kernel objects beyond ptrace's checks" },
  { names: ["fanotify_init", "fanotify_mark"], verdict: "refuse", reason: "filesystem-wide event monitoring (CAP_SYS_ADMIN is withheld)" },
  { names: ["modify_ldt"], verdict: "refuse", reason: "16-bit x86 segments for old emulators only; a history of kernel bugs" },
  // Host-wide state: needs a capability the guest does not hold.
  { names: ["kexec_load", "kexec_file_load", "reboot"], verdict: "refuse", reason: "replaces or restarts the host kernel (CAP_SYS_BOOT is withheld)" },
  { names: ["init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"], verdict: "refuse", reason: "kernel modules (CAP_SYS_MODULE is withheld)" },
  { names: ["swapon", "swapoff"], verdict: "refuse", reason: "host swap (CAP_SYS_ADMIN is withheld)" },
  { names: ["acct"], verdict: "refuse", reason: "process accounting (CAP_SYS_PACCT is withheld)" },
  { names: ["settimeofday", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64", "adjtimex"], verdict: "refuse", reason: "sets or tunes the host clock; the clock is not namespaced (CAP_SYS_TIME is withheld)" },
  { names: ["stime"], verdict: "refuse", i386Only: true, reason: "sets the host clock (32-bit x86 only)" },
  { names: ["iopl", "ioperm"], verdict: "refuse", reason: "direct I/O port access (CAP_SYS_RAWIO is withheld)" },
  { names: ["vm86", "vm86old"], verdict: "refuse", i386Only: true, reason: "virtual 8086 mode (32-bit x86 only)" },
  { names: ["lookup_dcookie"], verdict: "refuse", reason: "profiler interface reading paths of any file (CAP_SYS_ADMIN is withheld)" },
  { names: ["quotactl", "quotactl_fd"], verdict: "refuse", reason: "filesystem quotas of the host's disks (CAP_SYS_ADMIN is withheld)" },
  { names: ["syslog"], verdict: "refuse", reason: "the host kernel's log (CAP_SYSLOG is withheld)" },
  { names: ["sethostname", "setdomainname"], verdict: "refuse", reason: "the VM's names are set by the runtime (CAP_SYS_ADMIN is withheld)" },
  { names: ["vhangup"], verdict: "refuse", reason: "hangs up the controlling terminal (CAP_SYS_TTY_CONFIG is withheld)" },
  { names: ["mbind", "set_mempolicy", "set_mempolicy_home_node", "get_mempolicy", "move_pages", "migrate_pages"], verdict: "refuse", reason: "NUMA placement of memory: the host's layout, not the guest's" },
  // Obsolete or unimplemented.
  { names: ["_sysctl", "uselib", "ustat", "sysfs", "nfsservctl"], verdict: "refuse", reason: "obsolete interfaces removed from or dead in current kernels" },
  { names: ["afs_syscall", "tuxcall", "security", "getpmsg", "putpmsg", "vserver", "epoll_ctl_old", "epoll_wait_old"], verdict: "refuse", reason: "table slots Linux does not implement" },
  // Allowed only for some arguments.
  {
    names: ["clone"],
    verdict: { rules: [{ action: "SCMP_ACT_ALLOW", args: [MASKED_EQ(0, CLONE_NAMESPACE_FLAGS, 0)] }] },
    reason: "fork and threads, without CLONE_NEW* namespace flags (flags are arg 0 on x86_64 and aarch64)",
  },
  {
    names: ["clone3"],
    verdict: { rules: [{ action: "SCMP_ACT_ERRNO", errnoRet: 38 }] },
    reason: "ENOSYS: its flags sit in memory seccomp cannot read; glibc falls back to clone",
  },
  {
    names: ["socket"],
    verdict: { rules: [...familyBlocks(0, AF_ALG - 1), ...familyBlocks(AF_ALG + 1, AF_VSOCK - 1), ...familyBlocks(AF_VSOCK + 1, SOCKET_FAMILY_LIMIT - 1)].map((a) => ({ action: "SCMP_ACT_ALLOW" as const, args: [a] })) },
    reason: "every family but AF_ALG (kernel crypto) and AF_VSOCK (the host's vsock); one rule per aligned block of families, compared on the low 32 bits",
  },
  {
    names: ["personality"],
    verdict: { rules: [0x0, 0x8, 0x20000, 0x20008, 0xffffffff].map((v) => ({ action: "SCMP_ACT_ALLOW" as const, args: [EQ(0, v)] })) },
    reason: "only PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the 0xffffffff query (no READ_IMPLIES_EXEC or ADDR_NO_RANDOMIZE)",
  },
  // Allowed on purpose (recorded so the choice is visible).
  { names: ["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"], verdict: "allow", reason: "unprivileged self-sandboxing only narrows what a process can do" },
  { names: ["seccomp"], verdict: "allow", reason: "programs (browsers, systemd units) add their own filters; filters only narrow" },
  { names: ["ptrace", "process_vm_readv", "process_vm_writev"], verdict: "allow", reason: "debuggers and tracers inside the VM; the kernel's ptrace checks stay in force" },
  { names: ["chroot"], verdict: "allow", reason: "CAP_SYS_CHROOT is granted (package builds, chroot tools)" },
];

/** The system call names of a kernel ABI header: every `#define __NR_<name>`, sorted and unique. */
export function syscallNames(headerText: string): string[] {
  const names = new Set<string>();
  for (const m of headerText.matchAll(/^#define\s+__NR_([a-z0-9_]+)\s/gm)) {
    const name = m[1] as string;
    if (!NOT_SYSCALLS.has(name)) names.add(name);
  }
  return [...names].sort();
}

const sortNames = (names: Iterable<string>): string[] => [...names].sort();

/**
 * The profile for the given tables (seccomp architecture → header names), as the object
 * written to default.json.
 * @throws Error when a policy name is in no table (a typo, or a call the kernel dropped) or is named twice
 */
export function buildProfile(tables: Readonly<Record<string, readonly string[]>>): Record<string, unknown> {
  const all = new Set(Object.values(tables).flat());
  const seen = new Set<string>();
  for (const e of POLICY) {
    for (const n of e.names) {
      if (seen.has(n)) throw new Error(`policy names ${n} twice`);
      seen.add(n);
      if (!all.has(n) && e.i386Only !== true) throw new Error(`policy name ${n} is in no syscall table (${Object.keys(tables).join(", ")})`);
    }
  }
  const notPlain = new Set(POLICY.filter((e) => e.verdict !== "allow").flatMap((e) => e.names));
  const plain = sortNames([...all].filter((n) => !notPlain.has(n)));

  const syscalls: Record<string, unknown>[] = [{ names: plain, action: "SCMP_ACT_ALLOW", comment: "the kernel's calls not refused or restricted by the policy" }];
  for (const e of POLICY) {
    if (typeof e.verdict === "string") continue;
    for (const r of e.verdict.rules) {
      syscalls.push({
        names: [...e.names],
        action: r.action,
        ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}),
        ...(r.args !== undefined ? { args: r.args } : {}),
        comment: e.reason,
      });
    }
  }

  const refused = POLICY.filter((e) => e.verdict === "refuse");
  return {
    comment: [
      "Paddock's own seccomp profile for every VM (OCI runtime-spec linux.seccomp, config-linux.md#seccomp).",
      "Generated by scripts/gen-seccomp.ts from the kernel's syscall table (the linux-libc-dev headers asm/unistd_64.h and asm-generic/unistd.h)",
      "and the policy in that script: an allowlist of the kernel's system calls minus the refused set (modelled on the capabilities a container runtime withholds),",
      "with clone, clone3, socket and personality restricted by argument. Do not edit by hand: change the policy and rerun the generator.",
      ...refused.map((e) => `Refused (EPERM): ${sortNames(e.names).join(", ")}: ${e.reason}.`),
      "Per-host-group opt-out: paddock.seccomp.<group>: unconfined (shared/tenant-config.ts).",
    ],
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 1,
    architectures: Object.keys(tables),
    syscalls,
  };
}

/** The profile's file text (what is committed) from the headers at {@link HEADERS}. */
export function generateProfileText(headers: Readonly<Record<string, string>> = HEADERS): string {
  const tables: Record<string, string[]> = {};
  for (const [arch, file] of Object.entries(headers)) tables[arch] = syscallNames(readFileSync(file, "utf8"));
  const profile = buildProfile(tables);
  parseSeccompProfile(profile, "generated profile"); // the loader's own validation
  return JSON.stringify(profile, null, 2) + "\n";
}

function main(): void {
  const [outArg] = process.argv.slice(2);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
  const out = path.resolve(outArg ?? path.join(root, "tenant-daemon/runtime/seccomp/default.json"));
  const text = generateProfileText();
  writeFileSync(out, text);
  const syscalls = (JSON.parse(text) as { syscalls: { names: string[] }[] }).syscalls;
  process.stderr.write(`wrote ${out}: ${syscalls.length} rules, ${syscalls[0]?.names.length ?? 0} names allowed unconditionally\n`);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
