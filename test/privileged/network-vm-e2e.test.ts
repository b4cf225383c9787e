/**
 * End to end: the tenant firewall with REAL runc VMs behind real tenant daemons.
 * Probes run inside the VMs through the daemon's exec API (bash `/dev/tcp`), against TCP
 * listeners on test hosts in network namespaces made here (198.18.0.0/15 only), in other VMs'
 * network namespaces, and on a host-side address of a test host's link. Every allowed case has a
 * blocked twin and every blocked case a positive control, so neither a dead network nor a
 * missing rule can pass. Everything is removed in `after` and checked for leftovers.
 */
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { vmNetnsName } from "../../tenant-daemon/network/names.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { ip4, leftovers, listen, makeTestHost, probe, randomBlock, type Listener, type TestHost } from "./network-fixtures.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";

const P1 = 18081;
const P2 = 18082;
const P3 = 18083;
const PV = 18090;

describe("tenant network end to end with real runc VMs (privileged)", function () {
  this.timeout(300_000);
  const hosts: TestHost[] = [];
  const listeners: Listener[] = [];
  const daemons: TestDaemon[] = [];
  let th1: TestHost, th2: TestHost;
  let a: TestDaemon, b: TestDaemon;
  let brBase = 0;
  let isoBase = 0;
  /** hostname → bare IP. */
  const ips: Record<string, string> = {};

  const bare = (cidr: string): string => cidr.split("/")[0] as string;

  async function createVm(d: TestDaemon, group: string, body: Record<string, unknown> = {}): Promise<string> {
    const r = await d.post(`/hostgroup/${group}/nodes?wait=agent&timeout=120s`, body);
    expect(r.status, r.text).to.equal(201);
    const j = r.json as { hostname: string; ip: string };
    ips[j.hostname] = bare(j.ip);
    return j.hostname;
  }

  /** TCP connect from inside VM `h` of daemon `d`: `ok`, `timeout` (dropped) or `error …`. */
  async function probeFromVm(d: TestDaemon, h: string, host: string, port: number): Promise<string> {
    const q = new URLSearchParams({ cmd: "/usr/bin/timeout", buffered: "true" });
    for (const arg of ["1.5", "/bin/bash", "-c", 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3', host, String(port)]) q.append("args", arg);
    const r = await d.post(`/vm/${h}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const j = r.json as { stdout?: string; stderr?: string; exit_code?: number };
    if (j.exit_code === 0 && j.stdout?.trim() === "ok") return "ok";
    if (j.exit_code === 124) return "timeout";
    return `error ${j.exit_code}: ${j.stderr ?? ""}`;
  }

  /** A listener inside VM `h`'s network namespace, on its address. */
  async function listenInVm(d: TestDaemon, h: string, port: number): Promise<void> {
    listeners.push(await listen(vmNetnsName(d.tenantId, h), ips[h] as string, port));
  }

  before(async function () {
    skipUnlessRoot(this);
    th1 = await makeTestHost();
    hosts.push(th1);
    th2 = await makeTestHost();
    hosts.push(th2);
    listeners.push(
      await listen(th1.ns, th1.ip, P1),
      await listen(th1.ns, th1.ip, P2),
      await listen(th2.ns, th2.ip, P1),
      // A host address: the host side of th1's link.
      await listen(undefined, th1.hostSideIp, P3),
    );
    isoBase = randomBlock("vm22");
    brBase = randomBlock("vm22");
    a = await TestDaemon.create({
      hostGroups: [
        { name: "iso", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(isoBase)}/22`, drop: [`${th2.ip}/32`] } },
        { name: "wl", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22`, drop: ["0.0.0.0/0"], allow: [`${th1.ip}:${P1}`] } },
        { name: "br", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "bridge", gateway: `${ip4(brBase + 1)}/24` } },
      ],
    });
    daemons.push(a);
    b = await TestDaemon.create({
      hostGroups: [{ name: "bb", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "bridge", gateway: `${ip4(randomBlock("vm22") + 1)}/24` } }],
    });
    daemons.push(b);
    await a.start();
    await b.start();
    await Promise.all([
      createVm(a, "iso"),
      createVm(a, "iso"),
      createVm(a, "wl"),
      createVm(a, "br"),
      createVm(a, "br"),
      createVm(b, "bb"),
    ]);
  });

  after(async function () {
    for (const l of listeners.splice(0)) await l.stop().catch(() => undefined);
    for (const d of daemons.splice(0)) await d.destroy();
    for (const h of hosts.splice(0)) await h.remove().catch(() => undefined);
    for (const d of [a, b]) {
      if (d === undefined) continue;
      expect(await leftovers(d.tenantId), `network leftovers of ${d.tenantId}`).to.deep.equal({ links: [], netns: [], table: false });
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
    }
  });

  it("isolated: an allowed destination is reachable from the VM, the dropped CIDR is blocked", async () => {
    expect(await probeFromVm(a, "iso-1", th1.ip, P1)).to.equal("ok");
    expect(await probeFromVm(a, "iso-1", th2.ip, P1)).to.equal("timeout");
  });

  it("drop 0.0.0.0/0 + allow ip:port admits exactly that port", async () => {
    expect(await probeFromVm(a, "wl-1", th1.ip, P1)).to.equal("ok");
    expect(await probeFromVm(a, "wl-1", th1.ip, P2)).to.equal("timeout");
    expect(await probeFromVm(a, "wl-1", th2.ip, P1)).to.equal("timeout");
  });

  it("a per-VM override in the create body replaces the group's lists above the group's floor", async () => {
    const h = await createVm(a, "iso", { network: { drop: ["0.0.0.0/0"], allow: [`${th1.ip}:${P1}`, `${th2.ip}:${P1}`] } });
    expect(await probeFromVm(a, h, th1.ip, P1)).to.equal("ok");
    expect(await probeFromVm(a, h, th1.ip, P2)).to.equal("timeout");
    expect(await probeFromVm(a, h, th2.ip, P1), "allowed by the override, dropped by the group (floor)").to.equal("timeout");
    const desc = (await a.get(`/vm/${h}`)).json as { network?: { policy_source?: string; effective?: unknown; floor?: { drop?: unknown } } };
    expect(desc.network?.policy_source).to.equal("vm");
    expect(desc.network?.effective).to.deep.equal({ allow: [`${th1.ip}:${P1}`, `${th2.ip}:${P1}`], drop: ["0.0.0.0/0"] });
    expect(desc.network?.floor?.drop).to.deep.equal([`${th2.ip}/32`]);
    // The group's own VMs keep the group's lists.
    expect(await probeFromVm(a, "iso-1", th1.ip, P1)).to.equal("ok");
  });

  it("same-tenant VM → VM is blocked in an isolated group and allowed in a bridge group", async () => {
    await listenInVm(a, "iso-2", PV);
    expect(await probe(undefined, ips["iso-2"] as string, PV), "host → isolated VM (control)").to.equal("ok");
    expect(await probeFromVm(a, "iso-1", ips["iso-2"] as string, PV)).to.equal("timeout");
    await listenInVm(a, "br-2", PV);
    expect(await probeFromVm(a, "br-1", ips["br-2"] as string, PV)).to.equal("ok");
    // Across groups of one tenant: isolated → bridge VM is blocked too.
    expect(await probeFromVm(a, "iso-1", ips["br-2"] as string, PV)).to.equal("timeout");
  });

  it("isolated VM → host is blocked (a host address), while a test host reaches it", async () => {
    expect(await probe(th1.ns, th1.hostSideIp, P3), "test host → host address (control)").to.equal("ok");
    expect(await probeFromVm(a, "iso-1", th1.hostSideIp, P3)).to.equal("timeout");
  });

  it("VM → another tenant's VM (second daemon) times out (dropped) in both directions, with positive controls", async () => {
    await listenInVm(b, "bb-1", PV);
    expect(await probe(undefined, ips["bb-1"] as string, PV), "host → other tenant's VM (control)").to.equal("ok");
    // The tenant tables drop (never reject) cross-tenant packets: a connect times out.
    expect(await probeFromVm(a, "iso-1", ips["bb-1"] as string, PV)).to.equal("timeout");
    expect(await probeFromVm(a, "br-1", ips["bb-1"] as string, PV)).to.equal("timeout");
    await listenInVm(a, "br-2", PV + 1);
    expect(await probeFromVm(a, "br-1", ips["br-2"] as string, PV + 1), "same tenant (control)").to.equal("ok");
    expect(await probeFromVm(b, "bb-1", ips["br-2"] as string, PV + 1)).to.equal("timeout");
  });

  it("the create body's ip: honoured when free (bridge and isolated), 409 when taken, 400 outside the group", async () => {
    const wanted = ip4(brBase + 77);
    const r = await a.post("/hostgroup/br/nodes?wait=agent&timeout=120s", { ip: wanted });
    expect(r.status, r.text).to.equal(201);
    const j = r.json as { hostname: string; ip: string };
    expect(j.ip).to.equal(`${wanted}/24`);
    const inside = (await a.post(`/vm/${j.hostname}/exec?cmd=hostname&args=-I&buffered=true`)).json as { stdout?: string };
    expect(String(inside.stdout).trim().split(/\s+/)).to.include(wanted);
    const taken = await a.post("/hostgroup/br/nodes", { ip: `${wanted}/24` });
    expect(taken.status, taken.text).to.equal(409);
    expect((taken.json as { code?: string }).code).to.equal("ERR_NETWORK_ADDRESS_IN_USE");
    const outside = await a.post("/hostgroup/br/nodes", { ip: th1.ip });
    expect(outside.status, outside.text).to.equal(400);
    // Isolated: the VM address of a /30 is accepted, its gateway (.1 of the /30) is not.
    const iso = await a.post("/hostgroup/iso/nodes", { ip: ip4(isoBase + 4 * 40 + 2) });
    expect(iso.status, iso.text).to.equal(201);
    expect((iso.json as { ip: string }).ip).to.equal(`${ip4(isoBase + 4 * 40 + 2)}/30`);
    expect((await a.post("/hostgroup/iso/nodes", { ip: ip4(isoBase + 4 * 41 + 1) })).status).to.equal(400);
    const list = (await a.get("/hostgroup/br/nodes")).json as { hostname: string }[];
    expect(list.filter((n) => n.hostname.startsWith("br-")).length).to.equal(3);
    // The refused creates used up no name: the next one gets the number after `wanted`'s VM.
    const next = await a.post("/hostgroup/br/nodes", {});
    expect(next.status, next.text).to.equal(201);
    expect((next.json as { hostname: string }).hostname).to.equal(`br-${Number(j.hostname.slice("br-".length)) + 1}`);
  });
});
