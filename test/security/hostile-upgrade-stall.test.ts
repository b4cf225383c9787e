/**
 * A guest agent that never answers a WebSocket upgrade (`/vm/{h}/shell`, `/vm/{h}/forward`),
 * against the daemon's agent side of it (tenant-daemon/agent-client/agent-ws.ts
 * `openAgentUpgrade`), run for real: node:http upgrades on Unix sockets and a stand-in agent
 * that answers with the VM's proof (what guest root's taken-over agent does, see
 * test/security/agent-takeover.ts).
 *
 * The client's socket is not read while the daemon waits for the agent's 101, so a client that
 * leaves is not seen. Was: a guest that never answered kept every such client's connection and
 * its agent request forever (found from a real runc VM: 4 shell upgrades whose clients left
 * after 2 s still held 4 API-socket connections with no peer and 4 agent connections in the
 * daemon minutes later). Now the agent's answer (101 or a whole refusal) is bounded
 * (AGENT_UPGRADE_ANSWER_TIMEOUT_MS; 1 s here): 503 ERR_VM_AGENT_UNAVAILABLE and both go.
 *
 * Controls: an agent that answers 101 at once is handed on and not cut by the bound; a refusal
 * answered whole is relayed. No VM, no daemon, a few seconds.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { Duplex } from "node:stream";
import { silentLogger } from "../../shared/logger.js";
import { openAgentUpgrade } from "../../tenant-daemon/agent-client/agent-ws.js";
import { untilTrue } from "../helpers/wait.js";

const ANSWER_MS = 1000;
const PROOF = "b".repeat(64);

/** Poll `probe` until true; fails with `what` after `ms` (a bound for a loaded host, not a speed check). */
describe("security: a guest agent that never answers a WebSocket upgrade, against the daemon's agent side (real sockets, no VM)", function () {
  this.timeout(30_000);
  let dir = "";
  let agent: net.Server;
  let api: http.Server;
  /** What the stand-in agent writes once a request head arrived (undefined: nothing, ever). */
  let answer: string | undefined;
  /** Agent-side connections (they keep reading, so they see the daemon close them). */
  const agentConns = { opened: 0, closed: 0 };
  /** Daemon-side client sockets of upgrades, and those closed. */
  const clientConns = { opened: 0, closed: 0 };
  const upgraded: Duplex[] = [];
  const open = new Set<{ destroy: () => void }>();

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-upgrade-stall-"));
    agent = net.createServer((s) => {
      agentConns.opened++;
      open.add(s);
      s.once("close", () => {
        agentConns.closed++;
        open.delete(s);
      });
      s.on("error", () => undefined);
      // Every request head on the connection (the daemon's HTTP agent keeps connections alive).
      let buf = "";
      s.on("data", (d: Buffer) => {
        buf += d.toString("latin1");
        for (let end = buf.indexOf("\r\n\r\n"); end >= 0; end = buf.indexOf("\r\n\r\n")) {
          buf = buf.slice(end + 4);
          if (answer !== undefined) s.write(answer);
        }
      });
    });
    await new Promise<void>((resolve) => agent.listen(path.join(dir, "agent.sock"), resolve));
    const endpoint = { hostname: "vm-1", socketPath: path.join(dir, "agent.sock"), proof: PROOF };
    api = http.createServer();
    api.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => {
      clientConns.opened++;
      open.add(socket);
      socket.on("error", () => undefined);
      socket.once("close", () => {
        clientConns.closed++;
        open.delete(socket);
      });
      openAgentUpgrade({
        endpoint, agentPath: "/v1/shell?uid=0", kind: "shell", client: socket, logger: silentLogger, answerTimeoutMs: ANSWER_MS,
        onUpgraded: (a) => {
          upgraded.push(a);
          open.add(a);
        },
      });
    });
    await new Promise<void>((resolve) => api.listen(path.join(dir, "api.sock"), resolve));
  });

  after(async () => {
    for (const s of open) s.destroy();
    await new Promise((r) => api.close(r));
    await new Promise((r) => agent.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Send a shell upgrade; the client leaves after `leaveAfterMs` (or stays). Resolves with what it got. */
  const upgrade = (leaveAfterMs?: number): Promise<{ got: string; socket: net.Socket }> => new Promise((resolve) => {
    const s = net.connect(path.join(dir, "api.sock"), () => s.write("GET /vm/vm-1/shell HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.on("error", () => undefined);
    if (leaveAfterMs !== undefined) setTimeout(() => s.destroy(), leaveAfterMs);
    s.once("close", () => resolve({ got, socket: s }));
    if (leaveAfterMs === undefined) setTimeout(() => resolve({ got, socket: s }), 3 * ANSWER_MS);
  });

  it("the agent never answers and the client leaves: the daemon lets go of the client's connection and of the agent request", async () => {
    answer = undefined;
    const a = { ...agentConns };
    const c = { ...clientConns };
    const r = await upgrade(200);
    expect(r.got, "nothing answered before the client left").to.equal("");
    expect(agentConns.opened - a.opened, "the upgrade reached the agent").to.equal(1);
    await untilTrue("the daemon closed the client's connection", () => clientConns.closed - c.closed === 1);
    await untilTrue("the daemon closed the agent request", () => agentConns.closed - a.closed === 1);
  });

  it("the agent never answers, the client waits: 503 ERR_VM_AGENT_UNAVAILABLE", async () => {
    answer = undefined;
    const r = await upgrade();
    expect(r.got).to.match(/^HTTP\/1\.1 503 /);
    expect(r.got).to.include("ERR_VM_AGENT_UNAVAILABLE");
    r.socket.destroy();
  });

  it("a refusal whose body never ends gets 503 after the bound, not the agent's status", async () => {
    answer = `HTTP/1.1 404 Not Found\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-length: 100\r\n\r\n{"err`;
    const r = await upgrade();
    expect(r.got).to.match(/^HTTP\/1\.1 503 /);
    r.socket.destroy();
  });

  it("controls: a whole refusal is relayed; an agent that answers 101 at once is handed on and not cut by the bound", async () => {
    const body = '{"error":"no such user","code":"ERR_USER"}';
    answer = `HTTP/1.1 404 Not Found\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const refused = await upgrade();
    expect(refused.got).to.match(/^HTTP\/1\.1 404 /);
    expect(refused.got).to.include(body);
    refused.socket.destroy();

    answer = `HTTP/1.1 101 Switching Protocols\r\nx-paddock-agent-proof: ${PROOF}\r\nconnection: Upgrade\r\nupgrade: paddock-stream\r\n\r\n`;
    const before = upgraded.length;
    const a = { ...agentConns };
    const r = await upgrade();
    expect(upgraded.length - before, "handed on").to.equal(1);
    expect(r.got, "nothing written to the client by the daemon side").to.equal("");
    expect(agentConns.closed - a.closed, "the agent stream is still open after the bound").to.equal(0);
    r.socket.destroy();
  });
});
