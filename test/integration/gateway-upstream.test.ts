/**
 * The gateway's plain-HTTP forwarder on undici (supervisor/gateway-forward.ts `HttpForwarder`,
 * supervisor/gateway-upstream.ts `UpstreamPools`) against a stand-in daemon on a Unix socket:
 * what crosses (hop-by-hop headers dropped, body framing kept), that an abort reaches the
 * daemon as a closed connection, that a client that stops reading stops the daemon's writes
 * (backpressure), how upstream failures are answered, and that idle pools are dropped.
 * Real sockets, no supervisor, a few seconds.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { silentLogger } from "../../shared/logger.js";
import { HttpForwarder, createUpstreamAgent, type ForwardPlan } from "../../supervisor/gateway-forward.js";
import { UpstreamPools, type UpstreamRequest } from "../../supervisor/gateway-upstream.js";
import type { GatewayTarget } from "../../supervisor/tenant-service.js";
import { untilTrue } from "../helpers/wait.js";

interface Echo { method: string; url: string; rawHeaders: string[]; body: string }

describe("gateway forwarder on undici pools (real Unix sockets, stand-in daemon)", function () {
  this.timeout(20_000);
  let dir = "";
  let daemonSock = "";
  let gatewaySock = "";
  let daemon: http.Server;
  let gateway: http.Server;
  let pools: UpstreamPools;
  const agent = createUpstreamAgent();
  /** What the next gateway request forwards: the daemon socket and an optional plan. */
  let target = { socketPath: "", plan: undefined as ForwardPlan | undefined };
  /** The handle of the last forwarded request. */
  let lastUpstream: UpstreamRequest | undefined;
  /** The daemon's per-path behaviour. */
  const daemonSeen = { closedBeforeEnd: 0, streamBytes: 0, stalled: false, hung: 0 };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-gwup-"));
    daemonSock = path.join(dir, "api.sock");
    gatewaySock = path.join(dir, "gw.sock");
    daemon = http.createServer((req, res) => {
      if (req.url === "/stream") {
        // Writes until the client stops taking bytes; counts what it could write.
        res.writeHead(200, { "content-type": "application/octet-stream" });
        const chunk = Buffer.alloc(64 * 1024, 120);
        const pump = (): void => {
          while (daemonSeen.streamBytes < 64 * 1024 * 1024) {
            daemonSeen.streamBytes += chunk.length;
            if (!res.write(chunk)) {
              daemonSeen.stalled = true;
              res.once("drain", () => {
                daemonSeen.stalled = false;
                pump();
              });
              return;
            }
          }
          res.end();
        };
        res.once("close", () => {
          if (!res.writableFinished) daemonSeen.closedBeforeEnd++;
        });
        pump();
        return;
      }
      if (req.url === "/hang") {
        daemonSeen.hung++;
        res.once("close", () => {
          if (!res.writableFinished) daemonSeen.closedBeforeEnd++;
        });
        return;
      }
      if (req.url === "/reset") {
        req.socket.destroy();
        return;
      }
      if (req.url === "/garbage") {
        req.socket.end("NOT HTTP\r\n\r\n");
        return;
      }
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", () => {
        const echo: Echo = { method: req.method ?? "", url: req.url ?? "", rawHeaders: req.rawHeaders, body: Buffer.concat(parts).toString() };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(echo));
      });
    });
    await new Promise<void>((resolve) => daemon.listen(daemonSock, resolve));
    pools = new UpstreamPools(60_000);
    const forwarder = new HttpForwarder(pools, agent, {
      authenticate: () => undefined,
      gatewayTarget: (tenantId: string): GatewayTarget => ({ tenantId, status: "active", socketPath: target.socketPath, daemonUp: true }),
    }, silentLogger);
    gateway = http.createServer((req, res) => {
      lastUpstream = forwarder.forward(req, res, { ok: true, tenantId: "t1", tokenId: "tok", socketPath: target.socketPath }, "req-1", target.plan);
      res.once("close", () => {
        if (!res.writableFinished) lastUpstream?.abort();
      });
    });
    await new Promise<void>((resolve) => gateway.listen(gatewaySock, resolve));
  });

  beforeEach(() => {
    target = { socketPath: daemonSock, plan: undefined };
    daemonSeen.closedBeforeEnd = 0;
    daemonSeen.streamBytes = 0;
    daemonSeen.stalled = false;
    daemonSeen.hung = 0;
  });

  after(async () => {
    pools.destroy();
    agent.destroy();
    for (const s of [gateway, daemon]) {
      s?.closeAllConnections();
      await new Promise((r) => s?.close(r));
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** One raw request on a fresh gateway connection; resolves with everything read until close. */
  function raw(request: string, more?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const c = net.connect(gatewaySock);
      let got = "";
      c.on("data", (d: Buffer) => (got += d.toString("latin1")));
      c.on("error", reject);
      c.on("close", () => resolve(got));
      c.write(request);
      // The rest of a body a moment later: the forwarder has sent the head by then.
      if (more !== undefined) setTimeout(() => c.write(more), 200);
    });
  }
  /** The body of a raw answer, de-chunked when it is chunked. */
  const bodyOf = (answer: string): string => {
    const end = answer.indexOf("\r\n\r\n");
    let rest = answer.slice(end + 4);
    if (!/\r\ntransfer-encoding: chunked\r\n/i.test(answer.slice(0, end + 2))) return rest;
    let body = "";
    for (;;) {
      const eol = rest.indexOf("\r\n");
      const n = parseInt(rest.slice(0, eol), 16);
      if (!(n > 0)) return body;
      body += rest.slice(eol + 2, eol + 2 + n);
      rest = rest.slice(eol + 2 + n + 2);
    }
  };
  const headerNames = (e: Echo): string[] => e.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());

  it("drops hop-by-hop headers and the names Connection lists, streams a chunked body as chunked, keeps Content-Length", async () => {
    const chunked = await raw("POST /echo?q=1 HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\n"
      + "TE: trailers\r\nTrailer: x-t\r\nAuthorization: Bearer x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Kept: yes\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "6\r\n world\r\n0\r\n\r\n");
    const e = JSON.parse(bodyOf(chunked)) as Echo;
    expect(e.url).to.equal("/echo?q=1");
    expect(e.body).to.equal("hello world");
    const names = headerNames(e);
    for (const hop of ["x-hop", "keep-alive", "proxy-connection", "te", "trailer", "authorization"]) expect(names, hop).to.not.include(hop);
    expect(names).to.include.members(["x-kept", "transfer-encoding", "x-request-id", "x-paddock-tenant", "x-forwarded-for"]);
    expect(e.rawHeaders[e.rawHeaders.findIndex((n) => n.toLowerCase() === "x-forwarded-for") + 1]).to.not.equal("6.6.6.6");
    const sized = JSON.parse(bodyOf((await raw("PUT /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")).replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ""))) as Echo;
    expect(sized.body).to.equal("abc");
    expect(headerNames(sized)).to.include("content-length").and.not.include("expect").and.not.include("transfer-encoding");
    const delAnswer = await raw("DELETE /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    // The client's close is answered (the daemon, which never saw it, said keep-alive).
    const delHead = delAnswer.slice(0, delAnswer.indexOf("\r\n\r\n")).toLowerCase().split("\r\n");
    expect(delHead).to.include("connection: close");
    expect(delHead.filter((l) => l.startsWith("connection:") || l.startsWith("keep-alive:"))).to.have.length(1);
    const del = JSON.parse(bodyOf(delAnswer)) as Echo;
    expect(del.rawHeaders[del.rawHeaders.findIndex((n) => n.toLowerCase() === "content-length") + 1]).to.equal("0");
  });

  it("a preview plan's header list is filtered the same way; a path or header undici refuses is 400 with its code", async () => {
    target.plan = { path: "/echo/planned", headers: ["x-app", "1", "connection", "x-app2", "x-app2", "2", "upgrade", "h2c", "host", "gw"] };
    const e = JSON.parse(bodyOf(await raw("GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"))) as Echo;
    expect(e.url).to.equal("/echo/planned");
    expect(headerNames(e)).to.include("x-app").and.not.include("upgrade");
    target.plan = { path: "/echo/a b", headers: [] };
    expect(await raw("GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")).to.match(/^HTTP\/1\.1 400 /).and.include('"code":"ERR_URL_MALFORMED"');
    target.plan = { path: "/echo", headers: ["x-bad", "a\u0001b"] };
    expect(await raw("GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")).to.match(/^HTTP\/1\.1 400 /).and.include('"code":"ERR_HEADER_INVALID"');
  });

  it("a client that stops reading stops the daemon's writes (backpressure); its leaving closes the daemon's connection", async () => {
    const c = net.connect(gatewaySock);
    c.on("error", () => undefined);
    c.pause();
    c.write("GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n");
    // Until the daemon's count stops moving for 500 ms: stalled for good, or (no backpressure) all 64 MiB written.
    let last = -1;
    let since = Date.now();
    await untilTrue("the daemon's writes stop", () => {
      if (daemonSeen.streamBytes !== last) {
        last = daemonSeen.streamBytes;
        since = Date.now();
      }
      return last > 0 && Date.now() - since >= 500;
    });
    expect(daemonSeen.stalled).to.equal(true);
    // Socket buffers and the proxy's own high-water marks hold a few MiB at most, not the 64 MiB.
    expect(daemonSeen.streamBytes).to.be.below(16 * 1024 * 1024);
    c.destroy();
    await untilTrue("the daemon sees its connection close", () => daemonSeen.closedBeforeEnd === 1);
  });

  it("abort() of a request waiting for its answer closes the daemon's connection and writes nothing to the client", async () => {
    const c = net.connect(gatewaySock);
    let got = "";
    c.on("data", (d: Buffer) => (got += d.toString()));
    c.write("GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n");
    await untilTrue("forwarded", () => daemonSeen.hung === 1);
    lastUpstream?.abort();
    await untilTrue("the daemon sees its connection close", () => daemonSeen.closedBeforeEnd === 1);
    c.destroy();
    expect(got).to.equal("");
  });

  it("a daemon reset before the answer head is 503 + Retry-After, no socket 503, garbage 502", async () => {
    const reset = await raw("GET /reset HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    expect(reset).to.match(/^HTTP\/1\.1 503 /).and.match(/retry-after: \d+/i).and.include("ERR_TENANT_UNAVAILABLE");
    target.socketPath = path.join(dir, "missing.sock");
    const missing = await raw("GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    expect(missing).to.match(/^HTTP\/1\.1 503 /).and.include("ERR_TENANT_UNAVAILABLE");
    target.socketPath = daemonSock;
    const garbage = await raw("GET /garbage HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    expect(garbage).to.match(/^HTTP\/1\.1 502 /).and.include("ERR_UPSTREAM_FAILED");
  });

  it("a pool with no connection and no request is dropped by the sweep; one in use is kept", async () => {
    await raw("GET /echo HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
    pools.sweep();
    expect(pools.size, "an idle connection is still open").to.be.at.least(1);
    daemon.closeIdleConnections();
    await untilTrue("the sweep drops every pool", () => {
      pools.sweep();
      return pools.size === 0;
    });
  });
});
