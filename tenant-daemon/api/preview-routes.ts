/**
 * Preview traffic, daemon side (docs/slicer-api.md#preview-urls): every method on
 * `/vm/{hostname}/preview/{port}/{rest…}` and WebSocket upgrades on the same paths are proxied to
 * `127.0.0.1:{port}` inside the VM. The app sees the request line `/{rest…}?{query}` (the
 * `/vm/{hostname}/preview/{port}` prefix stripped, the rest byte for byte), its method,
 * headers and streamed body; its answer (status, headers, streamed body: chunked, SSE) comes
 * back unbuffered.
 *
 * Transport: Node's HTTP client over an {@link AgentForwardAgent}
 * (agent-client/agent-forward-agent.ts): each request's connection is a fresh forward stream on
 * the VM's agent channel, so Node's HTTP client and parser speak HTTP to the app (no parser of
 * ours) and the daemon never dials into the VM's network. The request and answer are piped,
 * never buffered; hop-by-hop headers of the answer are Node's to set; a WebSocket upgrade is
 * relayed byte for byte after the app's 101.
 *
 * Headers: `X-Paddock-*` (the gateway's own, e.g. the tenant id and the token's VM binding)
 * are removed before the app, and so is `Authorization` when this daemon's API requires a
 * bearer token (the token is for the daemon, not the app). The gateway (supervisor/preview/)
 * removes the tenant's and preview tokens before the request reaches the daemon.
 *
 * VM binding: a preview token is bound to the VM's `created_at`; the gateway passes it in
 * `X-Paddock-Preview-Created-At` and a VM created later under the same hostname refuses it
 * (401 ERR_AUTH_REQUIRED), so deleting a VM kills its preview tokens.
 */
import http, { request as httpRequest } from "node:http";
import type { Duplex } from "node:stream";
import { BODY_IDLE_TIMEOUT_MS } from "../../shared/body-idle-timeout.js";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { rejectUpgrade } from "../agent/upgrade-util.js";
import { AgentForwardAgent } from "../agent-client/agent-forward-agent.js";
import { relayBody } from "../agent-client/agent-stream.js";
import { AGENT_UPGRADE_ANSWER_TIMEOUT_MS } from "../agent-client/agent-ws.js";
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import { BearerAuth } from "./auth.js";
import type { Handler } from "./http-util.js";
import { holdForUpgrade, type VmActivity } from "./wake.js";

/** The header carrying a preview token's VM binding (the VM's `created_at`), set by the gateway only. */
export const PREVIEW_CREATED_AT_HEADER = "x-paddock-preview-created-at";

/** `/vm/{hostname}/preview/{port}` then an optional `/rest` and query, on the raw request target. */
const PREVIEW_TARGET = /^\/vm\/([^/?]+)\/preview\/([^/?]*)(\/[^?]*)?(\?.*)?$/;

/** What the preview proxy needs from the composition root. */
export interface PreviewProxyDeps {
  /**
   * The agent of a running VM.
   * @throws PaddockError ERR_VM_NOT_FOUND (404), ERR_VM_PAUSED (409), ERR_VM_NOT_RUNNING (409).
   */
  resolveAgent(hostname: string): AgentEndpoint;
  /** The VM's `created_at` (RFC 3339). @throws PaddockError ERR_VM_NOT_FOUND. */
  createdAt(hostname: string): string;
  /** The daemon API's bearer token (TCP listens), else undefined. */
  authToken: string | undefined;
  logger: Logger;
  /** The idle tracker: a preview WebSocket is the VM's activity for its life and wakes an idled VM (wake.ts). Plain requests go through wakeMiddleware. */
  activity?: VmActivity;
  /**
   * An app that, before it answered, takes no byte of a request body for this long (ms) gets
   * its request destroyed and the client a 502 (default BODY_IDLE_TIMEOUT_MS, 60 000): while
   * the body is held back the client's socket is not read, so a client that left is not seen.
   */
  bodyStallMs?: number;
  /**
   * An app (or agent) that does not answer a WebSocket upgrade within this long (ms) is refused
   * with a 502 and its request destroyed (default AGENT_UPGRADE_ANSWER_TIMEOUT_MS, 30 000): the
   * client's socket is not read meanwhile either.
   */
  upgradeAnswerMs?: number;
}

/** A parsed preview request target. */
export interface PreviewTarget {
  hostname: string;
  port: number;
  /** What the app sees: `/rest?query` (at least `/`). */
  appPath: string;
}

/**
 * Parse a raw request target of the preview route.
 * @returns undefined when `url` is not a preview path.
 * @throws PaddockError ERR_PREVIEW_ADDRESS_INVALID for a port that is not 1–65535 in decimal.
 */
export function parsePreviewTarget(url: string): PreviewTarget | undefined {
  const m = PREVIEW_TARGET.exec(url);
  if (!m) return undefined;
  const portText = m[2] as string;
  const port = /^[1-9][0-9]{0,4}$/.test(portText) ? Number(portText) : NaN;
  if (!(port <= 65535)) throw new PaddockError("ERR_PREVIEW_ADDRESS_INVALID", `preview port ${JSON.stringify(portText)} is not a port number (1-65535)`);
  let hostname: string;
  try {
    hostname = decodeURIComponent(m[1] as string);
  } catch {
    throw new PaddockError("ERR_URL_MALFORMED", "the path's percent-escapes do not decode");
  }
  return { hostname, port, appPath: `${m[3] ?? "/"}${m[4] ?? ""}` };
}

/** The daemon's preview proxy: the request handler and the upgrade handler. */
export interface PreviewProxy {
  /** The route handler of `ALL /vm/:hostname/preview/:port{/*rest}` (routes.ts group `preview`). */
  handlers: { proxy: Handler };
  /**
   * Handle an upgrade request when its target is a preview path (auth, then http-proxy `ws()`).
   * @returns false when the path is not a preview path (the caller handles it).
   */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): boolean;
  /**
   * Stop the proxy (daemon stop): every preview upgrade's socket is destroyed, live WebSockets
   * and those still waiting for the app's 101 alike, and every later upgrade at once.
   */
  close(): void;
}

/** Response headers of the app that are hop-by-hop for the client connection (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/** Request headers of the client connection only, dropped on a plain request (kept on an upgrade). */
const REQUEST_HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "upgrade"]);

/**
 * The request's raw headers minus the gateway's (`X-Paddock-*`), the connection's own (plain
 * requests) and, when the API has a token, `Authorization`.
 */
function appHeaders(req: http.IncomingMessage, stripAuthorization: boolean, upgrade = false): string[] {
  const out: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const k = (raw[i] as string).toLowerCase();
    if (k.startsWith("x-paddock-") || (stripAuthorization && k === "authorization") || (!upgrade && REQUEST_HOP_BY_HOP.has(k))) continue;
    out.push(raw[i] as string, raw[i + 1] as string);
  }
  return out;
}

/** Build the preview proxy. */
export function createPreviewProxy(deps: PreviewProxyDeps): PreviewProxy {
  const log = deps.logger.child({ component: "preview" });
  const auth = new BearerAuth(deps.authToken, []);
  /** Client sockets of preview upgrades, from the request (before the app's 101) until they close. */
  const live = new Set<Duplex>();
  /** Set by close: the daemon is stopping and takes no new upgrade. */
  let closing = false;
  const stripAuthorization = deps.authToken !== undefined;

  /** Resolve and check one request: the VM binding, the VM's agent → the HTTP agent of its port. */
  const agentFor = (req: http.IncomingMessage, t: PreviewTarget): AgentForwardAgent => {
    const bound = req.headers[PREVIEW_CREATED_AT_HEADER];
    if (bound !== undefined && bound !== deps.createdAt(t.hostname)) {
      throw new PaddockError("ERR_AUTH_REQUIRED", `the preview token was minted for an earlier VM named ${t.hostname}`);
    }
    return new AgentForwardAgent(deps.resolveAgent(t.hostname), t.port);
  };

  /** The app did not answer (nothing listening, reset, the agent refused): 502, or the agent's error. */
  const upstreamError = (err: Error, t: PreviewTarget): PaddockError =>
    err instanceof PaddockError ? err : new PaddockError("ERR_PREVIEW_UPSTREAM_FAILED", `nothing answered on port ${t.port} in VM ${t.hostname} (${(err as NodeJS.ErrnoException).code ?? err.message})`);

  // Node's HTTP client over the forward stream, not http-proxy: with an agent, Node fixes the
  // request line when the request is built (before http-proxy's `proxyReq` event could set it),
  // and http-proxy's urlJoin would collapse `//` in the app's path.
  const web: Handler = (req, res) => {
    let t: PreviewTarget;
    let upstream: http.ClientRequest;
    try {
      t = parsePreviewTarget(req.originalUrl) as PreviewTarget;
      upstream = httpRequest({ agent: agentFor(req, t), method: req.method, path: t.appPath, headers: appHeaders(req, stripAuthorization), setHost: false });
    } catch (err) {
      req.resume();
      const { status, body } = errorResponse(err);
      if (status >= 500) log.error("preview failed", { err });
      res.status(status).json(body);
      return;
    }
    const tt = t;
    /** The app stalled on the body before answering: answered here, its request destroyed. */
    let stalled = false;
    upstream.on("error", (err) => {
      if (stalled) return;
      const e = upstreamError(err, tt);
      log.info("preview upstream failed", { hostname: tt.hostname, port: tt.port, err: e.message });
      if (res.headersSent) res.destroy();
      else if (!res.destroyed) {
        const { status, body } = errorResponse(e);
        res.status(status).json(body);
      }
    });
    upstream.on("response", (up) => {
      const out: string[] = [];
      const raw = up.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        if (HOP_BY_HOP.has((raw[i] as string).toLowerCase())) continue;
        out.push(raw[i] as string, raw[i + 1] as string);
      }
      // An app that dies mid-answer: the client's answer is cut, not made to look complete.
      up.on("error", () => res.destroy());
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      up.pipe(res);
    });
    // A client that goes away ends the app's request too (Node ≥ 15.5 no longer does it).
    res.once("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    // As `req.pipe(upstream)` (paused at the request's own mark, no shared budget), and an app
    // that takes nothing for bodyStallMs before it answered is cut (see PreviewProxyDeps).
    const stallMs = deps.bodyStallMs ?? BODY_IDLE_TIMEOUT_MS;
    relayBody(req, upstream, 0, { freeBytes: 0 }, {
      stallMs,
      onStall: () => {
        if (res.headersSent || res.destroyed) return;
        stalled = true;
        upstream.destroy();
        log.info("preview app took none of a request body; refused", { hostname: tt.hostname, port: tt.port, stall_ms: stallMs });
        const { status, body } = errorResponse(new PaddockError("ERR_PREVIEW_UPSTREAM_FAILED", `the app on port ${tt.port} in VM ${tt.hostname} took no byte of the request body for ${stallMs} ms`));
        res.status(status).json(body);
      },
    });
  };

  const upgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): boolean => {
    let t: PreviewTarget | undefined;
    socket.on("error", () => undefined);
    try {
      t = parsePreviewTarget(req.url ?? "");
    } catch (err) {
      rejectUpgrade(socket, err);
      return true;
    }
    if (t === undefined) return false;
    // Tracked from now, not from the app's 101: one still waiting for it at the daemon's stop
    // would open afterwards and hold the HTTP server's close() for as long as its client liked.
    if (closing) {
      socket.destroy();
      return true;
    }
    live.add(socket);
    socket.once("close", () => live.delete(socket));
    const tt = t;
    try {
      if (!auth.admits(req.url ?? "", req.headers.authorization)) throw new PaddockError("ERR_AUTH_REQUIRED", "unauthorized");
      if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket" || req.method !== "GET") {
        throw new PaddockError("ERR_BAD_REQUEST", "a preview upgrade must be a WebSocket upgrade (GET, Upgrade: websocket)");
      }
      if (deps.activity === undefined) connect();
      else holdForUpgrade(deps.activity, tt.hostname, socket).then(connect, (err: unknown) => rejectUpgrade(socket, err));
    } catch (err) {
      if (!(err instanceof PaddockError) || !err.isClientError) log.error("preview upgrade failed", { err });
      rejectUpgrade(socket, err);
    }
    return true;

    /** Open the upgrade to the app and relay both ways once it answers 101. */
    function connect(): void {
      try {
        const upstream = httpRequest({ agent: agentFor(req, tt), method: "GET", path: tt.appPath, headers: appHeaders(req, stripAuthorization, true), setHost: false });
        socket.once("close", () => upstream.destroy());
        // The client's socket is not read until the app answers: bound the wait (PreviewProxyDeps).
        let answered = false;
        const answerMs = deps.upgradeAnswerMs ?? AGENT_UPGRADE_ANSWER_TIMEOUT_MS;
        const answerTimer = setTimeout(() => {
          if (answered) return;
          answered = true;
          upstream.destroy();
          log.info("preview websocket: the app did not answer the upgrade in time", { hostname: tt.hostname, port: tt.port, timeout_ms: answerMs });
          rejectUpgrade(socket, new PaddockError("ERR_PREVIEW_UPSTREAM_FAILED", `the app on port ${tt.port} in VM ${tt.hostname} did not answer the WebSocket upgrade within ${answerMs} ms`));
        }, answerMs);
        answerTimer.unref();
        const answer = (): boolean => {
          clearTimeout(answerTimer);
          if (answered) return false;
          answered = true;
          return true;
        };
        upstream.on("error", (err) => {
          if (!answer()) return;
          const e = upstreamError(err, tt);
          log.info("preview websocket upstream failed", { hostname: tt.hostname, port: tt.port, err: e.message });
          rejectUpgrade(socket, e);
        });
        upstream.on("response", (up) => {
          // The app refused the upgrade: its answer goes back as a plain response, then the socket closes.
          if (!answer()) {
            up.destroy();
            return;
          }
          const lines = [`HTTP/1.1 ${up.statusCode ?? 502} ${up.statusMessage ?? ""}`];
          for (let i = 0; i < up.rawHeaders.length; i += 2) {
            if (HOP_BY_HOP.has((up.rawHeaders[i] as string).toLowerCase())) continue;
            lines.push(`${up.rawHeaders[i] as string}: ${up.rawHeaders[i + 1] as string}`);
          }
          lines.push("Connection: close");
          socket.write(`${lines.join("\r\n")}\r\n\r\n`);
          up.pipe(socket);
        });
        upstream.on("upgrade", (up, appSocket: Duplex, appHead: Buffer) => {
          appSocket.on("error", () => undefined);
          if (!answer() || socket.destroyed) {
            appSocket.destroy();
            return;
          }
          const lines = [`HTTP/1.1 101 ${up.statusMessage ?? "Switching Protocols"}`];
          for (let i = 0; i < up.rawHeaders.length; i += 2) lines.push(`${up.rawHeaders[i] as string}: ${up.rawHeaders[i + 1] as string}`);
          socket.write(`${lines.join("\r\n")}\r\n\r\n`);
          if (appHead.length > 0) socket.write(appHead);
          if (head.length > 0) appSocket.write(head);
          live.add(socket);
          const end = (): void => {
            live.delete(socket);
            socket.destroy();
            appSocket.destroy();
          };
          socket.once("close", end);
          appSocket.once("close", end);
          appSocket.pipe(socket);
          socket.pipe(appSocket);
        });
        upstream.end();
      } catch (err) {
        if (!(err instanceof PaddockError) || !err.isClientError) log.error("preview upgrade failed", { err });
        rejectUpgrade(socket, err);
      }
    }
  };

  return {
    handlers: { proxy: web },
    upgrade,
    close: () => {
      closing = true;
      for (const s of live) s.destroy();
    },
  };
}
