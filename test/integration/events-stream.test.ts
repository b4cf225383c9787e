/**
 * GET /events (tenant-daemon/api/events-routes.ts) on a real HTTP server on a Unix socket, fed
 * by a real EventLog: a client that stops reading is dropped with `event: dropped` once its
 * unsent bytes pass the bound and its subscription is released (memory stays bounded), while a
 * client that reads gets every event (the positive control); HEAD and other methods get 405.
 */
import { promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { expect } from "chai";
import { createLogger } from "../../shared/logger.js";
import { createEventHandlers } from "../../tenant-daemon/api/events-routes.js";
import { createApiServer } from "../../tenant-daemon/api/http-util.js";
import { compileRoutes, serveRoutes } from "../../tenant-daemon/api/route-mount.js";
import { EventLog } from "../../tenant-daemon/events/event-log.js";
import { request } from "../helpers/http.js";
import { SseClient } from "../helpers/sse.js";

describe("GET /events stream (real server, real EventLog)", function () {
  this.timeout(60_000);
  let dir: string;
  let socketPath: string;
  let server: http.Server;
  let log: EventLog;
  const logLines = new PassThrough();
  let logged = "";
  logLines.on("data", (c: Buffer) => (logged += c.toString()));

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-ev-"));
    socketPath = path.join(dir, "api.sock");
    log = new EventLog({ maxEvents: 100_000 });
    const logger = createLogger({ stream: logLines });
    server = createApiServer(serveRoutes(compileRoutes({ events: createEventHandlers({ events: log, logger, maxBufferedBytes: 64 * 1024 }) }), logger));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(dir, { recursive: true, force: true });
  });

  const burst = (n: number, from = 0): void => {
    for (let i = from; i < from + n; i++) log.emit({ type: "created", hostname: `sbox-${i}`, hostgroup: "sbox", reason: "api" });
  };

  it("a reading client gets every event of a burst (positive control)", async () => {
    const s = await SseClient.open({ socketPath });
    try {
      // Batches of 100 (~20 KiB, under the bound), each read before the next: a client that keeps up.
      for (let b = 0; b < 50; b++) {
        burst(100, b * 100);
        await s.waitFor((e) => e.json?.hostname === `sbox-${b * 100 + 99}`);
      }
      expect(s.events.filter((e) => e.event === "created")).to.have.length(5000);
      expect(s.events.some((e) => e.event === "dropped")).to.equal(false);
    } finally {
      s.close();
    }
    await until(() => log.subscribers() === 0);
  });

  it("a client that stops reading is dropped with event: dropped past the bound, and unsubscribed", async () => {
    const s = await SseClient.open({ socketPath });
    s.pause();
    expect(log.subscribers()).to.equal(1);
    // ~200 bytes each: well past the socket buffers and the 64 KiB bound.
    burst(20_000);
    expect(log.subscribers(), "unsubscribed at once").to.equal(0);
    expect(logged).to.include("events client dropped: too slow");
    s.resume();
    const dropped = await s.waitFor((e) => e.event === "dropped");
    expect(dropped.json).to.include({ reason: "slow_client", limit_bytes: 64 * 1024 });
    await s.waitEnd();
    expect(s.events.filter((e) => e.event === "created").length).to.be.below(20_000);
  });

  it("HEAD and POST on /events answer 405", async () => {
    for (const m of ["HEAD", "POST"]) expect((await request({ socketPath }, m, "/events")).status, m).to.equal(405);
  });
});

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error("condition not met");
    await new Promise((r) => setTimeout(r, 20));
  }
}
