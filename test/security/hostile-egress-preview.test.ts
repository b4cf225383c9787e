/**
 * A hostile tenant against the egress proxy, from root inside a REAL proxy-mode VM (runc,
 * debian-12 image) and with only the tenant's own token: can it make the proxy, which runs on
 * the host, connect to the host's own services? One daemon, one VM shared by every test.
 *
 * The "host services" are two HTTP listeners on the host's loopback made here, on one port:
 * 127.0.0.1 (a stand-in for the supervisor, other daemons, anything bound to loopback) and
 * 127.0.0.3, which the OPERATOR exempts with `paddock.proxy.unsafe_allow_upstreams` — the
 * positive control that the guest -> proxy -> host loopback path works and that the listeners
 * would see a request that got through. Allow rules are written with the tenant's token
 * (`/proxy/v1/allows`), never with operator configuration.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { ip4, leftovers, randomBlock } from "../privileged/network-fixtures.js";

/** The proxy address every proxy-mode VM reaches (docs/security.md, proxy-mode egress). */
const PROXY = "http://169.254.169.250:3128";

describe("hostile tenant vs the egress proxy, from a real proxy-mode VM (security)", function () {
  this.timeout(300_000);
  let d: TestDaemon | undefined;
  const servers: http.Server[] = [];
  /** Requests each loopback listener saw: `<address> <path>`. */
  const seen: string[] = [];
  let port = 0;

  async function sh(script: string): Promise<{ code: number; out: string; err: string }> {
    const q = new URLSearchParams({ cmd: "/bin/sh", buffered: "true", uid: "0" });
    for (const a of ["-c", script]) q.append("args", a);
    const r = await (d as TestDaemon).post(`/vm/px-1/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const j = r.json as { stdout?: string; stderr?: string; exit_code?: number };
    return { code: j.exit_code ?? -1, out: j.stdout ?? "", err: j.stderr ?? "" };
  }

  /** `curl` through the proxy from the guest: `<http status> <body>` (000 = no answer). */
  async function viaProxy(args: string): Promise<{ status: string; body: string }> {
    const r = await sh(`curl -sS --noproxy '' -x ${PROXY} --max-time 20 -o /tmp/body -w '%{http_code}' ${args}; echo; cat /tmp/body 2>/dev/null; rm -f /tmp/body`);
    const [status = "", ...rest] = r.out.split("\n");
    return { status: status.trim(), body: rest.join("\n") };
  }

  async function allow(host: string, ports: number[]): Promise<void> {
    const r = await (d as TestDaemon).post("/proxy/v1/allows", { client: "h3", host, ports });
    expect(r.status, r.text).to.equal(201);
  }

  before(async function () {
    skipUnlessRoot(this);
    const first = http.createServer((req, res) => {
      seen.push(`127.0.0.1 ${req.url ?? ""}`);
      res.end("host-private\n");
    });
    servers.push(first);
    await new Promise<void>((resolve) => first.listen(0, "127.0.0.1", resolve));
    port = (first.address() as AddressInfo).port;
    const exempt = http.createServer((req, res) => {
      seen.push(`127.0.0.3 ${req.url ?? ""}`);
      res.end("exempt\n");
    });
    servers.push(exempt);
    await new Promise<void>((resolve) => exempt.listen(port, "127.0.0.3", resolve));
    const vm = { count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M" };
    d = await TestDaemon.create({
      hostGroups: [{ name: "px", ...vm, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` }, egress_proxy: { client: "h3" } }],
      paddock: { proxy: { unsafe_allow_upstreams: ["127.0.0.3/32"] } },
    });
    await d.start(180_000);
    expect((await d.post("/proxy/v1/clients", { name: "h3" })).status).to.equal(201);
    const created = await d.post("/hostgroup/px/nodes?wait=agent&timeout=120s", {});
    expect(created.status, created.text).to.equal(201);
  });

  after(async function () {
    for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
    if (d === undefined) return;
    await d.destroy();
    expect(await leftovers(d.tenantId), "network leftovers").to.deep.equal({ links: [], netns: [], table: false });
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d?.tenantId ?? "-"}-`));
    expect(left, "runc containers left").to.deep.equal([]);
    expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
  });

  it("control: an upstream the operator exempts on the host's loopback is reached from the guest through the proxy", async () => {
    await allow("127.0.0.3", [port]);
    const r = await viaProxy(`http://127.0.0.3:${port}/control`);
    expect(r.status, r.body).to.equal("200");
    expect(r.body).to.include("exempt");
    expect(seen).to.include(`127.0.0.3 /control`);
  });

  it("the host's loopback without a rule is refused in every spelling (dotted, decimal, hex, octal), absolute-form and CONNECT", async () => {
    const before = seen.length;
    for (const h of ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]"]) {
      const r = await viaProxy(`http://${h}:${port}/no-rule`);
      expect(r.status, `${h}: ${r.body}`).to.equal("403");
    }
    // A tenant rule for every NAME does not cover an address spelled as a number either.
    await allow("*", [port]);
    for (const h of ["2130706433", "0x7f000001", "localhost"]) {
      const r = await viaProxy(`-p http://${h}:${port}/tunnel`);
      expect(r.status, `CONNECT ${h}: ${r.body}`).to.be.oneOf(["403", "000"]);
    }
    expect(seen.slice(before)).to.deep.equal([]);
  });

  it("a tenant's rule naming a loopback or link-local IP does not open it: the proxy refuses with ERR_EGRESS_UPSTREAM_REFUSED and the host service sees nothing", async () => {
    const before = seen.length;
    await allow("127.0.0.1", [port]);
    await allow("169.254.169.254", [80]);
    const r = await viaProxy(`http://127.0.0.1:${port}/ssrf`);
    expect(r.status, r.body).to.equal("403");
    expect(r.body).to.include("ERR_EGRESS_UPSTREAM_REFUSED");
    expect(r.body).to.not.include("host-private");
    const tunnel = await viaProxy(`-p http://127.0.0.1:${port}/ssrf-tunnel`);
    expect(tunnel.body).to.not.include("host-private");
    const meta = await viaProxy("http://169.254.169.254/latest/meta-data/");
    expect(meta.status, meta.body).to.equal("403");
    expect(meta.body).to.include("ERR_EGRESS_UPSTREAM_REFUSED");
    expect(seen.slice(before)).to.deep.equal([]);
  });
});
