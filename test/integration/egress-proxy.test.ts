/**
 * The egress proxy engine (tenant-daemon/proxy/egress-proxy.ts) with a REAL store on a temp
 * dir, real upstream servers on loopback (HTTPS with their own test CA), real HTTP and TLS
 * clients through the proxy; and the `/proxy/v1` API of a REAL tenant daemon, checked against
 * the shapes and status codes of Slicer's Go SDK (https://github.com/slicervm/sdk proxy.go).
 *
 * Loopback upstreams: the engine's settings exempt 127.0.0.1/32 from the address guard
 * (`unsafe_allow_upstreams`, documented as unsafe); 127.0.0.2 is NOT exempt and stands for the
 * host's own services in the SSRF test.
 */
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { expect } from "chai";
import { Registry } from "prom-client";
import { silentLogger } from "../../shared/logger.js";
import type { EgressEventInput } from "../../tenant-daemon/events/event-log.js";
import { EgressProxy } from "../../tenant-daemon/proxy/egress-proxy.js";
import { ProxyCa } from "../../tenant-daemon/proxy/proxy-ca.js";
import { ProxyStore } from "../../tenant-daemon/proxy/proxy-store.js";
import { createHostResolver } from "../../tenant-daemon/proxy/upstream-guard.js";
import { TestDaemon } from "../helpers/daemon.js";
import { until } from "../helpers/wait.js";

const SECRET = `s3cr3t-${crypto.randomBytes(8).toString("hex")}`;

interface Seen {
  host: string | undefined;
  authorization: string | undefined;
  method: string | undefined;
  url: string | undefined;
  server: string;
}

/** An upstream that records what it saw and answers `{ok, path}`; `/echo-auth` puts the Authorization it got in a response header (an upstream that leaks). */
function upstreamHandler(name: string, seen: Seen[]): http.RequestListener {
  return (req, res) => {
    seen.push({ host: req.headers.host, authorization: req.headers.authorization, method: req.method, url: req.url, server: name });
    if (req.url === "/echo-auth") res.setHeader("x-echo", req.headers.authorization ?? "");
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ ok: name, path: req.url }));
  };
}

function listen(server: net.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** CONNECT through the proxy on a raw socket: the status code, the open socket on 200, else the answer's body. */
function connectVia(proxyPort: number, target: string, token?: string): Promise<{ status: number; socket: net.Socket; head: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPort, "127.0.0.1");
    const auth = token ? `proxy-authorization: Basic ${Buffer.from(`:${token}`).toString("base64")}\r\n` : "";
    socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n${auth}\r\n`);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf("\r\n\r\n");
      if (end === -1) return;
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(buf.subarray(0, end).toString("latin1"))?.[1] ?? 0);
      if (status === 200) {
        socket.off("data", onData);
        socket.pause();
        if (buf.length > end + 4) socket.unshift(buf.subarray(end + 4));
        resolve({ status, socket, head: "" });
        return;
      }
      socket.off("data", onData);
      let body = buf.subarray(end + 4).toString();
      socket.on("data", (more: Buffer) => (body += more.toString()));
      socket.on("close", () => resolve({ status, socket, head: body }));
    };
    socket.on("data", onData);
    socket.on("error", reject);
  });
}

/** An HTTPS request inside a CONNECT tunnel, trusting `ca`. */
function httpsInTunnel(socket: net.Socket, servername: string, ca: string, p: string, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: servername, servername, method, path: p, headers, createConnection: () => tls.connect({ socket, servername, ca }) }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** An absolute-form HTTP request through the proxy. */
function httpVia(proxyPort: number, url: string, token: string | undefined, headers: Record<string, string> = {}, method = "GET"): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: "127.0.0.1", port: proxyPort, method, path: url, agent: false, headers: { host: u.host, ...(token ? { "proxy-authorization": `Basic ${Buffer.from(`:${token}`).toString("base64")}` } : {}), ...headers } }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => (socket.destroyed ? resolve() : socket.once("close", () => resolve())));
}

describe("egress proxy engine (integration: real store, real upstreams on loopback, real clients)", function () {
  this.timeout(60_000);
  let dir: string;
  let store: ProxyStore;
  let proxy: EgressProxy;
  let auditProxy: EgressProxy;
  let registry: Registry;
  const events: EgressEventInput[] = [];
  const seen: Seen[] = [];
  let upstreamCa: string;
  let tenantCa: string;
  const servers: net.Server[] = [];
  let httpsPort: number;
  let httpPort: number;
  let internalPort: number;
  let proxyPort: number;
  let auditPort: number;
  let token: string;
  let identifyAs: string | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-egress-"));
    // The upstreams' own CA (not the tenant's): a client that verifies with it sees the real upstream.
    const upstream = new ProxyCa(path.join(dir, "upstream-ca"), "upstream");
    upstreamCa = await upstream.certificatePem();
    const leaf = await upstream.leafFor("api.test");
    const httpsSrv = https.createServer({ key: leaf.key, cert: leaf.cert }, upstreamHandler("https", seen));
    const httpSrv = http.createServer(upstreamHandler("http", seen));
    // Idle keep-alive connections stay open: a tunnel that closes was closed by the proxy.
    httpSrv.keepAliveTimeout = 120_000;
    const internalSrv = http.createServer(upstreamHandler("internal", seen));
    servers.push(httpsSrv, httpSrv, internalSrv);
    httpsPort = await listen(httpsSrv, "127.0.0.1");
    httpPort = await listen(httpSrv, "127.0.0.1");
    internalPort = await listen(internalSrv, "127.0.0.2");
    store = new ProxyStore(dir);
    await store.init();
    registry = new Registry();
    const hosts = { "api.test": "127.0.0.1", "other.test": "127.0.0.1", "plain.test": "127.0.0.1", "internal.test": "127.0.0.2" };
    const resolver = createHostResolver(hosts);
    const base = {
      store, log: silentLogger, metrics: registry, events: (e: EgressEventInput) => events.push(e), stateDir: dir, tenantId: "t1",
      // `*.invalid` (RFC 6761) never resolves; answered here so the test asks no DNS server.
      identify: () => identifyAs, resolveHost: (h: string) => (h.endsWith(".invalid") ? Promise.reject(new Error(`cannot resolve ${h}`)) : resolver(h)), upstreamCaPems: [upstreamCa],
    };
    proxy = new EgressProxy({ ...base, settings: { mode: "enforce", hosts, maxTunnels: 64, idleTimeoutSeconds: 60, unsafeAllowUpstreams: ["127.0.0.1/32"] } });
    auditProxy = new EgressProxy({ ...base, settings: { mode: "audit", hosts, maxTunnels: 64, idleTimeoutSeconds: 60, unsafeAllowUpstreams: ["127.0.0.1/32"] } });
    await proxy.listen("127.0.0.1", 0);
    await auditProxy.listen("127.0.0.1", 0);
    proxyPort = proxy.address("127.0.0.1") as number;
    auditPort = auditProxy.address("127.0.0.1") as number;
    tenantCa = await proxy.caCertificatePem();
    token = (await store.createClient("agent")).token;
    await store.createSecret({ name: "api-key", host: "api.test", value: SECRET });
  });

  after(async () => {
    await proxy?.close();
    await auditProxy?.close();
    store?.close();
    for (const s of servers) {
      (s as http.Server).closeAllConnections?.();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    identifyAs = undefined;
  });

  it("answers 407 without an identity; a VM address identified by identify() or a proxy token is a client", async () => {
    await store.addAllow({ client: "agent", host: "plain.test", ports: [httpPort] });
    const none = await httpVia(proxyPort, `http://plain.test:${httpPort}/a`, undefined);
    expect(none.status).to.equal(407);
    expect(none.headers["proxy-authenticate"]).to.match(/^Basic/);
    expect((await httpVia(proxyPort, `http://plain.test:${httpPort}/a`, "spt_wrong-token-0123456789")).status, "unknown token").to.equal(407);
    expect((await httpVia(proxyPort, `http://plain.test:${httpPort}/a`, token)).status, "token").to.equal(200);
    identifyAs = "agent";
    expect((await httpVia(proxyPort, `http://plain.test:${httpPort}/b`, undefined)).status, "by address").to.equal(200);
  });

  it("a client that speaks TLS to the proxy (HTTPS_PROXY=https://…) gets a certificate of the tenant CA and the same proxy behind it", async () => {
    const viaTls = (): Promise<number> => new Promise((resolve, reject) => {
      const req = https.request({ host: "127.0.0.1", port: proxyPort, ca: tenantCa, method: "GET", path: `http://plain.test:${httpPort}/over-tls`, agent: false, headers: { host: `plain.test:${httpPort}`, "proxy-authorization": `Basic ${Buffer.from(`:${token}`).toString("base64")}` } }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      });
      req.on("error", reject);
      req.end();
    });
    expect(await viaTls()).to.equal(200);
    expect(seen.at(-1)).to.include({ server: "http", url: "/over-tls" });
  });

  it("HTTP: an allowed host is reached; a host without a rule is refused 403 and never contacted", async () => {
    const before = seen.length;
    const ok = await httpVia(proxyPort, `http://plain.test:${httpPort}/hello?q=1`, token);
    expect(ok.status).to.equal(200);
    expect(JSON.parse(ok.body)).to.deep.equal({ ok: "http", path: "/hello?q=1" });
    expect(seen.at(-1)?.host).to.equal(`plain.test:${httpPort}`);
    const denied = await httpVia(proxyPort, `http://other.test:${httpPort}/hello`, token);
    expect(denied.status).to.equal(403);
    expect(JSON.parse(denied.body).code).to.equal("ERR_EGRESS_DENIED");
    expect(seen.length, "only the allowed request reached an upstream").to.equal(before + 1);
  });

  it("CONNECT passthrough: the upstream's own certificate comes through (no interception); a denied host gets 403", async () => {
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpsPort], passthrough: true });
    const t = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    expect(t.status).to.equal(200);
    const r = await httpsInTunnel(t.socket, "api.test", upstreamCa, "/pass", { authorization: "Bearer mine" });
    expect(r.status).to.equal(200);
    expect(seen.at(-1)).to.include({ server: "https", authorization: "Bearer mine" });
    const denied = await connectVia(proxyPort, `other.test:${httpsPort}`, token);
    expect(denied.status).to.equal(403);
    expect(JSON.parse(denied.head).code).to.equal("ERR_EGRESS_DENIED");
    // An allowed upstream that refuses the connection is a 502 before the tunnel opens.
    const probe = net.createServer();
    const closedPort = await listen(probe, "127.0.0.1");
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    await store.addAllow({ client: "agent", host: "api.test", ports: [closedPort], passthrough: true });
    const refused = await connectVia(proxyPort, `api.test:${closedPort}`, token);
    expect([refused.status, JSON.parse(refused.head).code]).to.deep.equal([502, "ERR_EGRESS_UPSTREAM_FAILED"]);
    await store.removeAllowsByHost("agent", "api.test");
  });

  it("an allowed upstream name that does not resolve answers 502 ERR_EGRESS_UPSTREAM_UNRESOLVED, the proxy's own code (CONNECT and plain HTTP)", async () => {
    await store.addAllow({ client: "agent", host: "nowhere.invalid", ports: [443, 80] });
    try {
      const t = await connectVia(proxyPort, "nowhere.invalid:443", token);
      expect([t.status, JSON.parse(t.head).code]).to.deep.equal([502, "ERR_EGRESS_UPSTREAM_UNRESOLVED"]);
      const r = await httpVia(proxyPort, "http://nowhere.invalid/x", token);
      expect([r.status, JSON.parse(r.body).code]).to.deep.equal([502, "ERR_EGRESS_UPSTREAM_UNRESOLVED"]);
    } finally {
      await store.removeAllowsByHost("agent", "nowhere.invalid");
    }
  });

  it("CONNECT to an IP literal is refused though a rule covers the name that resolves to it; a rule naming the IP opens it (control)", async () => {
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpsPort], passthrough: true });
    await store.addAllow({ client: "agent", host: "*", ports: [httpsPort], passthrough: true });
    const byIp = await connectVia(proxyPort, `127.0.0.1:${httpsPort}`, token);
    expect(byIp.status, "neither the name's rule nor * covers the address").to.equal(403);
    await store.removeAllowsByHost("agent", "*");
    await store.addAllow({ client: "agent", host: "127.0.0.1", ports: [httpsPort], passthrough: true });
    const control = await connectVia(proxyPort, `127.0.0.1:${httpsPort}`, token);
    expect(control.status).to.equal(200);
    control.socket.destroy();
    await store.removeAllowsByHost("agent", "127.0.0.1");
    await store.removeAllowsByHost("agent", "api.test");
  });

  it("a ClientHello whose SNI is not the CONNECT host closes the tunnel before any byte reaches the upstream", async () => {
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpsPort], passthrough: true });
    const before = seen.length;
    const t = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    expect(t.status).to.equal(200);
    const err = await httpsInTunnel(t.socket, "evil.test", upstreamCa, "/fronted").then(() => undefined, (e: Error) => e);
    expect(err, "the TLS handshake was cut").to.be.instanceOf(Error);
    expect(seen.length).to.equal(before);
    expect(events.some((e) => e.type === "egress_denied" && e.reason === "sni_mismatch")).to.equal(true);
    // Control: the same tunnel with the right SNI works (the previous test's passthrough check).
    const ok = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    expect((await httpsInTunnel(ok.socket, "api.test", upstreamCa, "/sni-ok")).status).to.equal(200);
    await store.removeAllowsByHost("agent", "api.test");
  });

  it("a rule with a secret: TLS is intercepted with the tenant CA, the upstream gets the secret instead of the client's Authorization, no answer carries it", async () => {
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpsPort, httpPort], secret: "api-key", methods: ["GET"], paths: ["/v1/*", "/echo-auth"] });
    const t = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    expect(t.status).to.equal(200);
    // Trusting only the tenant CA proves the proxy terminated TLS.
    const r = await httpsInTunnel(t.socket, "api.test", tenantCa, "/v1/models", { authorization: "Bearer the-guests-own" });
    expect(r.status).to.equal(200);
    expect(seen.at(-1)).to.include({ server: "https", authorization: `Bearer ${SECRET}`, host: `api.test:${httpsPort}` });
    expect(JSON.stringify(r)).to.not.include(SECRET);
    const t2 = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    const echo = await httpsInTunnel(t2.socket, "api.test", tenantCa, "/echo-auth");
    expect(seen.at(-1)?.authorization, "the upstream got it").to.equal(`Bearer ${SECRET}`);
    expect(echo.headers["x-echo"], "a response header echoing the secret is dropped").to.equal(undefined);
    const t3 = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    const post = await httpsInTunnel(t3.socket, "api.test", tenantCa, "/v1/models", {}, "POST");
    expect(post.status, "method not in the rule").to.equal(403);
    const t4 = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    const dots = await httpsInTunnel(t4.socket, "api.test", tenantCa, "/v1/../admin");
    expect(dots.status, "dot segments never match a path rule").to.equal(403);
    // Plain HTTP (absolute-form) gets the same injection.
    const plain = await httpVia(proxyPort, `http://api.test:${httpPort}/v1/x`, token, { authorization: "Basic Z3Vlc3Q6Z3Vlc3Q=" });
    expect(plain.status).to.equal(200);
    expect(seen.at(-1)).to.include({ server: "http", authorization: `Bearer ${SECRET}` });
    expect(JSON.stringify(plain)).to.not.include(SECRET);
    await store.removeAllowsByHost("agent", "api.test");
  });

  it("a name resolving to a loopback address outside the exemption is refused (SSRF), and so is a tenant's rule naming that IP; the operator's exemption opens loopback (control)", async () => {
    await store.addAllow({ client: "agent", host: "internal.test", ports: [internalPort] });
    const r = await httpVia(proxyPort, `http://internal.test:${internalPort}/admin`, token);
    expect(r.status).to.equal(403);
    expect(JSON.parse(r.body).code).to.equal("ERR_EGRESS_UPSTREAM_REFUSED");
    // Rules are the tenant's: naming a loopback IP must not open the host's services.
    await store.addAllow({ client: "agent", host: "127.0.0.2", ports: [internalPort] });
    const named = await httpVia(proxyPort, `http://127.0.0.2:${internalPort}/admin`, token);
    expect(named.status).to.equal(403);
    expect(JSON.parse(named.body).code).to.equal("ERR_EGRESS_UPSTREAM_REFUSED");
    expect(seen.some((s) => s.server === "internal")).to.equal(false);
    await store.removeAllowsByHost("agent", "127.0.0.2");
    // Control: 127.0.0.1/32 is in unsafe_allow_upstreams, so a loopback upstream is reachable.
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpPort] });
    const control = await httpVia(proxyPort, `http://api.test:${httpPort}/control`, token);
    await store.removeAllowsByHost("agent", "api.test");
    expect(control.status).to.equal(200);
  });

  it("a rule with ttl_seconds disappears from the list, stops matching and cuts its open tunnel when it expires", async () => {
    await store.addAllow({ client: "agent", host: "other.test", ports: [httpPort], ttl_seconds: 2 });
    const listed = store.listRules("agent").find((r) => r.host === "other.test");
    expect(listed?.expires).to.be.a("string");
    expect((await httpVia(proxyPort, `http://other.test:${httpPort}/ttl`, token)).status).to.equal(200);
    const tunnel = await connectVia(proxyPort, `other.test:${httpPort}`, token);
    expect(tunnel.status).to.equal(200);
    tunnel.socket.on("error", () => undefined);
    tunnel.socket.resume();
    tunnel.socket.write(`GET /in-tunnel HTTP/1.1\r\nhost: other.test:${httpPort}\r\n\r\n`);
    await closed(tunnel.socket);
    expect(store.listRules("agent").some((r) => r.host === "other.test"), "closed because the rule expired").to.equal(false);
    expect((await httpVia(proxyPort, `http://other.test:${httpPort}/ttl`, token)).status).to.equal(403);
  });

  it("revoking a rule cuts the open CONNECT tunnel it covered; a tunnel of another rule stays open (control)", async () => {
    await store.addAllow({ client: "agent", host: "api.test", ports: [httpsPort], passthrough: true });
    await store.addAllow({ client: "agent", host: "127.0.0.1", ports: [httpsPort], passthrough: true });
    const a = await connectVia(proxyPort, `api.test:${httpsPort}`, token);
    const b = await connectVia(proxyPort, `127.0.0.1:${httpsPort}`, token);
    expect([a.status, b.status]).to.deep.equal([200, 200]);
    const tlsA = tls.connect({ socket: a.socket, servername: "api.test", ca: upstreamCa });
    await new Promise<void>((resolve, reject) => tlsA.once("secureConnect", () => resolve()).once("error", reject));
    tlsA.on("error", () => undefined);
    b.socket.on("error", () => undefined);
    await store.revokeByTuple({ client: "agent", host: "api.test", ports: [httpsPort], passthrough: true });
    await closed(tlsA);
    expect(b.socket.destroyed, "the other rule's tunnel").to.equal(false);
    b.socket.destroy();
    await store.removeAllowsByHost("agent", "127.0.0.1");
    await until("no tunnel left", async () => (proxy.openTunnels() === 0 ? true : undefined), 10_000, 50);
  });

  it("audit mode lets a request without a rule through and tells it (egress_audit); enforce refuses the same (control)", async () => {
    const n = events.length;
    expect((await httpVia(proxyPort, `http://other.test:${httpPort}/audit`, token)).status, "enforce").to.equal(403);
    const r = await httpVia(auditPort, `http://other.test:${httpPort}/audit`, token);
    expect(r.status).to.equal(200);
    expect(seen.at(-1)).to.include({ server: "http", url: "/audit" });
    expect(events.slice(n).some((e) => e.type === "egress_audit" && e.host === "other.test")).to.equal(true);
    expect((await httpVia(auditPort, `http://internal.test:${internalPort}/x`, token)).status, "the address guard holds in audit").to.equal(403);
  });

  it("counters move per rule and per denial; denial events are rate-limited per client and host", async () => {
    await store.addAllow({ client: "agent", host: "plain.test", ports: [httpPort, 1] }).catch(() => undefined);
    await httpVia(proxyPort, `http://plain.test:${httpPort}/count`, token);
    const n = events.length;
    for (let i = 0; i < 30; i++) await httpVia(proxyPort, `http://flood.test:${httpPort}/x`, token);
    const flood = events.slice(n).filter((e) => e.host === "flood.test");
    expect(flood.length, "one event per window for 30 denials").to.equal(1);
    const text = await registry.metrics();
    expect(text).to.match(/paddock_egress_requests_total\{client="agent",rule="plain\.test"\} [1-9]/);
    expect(text).to.match(/paddock_egress_bytes_total\{client="agent",rule="plain\.test",direction="down"\} [1-9]/);
    expect(text).to.match(/paddock_egress_denials_total\{client="agent",reason="no_rule",mode="enforce"\} ([3-9]\d|\d{3,})/);
    expect(text).to.not.include(SECRET);
  });
});

describe("/proxy/v1 API of a real tenant daemon (shapes and statuses of Slicer's Go SDK)", function () {
  this.timeout(90_000);
  let d: TestDaemon;

  before(async () => {
    d = await TestDaemon.create();
    await d.start();
  });
  after(async () => {
    if (d) await d.destroy();
  });

  it("clients, secrets and allows: create 201, list 200, delete 204, rules with their fields, coded refusals", async () => {
    const c = await d.post("/proxy/v1/clients", { name: "agent" });
    expect(c.status).to.equal(201);
    expect(Object.keys(c.json as object).sort()).to.deep.equal(["created_at", "name", "token"]);
    expect((c.json as { token: string }).token).to.match(/^spt_/);
    expect((await d.post("/proxy/v1/clients", { name: "agent" })).status, "exists").to.equal(409);
    expect((await d.post("/proxy/v1/clients", { name: "../x" })).status, "bad name").to.equal(400);
    const byo = await d.post("/proxy/v1/clients", { name: "byo", token: "my-own-token-0123456789" });
    expect((byo.json as { token: string }).token).to.equal("my-own-token-0123456789");
    const clients = await d.get("/proxy/v1/clients");
    expect(clients.status).to.equal(200);
    expect(clients.json).to.have.length(2);
    expect(clients.text).to.not.include("token");

    expect((await d.post("/proxy/v1/secrets", { name: "k", host: "api.test", value: SECRET })).status).to.equal(201);
    expect((await d.post("/proxy/v1/secrets", { name: "k", host: "api.test", value: "x" })).status, "exists").to.equal(409);
    expect((await d.post("/proxy/v1/secrets", { name: "k", host: "api.test", value: "y", force: true })).status, "force").to.equal(201);
    const oauth = await d.post("/proxy/v1/secrets", { name: "o", host: "api.test", type: "oauth-codex", value: "{}" });
    expect([oauth.status, (oauth.json as { code: string }).code]).to.deep.equal([400, "ERR_PROXY_UNSUPPORTED"]);
    const file = await d.post("/proxy/v1/secrets", { name: "f", host: "api.test", value: "v", source_file: "/etc/shadow" });
    expect([file.status, (file.json as { code: string }).code]).to.deep.equal([400, "ERR_PROXY_UNSUPPORTED"]);
    expect((await d.post("/proxy/v1/secrets", { name: "b", host: "*.test", type: "basic", value: "u:p" })).status).to.equal(201);
    const secrets = await d.get("/proxy/v1/secrets");
    expect(secrets.status).to.equal(200);
    expect(secrets.text).to.not.include(SECRET);
    expect(Object.keys((secrets.json as object[])[0] as object).sort()).to.deep.equal(["created_at", "host", "name", "type", "updated_at"]);

    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "api.test", secret: "k", methods: ["get"], paths: ["/v1/*"], ttl_seconds: 600 })).status).to.equal(201);
    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "api.test", secret: "k", methods: ["GET"], paths: ["/v1/*"] })).status, "duplicate").to.equal(409);
    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "*.example.com", passthrough: true, ports: [443, 8443] })).status).to.equal(201);
    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "x.test", passthrough: true, secret: "k" })).status, "passthrough + secret").to.equal(400);
    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "x.test", secret: "nope" })).status, "unknown secret").to.equal(404);
    // An unknown field is refused, never ignored: `port` for `ports` would otherwise make a rule for 80 and 443.
    for (const [route, b] of [["/proxy/v1/allows", { client: "agent", host: "typo.test", port: 8443 }], ["/proxy/v1/clients", { name: "x1", bogus: true }], ["/proxy/v1/secrets", { name: "s2", host: "h.test", value: "v", ttl: 1 }], ["/proxy/v1/allows/revoke", { client: "agent", host: "api.test", method: "GET" }]] as const) {
      const r = await d.post(route, b);
      expect(r.status, `${route} ${JSON.stringify(b)}`).to.equal(400);
      expect(r.json, route).to.include({ code: "ERR_PROXY_INVALID" });
    }
    expect(((await d.get("/proxy/v1/clients/agent")).json as { host: string }[]).some((x) => x.host === "typo.test"), "nothing made").to.equal(false);
    expect((await d.post("/proxy/v1/allows", { client: "nobody", host: "x.test" })).status, "unknown client").to.equal(404);
    const rules = await d.get("/proxy/v1/clients/agent");
    expect(rules.status).to.equal(200);
    const [r0, r1] = rules.json as Record<string, unknown>[];
    expect(r0).to.include({ host: "api.test", secret: "k" });
    expect(r0?.methods).to.deep.equal(["GET"]);
    expect(r0?.paths).to.deep.equal(["/v1/*"]);
    expect(Date.parse(r0?.expires as string)).to.be.greaterThan(Date.now());
    expect(r1).to.deep.equal({ host: "*.example.com", ports: [443, 8443], passthrough: true });
    expect((await d.get("/proxy/v1/clients/nobody")).status).to.equal(404);

    expect((await d.post("/proxy/v1/allows/revoke", { client: "agent", host: "*.example.com", ports: [8443, 443], passthrough: true })).status, "revoke by tuple").to.equal(204);
    expect((await d.post("/proxy/v1/allows/revoke", { client: "agent", host: "*.example.com", passthrough: true })).status, "gone").to.equal(404);
    expect((await d.del("/proxy/v1/allows/agent/api.test")).status).to.equal(204);
    expect((await d.post("/proxy/v1/allows", { client: "agent", host: "*" })).status).to.equal(201);
    expect((await d.del("/proxy/v1/allows/agent/*")).status, "the * host by path").to.equal(204);
    expect((await d.del("/proxy/v1/allows/agent/api.test")).status, "nothing left for that host").to.equal(404);
    expect((await d.get("/proxy/v1/clients/agent")).json).to.deep.equal([]);
    expect((await d.del("/proxy/v1/secrets/k")).status).to.equal(204);
    expect((await d.del("/proxy/v1/clients/agent")).status).to.equal(204);
    expect((await d.del("/proxy/v1/clients/agent")).status).to.equal(404);
    expect(d.stderr, "the daemon's log never has a secret").to.not.include(SECRET);
  });
});
