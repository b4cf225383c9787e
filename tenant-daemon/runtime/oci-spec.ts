/**
 * Pure renderer of the OCI runtime spec (`config.json`) of one VM sandbox.
 *
 * Based on the defaults of `runc spec` (runc 1.1.5: mounts, masked and read-only paths,
 * deny-all device rule to which runc adds its default allow list of /dev/null, zero, full,
 * tty, random, urandom, pts and ptmx), adapted to a long-lived "VM": writable root, tini as
 * PID 1, the Paddock toolbox bound read-only under {@link GUEST_TOOLBOX_DIR}, cgroup limits,
 * and the sandbox boundary of docs/security.md: a user namespace (guest root is an unprivileged
 * host uid), a cgroup namespace, no_new_privs, seccomp, masked /proc and /sys paths.
 * Spec: https://github.com/opencontainers/runtime-spec/blob/v1.0.2/config.md
 */
import { AGENT_DIAL_SOCKET_NAME, GUEST_AGENT_DIAL_DIR, GUEST_AGENT_DIR, GUEST_AGENT_FD, GUEST_TOOLBOX_DIR, type VmRuntimeSpec } from "./driver.js";
import type { OciSeccomp } from "./seccomp.js";

/** Host paths bound read-only into every guest (the "toolbox"). Nothing else of the host is. */
export interface OciToolbox {
  /** Host node binary (`process.execPath`) → `/.paddock/bin/node`. Dynamically linked: the image needs glibc + libstdc++. */
  nodePath: string;
  /** Static tini (`/usr/bin/tini-static`) → `/.paddock/bin/tini`. */
  tiniPath: string;
  /**
   * The built toolbox directory (`dist/toolbox`: the agent bundle `agent.cjs` and node-pty's
   * runtime files, made by scripts/build-agent-bundle.ts) → `/.paddock/app`. Never the project tree.
   */
  appDir: string;
}

/** Options of {@link renderOciSpec} that depend on the host rather than on the VM. */
export interface OciRenderOptions {
  /**
   * Whether the kernel does swap accounting (cgroup v1 `memory.memsw.*` present, or cgroup v2).
   * When true, memory+swap is limited to the memory limit (no swap beyond it); when false runc
   * would fail writing `memory.memsw.limit_in_bytes`, so the swap limit is left out.
   */
  swapAccounting: boolean;
  /** The spec's `linux.seccomp` (tenant-daemon/runtime/seccomp.ts); undefined ⇒ no seccomp filter. */
  seccomp?: OciSeccomp;
}

/** CFS period used for the vCPU quota, microseconds. */
export const CPU_PERIOD_US = 100_000;
export const GUEST_NODE_PATH = `${GUEST_TOOLBOX_DIR}/bin/node`;
export const GUEST_TINI_PATH = `${GUEST_TOOLBOX_DIR}/bin/tini`;
export const GUEST_APP_DIR = `${GUEST_TOOLBOX_DIR}/app`;
/** The guest agent inside the guest: tenant-daemon/agent/main.ts bundled into one CommonJS file by `npm run build`. */
export const GUEST_AGENT_ENTRY = `${GUEST_APP_DIR}/agent.cjs`;

/**
 * Default init command: tini as PID 1 (`-s` subreaper, harmless as PID 1 but kept should tini
 * ever not be PID 1; `-g` forwards signals to the agent's whole process group) running the
 * guest agent with the host's node.
 */
export const DEFAULT_GUEST_ARGS: readonly string[] = [GUEST_TINI_PATH, "-s", "-g", "--", GUEST_NODE_PATH, GUEST_AGENT_ENTRY];

/**
 * Capabilities of the guest's root, all of them relative to the VM's own user namespace (they
 * give no power over host objects): `runc spec`'s defaults (AUDIT_WRITE, KILL,
 * NET_BIND_SERVICE) plus the rest of the set container runtimes such as Docker grant by
 * default, which the agent needs to run commands as other users (SETUID/SETGID), chown files
 * it writes for them (CHOWN, FOWNER, DAC_OVERRIDE, FSETID), and which ordinary guest tooling
 * expects (MKNOD, NET_RAW for ping, SYS_CHROOT, SETPCAP, SETFCAP).
 * Not granted: SYS_ADMIN, NET_ADMIN, SYS_MODULE, SYS_PTRACE, SYS_TIME, …: even inside a user
 * namespace they open kernel code (mounts, netfilter, …) where container escapes begin.
 */
export const GUEST_CAPABILITIES: readonly string[] = [
  "CAP_AUDIT_WRITE",
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_MKNOD",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_RAW",
  "CAP_SETFCAP",
  "CAP_SETGID",
  "CAP_SETPCAP",
  "CAP_SETUID",
  "CAP_SYS_CHROOT",
];

/**
 * Masked paths: `runc spec`'s (runc 1.1.5) plus /proc/interrupts and
 * /sys/devices/virtual/powercap (host interrupt counts and the RAPL energy counters, a side
 * channel), which container runtimes such as Docker mask too.
 */
export const MASKED_PATHS: readonly string[] = [
  "/proc/acpi",
  "/proc/asound",
  "/proc/interrupts",
  "/proc/kcore",
  "/proc/keys",
  "/proc/latency_stats",
  "/proc/timer_list",
  "/proc/timer_stats",
  "/proc/sched_debug",
  "/sys/firmware",
  "/sys/devices/virtual/powercap",
  // Block devices are host-wide: loop*/loop/backing_file names every tenant's VM disks.
  "/sys/devices/virtual/block",
  "/proc/scsi",
];

/** `runc spec` read-only paths (runc 1.1.5). */
export const READONLY_PATHS: readonly string[] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/**
 * Environment of the guest's init (and so of the agent). The agent's channel: the inherited
 * listener (`PADDOCK_AGENT_FD`), or with `spec.agentDialDir` the reverse channel's socket it
 * dials (`PADDOCK_AGENT_DIAL`, tenant-daemon/agent/reverse-transport.ts).
 */
export function guestEnv(spec: Pick<VmRuntimeSpec, "hostname" | "agentDialDir">): string[] {
  return [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    `HOSTNAME=${spec.hostname}`,
    `PADDOCK_AGENT_DIR=${GUEST_AGENT_DIR}`,
    spec.agentDialDir === undefined ? `PADDOCK_AGENT_FD=${GUEST_AGENT_FD}` : `PADDOCK_AGENT_DIAL=${GUEST_AGENT_DIAL_DIR}/${AGENT_DIAL_SOCKET_NAME}`,
    // The agent writes /etc/hostname and /etc/resolv.conf here from boot.json, and keeps its
    // work files (the userdata script) on the guest's own /run tmpfs.
    "PADDOCK_AGENT_ETC=/etc",
    "PADDOCK_AGENT_WORK_DIR=/run/paddock",
    `PADDOCK_TOOLBOX_DIR=${GUEST_TOOLBOX_DIR}`,
  ];
}

/** One OCI id mapping (runtime-spec `linux.uidMappings` / `gidMappings`). */
export interface OciIdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

/** An OCI mount entry. */
export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** The subset of the OCI runtime spec Paddock renders (runtime-spec v1.0.2). */
export interface OciSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: {
    cgroupsPath: string;
    resources: {
      devices: { allow: boolean; access: string }[];
      cpu: { quota: number; period: number };
      memory: { limit: number; swap?: number };
      pids: { limit: number };
    };
    namespaces: { type: string; path?: string }[];
    uidMappings: OciIdMapping[];
    gidMappings: OciIdMapping[];
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: OciSeccomp;
  };
}

/**
 * Render the `config.json` of one VM. Pure: same input, same output.
 *
 * - process: tini (PID 1) + agent unless `spec.args` overrides; root 0:0 (host uid
 *   `spec.userns.uidStart`), cwd `/`, no_new_privs, the capability set above.
 * - root: the overlay rootfs, writable. `/tmp` stays on the rootfs (the VM's disk) so a full
 *   disk is ENOSPC there too, as in a VM.
 * - mounts: `runc spec`'s set, a `/run` tmpfs, the boot dir read-only at {@link GUEST_AGENT_DIR},
 *   with `spec.agentDialDir` the reverse channel's dir read-only at {@link GUEST_AGENT_DIAL_DIR},
 *   and the toolbox read-only under {@link GUEST_TOOLBOX_DIR}. Nothing of the host is writable
 *   from the guest; /etc/hostname and /etc/resolv.conf are written by the agent, inside.
 * - linux: pid, mount, uts, ipc, cgroup, network (joins `spec.netnsPath` when given) and user
 *   namespaces (joins `spec.userns.path` when given, which owns that netns); uid and gid maps
 *   0 → `uidStart` for `size` ids; cpu quota `cpus × 100 000` µs per 100 000 µs period; memory
 *   limit `ramBytes` with memory+swap = `ramBytes`; pids limit.
 * - seccomp: `options.seccomp` as given (OciDriver passes tenant-daemon/runtime/seccomp/default.json
 *   unless the VM's host group opted out); none when undefined.
 *
 * @throws RangeError on non-positive cpus/ramBytes/pidsLimit, a bad id mapping, or relative paths.
 */
export function renderOciSpec(spec: VmRuntimeSpec, toolbox: OciToolbox, options: OciRenderOptions = { swapAccounting: true }): OciSpec {
  if (!(spec.cpus > 0)) throw new RangeError(`cpus must be > 0, got ${spec.cpus}`);
  if (!(spec.ramBytes > 0) || !Number.isSafeInteger(spec.ramBytes)) throw new RangeError(`ramBytes must be a positive integer, got ${spec.ramBytes}`);
  if (!(spec.pidsLimit > 0) || !Number.isSafeInteger(spec.pidsLimit)) throw new RangeError(`pidsLimit must be a positive integer, got ${spec.pidsLimit}`);
  for (const [what, p] of [
    ["rootfsDir", spec.rootfsDir],
    ["bootDir", spec.bootDir],
    ["nodePath", toolbox.nodePath],
    ["tiniPath", toolbox.tiniPath],
    ["appDir", toolbox.appDir],
    ...(spec.agentDialDir === undefined ? [] : [["agentDialDir", spec.agentDialDir] as const]),
  ] as const) {
    if (!p.startsWith("/")) throw new RangeError(`${what} must be an absolute path, got ${JSON.stringify(p)}`);
  }
  const { uidStart, size } = spec.userns;
  if (!Number.isSafeInteger(uidStart) || uidStart < 1 || !Number.isSafeInteger(size) || size < 1 || uidStart + size > 2 ** 32 - 1) {
    throw new RangeError(`userns mapping must be positive integers within 32 bits, got uidStart ${uidStart}, size ${size}`);
  }
  if (!spec.cgroupPath.startsWith("/")) throw new RangeError(`cgroupPath must start with /, got ${JSON.stringify(spec.cgroupPath)}`);

  const caps = [...GUEST_CAPABILITIES];
  const roBind = ["rbind", "ro", "nosuid", "nodev"];
  const memory: { limit: number; swap?: number } = { limit: spec.ramBytes };
  if (options.swapAccounting) memory.swap = spec.ramBytes;

  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [...(spec.args ?? DEFAULT_GUEST_ARGS)],
      env: guestEnv(spec),
      cwd: "/",
      // No ambient or inheritable sets (as Docker since 20.10, CVE-2022-24769): a program the
      // agent runs as another user must not inherit capabilities through execve.
      capabilities: { bounding: caps, effective: [...caps], permitted: [...caps] },
      // No rlimits: the guest inherits the daemon's (set them on the daemon's unit). runc would
      // need CAP_SYS_RESOURCE to raise a hard limit above the daemon's, which hosts may withhold,
      // and `runc spec`'s 1024 open files is too few for the agent's exec sessions.
      // No privilege gain through execve (setuid bits, file capabilities): a guest process never
      // holds more than what it started with. setuid helpers (su, sudo) do not work in a VM;
      // the agent runs commands as any user itself. prctl(2) PR_SET_NO_NEW_PRIVS.
      noNewPrivileges: true,
    },
    root: { path: spec.rootfsDir, readonly: false },
    hostname: spec.hostname,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      {
        destination: "/dev/pts",
        type: "devpts",
        source: "devpts",
        options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
      },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
      { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755", "size=65536k"] },
      { destination: GUEST_AGENT_DIR, type: "bind", source: spec.bootDir, options: [...roBind, "noexec"] },
      ...(spec.agentDialDir === undefined ? [] : [{ destination: GUEST_AGENT_DIAL_DIR, type: "bind", source: spec.agentDialDir, options: [...roBind, "noexec"] }]),
      { destination: GUEST_NODE_PATH, type: "bind", source: toolbox.nodePath, options: roBind },
      { destination: GUEST_TINI_PATH, type: "bind", source: toolbox.tiniPath, options: roBind },
      { destination: GUEST_APP_DIR, type: "bind", source: toolbox.appDir, options: roBind },
    ],
    annotations: { "io.paddock.hostname": spec.hostname },
    linux: {
      cgroupsPath: spec.cgroupPath,
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        cpu: { quota: Math.round(spec.cpus * CPU_PERIOD_US), period: CPU_PERIOD_US },
        memory,
        pids: { limit: spec.pidsLimit },
      },
      namespaces: [
        { type: "pid" },
        spec.netnsPath === undefined ? { type: "network" } : { type: "network", path: spec.netnsPath },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
        { type: "cgroup" },
        spec.userns.path === undefined ? { type: "user" } : { type: "user", path: spec.userns.path },
      ],
      uidMappings: [{ containerID: 0, hostID: uidStart, size }],
      gidMappings: [{ containerID: 0, hostID: uidStart, size }],
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
      ...(options.seccomp !== undefined ? { seccomp: options.seccomp } : {}),
    },
  };
}
