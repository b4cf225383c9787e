/**
 * Which CAs the egress proxy's forwarder trusts upstream (tenant-daemon/proxy/egress-forward.ts,
 * upstream-cas.ts): real TLS on loopback, an upstream whose certificate is signed by a CA that
 * node's bundled roots do not hold. Given only as the PEM file of PADDOCK_EXTRA_CA_CERTS
 * (`upstreamCaFile`), it is trusted; without it the same upstream is refused (502). The file is
 * read on first use (written after the forwarder is made here), one secure context serves every
 * connection, and a bad file is a warning, not a crash.
 */
import { promises as fs } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { expect } from "chai";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { HttpForwarder } from "../../tenant-daemon/proxy/egress-forward.js";
import { ProxyCa } from "../../tenant-daemon/proxy/proxy-ca.js";
import { pemCertificates } from "../../tenant-daemon/proxy/upstream-cas.js";

/** A logger that keeps its warn lines. */
function warnings(): { log: Logger; lines: { msg: string; fields: Record<string, unknown> | undefined }[] } {
  const lines: { msg: string; fields: Record<string, unknown> | undefined }[] = [];
  const log: Logger = { ...silentLogger, warn: (msg, fields) => lines.push({ msg, fields }), child: () => log };
  return { log, lines };
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
}

describe("egress forwarder: upstream CAs from PADDOCK_EXTRA_CA_CERTS (integration: real TLS on loopback)", function () {
  this.timeout(60_000);
  let dir: string;
  let upstreamCa: string;
  let upstreamPort: number;
  const servers: http.Server[] = [];
  const forwarders: HttpForwarder[] = [];

  /** GET `/p` through a front server that forwards everything with `fwd` to the HTTPS upstream as api.test. */
  async function via(fwd: HttpForwarder, p: string): Promise<{ status: number; body: string }> {
    const front = http.createServer((req, res) => void fwd.forward(req, res, { ip: "127.0.0.1", port: upstreamPort, host: "api.test", tls: true, authorization: undefined, path: p }, () => undefined, []));
    servers.push(front);
    const port = await listen(front);
    return new Promise((resolve, reject) => {
      // The Host header names the upstream, as a guest's request does (the TLS server name follows it).
      http.get({ host: "127.0.0.1", port, path: p, agent: false, headers: { host: `api.test:${upstreamPort}` } }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      }).on("error", reject);
    });
  }

  function forwarder(opts: { upstreamCaFile?: string; log?: Logger }): HttpForwarder {
    const f = new HttpForwarder({ upstreamCaFile: opts.upstreamCaFile, upstreamCaPems: [], idleTimeoutMs: 10_000, log: opts.log ?? silentLogger });
    forwarders.push(f);
    return f;
  }

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-upca-"));
    const ca = new ProxyCa(path.join(dir, "upstream-ca"), "upstream");
    upstreamCa = await ca.certificatePem();
    const leaf = await ca.leafFor("api.test");
    const upstream = https.createServer({ key: leaf.key, cert: leaf.cert }, (req, res) => res.writeHead(200, { "content-type": "text/plain" }).end(`ok ${req.url}`));
    servers.push(upstream);
    upstreamPort = await listen(upstream);
  });

  after(async () => {
    for (const f of forwarders) f.close();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("trusts an upstream signed by a CA given only in the file (read on first use), and refuses it without the file (control)", async () => {
    const file = path.join(dir, "extra.pem");
    // Made before the file exists: nothing is read at construction.
    const withFile = forwarder({ upstreamCaFile: file });
    // A bundle as a distribution ships it: another certificate first, then the one that signs.
    const other = await new ProxyCa(path.join(dir, "other-ca"), "other").certificatePem();
    await fs.writeFile(file, `# comment\n${other}\n${upstreamCa}`);
    const ok = await via(withFile, "/a");
    expect(ok, "trusted through the file").to.deep.equal({ status: 200, body: "ok /a" });
    const without = await via(forwarder({}), "/b");
    expect(without.status, "node's roots alone refuse it").to.equal(502);
    expect(without.body).to.include("ERR_EGRESS_UPSTREAM_FAILED");
  });

  it("builds one secure context for all upstream connections, not one per connection", async () => {
    const file = path.join(dir, "one-context.pem");
    await fs.writeFile(file, upstreamCa);
    const fwd = forwarder({ upstreamCaFile: file });
    const original = tls.createSecureContext;
    let made = 0;
    tls.createSecureContext = ((...args: Parameters<typeof tls.createSecureContext>) => {
      made++;
      return original(...args);
    }) as typeof tls.createSecureContext;
    try {
      for (const p of ["/1", "/2", "/3"]) expect((await via(fwd, p)).status).to.equal(200);
    } finally {
      tls.createSecureContext = original;
    }
    expect(made, "secure contexts built for three connections").to.equal(1);
  });

  it("a file that cannot be read, or holds no certificate, is one warning and the roots alone (no crash)", async () => {
    const missing = warnings();
    const fwdMissing = forwarder({ upstreamCaFile: path.join(dir, "no-such.pem"), log: missing.log });
    expect((await via(fwdMissing, "/m1")).status).to.equal(502);
    expect((await via(fwdMissing, "/m2")).status).to.equal(502);
    expect(missing.lines.map((l) => l.msg)).to.deep.equal(["egress: ignoring extra upstream CA certificates, the file cannot be read"]);
    expect(missing.lines[0]?.fields).to.include({ err: "ENOENT" });

    const emptyFile = path.join(dir, "garbage.pem");
    await fs.writeFile(emptyFile, "not a certificate\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    const empty = warnings();
    expect((await via(forwarder({ upstreamCaFile: emptyFile, log: empty.log }), "/e")).status).to.equal(502);
    expect(empty.lines.map((l) => l.msg)).to.deep.equal(["egress: ignoring extra upstream CA certificates, the file holds no certificate"]);
    expect(empty.lines[0]?.fields).to.include({ unparsable: 1 });
  });

  it("pemCertificates keeps the blocks that parse and counts the others", () => {
    const r = pemCertificates(`x\n${upstreamCa}\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n${upstreamCa}`);
    expect(r.pems).to.have.length(2);
    expect(r.bad).to.equal(1);
    expect(pemCertificates("")).to.deep.equal({ pems: [], bad: 0 });
  });
});
