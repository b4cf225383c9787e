/**
 * A hostile guest against the egress proxy's upstream TLS check with the one shared secure
 * context of tenant-daemon/proxy/upstream-cas.ts (extra CAs from the PADDOCK_EXTRA_CA_CERTS file):
 * node's agent takes the upstream's TLS server name, and so the certificate check, from the
 * request's Host header (lib/_http_agent.js `calculateServerName`), and the forwarder sets the
 * rule's host only in `proxyReq`, after the socket is made. Two things keep the check on the
 * rule's host: egress-proxy.ts refuses an inner Host header that names another host, and the
 * forwarder sets the rule's host before the request is made (egress-forward.ts `forward`).
 * Here the rule's host (api.test, with a secret) resolves to a server that holds a certificate
 * from a trusted CA for another name (evil.test: what a spoofed DNS answer could point at). Real
 * TLS on loopback, the real engine and store, in process.
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
import { HttpForwarder } from "../../tenant-daemon/proxy/egress-forward.js";
import { EgressProxy } from "../../tenant-daemon/proxy/egress-proxy.js";
import { ProxyCa } from "../../tenant-daemon/proxy/proxy-ca.js";
import { ProxyStore } from "../../tenant-daemon/proxy/proxy-store.js";
import { createHostResolver } from "../../tenant-daemon/proxy/upstream-guard.js";

const SECRET = `s3cr3t-${crypto.randomBytes(8).toString("hex")}`;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** CONNECT `target` through the proxy with a proxy token; the open socket on 200. */
function connectVia(proxyPort: number, target: string, token: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPort, "127.0.0.1");
    socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\nproxy-authorization: Basic ${Buffer.from(`:${token}`).toString("base64")}\r\n\r\n`);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf("\r\n\r\n");
      if (end === -1) return;
      socket.off("data", onData);
      socket.pause();
      const head = buf.subarray(0, end).toString("latin1");
      if (!head.startsWith("HTTP/1.1 200")) reject(new Error(`CONNECT ${target}: ${head}`));
      else resolve(socket);
    };
    socket.on("data", onData);
    socket.on("error", reject);
  });
}

/** GET `p` inside the tunnel over TLS to the proxy (servername api.test, trusting the tenant CA), with `host` as the Host header. */
function getInTunnel(socket: net.Socket, ca: string, host: string, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: "api.test", servername: "api.test", path: p, headers: { host }, createConnection: () => tls.connect({ socket, servername: "api.test", ca }) }, (res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

describe("hostile guest: the egress proxy's upstream certificate is checked against the rule's host (security, loopback TLS)", function () {
  this.timeout(60_000);
  let dir: string;
  let store: ProxyStore;
  let proxy: EgressProxy | undefined;
  const servers: http.Server[] = [];
  const seen: { server: string; authorization: string | undefined }[] = [];
  let tenantCa: string;
  let token: string;
  let proxyPort: number;
  const ports: Record<string, number> = {};
  let caFile = "";

  const upstream = async (name: string, ca: ProxyCa, certName: string): Promise<void> => {
    const leaf = await ca.leafFor(certName);
    const s = https.createServer({ key: leaf.key, cert: leaf.cert }, (req, res) => {
      seen.push({ server: name, authorization: req.headers.authorization });
      res.end(`ok ${name}`);
    });
    servers.push(s);
    ports[name] = await listen(s);
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-h8-egress-"));
    const trusted = new ProxyCa(path.join(dir, "trusted-ca"), "trusted");
    caFile = path.join(dir, "extra-cas.pem");
    await fs.writeFile(caFile, await trusted.certificatePem());
    store = new ProxyStore(dir);
    await store.init();
    const hosts = { "api.test": "127.0.0.1", "evil.test": "127.0.0.1" };
    const resolver = createHostResolver(hosts);
    proxy = new EgressProxy({
      store, log: silentLogger, metrics: new Registry(), events: () => undefined, stateDir: dir, tenantId: "h8", identify: () => undefined,
      resolveHost: (h: string) => resolver(h), upstreamCaFile: caFile,
      settings: { mode: "enforce", hosts, maxTunnels: 16, idleTimeoutSeconds: 30, unsafeAllowUpstreams: ["127.0.0.1/32"] },
    });
    await proxy.listen("127.0.0.1", 0);
    proxyPort = proxy.address("127.0.0.1") as number;
    tenantCa = await proxy.caCertificatePem();
    // The server api.test resolves to in the attack: a trusted CA's certificate, for evil.test only.
    await upstream("evil", trusted, "evil.test");
    // Control: the real api.test, trusted through the file.
    await upstream("real", trusted, "api.test");
    // A certificate for api.test from the tenant's own proxy CA (whose certificate every guest has): not an upstream CA.
    await upstream("tenant-ca", new ProxyCa(path.join(dir, "proxy"), "h8"), "api.test");
    token = (await store.createClient("agent")).token;
    await store.createSecret({ name: "api-key", host: "api.test", value: SECRET });
    await store.addAllow({ client: "agent", host: "api.test", ports: Object.values(ports), secret: "api-key" });
  });

  after(async () => {
    await proxy?.close();
    store?.close();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("positive control: the rule's upstream, with a certificate for api.test from the file's CA, gets the request and the secret", async () => {
    const r = await getInTunnel(await connectVia(proxyPort, `api.test:${ports.real}`, token), tenantCa, "api.test", "/a");
    expect(r).to.deep.equal({ status: 200, body: "ok real" });
    expect(seen.at(-1)).to.deep.equal({ server: "real", authorization: `Bearer ${SECRET}` });
  });

  it("an inner Host header naming another host is refused before any upstream connection: the secret never reaches a server proven only to be that host", async () => {
    const before = seen.length;
    const r = await getInTunnel(await connectVia(proxyPort, `api.test:${ports.evil}`, token), tenantCa, "evil.test", "/b");
    expect(r.status, r.body).to.equal(403);
    expect(r.body).to.include("ERR_EGRESS_DENIED");
    expect(seen.slice(before), "requests the upstream got").to.deep.equal([]);
  });

  it("the same server asked as api.test is refused (its certificate names evil.test), and so is a certificate of the tenant's own proxy CA", async () => {
    const before = seen.length;
    const wrongName = await getInTunnel(await connectVia(proxyPort, `api.test:${ports.evil}`, token), tenantCa, "api.test", "/c");
    expect(wrongName.status, wrongName.body).to.equal(502);
    const tenantSigned = await getInTunnel(await connectVia(proxyPort, `api.test:${ports["tenant-ca"]}`, token), tenantCa, "api.test", "/d");
    expect(tenantSigned.status, tenantSigned.body).to.equal(502);
    expect(seen.slice(before)).to.deep.equal([]);
  });

  it("the forwarder checks the upstream certificate against the rule's host, not the Host header the client sent (without the proxy's Host check)", async () => {
    const fwd = new HttpForwarder({ upstreamCaFile: caFile, upstreamCaPems: [], idleTimeoutMs: 10_000, log: silentLogger });
    const front = http.createServer((req, res) => void fwd.forward(req, res, { ip: "127.0.0.1", port: ports.evil as number, host: "api.test", tls: true, authorization: `Bearer ${SECRET}`, path: "/e" }, () => undefined, [SECRET]));
    servers.push(front);
    try {
      const port = await listen(front);
      const before = seen.length;
      const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        http.get({ host: "127.0.0.1", port, path: "/e", agent: false, headers: { host: "evil.test" } }, (res) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        }).on("error", reject);
      });
      expect(r.status, r.body).to.equal(502);
      expect(seen.slice(before), "requests the evil.test server got").to.deep.equal([]);
    } finally {
      fwd.close();
    }
  });
});
