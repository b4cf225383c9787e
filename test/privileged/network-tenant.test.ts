/**
 * Tenant networking against the real kernel: netns + veth + bridges + the tenant's
 * nftables table. Plain network namespaces made by `attach()` stand in for VMs (the runc
 * sandbox joins exactly that netns); test hosts are namespaces made here, addressed only
 * from 198.18.0.0/15. Run as root.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { parseCidr } from "../../shared/cidr.js";
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { DEFAULT_DENY } from "../../shared/tenant-config.js";
import { createTenantNetwork, type TenantNetworkService } from "../../tenant-daemon/network/tenant-network.js";
import { vmNetnsName } from "../../tenant-daemon/network/names.js";
import { ip4, leftovers, listen, makeTestHost, probe, randomBlock, randomTenant, tempDir, tenantConfig, type Listener, type TestHost } from "./network-fixtures.js";

const P1 = 8001;
const P2 = 8002;

interface Env {
  nets: TenantNetworkService[];
  tenants: string[];
  hosts: TestHost[];
  listeners: Listener[];
  dirs: string[];
}

function newEnv(): Env {
  return { nets: [], tenants: [], hosts: [], listeners: [], dirs: [] };
}

async function teardown(env: Env): Promise<void> {
  for (const l of env.listeners.splice(0)) await l.stop().catch(() => undefined);
  for (const n of env.nets.splice(0)) await n.stop().catch(() => undefined);
  for (const h of env.hosts.splice(0)) await h.remove().catch(() => undefined);
  for (const d of env.dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
  const tenants = env.tenants.splice(0);
  for (const t of tenants) expect(await leftovers(t), `leftovers of tenant ${t}`).to.deep.equal({ links: [], netns: [], table: false });
}

async function network(env: Env, tenant: string, groups: unknown[], paddock: Record<string, unknown> = {}, stateDir?: string): Promise<TenantNetworkService> {
  const dir = stateDir ?? (await tempDir());
  if (!stateDir) env.dirs.push(dir);
  if (!env.tenants.includes(tenant)) env.tenants.push(tenant);
  const net = createTenantNetwork({ config: tenantConfig(tenant, groups, paddock), logger: silentLogger, stateDir: dir });
  env.nets.push(net);
  return net;
}

const bare = (ipCidr: string): string => ipCidr.split("/")[0] as string;

describe("tenant network: isolated mode (privileged)", function () {
  const env = newEnv();
  let th1: TestHost, th2: TestHost;
  let net: TenantNetworkService;
  let tenant: string;
  const vm: Record<string, { ip: string; ns: string }> = {};

  before(async function () {
    th1 = await makeTestHost();
    env.hosts.push(th1);
    th2 = await makeTestHost();
    env.hosts.push(th2);
    env.listeners.push(await listen(th1.ns, th1.ip, P1), await listen(th1.ns, th1.ip, P2), await listen(th2.ns, th2.ip, P1));
    tenant = randomTenant();
    net = await network(env, tenant, [
      { name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22`, drop: [`${th2.ip}/32`] } },
      { name: "wl", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22`, drop: ["0.0.0.0/0"], allow: [`${th1.ip}:${P1}`] } },
      { name: "only-allow-group-with-a-long-name", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22`, allow: [`${th2.ip}/32`] } },
    ]);
    await net.start();
    const reqs = [
      { hostname: "iso-1", hostGroup: "iso" },
      { hostname: "iso-2", hostGroup: "iso", override: { drop: ["0.0.0.0/0"], allow: [`${th1.ip}:${P1}`, `${th2.ip}:${P1}`] } },
      { hostname: "wl-1", hostGroup: "wl" },
      { hostname: "only-allow-group-with-a-long-name-1", hostGroup: "only-allow-group-with-a-long-name" },
    ];
    for (const r of reqs) {
      net.reserve(r);
      const a = await net.attach(r);
      vm[r.hostname] = { ip: bare(a.ipCidr), ns: vmNetnsName(tenant, r.hostname) };
      expect(a.netnsPath).to.equal(`/var/run/netns/${vmNetnsName(tenant, r.hostname)}`);
    }
  });
  after(async () => teardown(env));

  it("gives VM = block+2 of its /30 and a resolv.conf with the host's resolvers", async () => {
    const a = await net.attach({ hostname: "iso-1", hostGroup: "iso" });
    const range = net.ranges().iso as string;
    expect(a.ipCidr).to.equal(range.replace(/\.0\/22$/, ".2/30"));
    expect(a.resolvConf ?? "").to.match(/^nameserver \d+\.\d+\.\d+\.\d+$/m);
    expect(a.resolvConf ?? "").to.not.match(/8\.8\.8\.8|1\.1\.1\.1/);
  });

  it("only drop: an allowed destination works, the dropped CIDR is blocked", async () => {
    expect(await probe(vm["iso-1"]!.ns, th1.ip, P1)).to.equal("ok");
    expect(await probe(vm["iso-1"]!.ns, th2.ip, P1)).to.equal("timeout");
  });

  it("per-VM override replaces the group's lists above the group's floor (whitelist of ip:port; the group's drop holds)", async () => {
    expect(await probe(vm["iso-2"]!.ns, th1.ip, P1)).to.equal("ok");
    expect(await probe(vm["iso-2"]!.ns, th1.ip, P2)).to.equal("timeout");
    expect(await probe(vm["iso-2"]!.ns, th2.ip, P1), "the override allows it, the group's drop (floor) wins").to.equal("timeout");
    expect(net.describe("iso-2")).to.deep.equal({
      mode: "isolated", policy_source: "vm",
      host_group: { allow: [], drop: [`${th2.ip}/32`] },
      override: { drop: ["0.0.0.0/0"], allow: [`${th1.ip}:${P1}`, `${th2.ip}:${P1}`] },
      effective: { allow: [`${th1.ip}:${P1}`, `${th2.ip}:${P1}`], drop: ["0.0.0.0/0"] },
      floor: { drop: [`${th2.ip}/32`], deny: [...DEFAULT_DENY] },
    });
    expect(net.describe("iso-1")?.policy_source).to.equal("host_group");
  });

  it("drop 0.0.0.0/0 + allow ip:port admits exactly that port", async () => {
    expect(await probe(vm["wl-1"]!.ns, th1.ip, P1)).to.equal("ok");
    expect(await probe(vm["wl-1"]!.ns, th1.ip, P2)).to.equal("timeout");
    expect(await probe(vm["wl-1"]!.ns, th2.ip, P1)).to.equal("timeout");
  });

  it("allow-only list is a whitelist (long host group name works)", async () => {
    const ns = vm["only-allow-group-with-a-long-name-1"]!.ns;
    expect(await probe(ns, th2.ip, P1)).to.equal("ok");
    expect(await probe(ns, th1.ip, P1)).to.equal("timeout");
  });

  it("VM → VM is blocked (same group and across groups) while the host reaches the VM", async () => {
    const l = await listen(vm["iso-2"]!.ns, vm["iso-2"]!.ip, P1);
    env.listeners.push(l);
    expect(await probe(undefined, vm["iso-2"]!.ip, P1)).to.equal("ok");
    expect(await probe(vm["iso-1"]!.ns, vm["iso-2"]!.ip, P1)).to.equal("timeout");
    expect(await probe(vm["wl-1"]!.ns, vm["iso-2"]!.ip, P1)).to.equal("timeout");
  });

  it("VM → host is blocked (host addresses, including its own gateway)", async () => {
    const l = await listen(undefined, "0.0.0.0", 18431);
    env.listeners.push(l);
    expect(await probe(undefined, th1.hostSideIp, 18431)).to.equal("ok");
    expect(await probe(vm["iso-1"]!.ns, th1.hostSideIp, 18431)).to.equal("timeout");
    const gw = ip4(((bare((await net.attach({ hostname: "iso-1", hostGroup: "iso" })).ipCidr).split(".").reduce((a, b) => a * 256 + Number(b), 0)) - 1));
    expect(await probe(vm["iso-1"]!.ns, gw, 18431)).to.equal("timeout");
  });

  it("detach removes the VM's netns and link and its rules; attach again restores them", async () => {
    await net.detach("iso-1");
    expect((await leftovers(tenant)).netns).to.not.include(vmNetnsName(tenant, "iso-1"));
    expect(net.lastRuleset()).to.not.include("iso/iso-1");
    await net.attach({ hostname: "iso-1", hostGroup: "iso" });
    expect(net.lastRuleset()).to.include("iso/iso-1");
    expect(await probe(vm["iso-1"]!.ns, th1.ip, P1)).to.equal("ok");
  });

  it("a deferred detach (daemon stop) removes the links at once and the rules at flushDetaches, in one apply", async () => {
    net.deferDetachRules();
    await net.detach("iso-1");
    await net.detach("wl-1");
    const netns = (await leftovers(tenant)).netns;
    expect(netns).to.not.include(vmNetnsName(tenant, "iso-1"));
    expect(netns).to.not.include(vmNetnsName(tenant, "wl-1"));
    // The table was not rewritten: it still names both (their veths are gone, so the rules match nothing).
    expect(net.lastRuleset()).to.include("iso/iso-1").and.to.include("wl/wl-1");
    await net.flushDetaches();
    expect(net.lastRuleset()).to.not.include("iso/iso-1").and.to.not.include("wl/wl-1");
    // Not deferred any more: the next detach applies at once.
    await net.attach({ hostname: "iso-1", hostGroup: "iso" });
    await net.detach("iso-1");
    expect(net.lastRuleset()).to.not.include("iso/iso-1");
    await net.attach({ hostname: "iso-1", hostGroup: "iso" });
    await net.attach({ hostname: "wl-1", hostGroup: "wl" });
    expect(net.lastRuleset()).to.include("iso/iso-1").and.to.include("wl/wl-1");
  });
});

describe("tenant network: bridge mode and cross-tenant isolation (privileged)", function () {
  const env = newEnv();
  let th: TestHost;
  let a: TenantNetworkService, b: TenantNetworkService;
  let ta: string, tb: string;
  const vm: Record<string, { ip: string; ns: string }> = {};

  before(async () => {
    th = await makeTestHost();
    env.hosts.push(th);
    env.listeners.push(await listen(th.ns, th.ip, P1));
    ta = randomTenant();
    tb = randomTenant();
    a = await network(env, ta, [{ name: "br", count: 0, network: { gateway: `${ip4(randomBlock("vm22") + 1)}/24` } }]);
    await a.start();
    // b learns a's range from a's table (own_ranges); a learns nothing about b.
    b = await network(env, tb, [{ name: "br", count: 0, network: { gateway: `${ip4(randomBlock("vm22") + 1)}/24` } }]);
    await b.start();
    for (const [n, t, h] of [[a, ta, "br-1"], [a, ta, "br-2"], [b, tb, "br-1"]] as const) {
      n.reserve({ hostname: h, hostGroup: "br" });
      const at = await n.attach({ hostname: h, hostGroup: "br" });
      vm[`${t}/${h}`] = { ip: bare(at.ipCidr), ns: vmNetnsName(t, h) };
    }
    for (const k of Object.keys(vm)) env.listeners.push(await listen(vm[k]!.ns, vm[k]!.ip, P1));
  });
  after(async () => teardown(env));

  it("VMs get .2, .3 of the gateway network with its prefix", async () => {
    const at = await a.attach({ hostname: "br-2", hostGroup: "br" });
    expect(at.ipCidr).to.match(/\.3\/24$/);
  });

  it("same-group VMs reach each other; the host reaches them; egress NAT reaches a test host", async () => {
    expect(await probe(vm[`${ta}/br-1`]!.ns, vm[`${ta}/br-2`]!.ip, P1)).to.equal("ok");
    expect(await probe(undefined, vm[`${ta}/br-1`]!.ip, P1)).to.equal("ok");
    expect(await probe(undefined, vm[`${tb}/br-1`]!.ip, P1)).to.equal("ok");
    expect(await probe(vm[`${ta}/br-1`]!.ns, th.ip, P1)).to.equal("ok");
  });

  it("VM → other tenant's VM is blocked in both directions", async () => {
    expect(await probe(vm[`${tb}/br-1`]!.ns, vm[`${ta}/br-1`]!.ip, P1)).to.equal("timeout");
    expect(await probe(vm[`${ta}/br-1`]!.ns, vm[`${tb}/br-1`]!.ip, P1)).to.equal("timeout");
  });

  it("describe of a bridge VM has empty lists", () => {
    expect(a.describe("br-1")).to.deep.equal({ mode: "bridge", policy_source: "host_group", host_group: { allow: [], drop: [] }, effective: { allow: [], drop: [] }, floor: { drop: [], deny: [...DEFAULT_DENY] } });
  });
});

describe("tenant network: addresses, refusal and cleanup (privileged)", function () {
  const env = newEnv();
  afterEach(async () => teardown(env));

  it("50 concurrent creates get distinct addresses and working links", async () => {
    const t = randomTenant();
    const net = await network(env, t, [{ name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } }]);
    await net.start();
    const hosts = Array.from({ length: 50 }, (_, i) => `iso-${i + 1}`);
    const atts = await Promise.all(hosts.map(async (h) => {
      await Promise.resolve();
      net.reserve({ hostname: h, hostGroup: "iso" });
      return net.attach({ hostname: h, hostGroup: "iso" });
    }));
    expect(new Set(atts.map((x) => x.ipCidr)).size).to.equal(50);
    const lo = await leftovers(t);
    expect(lo.netns.length).to.equal(50);
    expect(lo.links.length).to.equal(50);
    for (const h of hosts) expect(net.lastRuleset()).to.include(`iso/${h}\n`);
    await net.stop();
    expect(await leftovers(t)).to.deep.equal({ links: [], netns: [], table: false });
  });

  it("a purge's stop (never started) removes a table a crashed daemon left, and is a no-op without one", async () => {
    const t = randomTenant();
    const groups = [{ name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } }];
    const crashed = await network(env, t, groups);
    await crashed.start();
    expect((await leftovers(t)).table).to.equal(true);
    // The purge's service never applied the table: it checks that one exists before deleting it.
    const purge = await network(env, t, groups);
    await purge.stop();
    expect(await leftovers(t)).to.deep.equal({ links: [], netns: [], table: false });
    await purge.stop();
    expect((await leftovers(t)).table).to.equal(false);
  });

  it("an exhausted range is a 409 at reserve, not a hang", async () => {
    const t = randomTenant();
    const net = await network(env, t, [{ name: "tiny", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/29` } }]);
    await net.start();
    net.reserve({ hostname: "tiny-1", hostGroup: "tiny" });
    net.reserve({ hostname: "tiny-2", hostGroup: "tiny" });
    try {
      net.reserve({ hostname: "tiny-3", hostGroup: "tiny" });
      expect.fail("reserved past the range");
    } catch (err) {
      expect(isPaddockError(err, "ERR_NETWORK_EXHAUSTED")).to.equal(true);
    }
  });

  it("a second daemon with an overlapping range refuses to start, naming both sides", async () => {
    const base = randomBlock("vm22");
    const t1 = randomTenant();
    const t2 = randomTenant();
    const n1 = await network(env, t1, [{ name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(base)}/22` } }]);
    await n1.start();
    const n2 = await network(env, t2, [{ name: "grp", count: 0, network: { gateway: `${ip4(base + 257)}/24` } }]);
    try {
      await n2.start();
      expect.fail("started");
    } catch (err) {
      expect(isPaddockError(err, "ERR_NETWORK_OVERLAP")).to.equal(true);
      expect((err as Error).message).to.include(`${ip4(base + 256)}/24 of host group grp (tenant ${t2})`).and.include(`${ip4(base)}/22 of running Paddock tenant ${t1}`);
    }
    expect((await leftovers(t2)).table).to.equal(false);
  });

  it("start decides on a host scan begun before it (the daemon's, beside its other start-up work), and fails with its error", async () => {
    const base = randomBlock("vm22");
    const t = randomTenant();
    const dir = await tempDir();
    env.dirs.push(dir);
    env.tenants.push(t);
    const groups = [{ name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(base)}/22` } }];
    // A scan naming a running tenant no real scan would find: only this scan can refuse the range.
    const other = `paddock-${randomTenant()}`;
    const scan = { links: [], addrs: [], netnsList: [], ours: new Set<string>(), others: [{ table: other, cidrs: [parseCidr(`${ip4(base)}/22`)] }], boundsChains: undefined };
    const n1 = createTenantNetwork({ config: tenantConfig(t, groups), logger: silentLogger, stateDir: dir, hostScan: Promise.resolve(scan) });
    env.nets.push(n1);
    const err1 = await n1.start().then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err1, "ERR_NETWORK_OVERLAP"), String(err1)).to.equal(true);
    expect((err1 as Error).message).to.include(`running Paddock tenant ${other.slice("paddock-".length)}`);
    const failed = new PaddockError("ERR_NETWORK_SETUP_FAILED", "ip -j link show: test failure");
    const rejected = Promise.reject(failed);
    rejected.catch(() => undefined);
    const n2 = createTenantNetwork({ config: tenantConfig(t, groups), logger: silentLogger, stateDir: dir, hostScan: rejected });
    env.nets.push(n2);
    expect(await n2.start().then(() => undefined, (e: unknown) => e)).to.equal(failed);
    expect((await leftovers(t)).table).to.equal(false);
  });

  it("a range overlapping a host interface refuses to start, naming the interface", async () => {
    const th = await makeTestHost();
    env.hosts.push(th);
    const t = randomTenant();
    const n = await network(env, t, [{ name: "iso", count: 0, network: { mode: "isolated", range: `${th.ip.split(".").slice(0, 3).join(".")}.0/24` } }]);
    try {
      await n.start();
      expect.fail("started");
    } catch (err) {
      expect(isPaddockError(err, "ERR_NETWORK_OVERLAP")).to.equal(true);
      expect((err as Error).message).to.include(`on host interface ${th.veth}`);
    }
  });

  it("derived isolated range: a /22 in 169.254.0.0/16, stable across restarts", async () => {
    const t = randomTenant();
    const dir = await tempDir();
    env.dirs.push(dir);
    const groups = [{ name: "auto", count: 0, network: { mode: "isolated" } }];
    const n1 = await network(env, t, groups, {}, dir);
    await n1.start();
    const r1 = n1.ranges().auto as string;
    expect(r1).to.match(/^169\.254\.\d+\.0\/22$/);
    expect(r1).to.not.equal("169.254.168.0/22");
    await n1.stop();
    const n2 = await network(env, t, groups, {}, dir);
    await n2.start();
    expect(n2.ranges().auto).to.equal(r1);
  });

  it("start after a simulated crash sweeps dead leftovers and adopts a VM netns a live process still uses", async () => {
    const t = randomTenant();
    const dir = await tempDir();
    env.dirs.push(dir);
    const groups = [
      { name: "iso", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } },
      { name: "br", count: 0, network: { gateway: `${ip4(randomBlock("vm22") + 1)}/24` } },
    ];
    const crashed = createTenantNetwork({ config: tenantConfig(t, groups), logger: silentLogger, stateDir: dir });
    env.tenants.push(t);
    await crashed.start();
    const live = { hostname: "iso-1", hostGroup: "iso" };
    for (const r of [live, { hostname: "iso-2", hostGroup: "iso" }, { hostname: "br-1", hostGroup: "br" }]) {
      crashed.reserve(r);
      await crashed.attach(r);
    }
    const liveIp = crashed.describe("iso-1") ? bare(crashed.reserve(live)) : "";
    // A process inside iso-1's netns stands in for a sandbox that survived the daemon.
    const sleeper = spawn("ip", ["netns", "exec", vmNetnsName(t, "iso-1"), "sleep", "300"], { stdio: "ignore" });
    const sleeperExit = new Promise((resolve) => sleeper.once("exit", resolve));
    try {
      // `crashed` is abandoned without stop(): its links, netns and table stay behind.
      expect((await leftovers(t)).netns.length).to.equal(3);
      const n2 = await network(env, t, groups, {}, dir);
      await n2.start();
      let lo = await leftovers(t);
      expect(lo.netns).to.deep.equal([vmNetnsName(t, "iso-1")]);
      expect(lo.table).to.equal(true);
      expect(lo.links.length).to.equal(2); // the kept VM's veth and the group's bridge
      expect(bare(n2.reserve({ ...live, previousIp: undefined }))).to.equal(liveIp);
      const again = await n2.attach(live);
      expect(bare(again.ipCidr)).to.equal(liveIp);
      await n2.sweep();
      lo = await leftovers(t);
      expect(lo.netns).to.deep.equal([vmNetnsName(t, "iso-1")]);
      await n2.stop();
      expect(await leftovers(t)).to.deep.equal({ links: [], netns: [], table: false });
    } finally {
      sleeper.kill("SIGKILL");
      await sleeperExit;
    }
  });
});
