/**
 * The daemon's WebSocket endpoints (spec §2.10–§2.11): `GET /vm/{h}/shell` and
 * `GET /vm/{h}/forward`. The daemon's HTTP server hands every upgrade request to
 * {@link createAgentUpgradeHandler}; it authenticates (spec §1.2: the upgrade carries the same
 * bearer header), resolves the VM (404, 409 paused/not running), opens the matching upgrade
 * on the VM's guest agent (`/v1/shell`, `/v1/forward`, `Upgrade: paddock-stream`) and only
 * when the agent answers 101 completes the client's WebSocket handshake. An agent error
 * before its 101 (bad uid, missing shell, …) is relayed to the client as that HTTP error.
 *
 * After the upgrade the two sockets are relayed message by message, with backpressure both
 * ways and nothing buffered beyond the socket buffers:
 * - shell: every client binary message must be exactly one §2.10 frame and is written as is
 *   to the agent stream; the agent stream is cut into frames, one WebSocket message each;
 *   text messages are ignored; after the agent's SessionClose frame the WebSocket is closed.
 * - forward: binary messages ↔ raw bytes; either side closing closes the other.
 */
import crypto from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket, type RawData } from "ws";
import { PaddockError, errnoCode, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { parseUpstream } from "../agent/forward.js";
import { FrameDecoder, FrameType, isWholeFrame } from "../agent/shell-frames.js";
import { AGENT_UPGRADE_PROTOCOL, writeHttpError } from "../agent/upgrade-util.js";
import { answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";

/** What the upgrade handler needs from the composition root. */
export interface AgentUpgradeDeps {
  /**
   * The agent of a running VM.
   * @throws PaddockError ERR_VM_NOT_FOUND (404), ERR_VM_PAUSED (409), ERR_VM_NOT_RUNNING (409).
   */
  resolveAgent(hostname: string): AgentEndpoint;
  /** Bearer token when the API requires auth (TCP), else undefined (spec §1.2). */
  authToken: string | undefined;
  logger: Logger;
}

/** The handler for `server.on("upgrade")`, plus a way to end every live session (daemon stop). */
export interface AgentUpgradeHandler {
  handle(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Close every live WebSocket session (code 1001) and their agent streams. */
  closeAll(): void;
}

/** Above this many bytes queued towards the client, reading from the agent pauses. */
const HIGH_WATER_BYTES = 1 << 20;
/** Largest WebSocket message accepted from a client (a shell frame or a forward chunk). */
const MAX_CLIENT_MESSAGE_BYTES = 4 << 20;
/** Largest refusal the agent may send before upgrading (an error JSON), bytes. */
const MAX_AGENT_ERROR_BYTES = 64 << 10;

function authorized(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.*)$/i.exec(header ?? "");
  const given = crypto.createHash("sha256").update(m?.[1] ?? "").digest();
  const expected = crypto.createHash("sha256").update(token).digest();
  return !!m && crypto.timingSafeEqual(given, expected);
}

function rejectClient(socket: Duplex, err: unknown, extraHeaders: Record<string, string> = {}): void {
  const { status, body } = errorResponse(err);
  writeHttpError(socket, status, JSON.stringify(body), extraHeaders);
}

/** Build the upgrade handler. */
export function createAgentUpgradeHandler(deps: AgentUpgradeDeps): AgentUpgradeHandler {
  const log = deps.logger.child({ component: "agent-ws" });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_CLIENT_MESSAGE_BYTES });
  const sessions = new Set<{ ws: WebSocket; agent: Duplex }>();

  const handle = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on("error", () => undefined);
    try {
      const url = new URL(req.url ?? "/", "http://daemon");
      if (deps.authToken !== undefined && !authorized(req.headers.authorization, deps.authToken)) {
        rejectClient(socket, new PaddockError("ERR_AUTH_REQUIRED", "unauthorized"));
        return;
      }
      const m = /^\/vm\/([^/]+)\/(shell|forward)$/.exec(url.pathname);
      if (!m) throw new PaddockError("ERR_NOT_FOUND", `no WebSocket route ${url.pathname}`);
      if (req.method !== "GET") throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on /vm/{hostname}/${m[2]}`);
      if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") throw new PaddockError("ERR_BAD_REQUEST", "expected a WebSocket upgrade");
      const hostname = decodeURIComponent(m[1] as string);
      const kind = m[2] as "shell" | "forward";
      let agentPath: string;
      if (kind === "forward") {
        const upstream = req.headers["x-inlets-upstream"];
        parseUpstream(Array.isArray(upstream) ? upstream[0] : upstream); // 400 before anything else
        agentPath = `/v1/forward?upstream=${encodeURIComponent(String(upstream))}`;
      } else {
        agentPath = `/v1/shell${url.search}`;
      }
      openAgent(req, socket, head, deps.resolveAgent(hostname), kind, agentPath);
    } catch (err) {
      if (!(err instanceof PaddockError) || !err.isClientError) log.error("upgrade failed", { err });
      rejectClient(socket, err, err instanceof PaddockError && err.code === "ERR_METHOD_NOT_ALLOWED" ? { Allow: "GET" } : {});
    }
  };

  const openAgent = (req: http.IncomingMessage, socket: Duplex, head: Buffer, endpoint: AgentEndpoint, kind: "shell" | "forward", agentPath: string): void => {
    const { hostname } = endpoint;
    const areq = http.request({
      socketPath: endpoint.socketPath, method: "GET", path: agentPath,
      headers: { host: "agent", connection: "Upgrade", upgrade: AGENT_UPGRADE_PROTOCOL },
    });
    let settled = false;
    const onClientGone = (): void => {
      if (!settled) areq.destroy();
    };
    socket.once("close", onClientGone);
    areq.on("upgrade", (ares, agentSocket: Duplex, agentHead: Buffer) => {
      settled = true;
      socket.off("close", onClientGone);
      agentSocket.on("error", () => undefined);
      if (!answerIsFromAgent(endpoint, ares.headers)) {
        agentSocket.destroy();
        log.warn("agent upgrade answer without the VM's proof; refused", { hostname, kind });
        rejectClient(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`));
        return;
      }
      if (socket.destroyed) {
        agentSocket.destroy();
        return;
      }
      if (agentHead.length > 0) agentSocket.unshift(agentHead);
      agentSocket.pause();
      wss.handleUpgrade(req, socket, head, (ws) => {
        const session = { ws, agent: agentSocket };
        sessions.add(session);
        log.info("session opened", { hostname, kind });
        relay(ws, agentSocket, kind === "shell", () => {
          sessions.delete(session);
          log.info("session closed", { hostname, kind });
        });
      });
    });
    areq.on("response", (res) => {
      // The agent refused before upgrading: relay its (small, JSON) error.
      settled = true;
      socket.off("close", onClientGone);
      if (!answerIsFromAgent(endpoint, res.headers)) {
        res.destroy();
        rejectClient(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`));
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      res.on("data", (c: Buffer) => {
        total += c.length;
        if (total <= MAX_AGENT_ERROR_BYTES) {
          chunks.push(c);
          return;
        }
        // An agent that keeps talking past the cap does not hold the client (or memory): refuse.
        res.destroy();
        rejectClient(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} refused the upgrade with an answer over ${MAX_AGENT_ERROR_BYTES} bytes`));
      });
      res.on("end", () => writeHttpError(socket, res.statusCode ?? 502, Buffer.concat(chunks).toString("utf8")));
      res.on("error", () => socket.destroy());
    });
    areq.on("error", (err) => {
      if (settled) return;
      settled = true;
      socket.off("close", onClientGone);
      const code = errnoCode(err);
      const unreachable = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
      rejectClient(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", unreachable ? `guest agent of VM ${hostname} is not reachable` : `guest agent of VM ${hostname} failed: ${err.message}`, { cause: err }));
    });
    areq.end();
  };

  return {
    handle,
    closeAll: () => {
      for (const s of sessions) {
        s.ws.close(1001, "daemon stopping");
        s.agent.destroy();
        // A client that does not answer the close handshake must not hold the server open.
        setTimeout(() => s.ws.terminate(), 1000).unref();
      }
    },
  };
}

/**
 * Relay between a client WebSocket and an upgraded agent stream until either ends.
 * `framed`: shell mode (messages are §2.10 frames), else forward mode (raw bytes).
 */
export function relay(ws: WebSocket, agent: Duplex, framed: boolean, onDone: () => void): void {
  let done = false;
  const decoder = framed ? new FrameDecoder() : undefined;
  let sawSessionClose = false;
  const finish = (code: number, reason: string): void => {
    if (done) return;
    done = true;
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason);
    if (!agent.destroyed) agent.end();
    // A peer that never finishes its side is cut after a grace period.
    setTimeout(() => {
      agent.destroy();
      if (ws.readyState !== ws.CLOSED) ws.terminate();
    }, 5000).unref();
    onDone();
  };

  // Client → agent.
  ws.on("message", (data: RawData, isBinary: boolean) => {
    if (done) return;
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (framed) {
      if (!isBinary) return; // text messages are ignored (spec §2.10)
      if (!isWholeFrame(buf)) {
        finish(1002, "malformed shell frame");
        return;
      }
    }
    if (!agent.write(buf)) {
      ws.pause();
      agent.once("drain", () => ws.resume());
    }
  });
  ws.on("close", () => finish(1000, ""));
  ws.on("error", () => finish(1011, "websocket error"));

  // Agent → client.
  const sendOne = (msg: Buffer): void => {
    ws.send(msg, { binary: true }, () => {
      if (agent.isPaused() && ws.bufferedAmount < HIGH_WATER_BYTES / 2 && !done) agent.resume();
    });
    if (ws.bufferedAmount >= HIGH_WATER_BYTES) agent.pause();
  };
  agent.on("data", (chunk: Buffer) => {
    if (done || ws.readyState !== ws.OPEN) return;
    if (!decoder) {
      sendOne(chunk);
      return;
    }
    let frames: Buffer[];
    try {
      frames = decoder.pushRaw(chunk);
    } catch {
      finish(1011, "malformed frame from the guest agent");
      return;
    }
    for (const f of frames) {
      sendOne(f);
      if (f[0] === FrameType.SessionClose) sawSessionClose = true;
    }
  });
  agent.on("end", () => finish(1000, framed && sawSessionClose ? "session closed" : framed ? "agent stream ended" : "upstream closed"));
  agent.on("close", () => finish(framed && !sawSessionClose ? 1011 : 1000, framed && !sawSessionClose ? "agent stream lost" : "upstream closed"));
  agent.on("error", () => finish(1011, "agent stream error"));
  agent.resume();
}
