/**
 * An `http.Agent` whose connections are the guest agent's forward streams: each new
 * connection opens `/v1/forward?upstream=127.0.0.1:<port>` on the VM's agent channel (the
 * host-created channel of agent-endpoint.ts, proof checked on the agent's 101), and hands the
 * upgraded byte stream to Node's HTTP client as the socket. So an HTTP request, a streamed
 * body, SSE or a WebSocket upgrade to a port inside the VM is spoken by Node's own HTTP client
 * (and http-proxy on top of it) over a channel the host holds; the daemon never parses HTTP
 * from the guest itself and never dials an address in the VM's network (an isolated VM has no
 * route from the host at all).
 *
 * No keep-alive: one forward stream per request (the agent's forward ends with its upstream
 * connection, agent/forward.ts), so nothing is reused across requests or clients.
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { AGENT_UPGRADE_PROTOCOL } from "../agent/upgrade-util.js";
import { agentConnectOptions, answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";

/** Largest refusal body read from the agent before it upgrades, bytes. */
const MAX_REFUSAL_BYTES = 16 << 10;

/**
 * Open a raw forward stream to `127.0.0.1:<port>` inside `endpoint`'s VM. `done` gets the
 * stream (already upgraded, the agent's proof checked) or a PaddockError
 * ERR_VM_AGENT_UNAVAILABLE (agent unreachable, answer without the VM's proof, or a refusal).
 * A failure to dial the port inside the VM shows later, as the stream closing.
 */
export function openForwardStream(endpoint: AgentEndpoint, port: number, done: (err: Error | null, stream?: Duplex) => void): void {
  const unavailable = (why: string, cause?: unknown): PaddockError =>
    new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${endpoint.hostname}: ${why}`, { cause });
  let settled = false;
  const settle = (err: Error | null, stream?: Duplex): void => {
    if (settled) return;
    settled = true;
    done(err, stream);
  };
  const areq = http.request({
    ...agentConnectOptions(endpoint), method: "GET", path: `/v1/forward?upstream=${encodeURIComponent(`127.0.0.1:${port}`)}`,
    headers: { host: "agent", connection: "Upgrade", upgrade: AGENT_UPGRADE_PROTOCOL },
  });
  areq.on("upgrade", (ares, socket: Duplex, head: Buffer) => {
    if (!answerIsFromAgent(endpoint, ares.headers)) {
      socket.destroy();
      settle(unavailable("the forward answer did not carry the VM's proof; refused"));
      return;
    }
    if (head.length > 0) socket.unshift(head);
    settle(null, socket);
  });
  areq.on("response", (res) => {
    // A refusal before the upgrade (bad upstream): only its status is used, the body is capped.
    let total = 0;
    res.on("data", (c: Buffer) => {
      total += c.length;
      if (total > MAX_REFUSAL_BYTES) res.destroy();
    });
    res.on("error", () => undefined);
    res.resume();
    settle(unavailable(answerIsFromAgent(endpoint, res.headers) ? `forward refused with status ${res.statusCode ?? 0}` : "an answer without the VM's proof; refused"));
  });
  areq.on("error", (err) => {
    if (err instanceof PaddockError) return settle(err);
    const code = errnoCode(err);
    settle(unavailable(code === "ECONNREFUSED" || code === "ENOENT" ? "not reachable" : `failed: ${err.message}`, err));
  });
  areq.end();
}

/**
 * The HTTP agent of one VM port: every connection it makes is a fresh forward stream
 * ({@link openForwardStream}). Build one per proxied request; it holds nothing once that
 * request ends.
 */
export class AgentForwardAgent extends http.Agent {
  private readonly endpoint: AgentEndpoint;
  private readonly port: number;

  /** `port`: 1–65535, the TCP port on the VM's loopback. */
  constructor(endpoint: AgentEndpoint, port: number) {
    super({ keepAlive: false });
    this.endpoint = endpoint;
    this.port = port;
  }

  /**
   * Node's Agent calls this for every new connection; answering through `oncreate` (and
   * returning undefined) is the asynchronous form http.Agent supports
   * (https://nodejs.org/api/http.html#agentcreateconnectionoptions-callback).
   */
  override createConnection(_options: unknown, oncreate: (err: Error | null, socket?: Duplex) => void): undefined {
    openForwardStream(this.endpoint, this.port, oncreate);
    return undefined;
  }
}
