import { expect } from "chai";
import { DEFAULT_GUEST_ARGS, renderOciSpec, type OciToolbox } from "../../tenant-daemon/runtime/oci-spec.js";
import type { VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";

const toolbox: OciToolbox = { nodePath: "/usr/bin/node", tiniPath: "/usr/bin/tini-static", appDir: "/opt/paddock/dist/toolbox" };

function vm(over: Partial<VmRuntimeSpec> = {}): VmRuntimeSpec {
  return {
    id: "pdk-a3cf-sbox-1",
    hostname: "sbox-1",
    cpus: 2,
    ramBytes: 512 * 1024 * 1024,
    pidsLimit: 4096,
    rootfsDir: "/run/paddock/tenants/a3cf/bundles/sbox-1/rootfs",
    bundleDir: "/run/paddock/tenants/a3cf/bundles/sbox-1",
    bootDir: "/run/paddock/tenants/a3cf/vms/sbox-1/boot",
    agentSocketPath: "/run/paddock/tenants/a3cf/vms/sbox-1/agent.sock",
    netnsPath: "/var/run/netns/pdk-a3cf-sbox-1",
    userns: { path: "/run/paddock/tenants/a3cf/userns/sbox-1", uidStart: 2_000_000_000, size: 65_536 },
    consoleLogPath: "/var/lib/paddock/tenants/a3cf/logs/sbox-1.log",
    cgroupPath: "/paddock/a3cf/sbox-1",
    ...over,
  };
}

const caps = [
  "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_MKNOD",
  "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
];

/** The whole expected config.json of {@link vm}() (golden). */
const golden = {
  ociVersion: "1.0.2",
  process: {
    terminal: false,
    user: { uid: 0, gid: 0 },
    args: ["/.paddock/bin/tini", "-s", "-g", "--", "/.paddock/bin/node", "/.paddock/app/agent.cjs"],
    env: [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/root",
      "LANG=C.UTF-8",
      "HOSTNAME=sbox-1",
      "PADDOCK_AGENT_DIR=/run/paddock-agent",
      "PADDOCK_AGENT_FD=3",
      "PADDOCK_AGENT_ETC=/etc",
      "PADDOCK_AGENT_WORK_DIR=/run/paddock",
      "PADDOCK_TOOLBOX_DIR=/.paddock",
    ],
    cwd: "/",
    capabilities: { bounding: caps, effective: caps, permitted: caps },
    noNewPrivileges: true,
  },
  root: { path: "/run/paddock/tenants/a3cf/bundles/sbox-1/rootfs", readonly: false },
  hostname: "sbox-1",
  mounts: [
    { destination: "/proc", type: "proc", source: "proc" },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    { destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755", "size=65536k"] },
    { destination: "/run/paddock-agent", type: "bind", source: "/run/paddock/tenants/a3cf/vms/sbox-1/boot", options: ["rbind", "ro", "nosuid", "nodev", "noexec"] },
    { destination: "/.paddock/bin/node", type: "bind", source: "/usr/bin/node", options: ["rbind", "ro", "nosuid", "nodev"] },
    { destination: "/.paddock/bin/tini", type: "bind", source: "/usr/bin/tini-static", options: ["rbind", "ro", "nosuid", "nodev"] },
    { destination: "/.paddock/app", type: "bind", source: "/opt/paddock/dist/toolbox", options: ["rbind", "ro", "nosuid", "nodev"] },
  ],
  annotations: { "io.paddock.hostname": "sbox-1" },
  linux: {
    cgroupsPath: "/paddock/a3cf/sbox-1",
    resources: {
      devices: [{ allow: false, access: "rwm" }],
      cpu: { quota: 200000, period: 100000 },
      memory: { limit: 536870912, swap: 536870912 },
      pids: { limit: 4096 },
    },
    namespaces: [
      { type: "pid" }, { type: "network", path: "/var/run/netns/pdk-a3cf-sbox-1" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "cgroup" },
      { type: "user", path: "/run/paddock/tenants/a3cf/userns/sbox-1" },
    ],
    uidMappings: [{ containerID: 0, hostID: 2_000_000_000, size: 65_536 }],
    gidMappings: [{ containerID: 0, hostID: 2_000_000_000, size: 65_536 }],
    maskedPaths: [
      "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
      "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/sys/devices/virtual/block", "/proc/scsi",
    ],
    readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
  },
};

describe("renderOciSpec", () => {
  it("renders the golden config.json for a VM joining a netns", () => {
    expect(renderOciSpec(vm(), toolbox)).to.deep.equal(golden);
  });

  it("is pure: same input, equal output, and the output shares no arrays with its constants", () => {
    const a = renderOciSpec(vm(), toolbox);
    a.process.args.push("x");
    a.process.capabilities.bounding.push("CAP_SYS_ADMIN");
    a.linux.maskedPaths.pop();
    expect(renderOciSpec(vm(), toolbox)).to.deep.equal(golden);
    expect(DEFAULT_GUEST_ARGS).to.have.length(6);
  });

  it("runs the toolbox's one-file agent bundle under tini, or the args override", () => {
    expect(renderOciSpec(vm(), toolbox).process.args).to.deep.equal([...DEFAULT_GUEST_ARGS]);
    expect(renderOciSpec(vm({ args: ["/bin/true"] }), toolbox).process.args).to.deep.equal(["/bin/true"]);
  });

  it("creates a fresh network namespace when no netns path is given", () => {
    const ns = renderOciSpec(vm({ netnsPath: undefined }), toolbox).linux.namespaces;
    expect(ns).to.deep.include({ type: "network" });
    expect(ns.find((n) => n.type === "network")).to.not.have.property("path");
  });

  it("always runs in a user and a cgroup namespace, and keeps /tmp on the VM's disk", () => {
    const s = renderOciSpec(vm(), toolbox);
    expect(s.linux.namespaces.map((n) => n.type)).to.have.members(["pid", "network", "ipc", "uts", "mount", "cgroup", "user"]);
    const fresh = renderOciSpec(vm({ userns: { path: undefined, uidStart: 3_000_000, size: 65_536 } }), toolbox);
    expect(fresh.linux.namespaces).to.deep.include({ type: "user" });
    expect(fresh.linux.uidMappings).to.deep.equal([{ containerID: 0, hostID: 3_000_000, size: 65_536 }]);
    expect(s.mounts.map((m) => m.destination)).to.not.include("/tmp");
    expect(() => renderOciSpec(vm({ userns: { path: undefined, uidStart: 0, size: 65_536 } }), toolbox)).to.throw(RangeError, /userns/);
    expect(() => renderOciSpec(vm({ userns: { path: undefined, uidStart: 2 ** 32 - 10, size: 65_536 } }), toolbox)).to.throw(RangeError, /userns/);
  });

  it("binds the toolbox and the boot dir read-only: nothing of the host is writable from the guest", () => {
    const s = renderOciSpec(vm(), toolbox);
    const binds = s.mounts.filter((m) => m.type === "bind");
    for (const b of binds) expect(b.options, b.destination).to.include("ro");
    expect(s.process.noNewPrivileges).to.equal(true);
    // The agent dir must be mounted after the /run tmpfs, or the tmpfs would hide it.
    const dests = s.mounts.map((m) => m.destination);
    expect(dests.indexOf("/run/paddock-agent")).to.be.greaterThan(dests.indexOf("/run"));
  });

  it("with agentDialDir: binds the reverse channel's dir read-only and tells the agent to dial, not to use fd 3", () => {
    const plain = renderOciSpec(vm(), toolbox);
    expect(plain.process.env).to.include("PADDOCK_AGENT_FD=3");
    expect(plain.process.env.some((e) => e.startsWith("PADDOCK_AGENT_DIAL"))).to.equal(false);
    expect(plain.mounts.map((m) => m.destination)).to.not.include("/run/paddock-dial");
    const dialDir = "/run/paddock/tenants/a3cf/vms/sbox-1/agent-dial";
    const s = renderOciSpec(vm({ agentDialDir: dialDir }), toolbox);
    expect(s.process.env).to.include("PADDOCK_AGENT_DIAL=/run/paddock-dial/agent.sock");
    expect(s.process.env.some((e) => e.startsWith("PADDOCK_AGENT_FD"))).to.equal(false);
    const m = s.mounts.find((x) => x.destination === "/run/paddock-dial");
    expect(m).to.deep.equal({ destination: "/run/paddock-dial", type: "bind", source: dialDir, options: ["rbind", "ro", "nosuid", "nodev", "noexec"] });
    const dests = s.mounts.map((x) => x.destination);
    expect(dests.indexOf("/run/paddock-dial")).to.be.greaterThan(dests.indexOf("/run"));
    expect(() => renderOciSpec(vm({ agentDialDir: "relative/dir" }), toolbox)).to.throw(RangeError, /agentDialDir/);
  });

  it("maps fractional vCPUs to a CFS quota and takes args overrides", () => {
    const s = renderOciSpec(vm({ cpus: 0.5, args: ["/.paddock/bin/tini", "-s", "--", "/bin/sleep", "1000"] }), toolbox);
    expect(s.linux.resources.cpu).to.deep.equal({ quota: 50000, period: 100000 });
    expect(s.process.args).to.deep.equal(["/.paddock/bin/tini", "-s", "--", "/bin/sleep", "1000"]);
  });

  it("leaves the swap limit out when the host has no swap accounting", () => {
    const s = renderOciSpec(vm(), toolbox, { swapAccounting: false });
    expect(s.linux.resources.memory).to.deep.equal({ limit: 536870912 });
  });

  it("grants no capability outside Docker's default set", () => {
    const s = renderOciSpec(vm(), toolbox);
    for (const cap of ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME"]) {
      expect(s.process.capabilities.bounding).to.not.include(cap);
    }
    expect(s.process.capabilities).to.not.have.any.keys("ambient", "inheritable");
  });

  it("rejects impossible limits and relative paths", () => {
    expect(() => renderOciSpec(vm({ cpus: 0 }), toolbox)).to.throw(RangeError, /cpus/);
    expect(() => renderOciSpec(vm({ ramBytes: -1 }), toolbox)).to.throw(RangeError, /ramBytes/);
    expect(() => renderOciSpec(vm({ pidsLimit: 1.5 }), toolbox)).to.throw(RangeError, /pidsLimit/);
    expect(() => renderOciSpec(vm({ rootfsDir: "rootfs" }), toolbox)).to.throw(RangeError, /rootfsDir/);
    expect(() => renderOciSpec(vm({ cgroupPath: "paddock/x" }), toolbox)).to.throw(RangeError, /cgroupPath/);
  });
});
