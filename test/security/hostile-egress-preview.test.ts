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
import net, { type AddressInfo } from "node:net";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { LEAF_MINT_BURST } from "../../tenant-daemon/proxy/proxy-ca.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { describeWhenReady, missingPrerequisites, skipUnlessRoot } from "../helpers/prerequisites.js";
import { request } from "../helpers/http.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { ip4, leftovers, randomBlock } from "../privileged/network-fixtures.js";
import { leaksOf, rid } from "../reliability/helpers.js";

/** The proxy address every proxy-mode VM reaches (docs/security.md, proxy-mode egress). */
const PROXY = "http://169.254.169.250:3128";
/** The tenant's `paddock.proxy.max_tunnels`: small, so a flood of connections past it is cheap. */
const MAX_TUNNELS = 16;
/** Silent connections the flood opens from the guest, well past any bound derived from MAX_TUNNELS. */
const FLOOD = 400;

/** TLS handshakes with distinct SNI names the SNI flood makes (8 at a time). */
const SNI_FLOOD = 120;

/**
 * Guest side (`node -e`): TLS to the proxy itself with SNI_FLOOD distinct server names, each a
 * new leaf certificate to mint; prints how many handshakes completed ("ok N fail M").
 */
const SNI_FLOOD_CLIENT = `const tls=require('tls');let i=0,ok=0,fail=0,live=0;
const next=()=>{if(i>=${SNI_FLOOD}){if(live===0){console.log('ok '+ok+' fail '+fail);process.exit(0);}return;}
 const n=i++;live++;const s=tls.connect({host:'169.254.169.250',port:3128,servername:'n'+n+'.sni-flood.test',rejectUnauthorized:false});
 const end=(good)=>{if(s.done)return;s.done=true;good?ok++:fail++;live--;s.destroy();next();};
 s.on('secureConnect',()=>end(true));s.on('error',()=>end(false));s.on('close',()=>end(false));s.setTimeout(20000,()=>end(false));};
for(let k=0;k<8;k++)next();`;

/**
 * Guest side (`node -e`): open FLOOD connections to the proxy that never send a byte, wait until
 * every one is either connected or closed by the proxy, then print how many the proxy closed
 * before the guest sent anything ("closed N"), once all settle or after 30 s.
 */
const FLOOD_CLIENT = `const net=require('net');const n=${FLOOD};let open=0,closed=0,done=0,socks=[];
const fin=()=>{console.log('open '+open+' closed '+closed);process.exit(0);};
const t=setTimeout(fin,30000);
for(let i=0;i<n;i++){const s=net.connect(3128,'169.254.169.250');socks.push(s);s.on('connect',()=>{open++;});s.on('error',()=>{});s.on('close',()=>{closed++;open=Math.max(0,open-1);if(closed===n){clearTimeout(t);fin();}});}
setInterval(()=>{if(open+closed>=n&&closed>=n-${MAX_TUNNELS * 4}){clearTimeout(t);fin();}},200);`;

describe("hostile tenant vs the egress proxy, from a real proxy-mode VM (security)", function () {
  this.timeout(300_000);
  let d: TestDaemon | undefined;
  /** A second tenant with its own proxy-mode VM: its proxy must not answer the first tenant's VM. */
  let other: TestDaemon | undefined;
  /** The host-side gateway of `other`'s VM, where its proxy listens. */
  let otherGateway = "";
  const servers: http.Server[] = [];
  /** Requests each loopback listener saw: `<address> <path>`. */
  const seen: string[] = [];
  let port = 0;

  async function sh(script: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
    return shOn(d as TestDaemon, script, ...args);
  }

  async function shOn(on: TestDaemon, script: string, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
    const q = new URLSearchParams({ cmd: "/bin/sh", buffered: "true", uid: "0" });
    for (const a of ["-c", script, "sh", ...args]) q.append("args", a);
    const r = await on.post(`/vm/px-1/exec?${q.toString()}`);
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

  /** Add a tenant rule for client h3 (already there is fine: tests may run alone with -g). */
  async function allow(host: string, ports: number[]): Promise<void> {
    const r = await (d as TestDaemon).post("/proxy/v1/allows", { client: "h3", host, ports });
    expect(r.status, r.text).to.be.oneOf([201, 409]);
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
      paddock: { proxy: { unsafe_allow_upstreams: ["127.0.0.3/32"], max_tunnels: MAX_TUNNELS } },
    });
    const otherBlock = randomBlock("vm22");
    otherGateway = ip4(otherBlock + 1); // slot 0's host-side gateway (address-plan.ts)
    other = await TestDaemon.create({
      hostGroups: [{ name: "px", ...vm, network: { mode: "isolated", range: `${ip4(otherBlock)}/22` }, egress_proxy: { client: "o3" } }],
    });
    await Promise.all([d.start(180_000), other.start(180_000)]);
    expect((await d.post("/proxy/v1/clients", { name: "h3" })).status).to.equal(201);
    expect((await other.post("/proxy/v1/clients", { name: "o3" })).status).to.equal(201);
    const created = await Promise.all([d, other].map((t) => t.post("/hostgroup/px/nodes?wait=agent&timeout=120s", {})));
    for (const c of created) expect(c.status, c.text).to.equal(201);
  });

  after(async function () {
    for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
    for (const t of [d, other]) if (t !== undefined) await t.destroy();
    for (const t of [d, other]) {
      if (t === undefined) continue;
      expect(await leftovers(t.tenantId), "network leftovers").to.deep.equal({ links: [], netns: [], table: false });
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${t.tenantId}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(t.dir), "mounts left").to.deep.equal([]);
    }
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

  it("another tenant's proxy (its gateway address, port 3128) does not answer this tenant's VM; it answers its own VM (control)", async () => {
    const probe = `curl -sS --noproxy '' -x http://${otherGateway}:3128 --connect-timeout 5 --max-time 10 -o /dev/null -w '%{http_code}' http://198.18.0.1/; echo " rc=$?"`;
    const own = await shOn(other as TestDaemon, probe);
    expect(own.out, own.err).to.match(/^(403|407) rc=0/);
    const cross = await sh(probe);
    expect(cross.out, cross.err).to.match(/^000 rc=(7|28)/);
  });

  it("a flood of silent connections to the proxy is bounded (closed by the proxy), and the proxy and the daemon API still answer", async () => {
    const r = await sh('ulimit -n 4096; /.paddock/bin/node -e "$1"', FLOOD_CLIENT);
    const m = /open (\d+) closed (\d+)/.exec(r.out);
    expect(m, `${r.out} ${r.err}`).to.not.equal(null);
    const [open, closed] = [Number(m?.[1]), Number(m?.[2])];
    // Unbounded, all FLOOD stay open for the proxy's idle timeout (300 s).
    expect(open, `open ${open} closed ${closed}`).to.be.at.most(MAX_TUNNELS * 4);
    expect((await (d as TestDaemon).get("/healthz")).status).to.equal(200);
    await allow("127.0.0.3", [port]);
    expect((await viaProxy(`http://127.0.0.3:${port}/after-flood`)).status).to.equal("200");
  });

  it("TLS to the proxy with ever new SNI names cannot make the daemon mint a leaf certificate for each (each ~25 ms of its event loop); the daemon API still answers", async () => {
    const r = await sh('/.paddock/bin/node -e "$1"', SNI_FLOOD_CLIENT);
    const m = /ok (\d+) fail (\d+)/.exec(r.out);
    expect(m, `${r.out} ${r.err}`).to.not.equal(null);
    const [ok, fail] = [Number(m?.[1]), Number(m?.[2])];
    // Control: the first handshakes (the burst) complete, so the probe sees minted leaves. Unbounded, all SNI_FLOOD do.
    expect(ok, `ok ${ok} fail ${fail}`).to.be.at.least(LEAF_MINT_BURST);
    expect(ok, `ok ${ok} fail ${fail}`).to.be.below(SNI_FLOOD / 2);
    expect((await (d as TestDaemon).get("/healthz")).status).to.equal(200);
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

/** The app inside the VM: answers every request with what it got, as JSON. */
const ECHO_APP = `require('http').createServer((q,r)=>{let n=0;q.on('data',(c)=>{n+=c.length;});q.on('end',()=>{r.setHeader('content-type','application/json');r.end(JSON.stringify({app:true,method:q.method,url:q.url,bytes:n}));});}).listen(8080,'127.0.0.1');`;

/**
 * A hostile preview-token holder and a hostile tenant against the supervisor gateway (`paddock
 * up` as a child) and its admin API: one tenant, one runc VM running {@link ECHO_APP}. Every
 * attack tries to make the daemon run `touch /tmp/<marker>` in the VM through its exec API;
 * the positive control does it with the tenant token, so the marker check sees a success.
 */
describeWhenReady(missingPrerequisites(), "hostile preview-token holder and tenant vs the gateway (security)", function () {
  this.timeout(180_000);
  const BASE = "preview.test";
  const a = rid("hpv");
  let sup: TestSupervisor;
  let token = "";
  let h = "";
  let preview = "";

  const execPath = (marker: string): string => `/vm/${h}/exec?cmd=/bin/touch&args=/tmp/${marker}&buffered=true`;
  const exists = async (marker: string): Promise<boolean> => {
    const r = await sup.gw(token, "POST", `/vm/${h}/exec?cmd=/bin/ls&args=/tmp/${marker}&buffered=true`);
    expect(r.status, r.text).to.equal(200);
    return (r.json as { exit_code: number }).exit_code === 0;
  };
  /** Raw bytes to the gateway (the socket left open); everything it answers until it closes (or 10 s of silence). */
  const raw = (bytes: string): Promise<string> => new Promise((resolve, reject) => {
    const { host, port } = sup.gatewayTarget();
    const s = net.connect(port, host, () => s.write(bytes));
    let out = "";
    s.setTimeout(10_000, () => s.destroy());
    s.on("data", (d: Buffer) => (out += d.toString()));
    s.on("close", () => resolve(out));
    s.on("error", reject);
  });

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: { ...realDaemonConfig(), preview: { base_domain: BASE, max_ttl: "2h" } } });
    await sup.start();
    token = await sup.createTenant(a, "sandbox");
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", {});
    expect(r.status, r.text).to.be.oneOf([200, 201]);
    h = (r.json as { hostname: string }).hostname;
    const l = await sup.gw(token, "POST", `/vm/${h}/exec?background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(ECHO_APP)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    for (let i = 0; ; i++) {
      const p = await sup.gw(token, "GET", `/preview/${a}/${h}/8080/`);
      if (p.status === 200) break;
      if (i > 300) throw new Error(`the app never answered: ${p.status} ${p.text}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const m = await sup.gw(token, "POST", `/vm/${h}/preview-tokens`, { port: 8080, ttl: "30m" });
    expect(m.status, m.text).to.equal(201);
    preview = (m.json as { token: string }).token;
  });

  after(async () => {
    if (sup) await sup.destroy([a]);
    expect(await leaksOf(a), "leaks.sh --tenant a").to.deep.equal([]);
  });

  it("an anonymous client naming made-up tenants in malformed preview paths adds no metrics series (label cardinality)", async () => {
    const metrics = async (): Promise<string> => (await request(sup.adminTarget(), "GET", "/metrics", undefined, { authorization: `Bearer ${sup.adminToken}` })).text;
    // Positive control: a preview request of the real tenant is counted under its id, so the
    // scrape below would show a made-up id had one become a label.
    expect((await sup.gw(token, "GET", `/preview/${a}/${h}/8080/`)).status).to.equal(200);
    expect(await metrics()).to.include(`paddock_preview_requests_total{tenant="${a}"`).and.include(`paddock_gateway_requests_total{tenant="${a}"`);
    // The attack: no token at all, a fresh tenant id per request, a path the gateway refuses
    // before any token check (a bad percent-escape). Each id was a new series in both counters
    // and the latency histogram (supervisor/preview/preview-gateway.ts refused it under the
    // address's tenant): memory and /metrics text grew with every request.
    const fake = Array.from({ length: 20 }, (_, i) => `zfake${i}q${a.slice(-4)}`.slice(0, 12));
    for (const f of fake) {
      const r = await request(sup.gatewayTarget(), "GET", `/preview/${f}/vm-1/8080/%zz`);
      expect([r.status, (r.json as { code?: string } | undefined)?.code]).to.deep.equal([400, "ERR_URL_MALFORMED"]);
    }
    const text = await metrics();
    expect(fake.filter((f) => text.includes(`tenant="${f}"`))).to.deep.equal([]);
  });

  it("control: the tenant token runs exec (the marker appears); a preview token on the exec path is 401", async () => {
    expect(await exists("control")).to.equal(false);
    expect((await sup.gw(token, "POST", execPath("control"))).status).to.equal(200);
    expect(await exists("control")).to.equal(true);
    expect((await sup.gw(preview, "POST", execPath("direct"))).status).to.equal(401);
    expect(await exists("direct")).to.equal(false);
  });

  it("a preview token cannot climb out of its preview path to the daemon API (dot segments, encoded slashes and dots, host-name form)", async () => {
    const tries: Array<{ path: string; host?: string }> = [
      { path: `/preview/${a}/${h}/8080/../../exec?cmd=/bin/touch&args=/tmp/t1&buffered=true` },
      { path: `/preview/${a}/${h}/8080/..%2f..%2fexec?cmd=/bin/touch&args=/tmp/t2&buffered=true` },
      { path: `/preview/${a}/${h}/8080/%2e%2e/%2e%2e/exec?cmd=/bin/touch&args=/tmp/t3&buffered=true` },
      { path: `/preview/${a}/${h}/8080/../../../../vm/${h}/exec?cmd=/bin/touch&args=/tmp/t4&buffered=true` },
      { path: `/../../vm/${h}/exec?cmd=/bin/touch&args=/tmp/t5&buffered=true`, host: `8080-${h}.${a}.${BASE}` },
      { path: `/%2e%2e/%2e%2e/exec?cmd=/bin/touch&args=/tmp/t6&buffered=true`, host: `8080-${h}.${a}.${BASE}` },
    ];
    for (const t of tries) {
      const r = await sup.gw(preview, "POST", t.path, undefined, t.host !== undefined ? { host: t.host } : {});
      // Either the app got it (its echo) or the gateway refused it: never the daemon's exec.
      if (r.status === 200) expect((r.json as { app?: boolean }).app, `${t.path}: ${r.text}`).to.equal(true);
      else expect(r.status, `${t.path}: ${r.text}`).to.be.within(300, 499);
    }
    for (const m of ["t1", "t2", "t3", "t4", "t5", "t6"]) expect(await exists(m), m).to.equal(false);
  });

  it("request smuggling through the preview path (Content-Length with Transfer-Encoding, two Content-Lengths) never reaches the daemon's exec", async () => {
    const head = (extra: string): string => `POST /preview/${a}/${h}/8080/ HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${preview}\r\n${extra}`;
    // The smuggled exec, then a last request that closes the connection once all is answered.
    const smuggled = `POST ${execPath("s1")} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n${head("Content-Length: 0\r\nConnection: close\r\n\r\n")}`;
    const answers = [
      await raw(`${head(`Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`)}0\r\n\r\n${smuggled}`),
      await raw(`${head(`Content-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n`)}${smuggled}`),
      await raw(`${head(`Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n`)}0\r\n\r\n${smuggled}`),
    ];
    for (const out of answers) expect(out, out).to.not.match(/"exit_code"/);
    expect(await exists("s1")).to.equal(false);
    // Control: a pipelined second preview request on the same connection is answered by the app.
    const pipelined = await raw(`${head("Content-Length: 0\r\n\r\n")}GET /preview/${a}/${h}/8080/second HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${preview}\r\nConnection: close\r\n\r\n`);
    expect(pipelined).to.include('"url":"/second"');
  });

  it("webhooks: the tenant token neither creates nor lists them (admin API and gateway); the admin token does (control) and lists no secret", async () => {
    const body = { url: "http://127.0.0.1:9/hook", secret: "whsec-hostile3-secret-value" };
    for (const r of [
      await sup.adminReq("POST", `/tenants/${a}/webhooks`, body, { authorization: `Bearer ${token}` }),
      await sup.adminReq("GET", `/tenants/${a}/webhooks`, undefined, { authorization: `Bearer ${token}` }),
      await sup.adminReq("GET", "/events", undefined, { authorization: `Bearer ${token}` }),
      await sup.gw(token, "POST", `/admin/v1/tenants/${a}/webhooks`, body),
      await sup.gw(token, "POST", `/tenants/${a}/webhooks`, body),
    ]) expect(r.status, r.text).to.be.within(400, 499);
    const made = await sup.adminReq("POST", `/tenants/${a}/webhooks`, body);
    expect(made.status, made.text).to.equal(201);
    const list = await sup.adminReq("GET", `/tenants/${a}/webhooks`);
    expect(list.status).to.equal(200);
    expect(list.text).to.include("127.0.0.1:9").and.not.include(body.secret);
    expect((await sup.gw(token, "GET", `/tenants/${a}/webhooks`)).text).to.not.include(body.secret);
  });
});
