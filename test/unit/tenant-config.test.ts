import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { assertUserdataFilesReadable, loadTenantConfig, parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";

const ctx = { baseDir: "/etc/paddock", env: { PADDOCK_STATE_DIR: "/tmp/s", PADDOCK_RUN_DIR: "/tmp/r" } };
const load = (text: string) => parseTenantConfig(parseYamlSafe(text, "t.yaml"), "t.yaml", ctx);
function problems(text: string): string[] {
  try {
    load(text);
  } catch (err) {
    expect(err).to.be.instanceOf(PaddockError);
    expect((err as PaddockError).code).to.equal("ERR_CONFIG_INVALID");
    return ((err as PaddockError).details?.problems as { path: string; message: string }[]).map((p) => `${p.path}: ${p.message}`);
  }
  expect.fail("expected the config to be rejected");
}

// The host-groups example of the Slicer documentation: a bridged `ctrl` group with userdata and
// an isolated `sbox` group.
const EXAMPLE = `
config:
  host_groups:
  - name: ctrl
    storage: image
    storage_size: 25G
    count: 1
    vcpu: 4
    ram_gb: 8
    userdata: |
      apt-get update -qy
      apt-get install -qy nginx postgresql
    network:
      bridge: brctrl0
      tap_prefix: ctrl
      gateway: 192.168.137.1/24
  - name: sbox
    storage: image
    storage_size: 25G
    count: 0
    vcpu: 2
    ram_gb: 4
    network:
      mode: "isolated"
      drop: []
      allow: ["0.0.0.0/0"]
  image: "ghcr.io/openfaasltd/slicer-systemd-min:6.1.90-x86_64-latest"
  hypervisor: firecracker
  api:
    port: 8080
    bind_address: "127.0.0.1"
    auth:
      enabled: true
`;

describe("tenant config", () => {
  it("loads the documented host-groups example with its values and defaults", () => {
    const c = load(EXAMPLE);
    expect(c.hostGroups.map((g) => g.name)).to.deep.equal(["ctrl", "sbox"]);
    const [ctrl, sbox] = c.hostGroups;
    expect(ctrl?.count).to.equal(1);
    expect(ctrl?.ramBytes).to.equal(8 * 2 ** 30);
    expect(ctrl?.storageSizeBytes).to.equal(25 * 2 ** 30);
    expect(ctrl?.network).to.include({ mode: "bridge", bridge: "brctrl0", gateway: "192.168.137.1/24" });
    expect(sbox?.network).to.deep.include({ mode: "isolated", drop: [], allow: ["0.0.0.0/0"] });
    expect(c.api).to.deep.equal({ kind: "tcp", host: "127.0.0.1", port: 8080, auth: { enabled: true, token: undefined } });
    expect(c.hypervisor).to.equal("firecracker");
    expect(Object.isFrozen(c.hostGroups[0])).to.equal(true);
  });

  it("loads the slicer new per-tenant example with a socket bind and auth off", () => {
    const c = load(`
config:
  host_groups:
    - name: a3cf
      storage: image
      storage_size: 25G
      count: 0
      vcpu: 2
      ram_gb: 4
      network:
        mode: "isolated"
        range: "169.254.100.0/22"
        drop: ["192.168.1.0/24"]
        allow: ["0.0.0.0/0"]
  image: "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest"
  hypervisor: firecracker
  graceful_shutdown: false
  api:
    bind_address: "/run/slicer/a3cf.sock"
`);
    expect(c.api).to.deep.equal({ kind: "unix", socketPath: "/run/slicer/a3cf.sock", auth: { enabled: false, token: undefined } });
    expect(c.gracefulShutdown).to.equal(false);
    expect(c.paddock.tenantId).to.equal("a3cf");
    expect(c.paddock.stateDir).to.equal("/tmp/s/tenants/a3cf");
    expect(c.paddock.runDir).to.equal("/tmp/r/tenants/a3cf");
  });

  it("takes an empty PADDOCK_STATE_DIR / PADDOCK_RUN_DIR as unset (the default roots, not the config's dir)", () => {
    const text = `config:
  host_groups:
    - name: sbox
      count: 0
  api:
    bind_address: "/run/slicer/a3cf.sock"
`;
    const c = parseTenantConfig(parseYamlSafe(text, "t.yaml"), "t.yaml", { baseDir: "/etc/paddock", env: { PADDOCK_STATE_DIR: "", PADDOCK_RUN_DIR: "" } });
    expect(c.paddock.stateDir).to.equal("/var/lib/paddock/tenants/a3cf");
    expect(c.paddock.runDir).to.equal("/run/paddock/tenants/a3cf");
  });

  it("loads the documented bridge, macvtap-free and allow-port examples", () => {
    const c = load(`
config:
  host_groups:
    - name: vm
      count: 3
      network:
        bridge: brvm0
        tap_prefix: vmtap
        gateway: 192.168.137.1/24
        range: 192.168.137.20-192.168.137.80
    - name: sbox
      count: 0
      ca: {generate: true}
      network:
        mode: isolated
        drop: ["0.0.0.0/0"]
        allow: ["192.168.222.1:3128", "192.168.222.1:3129"]
  api:
    bind_address: ./slicer.sock
`);
    expect(c.hostGroups[1]?.network).to.deep.include({ allow: ["192.168.222.1:3128", "192.168.222.1:3129"] });
    expect(c.api.kind).to.equal("unix");
    expect(c.api.kind === "unix" && c.api.socketPath).to.equal("/etc/paddock/slicer.sock");
  });

  it("reads paddock.warm_pool per host group and refuses unknown groups and sizes out of range", () => {
    const withPool = (pool: string) => `
config:
  host_groups:
  - name: sbox
    vcpu: 1
    ram_gb: 1
paddock:
  tenant_id: t1
  warm_pool: ${pool}
`;
    expect(load(withPool("{ sbox: 2 }")).paddock.warmPool).to.deep.equal({ sbox: 2 });
    expect(load(withPool("{ sbox: 0 }")).paddock.warmPool).to.deep.equal({});
    expect(load(EXAMPLE).paddock.warmPool).to.deep.equal({});
    expect(problems(withPool("{ nope: 1, sbox: 17 }"))).to.deep.equal([
      'paddock.warm_pool.nope: no host group named "nope" (host groups: sbox)',
      "paddock.warm_pool.sbox: expected a non-negative integer ≤ 16, got the number 17",
    ]);
  });

  it("reads paddock.userns (size default 65536) and refuses bad ranges with their YAML paths", () => {
    const withUserns = (u: string) => `
config:
  host_groups:
  - name: sbox
paddock:
  tenant_id: t1
  userns: ${u}
`;
    expect(load(EXAMPLE).paddock.userns).to.equal(undefined);
    expect(load(withUserns("{ uid_start: 2000065536 }")).paddock.userns).to.deep.equal({ uidStart: 2_000_065_536, size: 65_536 });
    expect(load(withUserns("{ uid_start: 300000, size: 131072 }")).paddock.userns).to.deep.equal({ uidStart: 300_000, size: 131_072 });
    expect(problems(withUserns("{ size: 65536 }"))).to.deep.equal(["paddock.userns.uid_start: is required (the host uid of guest uid 0)"]);
    expect(problems(withUserns("{ uid_start: 1000 }"))).to.deep.equal(["paddock.userns.uid_start: expected an integer from 65536 to 4294901758, got the number 1000"]);
    expect(problems(withUserns("{ uid_start: 100000, size: 4096 }"))).to.deep.equal(["paddock.userns.size: expected an integer from 65536 to 4294901758, got the number 4096"]);
    expect(problems(withUserns("{ uid_start: 4294000000, size: 1000000 }"))).to.deep.equal(["paddock.userns: uid_start + size must be at most 4294967294, got 4295000000"]);
    expect(problems(withUserns("{ uid_start: \"2e9\" }"))).to.deep.equal(['paddock.userns.uid_start: expected an integer from 65536 to 4294901758, got the string "2e9"']);
    expect(problems(withUserns("2000000000"))).to.deep.equal(["paddock.userns: expected a mapping such as { uid_start: 2000000000, size: 65536 }"]);
  });

  it("reads paddock.proxy (defaulted) and refuses a bad mode, host map entry or CIDR with their YAML paths", () => {
    const withProxy = (v: string) => `
config:
  host_groups:
  - name: sbox
paddock:
  tenant_id: t1
  proxy: ${v}
`;
    expect(load(EXAMPLE).paddock.proxy).to.deep.equal({ mode: "enforce", hosts: {}, maxTunnels: 256, idleTimeoutSeconds: 300, unsafeAllowUpstreams: [] });
    expect(load(withProxy('{ mode: audit, hosts: { "API.Test.": 198.18.0.5 }, max_tunnels: 8, unsafe_allow_upstreams: [127.0.0.1/32] }')).paddock.proxy)
      .to.deep.equal({ mode: "audit", hosts: { "api.test": "198.18.0.5" }, maxTunnels: 8, idleTimeoutSeconds: 300, unsafeAllowUpstreams: ["127.0.0.1/32"] });
    expect(problems(withProxy('{ mode: off, hosts: { "a b": 1.2.3.4, ok.test: nope }, unsafe_allow_upstreams: [x] }'))).to.deep.equal([
      'paddock.proxy.mode: expected enforce or audit, got "off"',
      "paddock.proxy.hosts.a b: expected a DNS host name as the key",
      'paddock.proxy.hosts.ok.test: expected an IPv4 or IPv6 address, got "nope"',
      'paddock.proxy.unsafe_allow_upstreams[0]: expected a CIDR, got "x"',
    ]);
  });

  it("reports every problem at once with its YAML path", () => {
    const p = problems(`
config:
  host_groups:
    - name: ok
      ram_gb: -1
    - name: Bad_Name
      vcpu: "two"
      storage: devmapper
  hypervisor: qemu
`);
    expect(p).to.include.members([
      "config.host_groups[0].ram_gb: expected a positive integer ≤ 65536, got the number -1",
      "config.hypervisor: hypervisor \"qemu\" is not supported by Paddock (supported: oci, gvisor, firecracker)",
    ]);
    expect(p.some((x) => x.startsWith("config.host_groups[1].name:"))).to.equal(true);
    expect(p.some((x) => x.startsWith("config.host_groups[1].vcpu: expected a positive integer"))).to.equal(true);
    expect(p.some((x) => x.startsWith("config.host_groups[1].storage:") && x.includes("supported: image"))).to.equal(true);
  });

  it("rejects duplicate host group names, two RAM keys and overlapping ranges", () => {
    const p = problems(`
config:
  host_groups:
    - {name: a, ram_gb: 1, ram_mb: 512, network: {mode: isolated, range: 169.254.100.0/22}}
    - {name: a, network: {mode: isolated, range: 169.254.101.0/24}}
`);
    expect(p.some((x) => x.includes("duplicate host group name"))).to.equal(true);
    expect(p.some((x) => x.includes("set only one of ram_gb, ram_mb, ram_bytes"))).to.equal(true);
    expect(p.some((x) => x.includes("overlaps 169.254.100.0/22"))).to.equal(true);
  });

  it("warns about unknown keys with their path instead of failing", () => {
    const c = load(`
config:
  host_groups: [{name: a, vcpus: 2}]
  hypervisor: oci
`);
    expect(c.warnings).to.include("config.host_groups[0].vcpus: unknown key (ignored)");
  });

  it("refuses YAML traps: duplicate keys; keeps `no` a string and 0644 not octal", () => {
    expect(() => parseYamlSafe("a: 1\na: 2\n", "t.yaml")).to.throw(PaddockError, /not valid YAML/);
    const p = problems(`
config:
  host_groups: [{name: a, persistent: no}]
`);
    expect(p.some((x) => x.includes("persistent: expected true or false, got the string \"no\""))).to.equal(true);
    // YAML 1.1 would read 010 as octal 8; the 1.2 core schema reads decimal 10.
    expect(load("config:\n  host_groups: [{name: a, vcpu: 010}]\n").hostGroups[0]?.vcpu).to.equal(10);
  });

  it("refuses an alias bomb", () => {
    const bomb = ["a: &a [x,x,x,x,x,x,x,x,x,x]", ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill("*" + String.fromCharCode(97 + i)).join(",")}]`)].join("\n");
    expect(() => parseYamlSafe(bomb, "bomb.yaml")).to.throw(PaddockError);
  });

  it("reads a file from disk and resolves relative paths against it", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-cfg-"));
    try {
      await fs.writeFile(path.join(dir, "c.yaml"), "config:\n  host_groups: [{name: a, userdata_file: ./ud.sh}]\n  api: {bind_address: ./t1.sock}\n");
      const c = await loadTenantConfig(path.join(dir, "c.yaml"), {});
      expect(c.hostGroups[0]?.userdataFile).to.equal(path.join(dir, "ud.sh"));
      expect(c.paddock.tenantId).to.equal("t1");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("checks every group's userdata_file before a start: missing, a directory, each named with its YAML path", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-cfg-"));
    try {
      await fs.writeFile(path.join(dir, "ok.sh"), "#!/bin/sh\n");
      await fs.mkdir(path.join(dir, "adir"));
      await fs.writeFile(path.join(dir, "c.yaml"), "config:\n  host_groups: [{name: a, userdata_file: ./ok.sh}, {name: b, userdata_file: ./missing.sh}, {name: c, userdata_file: ./adir}]\n  api: {bind_address: ./t1.sock}\n");
      const c = await loadTenantConfig(path.join(dir, "c.yaml"), {});
      let err: unknown;
      await assertUserdataFilesReadable(c).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(PaddockError);
      expect((err as PaddockError).code).to.equal("ERR_CONFIG_INVALID");
      const msg = (err as PaddockError).message;
      expect(msg).to.include("config.host_groups[1].userdata_file (group b)").and.include("ENOENT");
      expect(msg).to.include("config.host_groups[2].userdata_file (group c)").and.include("not a regular file");
      expect(msg).not.to.include("group a");
      await fs.writeFile(path.join(dir, "c.yaml"), "config:\n  host_groups: [{name: a, userdata_file: ./ok.sh}, {name: b}]\n  api: {bind_address: ./t1.sock}\n");
      await assertUserdataFilesReadable(await loadTenantConfig(path.join(dir, "c.yaml"), {}));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
