/**
 * The policy floor with REAL runc VMs behind a real tenant daemon: a host group's drops and
 * the operator's `paddock.deny` hold against a tenant's per-VM `network` override (even a more
 * specific allow); bridge VMs reach host services only on `paddock.host_ports`; VMs have no
 * IPv6 and the table drops it. Test hosts live in network namespaces made here (198.18.0.0/15);
 * VM ranges are in 198.19.0.0/16. Every blocked probe has a positive control that goes through
 * the same VM, so neither a dead network nor a missing rule can pass. Everything is removed in
 * `after`, also on failure, and checked for leftovers.
 */
import { expect } from "chai";
import { parseIpv4 } from "../../shared/cidr.js";
import { run } from "../../shared/exec.js";
import { DEFAULT_DENY } from "../../shared/tenant-config.js";
import { defaultBridgeName, tableName, vmVethName } from "../../tenant-daemon/network/names.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { ip4, leftovers, listen, makeTestHost, probe, randomBlock, type Listener, type TestHost } from "./network-fixtures.js";

const P1 = 18281;
const P2 = 18282;
const P3 = 18283;
/** Host services on the bridge gateway: one allowed by paddock.host_ports, one not. */
const PH_ALLOWED = 18291;
const PH_BLOCKED = 18292;

describe("policy floor: group drops and the operator deny list hold against per-VM overrides (privileged)", function () {
  this.timeout(300_000);
  const hosts: TestHost[] = [];
  const listeners: Listener[] = [];
  let d: TestDaemon | undefined;
  let dropped: TestHost, allowed: TestHost;
  let gateway = "";

  async function createVm(group: string, body: Record<string, unknown> = {}): Promise<string> {
    const r = await (d as TestDaemon).post(`/hostgroup/${group}/nodes?wait=agent&timeout=120s`, body);
    expect(r.status, r.text).to.equal(201);
    return (r.json as { hostname: string }).hostname;
  }

  async function execInVm(h: string, cmd: string, args: string[]): Promise<{ stdout: string; exitCode: number | undefined }> {
    const q = new URLSearchParams({ cmd, buffered: "true" });
    for (const a of args) q.append("args", a);
    const r = await (d as TestDaemon).post(`/vm/${h}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const j = r.json as { stdout?: string; exit_code?: number };
    return { stdout: j.stdout ?? "", exitCode: j.exit_code };
  }

  /** TCP connect from inside VM `h`: `ok`, `timeout` (dropped: no answer at all) or `error <exit>: …`. */
  async function probeFromVm(h: string, host: string, port: number): Promise<string> {
    const r = await execInVm(h, "/usr/bin/timeout", ["1.5", "/bin/bash", "-c", 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3', host, String(port)]);
    if (r.exitCode === 0 && r.stdout.trim() === "ok") return "ok";
    if (r.exitCode === 124) return "timeout";
    return `error ${r.exitCode}: ${r.stdout}`;
  }

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    dropped = await makeTestHost();
    hosts.push(dropped);
    allowed = await makeTestHost();
    hosts.push(allowed);
    listeners.push(
      await listen(dropped.ns, dropped.ip, P1),
      await listen(allowed.ns, allowed.ip, P1),
      await listen(allowed.ns, allowed.ip, P2),
      // A host address that is not the bridge's: the host side of a test host's link.
      await listen(undefined, dropped.hostSideIp, P3),
    );
    const brBase = randomBlock("vm22");
    gateway = ip4(brBase + 1);
    d = await TestDaemon.create({
      hostGroups: [
        // The template's shape: RFC 1918 dropped, and here the test host's /30 too.
        { name: "iso", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22`, drop: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", `${ip4(((parseIpv4(dropped.ip) as number) & ~3) >>> 0)}/30`], allow: ["0.0.0.0/0"] } },
        { name: "open", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } },
        { name: "br", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "bridge", gateway: `${gateway}/24` } },
      ],
      // The operator's floor: the defaults plus one port of the allowed test host.
      paddock: { deny: [...DEFAULT_DENY, `${allowed.ip}:${P2}`], host_ports: { br: [PH_ALLOWED] } },
    });
    await d.start();
    // The bridge and its gateway address exist once the daemon has started.
    listeners.push(await listen(undefined, gateway, PH_ALLOWED), await listen(undefined, gateway, PH_BLOCKED));
  });

  after(async function () {
    for (const l of listeners.splice(0)) await l.stop().catch(() => undefined);
    if (d !== undefined) await d.destroy();
    for (const h of hosts.splice(0)) await h.remove().catch(() => undefined);
    if (d === undefined) return;
    expect(await leftovers(d.tenantId), `network leftovers of ${d.tenantId}`).to.deep.equal({ links: [], netns: [], table: false });
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d?.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
    expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
  });

  it("a per-VM override's allow (more specific than the group's drop) does not reach the dropped test host; the same VM reaches an allowed one", async () => {
    const h = await createVm("iso", { network: { allow: [`${dropped.ip}/32`, "0.0.0.0/0"] } });
    expect(await probeFromVm(h, allowed.ip, P1), "positive control: same VM, allowed test host").to.equal("ok");
    expect(await probeFromVm(h, dropped.ip, P1)).to.equal("timeout");
    const desc = (await (d as TestDaemon).get(`/vm/${h}`)).json as { network?: { policy_source?: string; floor?: { drop?: string[]; deny?: string[] } } };
    expect(desc.network?.policy_source).to.equal("vm");
    expect(desc.network?.floor?.drop).to.include("10.0.0.0/8");
    expect(desc.network?.floor?.deny).to.include(`${allowed.ip}:${P2}`);
  });

  it("emptying the drop list and allowing ip:port does not remove the floor either", async () => {
    const h = await createVm("iso", { network: { drop: [], allow: [`${dropped.ip}:${P1}`, `${allowed.ip}:${P1}`] } });
    expect(await probeFromVm(h, allowed.ip, P1), "positive control").to.equal("ok");
    expect(await probeFromVm(h, dropped.ip, P1)).to.equal("timeout");
  });

  it("the same test host is reachable from a VM whose group does not drop it (control)", async () => {
    const h = await createVm("open");
    expect(await probeFromVm(h, dropped.ip, P1)).to.equal("ok");
  });

  it("the operator deny list (ip:port) holds against a more specific override allow; another port of that host is reachable", async () => {
    const h = await createVm("iso", { network: { allow: [`${allowed.ip}:${P2}`, "0.0.0.0/0"] } });
    expect(await probeFromVm(h, allowed.ip, P1), "positive control").to.equal("ok");
    expect(await probeFromVm(h, allowed.ip, P2)).to.equal("timeout");
    expect(await probe(allowed.ns, allowed.ip, P2), "the listener itself answers").to.equal("ok");
  });

  it("the live table holds the default deny list (metadata, RFC 1918) and the group floor", async () => {
    const text = (await run("nft", ["list", "table", "inet", tableName((d as TestDaemon).tenantId)])).stdout;
    const deny = /chain deny \{\n([\s\S]*?)\n\t\}/.exec(text)?.[1] ?? "";
    for (const want of ["ip daddr 169.254.169.254 drop", "ip daddr 10.0.0.0/8 drop", "ip daddr 172.16.0.0/12 drop", "ip daddr 192.168.0.0/16 drop", "ip daddr 100.100.100.200 drop", "ip6 daddr fd00:ec2::254 drop"]) {
      expect(deny, want).to.include(want);
    }
    expect(text).to.match(/chain floor_iso \{\n[^}]*ip daddr 10\.0\.0\.0\/8 drop/);
  });

  it("bridge: a VM reaches a host service on the gateway only on an allowed port, and no other host address", async () => {
    const h = await createVm("br");
    expect(await probe(undefined, gateway, PH_BLOCKED), "the host's own listener answers").to.equal("ok");
    expect(await probeFromVm(h, gateway, PH_ALLOWED), "positive control: paddock.host_ports").to.equal("ok");
    expect(await probeFromVm(h, gateway, PH_BLOCKED)).to.equal("timeout");
    expect(await probe(dropped.ns, dropped.hostSideIp, P3), "a test host reaches that host address (control)").to.equal("ok");
    expect(await probeFromVm(h, dropped.hostSideIp, P3)).to.equal("timeout");
    // Forwarded egress is not the input path: still open.
    expect(await probeFromVm(h, allowed.ip, P1)).to.equal("ok");
  });

  it("IPv6: VMs (isolated and bridge) have none on eth0, the host ends of their links neither, and the table drops it", async () => {
    const t = d as TestDaemon;
    for (const group of ["iso", "br"]) {
      const h = await createVm(group);
      const sysctl = await execInVm(h, "/bin/cat", ["/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "/proc/sys/net/ipv6/conf/default/disable_ipv6"]);
      expect(sysctl.stdout.trim().split("\n"), `${h} disable_ipv6 (eth0, default)`).to.deep.equal(["1", "1"]);
      const inet6 = await execInVm(h, "/bin/cat", ["/proc/net/if_inet6"]);
      expect(inet6.stdout.split("\n").filter((l) => / eth0$/.test(l.trim())), `${h} IPv6 addresses on eth0`).to.deep.equal([]);
      const hostEnd = group === "br" ? defaultBridgeName(t.tenantId, "br") : vmVethName(t.tenantId, h);
      const { stdout } = await run("cat", [`/proc/sys/net/ipv6/conf/${hostEnd}/disable_ipv6`]);
      expect(stdout.trim(), `host end ${hostEnd}`).to.equal("1");
    }
    const text = (await run("nft", ["list", "table", "inet", tableName(t.tenantId)])).stdout;
    expect(/chain forward \{\n([\s\S]*?)\n\t\}/.exec(text)?.[1]).to.include("iifname @vm_ifaces meta nfproto ipv6 drop").and.include("oifname @vm_ifaces meta nfproto ipv6 drop");
    expect(/chain input \{\n([\s\S]*?)\n\t\}/.exec(text)?.[1]).to.include("iifname @vm_ifaces meta nfproto ipv6 drop");
  });
});
