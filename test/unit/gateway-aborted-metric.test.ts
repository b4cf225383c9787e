/**
 * The gateway's request metric of a request its client abandoned before any answer head:
 * `paddock_gateway_requests_total{code="aborted"}` (supervisor/metrics.ts `ABORTED_CODE`), not
 * Node's default `res.statusCode` 200 that was never sent; an answered request keeps its
 * status. A real gateway (supervisor/gateway.ts `createGatewayServer`) on loopback forwards to a
 * real HTTP server on a Unix socket standing in for the tenant daemon; only the token → tenant
 * resolution is a stub.
 */
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promises as fs } from "node:fs";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { AuditLog } from "../../supervisor/audit-log.js";
import { ABORTED_CODE, SupervisorMetrics, responseCodeLabel } from "../../supervisor/metrics.js";
import { GatewayAdmission } from "../../supervisor/gateway-admission.js";
import { createGatewayServer } from "../../supervisor/gateway.js";
import type { TenantResolver } from "../../supervisor/gateway-route.js";
import { parseExposition, sampleValue, series } from "../helpers/prometheus.js";

describe("gateway request metric: a request aborted before any answer head", () => {
  let dir: string;
  let upstream: http.Server;
  let gateway: http.Server;
  let port: number;
  const metrics = new SupervisorMetrics();
  /** Resolvers of the gateway's next observed requests, in order. */
  const observed: Array<() => void> = [];
  /** Resolvers of the upstream's next received requests, in order. */
  const arrived: Array<() => void> = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-gwabort-"));
    const socketPath = path.join(dir, "daemon.sock");
    // The "daemon": answers /answer, never answers /silent.
    upstream = http.createServer((req, res) => {
      arrived.shift()?.();
      if (req.url === "/answer") res.end("ok");
    });
    await new Promise<void>((resolve) => upstream.listen(socketPath, resolve));
    const tenants: TenantResolver = {
      authenticate: (token) => (token === "tok-t1" ? { tenantId: "t1", tokenId: "k1" } : undefined),
      gatewayTarget: (tenantId) => (tenantId === "t1" ? { tenantId, status: "active", socketPath, daemonUp: true } : undefined),
    };
    const observe = metrics.observeRequest.bind(metrics);
    metrics.observeRequest = (tenant, code, seconds) => {
      observe(tenant, code, seconds);
      observed.shift()?.();
    };
    const admission = new GatewayAdmission({ maxConnections: 16, maxRequests: 16, requestsPerSecond: 1000, burst: 1000 }, { reserve: 64, tenantSharePercent: 100 }, { nofile: 4096 });
    gateway = createGatewayServer({ tenants, metrics, audit: new AuditLog(path.join(dir, "audit.log")), log: silentLogger, admission });
    await new Promise<void>((resolve) => gateway.listen(0, "127.0.0.1", resolve));
    port = (gateway.address() as AddressInfo).port;
  });
  after(async () => {
    gateway?.closeAllConnections();
    upstream?.closeAllConnections();
    await Promise.all([gateway, upstream].map((s) => new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()))));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** One request through the gateway to `p`; `abort`: destroyed by the client once the daemon has it. */
  async function request(p: string, abort: boolean): Promise<void> {
    const seen = new Promise<void>((resolve) => observed.push(resolve));
    const atDaemon = new Promise<void>((resolve) => arrived.push(resolve));
    const req = http.request({ host: "127.0.0.1", port, path: p, headers: { authorization: "Bearer tok-t1" }, agent: false }, (res) => res.resume());
    req.on("error", () => undefined);
    req.end();
    if (abort) {
      await atDaemon;
      req.destroy();
    }
    await seen;
  }

  it("counts an answered request under its status and an abandoned one under code=\"aborted\", not 200", async () => {
    await request("/answer", false);
    await request("/silent", true);
    const f = parseExposition(await metrics.render({}, {}));
    expect(sampleValue(f, "paddock_gateway_requests_total", { tenant: "t1", code: "200" })).to.equal(1);
    expect(sampleValue(f, "paddock_gateway_requests_total", { tenant: "t1", code: ABORTED_CODE })).to.equal(1);
    expect(Number(series(f, "paddock_gateway_request_duration_seconds", { tenant: "t1", code: ABORTED_CODE }).count)).to.equal(1);
  });

  it("responseCodeLabel: the status once the head was sent, else aborted", () => {
    expect(responseCodeLabel({ headersSent: true, statusCode: 502 })).to.equal("502");
    expect(responseCodeLabel({ headersSent: false, statusCode: 200 })).to.equal(ABORTED_CODE);
  });
});
