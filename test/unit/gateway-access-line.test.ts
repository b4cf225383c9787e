/**
 * The gateway's access line (supervisor/gateway-session.ts `RequestFinisher.finish`): a request
 * its client abandoned carries `aborted: true`, and `status` only when the answer's head was
 * sent (README "Logs"), like the daemon's own line (tenant-daemon/api/access-log.ts). Real HTTP
 * server and client on loopback; the finisher is called from the response's `close`.
 */
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promises as fs } from "node:fs";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { expect } from "chai";
import { createLogger } from "../../shared/logger.js";
import { AuditLog } from "../../supervisor/audit-log.js";
import { SupervisorMetrics } from "../../supervisor/metrics.js";
import { RequestFinisher } from "../../supervisor/gateway-session.js";
import type { Route } from "../../supervisor/gateway-route.js";

describe("gateway access line: status of an aborted request", () => {
  let dir: string;
  let server: http.Server;
  let port: number;
  const lines: Array<Record<string, unknown>> = [];
  /** Fires when the server's response of a request closes (after `finish` ran). */
  let closed: () => void = () => undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-gwline-"));
    const stream = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split("\n")) if (l !== "") lines.push(JSON.parse(l) as Record<string, unknown>); cb(); } });
    const finisher = new RequestFinisher(new SupervisorMetrics(), new AuditLog(path.join(dir, "audit.log")), createLogger({ stream, level: "info" }));
    const route: Route = { ok: true, tenantId: "t1", tokenId: "tok", socketPath: "/nonexistent" };
    server = http.createServer((req, res) => {
      const started = performance.now();
      res.on("close", () => {
        finisher.finish(req, res, route, String(req.headers["x-id"]), started, undefined);
        closed();
      });
      const mode = req.url ?? "";
      if (mode === "/answer") res.end("ok");
      else if (mode === "/head") {
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("partial");
      }
      // "/silent": no answer at all; the client gives up.
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** One request to `p`; with `abortAfterMs`, the client destroys it that long after sending (or after the head). */
  async function request(p: string, id: string, abortAfterMs?: number): Promise<Record<string, unknown>> {
    const done = new Promise<void>((resolve) => (closed = resolve));
    const req = http.request({ host: "127.0.0.1", port, path: p, headers: { "x-id": id }, agent: false }, (res) => {
      res.resume();
      if (abortAfterMs !== undefined) setTimeout(() => req.destroy(), abortAfterMs);
    });
    req.on("error", () => undefined);
    req.end();
    if (abortAfterMs !== undefined && p === "/silent") setTimeout(() => req.destroy(), abortAfterMs);
    await done;
    // The logger writes info lines at once unless batched; wait a tick for the stream.
    await new Promise((r) => setImmediate(r));
    const line = lines.find((l) => l.req === id);
    expect(line, `access line of ${id}`).to.not.equal(undefined);
    return line as Record<string, unknown>;
  }

  it("an answered request has its status and aborted: false", async () => {
    const line = await request("/answer", "r-answer");
    expect(line).to.include({ msg: "request", status: 200, aborted: false, tenant: "t1", path: "/answer" });
  });

  it("a request aborted before any answer head was sent has no status", async () => {
    const line = await request("/silent", "r-silent", 50);
    expect(line).to.include({ aborted: true, path: "/silent" });
    expect(line).to.not.have.property("status");
  });

  it("a request aborted after the answer head was sent keeps that status", async () => {
    const line = await request("/head", "r-head", 20);
    expect(line).to.include({ aborted: true, status: 200, path: "/head" });
  });
});
