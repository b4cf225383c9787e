/**
 * The VM seccomp profile (tenant-daemon/runtime/seccomp/default.json) as data: what it blocks,
 * its argument rules, its loader's validation, its wiring into renderOciSpec and the
 * `paddock.seccomp` opt-out of the tenant config. The profile in real runc sandboxes:
 * test/security/seccomp.test.ts.
 */
import { expect } from "chai";
import { readFileSync } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { findProjectRoot } from "../../tenant-daemon/runtime/oci-driver.js";
import { GUEST_CAPABILITIES, renderOciSpec } from "../../tenant-daemon/runtime/oci-spec.js";
import { loadSeccompProfile, parseSeccompProfile, SECCOMP_PROFILE_RELPATH, type OciSeccomp, type OciSeccompArg } from "../../tenant-daemon/runtime/seccomp.js";

/** Calls the profile must never allow, in any argument form. */
const BLOCKED = [
  "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
  "kexec_file_load", "open_by_handle_at", "io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2",
  "pivot_root", "init_module", "finit_module", "delete_module",
];
const CLONE_NEW = { NEWNS: 0x20000, NEWCGROUP: 0x02000000, NEWUTS: 0x04000000, NEWIPC: 0x08000000, NEWUSER: 0x10000000, NEWPID: 0x20000000, NEWNET: 0x40000000 };

function argMatches(a: OciSeccompArg, args: readonly number[]): boolean {
  const v = args[a.index] ?? 0;
  switch (a.op) {
    case "SCMP_CMP_EQ": return v === a.value;
    case "SCMP_CMP_NE": return v !== a.value;
    case "SCMP_CMP_LT": return v < a.value;
    case "SCMP_CMP_LE": return v <= a.value;
    case "SCMP_CMP_GT": return v > a.value;
    case "SCMP_CMP_GE": return v >= a.value;
    case "SCMP_CMP_MASKED_EQ": return Number(BigInt(v) & BigInt(a.value)) === (a.valueTwo ?? 0);
  }
}

/** The action the profile takes for `name(args…)` (first matching rule, else the default), with its errno. */
function verdict(p: OciSeccomp, name: string, args: readonly number[] = []): { action: string; errno?: number } {
  for (const rule of p.syscalls) {
    if (!rule.names.includes(name)) continue;
    if ((rule.args ?? []).every((a) => argMatches(a, args))) return { action: rule.action, errno: rule.action === "SCMP_ACT_ERRNO" ? (rule.errnoRet ?? 1) : undefined };
  }
  return { action: p.defaultAction, errno: p.defaultAction === "SCMP_ACT_ERRNO" ? (p.defaultErrnoRet ?? 1) : undefined };
}

describe("VM seccomp profile", () => {
  const profile = loadSeccompProfile({ arch: "x64" });
  const rawFile = JSON.parse(readFileSync(path.join(findProjectRoot(), SECCOMP_PROFILE_RELPATH), "utf8")) as { resolvedFor: { capabilities: string[] } };

  it("loads as an allowlist answering EPERM by default, narrowed to the host's architectures", () => {
    expect(profile.defaultAction).to.equal("SCMP_ACT_ERRNO");
    expect(profile.defaultErrnoRet).to.equal(1);
    expect(profile.architectures).to.deep.equal(["SCMP_ARCH_X86_64"]);
    expect(loadSeccompProfile({ arch: "arm64" }).architectures).to.deep.equal(["SCMP_ARCH_AARCH64"]);
    expect(() => loadSeccompProfile({ arch: "riscv64" })).to.throw(PaddockError, /no architecture for this host \(riscv64\)/);
    expect(loadSeccompProfile({ arch: "x64" })).to.equal(profile); // read once
    expect(Object.isFrozen(profile.syscalls)).to.equal(true);
    // Only OCI fields reach config.json.
    expect(Object.keys(profile).sort()).to.deep.equal(["architectures", "defaultAction", "defaultErrnoRet", "syscalls"]);
    expect(JSON.stringify(profile)).to.not.match(/comment|resolvedFor/);
  });

  it("was resolved for the guest's capability set (rerun scripts/gen-seccomp.ts when GUEST_CAPABILITIES changes)", () => {
    expect(rawFile.resolvedFor.capabilities).to.deep.equal([...GUEST_CAPABILITIES]);
  });

  it("contains no io_uring call at all", () => {
    expect(profile.syscalls.flatMap((s) => s.names).filter((n) => n.startsWith("io_uring"))).to.deep.equal([]);
  });

  it("never allows the blocked calls, with or without arguments", () => {
    for (const rule of profile.syscalls) {
      if (rule.action !== "SCMP_ACT_ALLOW" && rule.action !== "SCMP_ACT_LOG") continue;
      expect(rule.names.filter((n) => BLOCKED.includes(n)), `rule ${JSON.stringify(rule)}`).to.deep.equal([]);
    }
    for (const name of BLOCKED) expect(verdict(profile, name, [0, 0, 0]), name).to.deep.equal({ action: "SCMP_ACT_ERRNO", errno: 1 });
  });

  it("answers clone3 with ENOSYS so glibc falls back to clone", () => {
    expect(verdict(profile, "clone3")).to.deep.equal({ action: "SCMP_ACT_ERRNO", errno: 38 });
  });

  it("allows clone only without namespace flags", () => {
    const SIGCHLD = 17;
    const PTHREAD_FLAGS = 0x3d0f00; // glibc pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
    expect(verdict(profile, "clone", [SIGCHLD]).action).to.equal("SCMP_ACT_ALLOW");
    expect(verdict(profile, "clone", [PTHREAD_FLAGS]).action).to.equal("SCMP_ACT_ALLOW");
    for (const [flag, bit] of Object.entries(CLONE_NEW)) {
      expect(verdict(profile, "clone", [bit | SIGCHLD]), `CLONE_${flag}`).to.deep.equal({ action: "SCMP_ACT_ERRNO", errno: 1 });
    }
  });

  it("allows socket for every family but AF_VSOCK (40) and AF_ALG (38)", () => {
    for (const family of [1, 2, 10, 16, 17, 39, 41, 44]) expect(verdict(profile, "socket", [family, 1, 0]).action, `family ${family}`).to.equal("SCMP_ACT_ALLOW");
    for (const family of [38, 40]) expect(verdict(profile, "socket", [family, 1, 0]), `family ${family}`).to.deep.equal({ action: "SCMP_ACT_ERRNO", errno: 1 });
    // Every socket rule has an argument condition (no unconditional allow).
    expect(profile.syscalls.filter((s) => s.names.includes("socket")).every((s) => (s.args ?? []).length > 0)).to.equal(true);
  });

  it("keeps what ordinary workloads need: exec, threads, files, networking, ptrace for debuggers, chroot", () => {
    for (const name of ["execve", "openat", "mmap", "mprotect", "futex", "epoll_pwait", "statx", "rseq", "wait4", "pipe2", "connect", "ptrace", "chroot", "arch_prctl", "setuid", "chown"]) {
      expect(verdict(profile, name, [0]).action, name).to.equal("SCMP_ACT_ALLOW");
    }
  });

  it("rejects an invalid profile naming the offending field", () => {
    const base = { defaultAction: "SCMP_ACT_ERRNO", architectures: ["SCMP_ARCH_X86_64"], syscalls: [{ names: ["read"], action: "SCMP_ACT_ALLOW" }] };
    expect(parseSeccompProfile({ ...base, comment: ["x"] }, "p.json")).to.deep.equal(base);
    const bad: [unknown, RegExp][] = [
      [[], /p\.json: top level is not an object/],
      [{ ...base, defaultAction: "ALLOW" }, /defaultAction is not a seccomp action/],
      [{ ...base, architectures: [] }, /architectures is not a non-empty list/],
      [{ ...base, syscalls: [{ names: [], action: "SCMP_ACT_ALLOW" }] }, /syscalls\[0\]\.names/],
      [{ ...base, syscalls: [{ names: ["read"], action: "SCMP_ACT_NOPE" }] }, /syscalls\[0\]\.action/],
      [{ ...base, syscalls: [{ names: ["socket"], action: "SCMP_ACT_ALLOW", args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] }] }, /syscalls\[0\]\.args\[0\]\.index is not 0-5/],
      [{ ...base, syscalls: [{ names: ["socket"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 1, op: "SCMP_CMP_XX" }] }] }, /syscalls\[0\]\.args\[0\]\.op/],
    ];
    for (const [raw, msg] of bad) {
      expect(() => parseSeccompProfile(raw, "p.json"))
        .to.throw(PaddockError, msg)
        .with.property("code", "ERR_RUNTIME_UNAVAILABLE");
    }
    expect(() => loadSeccompProfile({ file: "/nonexistent/seccomp.json" })).to.throw(PaddockError, /cannot read seccomp profile/);
  });

  it("is the spec's linux.seccomp when renderOciSpec gets it, and absent otherwise", () => {
    const spec = {
      id: "pdk-t1-vm1", hostname: "vm1", cpus: 1, ramBytes: 2 ** 28, pidsLimit: 64, rootfsDir: "/r", bundleDir: "/b", bootDir: "/a", agentSocketPath: "/a.sock",
      netnsPath: undefined, userns: { path: undefined, uidStart: 2_000_000_000, size: 65_536 }, consoleLogPath: "/c.log", cgroupPath: "/paddock/t1/vm1",
    };
    const toolbox = { nodePath: "/usr/bin/node", tiniPath: "/usr/bin/tini-static", appDir: "/app" };
    expect(renderOciSpec(spec, toolbox, { swapAccounting: true, seccomp: profile }).linux.seccomp).to.equal(profile);
    expect(renderOciSpec(spec, toolbox, { swapAccounting: true })).to.not.have.nested.property("linux.seccomp");
  });
});

describe("tenant config paddock.seccomp", () => {
  const ctx = { baseDir: "/etc/paddock", env: { PADDOCK_STATE_DIR: "/tmp/s", PADDOCK_RUN_DIR: "/tmp/r" } };
  const yaml = (seccomp: string | undefined) => `
config:
  host_groups:
  - name: sbox
    vcpu: 1
    ram_gb: 1
  - name: dev
    vcpu: 1
    ram_gb: 1
paddock:
  tenant_id: t1
${seccomp === undefined ? "" : `  seccomp: ${seccomp}\n`}`;
  const load = (text: string) => parseTenantConfig(parseYamlSafe(text, "t.yaml"), "t.yaml", ctx);

  it("reads the per-host-group opt-out; groups not named get the profile", () => {
    expect(load(yaml(undefined)).paddock.seccomp).to.deep.equal({});
    expect(load(yaml("{ dev: unconfined, sbox: default }")).paddock.seccomp).to.deep.equal({ dev: "unconfined", sbox: "default" });
  });

  it("refuses unknown groups and modes with their YAML paths", () => {
    let problems: string[] = [];
    try {
      load(yaml("{ nope: unconfined, sbox: off }"));
    } catch (err) {
      expect(err).to.be.instanceOf(PaddockError);
      problems = ((err as PaddockError).details?.problems as { path: string; message: string }[]).map((p) => `${p.path}: ${p.message}`);
    }
    expect(problems).to.deep.equal([
      'paddock.seccomp.nope: no host group named "nope" (host groups: sbox, dev)',
      'paddock.seccomp.sbox: expected default or unconfined, got "off"',
    ]);
  });
});
