/**
 * The gateway's upstream keep-alive agent (supervisor/gateway-forward.ts `createUpstreamAgent`):
 * a connection idle in the free list is closed by the gateway (before the daemon's own
 * keepAliveTimeout would), a connection under a long silent answer (an exec stream) is never
 * cut. Real HTTP server on a Unix socket; the sweep shortened.
 */
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { promises as fs } from "node:fs";
import type { Socket } from "node:net";
import { expect } from "chai";
import { createUpstreamAgent } from "../../supervisor/gateway-forward.js";

/** GET `p` through `agent` on `socketPath`: status and body. */
function get(agent: http.Agent, socketPath: string, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, agent, path: p }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("gateway upstream agent", () => {
  const SWEEP_MS = 40;
  let dir: string;
  let server: http.Server;
  let socketPath: string;
  const serverSockets: Socket[] = [];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-agent-"));
    socketPath = path.join(dir, "s.sock");
    server = http.createServer((req, res) => {
      if (req.url === "/slow") {
        // A long answer with no byte for many sweeps (an exec stream waiting for output).
        res.writeHead(200, { "content-type": "text/plain" });
        res.write("a");
        setTimeout(() => res.end("b"), SWEEP_MS * 8);
        return;
      }
      res.end("ok");
    });
    // The daemon's side stays open far longer than the test: only the agent can close a connection.
    server.keepAliveTimeout = 600_000;
    server.on("connection", (s: Socket) => serverSockets.push(s));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  afterEach(async () => {
    for (const s of serverSockets.splice(0)) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("closes a connection left idle in the free list, never one under a long silent answer, and reuses a live one", async () => {
    const agent = createUpstreamAgent(SWEEP_MS);
    try {
      expect(await get(agent, socketPath, "/slow")).to.deep.equal({ status: 200, body: "ab" });
      expect(await get(agent, socketPath, "/")).to.deep.equal({ status: 200, body: "ok" });
      // Both requests went over the one kept-alive connection.
      expect(serverSockets).to.have.length(1);
      const closed = new Promise<void>((resolve) => (serverSockets[0] as Socket).once("close", () => resolve()));
      // Idle now: the sweep closes it (the wait is bounded by mocha's timeout, not asserted).
      await closed;
      await new Promise((r) => setImmediate(r));
      expect(Object.values(agent.freeSockets).flat()).to.have.length(0);
    } finally {
      agent.destroy();
    }
  });
});
