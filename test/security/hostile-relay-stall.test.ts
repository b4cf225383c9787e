/**
 * A guest agent that stops reading an upload, against the daemon's body relay
 * (tenant-daemon/agent-client/agent-stream.ts `streamToAgent` and `relayBody`), run for real:
 * node:http on Unix sockets, the relay's own budget, and a stand-in agent that answers with
 * the VM's proof (what guest root's taken-over agent does in test/security/hostile-relay.test.ts).
 *
 * While the relay holds the client back it does not read the client's socket, so it cannot
 * see the client leave. Was: an upload whose client gave up stayed in the daemon for as long
 * as the guest kept not reading (found from a real runc VM: 4 abandoned uploads held 8 of the
 * daemon's descriptors and the guest's 4 connections past 10 s, and 100 s later, with their
 * shares of RELAY_BODY_TOTAL_BYTES; the daemon's 60 s body-idle bound counts a held-back body
 * as progress). Now an agent that takes no byte for the stall bound (60 s in the daemon, 300 ms
 * here) before it answered is refused with 503 and both connections go.
 *
 * Controls: a client that leaves while its body still flows is seen at once (the probe sees a
 * release); a slow agent that keeps taking bytes and an agent that answered first (an exec's
 * stdin) are not cut. No VM, no daemon, a few seconds.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { errorResponse, type PaddockError } from "../../shared/errors.js";
import { relayBodyBudget, streamToAgent } from "../../tenant-daemon/agent-client/agent-stream.js";
import { untilTrue } from "../helpers/wait.js";

const MiB = 1024 * 1024;
const STALL_MS = 2000;
const PROOF = "a".repeat(64);

/** What the stand-in agent does with a request once its head arrived (`rest`: body bytes that came with it). */
type Behaviour = (socket: net.Socket, rest: Buffer) => void;

/** Poll `probe` until true; fails with `what` after `ms` (a bound for a loaded host, not a speed check). */
describe("security: a guest agent that stops reading an upload, against the daemon's body relay (real sockets, no VM)", function () {
  this.timeout(30_000);
  let dir = "";
  let agent: net.Server;
  let api: http.Server;
  let behaviour: Behaviour = () => undefined;
  /** Agent-side connections opened so far, and those not yet closed (destroyed in `after`). */
  const conns = { opened: 0 };
  const agentSockets = new Set<net.Socket>();
  const apiSocket = (): string => path.join(dir, "api.sock");
  /** Client connections the daemon side still holds. */
  const apiConnections = (): Promise<number> => new Promise((resolve) => api.getConnections((_e, n) => resolve(n)));

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-relay-stall-"));
    agent = net.createServer((s) => {
      conns.opened++;
      agentSockets.add(s);
      s.once("close", () => agentSockets.delete(s));
      s.on("error", () => undefined);
      let head = Buffer.alloc(0);
      const onData = (d: Buffer): void => {
        head = Buffer.concat([head, d]);
        const end = head.indexOf("\r\n\r\n");
        if (end < 0) return;
        s.off("data", onData);
        s.pause();
        behaviour(s, head.subarray(end + 4));
      };
      s.on("data", onData);
    });
    await new Promise<void>((resolve) => agent.listen(path.join(dir, "agent.sock"), resolve));
    const endpoint = { hostname: "vm-1", socketPath: path.join(dir, "agent.sock"), proof: PROOF };
    api = http.createServer((req, res) => streamToAgent(endpoint, req, res, "/v1/cp?path=/tmp/x&mode=binary", (err: PaddockError) => {
      const r = errorResponse(err);
      res.writeHead(r.status, { "content-type": "application/json" }).end(JSON.stringify(r.body));
    }, { stallMs: STALL_MS }));
    await new Promise<void>((resolve) => api.listen(apiSocket(), resolve));
  });

  after(async () => {
    api.closeAllConnections();
    for (const s of agentSockets) s.destroy();
    await new Promise((r) => api.close(r));
    await new Promise((r) => agent.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /**
   * POST a 64 MiB body (1 MiB chunks). The client gives up (destroys its request) when
   * `leaveWhenHeld` and the relay stopped taking the body (no drain for 500 ms), or after
   * `leaveAfterMs`. Resolves with the answer's status and body (none: undefined, "") and whether
   * the client was held back, once the request closed.
   */
  const upload = (opts: { leaveWhenHeld: boolean; leaveAfterMs?: number }): Promise<{ status?: number; body: string; held: boolean }> => new Promise((resolve) => {
    const req = http.request({ socketPath: apiSocket(), method: "POST", path: "/", headers: { "content-type": "application/octet-stream", "content-length": String(64 * MiB) }, agent: false });
    let status: number | undefined;
    let body = "";
    let held = false;
    let heldTimer: NodeJS.Timeout | undefined;
    const leaveTimer = opts.leaveAfterMs === undefined ? undefined : setTimeout(() => req.destroy(), opts.leaveAfterMs);
    req.on("response", (r) => {
      status = r.statusCode;
      r.on("data", (c: Buffer) => (body += c.toString()));
    });
    req.on("error", () => undefined);
    req.on("close", () => {
      clearTimeout(heldTimer);
      clearTimeout(leaveTimer);
      resolve({ status, body, held });
    });
    const chunk = Buffer.alloc(MiB, 7);
    let sent = 0;
    const pump = (): void => {
      clearTimeout(heldTimer);
      while (sent < 64 && !req.destroyed && status === undefined) {
        sent++;
        if (!req.write(chunk)) {
          req.once("drain", pump);
          heldTimer = setTimeout(() => {
            held = true;
            if (opts.leaveWhenHeld) req.destroy();
          }, 500);
          return;
        }
      }
      if (sent === 64) req.end();
    };
    pump();
  });

  it("an agent that never reads and a client that gives up: the daemon lets go of the client's connection and of its budget share (control: a client leaving while its body flows is seen)", async () => {
    const budget = relayBodyBudget.freeBytes;
    // Control: the agent reads everything and never answers; the client leaves after 1 s, and
    // the daemon closes its side of the client's connection (the probe sees a release).
    behaviour = (s) => {
      s.resume();
    };
    const c0 = { ...conns };
    const r0 = await upload({ leaveWhenHeld: true, leaveAfterMs: 1000 });
    expect(r0).to.include({ status: undefined, held: false });
    expect(conns.opened - c0.opened, "the upload reached the agent").to.equal(1);
    await untilTrue("control: the daemon let go of the client's connection", async () => (await apiConnections()) === 0);

    // Attack: the agent never reads; the client is held back, then gives up.
    behaviour = () => undefined;
    const c1 = { ...conns };
    const r = await upload({ leaveWhenHeld: true });
    expect(r.held, "the client was held back").to.equal(true);
    expect(conns.opened - c1.opened, "the upload reached the agent").to.equal(1);
    await untilTrue("the daemon let go of the client's connection", async () => (await apiConnections()) === 0);
    await untilTrue("the relay's budget share is given back", () => relayBodyBudget.freeBytes === budget);
  });

  it("an agent that never reads, the client waiting: 503 ERR_VM_AGENT_UNAVAILABLE, the budget share given back", async () => {
    const budget = relayBodyBudget.freeBytes;
    behaviour = () => undefined;
    const r = await upload({ leaveWhenHeld: false, leaveAfterMs: 5 * STALL_MS });
    expect(r.status).to.equal(503);
    expect(JSON.parse(r.body)).to.include({ code: "ERR_VM_AGENT_UNAVAILABLE" });
    await untilTrue("the relay's budget share is given back", () => relayBodyBudget.freeBytes === budget);
  });

  it("a slow agent that keeps taking bytes is not cut (one socket read every 100 ms): the whole body arrives and its answer is relayed", async () => {
    let got = 0;
    behaviour = (s, rest) => {
      got = rest.length;
      const total = 2 * MiB;
      // One socket read (at most 64 KiB) every 100 ms.
      let reading = false;
      const tick = setInterval(() => {
        if (reading) return;
        reading = true;
        s.once("data", (c: Buffer) => {
          reading = false;
          s.pause();
          got += c.length;
          if (got < total) return;
          clearInterval(tick);
          s.end(`HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-length: 2\r\n\r\nok`);
        });
        s.resume();
      }, 100);
      s.once("close", () => clearInterval(tick));
    };
    const r = await new Promise<{ status?: number; body: string }>((resolve) => {
      const req = http.request({ socketPath: apiSocket(), method: "POST", path: "/", headers: { "content-length": String(2 * MiB) }, agent: false });
      req.on("response", (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      });
      req.on("error", () => resolve({ body: "" }));
      req.end(Buffer.alloc(2 * MiB, 5));
    });
    expect(r).to.deep.equal({ status: 200, body: "ok" });
  });

  it("an agent that answered first and then reads nothing (an exec's stdin) is not cut by the stall bound", async () => {
    behaviour = (s) => {
      s.write(`HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ntransfer-encoding: chunked\r\n\r\n`);
    };
    const served = await apiConnections();
    const req = http.request({ socketPath: apiSocket(), method: "POST", path: "/", headers: { "content-length": String(64 * MiB) }, agent: false });
    req.on("error", () => undefined);
    const answered = new Promise<http.IncomingMessage>((resolve) => req.once("response", resolve));
    const chunk = Buffer.alloc(MiB, 3);
    for (let i = 0; i < 8; i++) req.write(chunk);
    const res = await answered;
    expect(res.statusCode).to.equal(200);
    await new Promise((r) => setTimeout(r, 2 * STALL_MS + 1000));
    expect(res.complete || res.destroyed, "the answer is still open").to.equal(false);
    expect(await apiConnections(), "the client's connection is still served").to.equal(served + 1);
    req.destroy();
    api.closeAllConnections();
  });
});
