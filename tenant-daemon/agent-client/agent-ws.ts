/**
 * The daemon's WebSocket sessions, agent side (the upgrade itself is api/ws-upgrade.ts):
 * {@link openAgentUpgrade} opens the VM's guest agent's `/v1/shell` or `/v1/forward` as a raw
 * upgraded stream (`Upgrade: paddock-stream`), checks the VM's proof on the agent's answer, and
 * relays an agent refusal before its 101 (bad uid, missing shell, …) to the client as that HTTP
 * error; {@link relay} then pipes the client's WebSocket and the agent stream.
 *
 * The relay goes message by message, with backpressure both ways and nothing buffered beyond
 * the socket buffers:
 * - shell: every client binary message must be exactly one shell frame
 *   (shared/slicer/shell-frames.ts) and is written as is to the agent stream; the agent
 *   stream is cut into frames, one WebSocket message each; text messages are ignored; after the
 *   agent's SessionClose frame the WebSocket is closed.
 * - forward: binary messages ↔ raw bytes; either side closing closes the other.
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import type { WebSocket, RawData } from "ws";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { FrameDecoder, FrameType, isWholeFrame } from "../../shared/slicer/shell-frames.js";
import { AGENT_UPGRADE_PROTOCOL, rejectUpgrade, writeHttpError } from "../agent/upgrade-util.js";
import { agentConnectOptions, answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";
import { isFinalStatus } from "./agent-stream.js";

/** Above this many bytes queued towards the client, reading from the agent pauses. */
const HIGH_WATER_BYTES = 1 << 20;
/** Largest refusal the agent may send before upgrading (an error JSON), bytes. */
const MAX_AGENT_ERROR_BYTES = 64 << 10;
/**
 * How long the agent may take to answer an upgrade (its 101 or a refusal), ms. The client's
 * socket is not read while it waits (a WebSocket client sends nothing before the 101), so a
 * client that went away is not seen; without a bound, a guest that never answers kept the
 * client's connection and the agent request for as long as it liked.
 */
export const AGENT_UPGRADE_ANSWER_TIMEOUT_MS = 30_000;

/** What {@link openAgentUpgrade} opens, and for whom. */
export interface AgentUpgradeRequest {
  endpoint: AgentEndpoint;
  /** Path on the agent, e.g. `/v1/shell?uid=0` or `/v1/forward?upstream=…`. */
  agentPath: string;
  /** For logs. */
  kind: "shell" | "forward";
  /** The API client's socket, not yet answered; refusals are written to it, then it is ended. */
  client: Duplex;
  logger: Logger;
  /**
   * Called once the agent answered 101 with the VM's proof and the client is still there, with
   * the agent stream paused (any bytes that came with the 101 put back in front).
   */
  onUpgraded(agent: Duplex): void;
  /** Bound on the agent's answer, ms (default {@link AGENT_UPGRADE_ANSWER_TIMEOUT_MS}). */
  answerTimeoutMs?: number;
}

/**
 * Open the agent stream of one WebSocket session. Until the agent's 101, a client whose socket
 * closes aborts the agent request (its socket is not read meanwhile, so a client that merely
 * went away is seen only through the answer's time bound below). Answered on `client` instead of calling `onUpgraded`: the
 * agent's own refusal (status and JSON body, at most 64 KiB) as it is, or 503
 * ERR_VM_AGENT_UNAVAILABLE when the agent is unreachable, answers without the VM's proof,
 * refuses with a longer body or a status outside 200–599, or does not answer within
 * `answerTimeoutMs` (then the agent request is destroyed too).
 */
export function openAgentUpgrade(r: AgentUpgradeRequest): void {
  const { endpoint, client: socket, kind, logger: log } = r;
  const { hostname } = endpoint;
  const areq = http.request({
    ...agentConnectOptions(endpoint), method: "GET", path: r.agentPath,
    headers: { host: "agent", connection: "Upgrade", upgrade: AGENT_UPGRADE_PROTOCOL },
  });
  /** The agent's answer head (101 or refusal) arrived, or its request failed. */
  let settled = false;
  /** The client was handed on (`onUpgraded`) or answered; nothing more is done for it here. */
  let finished = false;
  const finish = (): boolean => {
    if (finished) return false;
    finished = true;
    clearTimeout(answerTimer);
    socket.off("close", onClientGone);
    return true;
  };
  const onClientGone = (): void => {
    if (!settled) areq.destroy();
  };
  socket.once("close", onClientGone);
  const answerTimeoutMs = r.answerTimeoutMs ?? AGENT_UPGRADE_ANSWER_TIMEOUT_MS;
  const answerTimer = setTimeout(() => {
    if (!finish()) return;
    areq.destroy();
    log.warn("agent did not answer an upgrade in time; refused", { hostname, kind, timeout_ms: answerTimeoutMs });
    rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} did not answer the ${kind} upgrade within ${answerTimeoutMs} ms`));
  }, answerTimeoutMs);
  answerTimer.unref();
  areq.on("upgrade", (ares, agentSocket: Duplex, agentHead: Buffer) => {
    settled = true;
    agentSocket.on("error", () => undefined);
    if (!finish()) {
      agentSocket.destroy();
      return;
    }
    if (!answerIsFromAgent(endpoint, ares.headers)) {
      agentSocket.destroy();
      log.warn("agent upgrade answer without the VM's proof; refused", { hostname, kind });
      rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`));
      return;
    }
    if (socket.destroyed) {
      agentSocket.destroy();
      return;
    }
    if (agentHead.length > 0) agentSocket.unshift(agentHead);
    agentSocket.pause();
    r.onUpgraded(agentSocket);
  });
  areq.on("response", (res) => {
    // The agent refused before upgrading: relay its (small, JSON) error, whole within the
    // answer's time bound.
    settled = true;
    if (finished) {
      res.destroy();
      return;
    }
    if (!answerIsFromAgent(endpoint, res.headers)) {
      finish();
      res.destroy();
      rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`));
      return;
    }
    // The guest's root can answer any three digits; a refusal is relayed only as an HTTP status.
    const status = res.statusCode ?? 0;
    if (!isFinalStatus(status)) {
      finish();
      res.destroy();
      rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} refused the upgrade with status ${status}; refused`));
      return;
    }
    const chunks: Buffer[] = [];
    let total = 0;
    res.on("data", (c: Buffer) => {
      if (finished) return;
      total += c.length;
      if (total <= MAX_AGENT_ERROR_BYTES) {
        chunks.push(c);
        return;
      }
      // An agent that keeps talking past the cap does not hold the client (or memory): refuse.
      finish();
      res.destroy();
      rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} refused the upgrade with an answer over ${MAX_AGENT_ERROR_BYTES} bytes`));
    });
    res.on("end", () => {
      if (finish()) writeHttpError(socket, status, Buffer.concat(chunks).toString("utf8"));
    });
    res.on("error", () => {
      if (finish()) socket.destroy();
    });
  });
  areq.on("error", (err) => {
    settled = true;
    if (!finish()) return;
    if (err instanceof PaddockError) {
      rejectUpgrade(socket, err);
      return;
    }
    const code = errnoCode(err);
    const unreachable = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
    rejectUpgrade(socket, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", unreachable ? `guest agent of VM ${hostname} is not reachable` : `guest agent of VM ${hostname} failed: ${err.message}`, { cause: err }));
  });
  areq.end();
}

/**
 * Relay between a client WebSocket and an upgraded agent stream until either ends.
 * `framed`: shell mode (messages are shell frames), else forward mode (raw bytes). `onDone` is
 * called once, when the session ends.
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
      if (!isBinary) return; // text messages are ignored
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
