/**
 * A tenant's previewed app (code the tenant controls, assume hostile) that stops reading a
 * request body or never answers a WebSocket upgrade, against the daemon's preview proxy
 * (tenant-daemon/api/preview-routes.ts `createPreviewProxy`), run for real: node:http on Unix
 * sockets and a stand-in guest agent that opens the forward stream (101 with the VM's proof)
 * and then is the app.
 *
 * While the proxy holds a body back, or waits for the app's 101, it does not read the client's
 * socket, so a browser that leaves is not seen. Was: such requests stayed in the daemon for as
 * long as the app liked (a POST whose client left after 2 s was still served 15 s later; found
 * with this harness); now an app that takes no byte of a body for `bodyStallMs` before it
 * answered, or does not answer an upgrade within `upgradeAnswerMs`, gets a 502 and its request
 * destroyed (1 s here; 60 s and 30 s in the daemon).
 *
 * Controls: a browser leaving while its body flows is seen at once; an app that answers 101 at
 * once is relayed. No VM, no daemon, a few seconds.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { silentLogger } from "../../shared/logger.js";
import { createApiServer } from "../../tenant-daemon/api/http-util.js";
import { createPreviewProxy } from "../../tenant-daemon/api/preview-routes.js";
import { untilTrue } from "../helpers/wait.js";

const MiB = 1024 * 1024;
const BOUND_MS = 1000;
const PROOF = "c".repeat(64);

/** Poll `probe` until true; fails with `what` after `ms` (a bound for a loaded host, not a speed check). */
describe("security: a hostile previewed app against the daemon's preview proxy (real sockets, no VM)", function () {
  this.timeout(30_000);
  let dir = "";
  let agent: net.Server;
  let api: http.Server;
  /** What the app does once the forward stream is open and its request head arrived. */
  let app: (s: net.Socket) => void = () => undefined;
  const sockets = new Set<net.Socket>();
  /** The daemon side's upgrade sockets not yet closed. */
  const upgradeSockets = new Set<net.Socket>();
  let proxy: ReturnType<typeof createPreviewProxy>;
  const apiConnections = (): Promise<number> => new Promise((resolve) => api.getConnections((_e, n) => resolve(n)));

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-preview-stall-"));
    agent = net.createServer((s) => {
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
      s.on("error", () => undefined);
      // The agent's forward request head, then the app's request head (sent once the 101 is read).
      let buf = "";
      let upgraded = false;
      const onData = (d: Buffer): void => {
        buf += d.toString("latin1");
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        buf = buf.slice(end + 4);
        if (!upgraded) {
          upgraded = true;
          s.write(`HTTP/1.1 101 Switching Protocols\r\nx-paddock-agent-proof: ${PROOF}\r\nconnection: Upgrade\r\nupgrade: paddock-stream\r\n\r\n`);
          if (buf.indexOf("\r\n\r\n") < 0) return;
        }
        s.off("data", onData);
        s.pause();
        app(s);
      };
      s.on("data", onData);
    });
    await new Promise<void>((resolve) => agent.listen(path.join(dir, "agent.sock"), resolve));
    proxy = createPreviewProxy({
      resolveAgent: () => ({ hostname: "vm-1", socketPath: path.join(dir, "agent.sock"), proof: PROOF }),
      createdAt: () => "2026-01-01T00:00:00Z", authToken: undefined, logger: silentLogger, bodyStallMs: BOUND_MS, upgradeAnswerMs: BOUND_MS,
    });
    api = createApiServer((req, res) => {
      req.originalUrl = req.url ?? "";
      void proxy.handlers.proxy(req, res);
    });
    api.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      sockets.add(socket);
      upgradeSockets.add(socket);
      socket.once("close", () => {
        sockets.delete(socket);
        upgradeSockets.delete(socket);
      });
      proxy.upgrade(req, socket, head);
    });
    await new Promise<void>((resolve) => api.listen(path.join(dir, "api.sock"), resolve));
  });

  after(async () => {
    api.closeAllConnections();
    for (const s of sockets) s.destroy();
    await new Promise((r) => api.close(r));
    await new Promise((r) => agent.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** POST 64 MiB to the preview; the browser leaves after `leaveAfterMs`. Resolves with the answer's status (if any) and the MiB it got out. */
  const post = (leaveAfterMs: number): Promise<{ status?: number; sentMiB: number }> => new Promise((resolve) => {
    const req = http.request({ socketPath: path.join(dir, "api.sock"), method: "POST", path: "/vm/vm-1/preview/8080/up", headers: { "content-length": String(64 * MiB) }, agent: false });
    let status: number | undefined;
    req.on("response", (r) => {
      status = r.statusCode;
      r.resume();
    });
    req.on("error", () => undefined);
    const chunk = Buffer.alloc(MiB, 1);
    let n = 0;
    const pump = (): void => {
      while (n < 64 && !req.destroyed) {
        n++;
        if (!req.write(chunk)) return void req.once("drain", pump);
      }
    };
    pump();
    setTimeout(() => req.destroy(), leaveAfterMs);
    req.once("close", () => resolve({ status, sentMiB: n }));
  });

  it("a POST whose app never reads its body, the browser leaving: the daemon lets go of the connection (control: an app that reads, the browser leaving, is seen)", async () => {
    app = (s) => {
      s.resume();
    };
    const c = await post(500);
    expect(c.status, "no answer (the app reads, never answers)").to.equal(undefined);
    await untilTrue("control: the daemon let go of the browser's connection", async () => (await apiConnections()) === 0);

    app = () => undefined;
    const r = await post(300);
    expect(r.sentMiB, "the browser was held back").to.be.below(64);
    await untilTrue("the daemon let go of the browser's connection", async () => (await apiConnections()) === 0);
  });

  it("a POST whose app never reads its body, the browser waiting: 502 ERR_PREVIEW_UPSTREAM_FAILED", async () => {
    app = () => undefined;
    const r = await post(5 * BOUND_MS);
    expect(r.status).to.equal(502);
  });

  /** A WebSocket upgrade to the preview; resolves with what the client got when it closed, or after `waitMs`. */
  const upgrade = (leaveAfterMs: number | undefined, waitMs = 5 * BOUND_MS): Promise<string> => new Promise((resolve) => {
    const s = net.connect(path.join(dir, "api.sock"), () => s.write("GET /vm/vm-1/preview/8080/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.on("error", () => undefined);
    if (leaveAfterMs !== undefined) setTimeout(() => s.destroy(), leaveAfterMs);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(got);
    }, waitMs);
    s.once("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });

  it("a WebSocket upgrade the app never answers: the client gets 502, and a client that left is let go of; an app answering 101 is relayed (control)", async () => {
    app = (s) => {
      s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    };
    expect(await upgrade(undefined, 3 * BOUND_MS), "control: relayed").to.match(/^HTTP\/1\.1 101 /);

    app = () => undefined;
    expect(await upgrade(undefined)).to.match(/^HTTP\/1\.1 502 /);
    await untilTrue("no upgrade socket left from before", () => upgradeSockets.size === 0);
    await upgrade(200);
    await untilTrue("the daemon let go of the upgrade socket of a client that left", () => upgradeSockets.size === 0);
  });

  // Last: the proxy stays closed.
  it("close (daemon stop) ends an upgrade still waiting for the app's 101 and refuses later ones (control: before the close, a late 101 is relayed)", async () => {
    let reached: () => void = () => undefined;
    app = (s) => {
      reached();
      setTimeout(() => s.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), 300);
    };
    expect(await upgrade(undefined, 800), "control: a 101 after 300 ms is relayed").to.match(/^HTTP\/1\.1 101 /);
    const atApp = new Promise<void>((resolve) => (reached = resolve));
    const waiting = upgrade(undefined, 3 * BOUND_MS);
    await atApp;
    proxy.close();
    expect(await waiting, "the upgrade waiting at the close").to.equal("");
    expect(await upgrade(undefined, 3 * BOUND_MS), "an upgrade after the close").to.equal("");
  });
});
