/**
 * The idle bound on an incoming request body (shared/body-idle-timeout.ts)
 * with a short limit (400 ms), on the two real servers that set `requestTimeout = 0`:
 * the tenant daemon's listenApi (real Unix socket, a small express app) and the supervisor
 * gateway (in-process runSupervisor, tenant daemons played by test/fixtures/echo-daemon).
 * A stalled body gets 408 ERR_REQUEST_BODY_TIMEOUT; a slow but active body, a long response,
 * a body held back by a slow consumer, and a quiet stdin after the response started are not cut.
 */
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import express from "express";
import { expect } from "chai";
import { listenApi } from "../../tenant-daemon/api/server.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { request } from "../helpers/http.js";
import { FAST_RESTART, TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";

const IDLE_MS = 400;

type Target = { socketPath: string } | { host: string; port: number };

/**
 * Send `head`, then body chunks on a schedule (`[delayMs, bytes]`), never more; resolve with
 * the raw reply once the server closes or replies completely.
 */
function rawRequest(target: Target, head: string, chunks: Array<[number, string]>): Promise<{ reply: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = "socketPath" in target ? net.connect(target.socketPath) : net.connect(target.port, target.host);
    let reply = "";
    const timers: NodeJS.Timeout[] = [];
    s.on("data", (c: Buffer) => (reply += c.toString()));
    s.on("error", () => undefined);
    s.on("close", () => {
      timers.forEach(clearTimeout);
      resolve({ reply, ms: Date.now() - t0 });
    });
    s.write(head);
    let at = 0;
    for (const [delay, bytes] of chunks) {
      at += delay;
      timers.push(setTimeout(() => !s.destroyed && s.write(bytes), at));
    }
    // The test's own bound: the server must answer well before this.
    timers.push(setTimeout(() => s.destroy(), at + 10_000));
  });
}

function statusOf(reply: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1] ?? 0);
}

function jsonBodyOf(reply: string): Record<string, unknown> {
  const body = reply.slice(reply.indexOf("\r\n\r\n") + 4);
  return JSON.parse(body.includes("\r\n") && /^[0-9a-f]+\r\n/.test(body) ? body.split("\r\n")[1] ?? "{}" : body) as Record<string, unknown>;
}

describe("request body idle timeout (408) on the daemon API and the gateway", function () {
  this.timeout(30_000);

  describe("tenant daemon listenApi", () => {
    let dir: string;
    let server: http.Server;
    let target: { socketPath: string };

    before(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-bidle-"));
      const app = express();
      // Reads the whole body (like express.json or a cp upload).
      app.post("/count", (req, res) => {
        let n = 0;
        req.on("data", (c: Buffer) => (n += c.length));
        req.on("end", () => res.json({ bytes: n }));
      });
      // A slow consumer: does not read the body for 3 × the idle limit.
      app.post("/slow-consumer", (req, res) => {
        setTimeout(() => {
          let n = 0;
          req.on("data", (c: Buffer) => (n += c.length));
          req.on("end", () => res.json({ bytes: n }));
        }, 3 * IDLE_MS);
      });
      // An exec with stdin: the response starts at once, then stdin is echoed as it comes.
      app.post("/stdin", (req, res) => {
        res.writeHead(200, { "content-type": "application/x-ndjson" });
        res.flushHeaders();
        req.on("data", (c: Buffer) => res.write(JSON.stringify({ stdin: c.toString() }) + "\n"));
        req.on("end", () => res.end(JSON.stringify({ done: true }) + "\n"));
      });
      // A long streamed response to a bodyless request.
      app.get("/long", (_req, res) => {
        res.writeHead(200, { "content-type": "text/plain" });
        let i = 0;
        const t = setInterval(() => {
          res.write(`${i}\n`);
          if (++i === 6) {
            clearInterval(t);
            res.end();
          }
        }, IDLE_MS / 2);
      });
      const socketPath = path.join(dir, "api.sock");
      server = await listenApi(app, { api: { kind: "unix", socketPath } } as unknown as TenantConfig, { bodyIdleMs: IDLE_MS });
      target = { socketPath };
    });

    after(async () => {
      if (server) await new Promise<void>((r) => server.close(() => r()));
      server?.closeAllConnections();
      if (dir) await fs.rm(dir, { recursive: true, force: true });
    });

    it("a body that stops arriving gets 408 ERR_REQUEST_BODY_TIMEOUT and the connection closes", async () => {
      const r = await rawRequest(target, "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", [[0, "0123456789"]]);
      expect(statusOf(r.reply), r.reply).to.equal(408);
      expect(jsonBodyOf(r.reply)).to.have.property("code", "ERR_REQUEST_BODY_TIMEOUT");
    });

    it("a slow but active body (a byte every IDLE/4, 2.5 × IDLE in all) is not cut", async () => {
      const chunks = Array.from({ length: 10 }, () => [IDLE_MS / 4, "x"] as [number, string]);
      const r = await rawRequest(target, "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n", chunks);
      expect(statusOf(r.reply), r.reply).to.equal(200);
      expect(jsonBodyOf(r.reply)).to.deep.equal({ bytes: 10 });
    });

    it("a body held back by a slow consumer (backpressure) is not idleness", async () => {
      const r = await request(target, "POST", "/slow-consumer", Buffer.alloc(4 << 20, 1), { "content-type": "application/octet-stream" });
      expect(r.status, r.text).to.equal(200);
      expect(r.json).to.deep.equal({ bytes: 4 << 20 });
    });

    it("long responses and a quiet stdin after the response started are not cut", async () => {
      const long = await request(target, "GET", "/long");
      expect(long.status).to.equal(200);
      expect(long.text).to.equal("0\n1\n2\n3\n4\n5\n");
      const r = await rawRequest(target, "POST /stdin HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n", [[0, "ab"], [3 * IDLE_MS, "cd"]]);
      expect(statusOf(r.reply), r.reply).to.equal(200);
      expect(r.reply).to.include('{"stdin":"ab"}').and.include('{"stdin":"cd"}').and.include('{"done":true}');
    });
  });

  describe("supervisor gateway", () => {
    let sup: TestSupervisor | undefined;
    let token = "";
    let gw: { host: string; port: number };

    before(async () => {
      sup = await TestSupervisor.create({ config: (p) => ({ ...echoDaemonConfig(p), restart: FAST_RESTART }), gatewayBodyIdleMs: IDLE_MS });
      process.env.PDK_FIXTURE_PURGE_LOG = path.join(sup.dir, "purge.log");
      await sup.start();
      const r = await sup.adminReq("POST", "/tenants", { id: `bi${Math.random().toString(36).slice(2, 7)}`, template: "sandbox" });
      expect(r.status, r.text).to.equal(201);
      token = (r.json as { token: string }).token;
      gw = sup.gatewayTarget();
    });

    after(async () => {
      await sup?.destroy();
    });

    it("a stalled body through the gateway gets 408 with its code; an active slow body passes", async () => {
      const head = (len: number): string => `POST /vm/x/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: ${len}\r\nConnection: close\r\n\r\n`;
      const stalled = await rawRequest(gw, head(100), [[0, "0123456789"]]);
      expect(statusOf(stalled.reply), stalled.reply).to.equal(408);
      expect(jsonBodyOf(stalled.reply)).to.have.property("code", "ERR_REQUEST_BODY_TIMEOUT");
      const chunks = Array.from({ length: 8 }, () => [IDLE_MS / 4, "y"] as [number, string]);
      const slow = await rawRequest(gw, head(8), chunks);
      expect(statusOf(slow.reply), slow.reply).to.equal(200);
      expect(jsonBodyOf(slow.reply)).to.have.property("body_bytes", 8);
    });
  });
});
