/**
 * The tenant gateway (DESIGN.md §5, issue 4 §7): `Authorization: Bearer <tenant token>` →
 * tenant → that tenant's daemon socket. Plain HTTP goes through one `http.request` per
 * request on a keep-alive agent (see `forward` for why not http-proxy's `web()`); WebSocket
 * upgrades go through http-proxy's `ws()` (`target: { socketPath }`).
 *
 * - The request goes through unchanged (method, raw path and query, streamed body); no
 *   body parser ever sits in front, and responses (exec NDJSON, SSE) are piped, not buffered.
 * - The token is removed before forwarding; `Forwarded`/`X-Forwarded-*`/`X-Real-IP` sent by
 *   the client are dropped and the gateway sets its own `X-Forwarded-*` and `X-Request-Id`
 *   (also on every response).
 * - WebSocket upgrades (shell, forward) pass the same auth, then `proxy.ws()`.
 * - A client abort destroys the upstream request (Node ≥ 15.5 no longer does it for us); a
 *   daemon that dies mid-answer resets the client's connection.
 * - Upstream errors become JSON 502/503 (503 + Retry-After when the daemon is down); if
 *   headers were already sent the socket is destroyed instead (STYLE.md §6).
 * - 401 for unknown, expired, revoked or missing tokens has one body and the same work.
 * - No server timeout cuts a long response: only header reception is bounded, and a request
 *   body still being received before the response starts (no byte for `bodyIdleMs` ⇒ 408
 *   ERR_REQUEST_BODY_TIMEOUT, shared/body-idle-timeout.ts; the upstream request is aborted).
 * - Per request: metrics, one access log line (batched writes, shared/logger.ts) and the
 *   audit entry of a VM create/delete.
 * - Admission (supervisor/gateway-admission.ts): after auth, each request and WebSocket
 *   passes the tenant's connection, concurrency and rate caps and the global descriptor
 *   budget, or gets 429/503 + Retry-After; admitted ones are registered by tenant and token
 *   id so that revocation, suspension and deletion end them.
 * - A request target that is not a decodable path gets 400 `ERR_URL_MALFORMED`; a header
 *   Node will not forward gets 400 `ERR_HEADER_INVALID` (shared/http-input.ts).
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import type { Socket } from "node:net";
import { randomUUID } from "node:crypto";
import httpProxy from "http-proxy";
import { PaddockError, errnoCode, errorResponse } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { bearerToken } from "./tokens.js";
import type { TenantService } from "./tenant-service.js";
import type { SupervisorMetrics } from "./metrics.js";
import type { AuditLog } from "./audit-log.js";
import { BODY_IDLE_TIMEOUT_MS, boundRequestBodyIdle, requestHasBody } from "../shared/body-idle-timeout.js";
import { clientErrorReply, httpJsonAnswer, requestTargetProblem } from "../shared/http-input.js";
import { isRefusal, type Admission, type GatewayAdmission } from "./gateway-admission.js";

/** Seconds a client is told to wait when a daemon is down. */
export const RETRY_AFTER_S = 2;

const UNAUTHORIZED_BODY = JSON.stringify({ error: "missing, invalid, expired or revoked token", code: "ERR_AUTH_REQUIRED" });

/** Headers a client may not set: identity and proxy metadata are the gateway's to set. */
const STRIPPED_HEADERS = ["authorization", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-request-id", "x-paddock-tenant"];
const STRIPPED = new Set(STRIPPED_HEADERS);

/** VM create/delete paths the gateway audits (spec §2.2). */
const VM_CREATE = /^\/hostgroup\/[^/]+\/nodes\/?(\?|$)/;
const VM_DELETE = /^\/hostgroup\/[^/]+\/nodes\/[^/?]+\/?(\?|$)/;

/** Dependencies of the gateway. */
export interface GatewayDeps {
  tenants: TenantService;
  metrics: SupervisorMetrics;
  audit: AuditLog;
  log: Logger;
  /** Per-tenant caps, descriptor budget and the live-session registry (shared with the tenant service). */
  admission: GatewayAdmission;
  /** Idle bound on a request body still being received, ms (default {@link BODY_IDLE_TIMEOUT_MS}; 0 disables). */
  bodyIdleMs?: number;
}

/** Outcome of authenticating and routing one request. */
type Route = { ok: true; tenantId: string; tokenId: string; socketPath: string } | { ok: false; status: number; body: string; headers?: Record<string, string>; tenantId?: string };

function json(err: PaddockError, tenantId: string, extraHeaders?: Record<string, string>): Route {
  const r = errorResponse(err);
  return { ok: false, status: r.status, body: JSON.stringify(r.body), headers: extraHeaders, tenantId };
}

/** Answer `res` with a serialised JSON `body` (and `headers`); the response ends. */
function sendJson(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Write a whole HTTP/1.1 answer with a serialised JSON `body` (and `headers`) on a raw client
 * socket, then close it: for upgrades and malformed requests, which have no ServerResponse.
 */
function endSocketWithJson(socket: Duplex, status: number, body: string, headers: Record<string, string>): void {
  socket.end(httpJsonAnswer(status, body, headers));
}

function requestId(): string {
  return randomUUID();
}

/** Build the gateway's HTTP server (not yet listening). */
export function createGatewayServer(deps: GatewayDeps): http.Server {
  const { tenants, metrics, audit, log, admission } = deps;
  // Upstream keep-alive, with idle connections closed by the gateway (after 2 s) well before
  // the daemon's keepAliveTimeout (5 s) closes them. A reused connection therefore never meets
  // a close already in flight from the daemon (that race gave EPIPE/ECONNRESET with the default
  // agent), and a request does not pay a fresh connect + accept each time (the benchmark
  // measured the gateway at 22% of direct throughput with one connection per request). The
  // agent's `timeout` applies only to free sockets: Node's agent destroys a socket on timeout
  // only while it sits in the free list, so long exec streams are never cut.
  const upstreamAgent = new http.Agent({ keepAlive: true, timeout: 2_000, scheduling: "lifo", maxFreeSockets: 64 });
  const proxy = httpProxy.createProxyServer({ xfwd: false, ws: true, proxyTimeout: 0, timeout: 0, agent: upstreamAgent });

  const route = (req: http.IncomingMessage): Route => {
    // Same work for every token: hash, Map lookup by hash, one constant-time compare.
    const owner = tenants.authenticate(bearerToken(req.headers.authorization));
    if (!owner) return { ok: false, status: 401, body: UNAUTHORIZED_BODY, headers: { "www-authenticate": 'Bearer realm="paddock"' } };
    const target = tenants.gatewayTarget(owner.tenantId);
    if (!target) return { ok: false, status: 401, body: UNAUTHORIZED_BODY, headers: { "www-authenticate": 'Bearer realm="paddock"' } };
    if (target.status === "suspended") return json(new PaddockError("ERR_TENANT_SUSPENDED", `tenant ${target.tenantId} is suspended`), target.tenantId);
    if (target.status === "deleting") return json(new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${target.tenantId} is being deleted`), target.tenantId);
    if (!target.daemonUp) {
      return json(new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${target.tenantId} is not running (${target.status}); retry later`), target.tenantId, { "retry-after": String(RETRY_AFTER_S) });
    }
    const bad = requestTargetProblem(req.url);
    if (bad !== undefined) return json(new PaddockError("ERR_URL_MALFORMED", bad), target.tenantId);
    return { ok: true, tenantId: target.tenantId, tokenId: owner.tokenId, socketPath: target.socketPath };
  };

  /**
   * Admission of a routed request (supervisor/gateway-admission.ts): a refusal becomes a
   * Route answering 429/503 + Retry-After; `end` ends the request or WebSocket if its
   * session is ended (revocation, suspension, deletion).
   */
  const admit = (r: Route, req: http.IncomingMessage, end: (reason: PaddockError) => void): { r: Route; admitted?: Admission } => {
    if (!r.ok) return { r };
    const a = admission.admit({ tenantId: r.tenantId, tokenId: r.tokenId, socket: req.socket, end });
    if (isRefusal(a)) return { r: json(a.error, r.tenantId, { "retry-after": String(a.retryAfterS) }) };
    return { r, admitted: a };
  };

  /** Rewrite the headers forwarded upstream on a WebSocket upgrade (http-proxy copies req.headers). */
  const prepareHeaders = (req: http.IncomingMessage, id: string, tenantId: string): void => {
    const host = req.headers.host;
    for (const h of STRIPPED_HEADERS) delete req.headers[h];
    req.headers["x-forwarded-for"] = req.socket.remoteAddress ?? "unix";
    req.headers["x-forwarded-proto"] = "http";
    if (host !== undefined) req.headers["x-forwarded-host"] = host;
    req.headers["x-request-id"] = id;
    req.headers["x-paddock-tenant"] = tenantId;
  };

  // WebSocket upgrades: keep the request line exactly as the client sent it (http-proxy's
  // urlJoin collapses `//` and would normalise the path; the daemon must see what the client sent).
  proxy.on("proxyReqWs", (proxyReq, req, socket) => {
    if (!proxyReq.headersSent && req.url !== undefined) proxyReq.path = req.url;
    // http-proxy ends the daemon side only on a client `error` or `end`: a client socket
    // destroyed by the gateway (session ended, revocation) must take the daemon side with it.
    const endUpstream = (): void => { proxyReq.destroy(); };
    socket.once("close", endUpstream);
    proxyReq.once("upgrade", (_res, upSocket: Duplex) => {
      socket.off("close", endUpstream);
      if (socket.destroyed) upSocket.destroy();
      else socket.once("close", () => upSocket.destroy());
    });
  });
  // Never let an unhandled proxy error kill the process (STYLE.md "Known traps").
  proxy.on("error", (err) => log.error("proxy error without handler", { err }));

  /** The upstream request of each proxied request, for the body idle bound's abort. */
  const upstreams = new WeakMap<http.IncomingMessage, { upstream: http.ClientRequest; id: string }>();

  /**
   * The end of a request (the response finished, or the client went away): metrics, one
   * access line, the audit entry of a VM create/delete, and — if the response did not
   * finish — the upstream request is destroyed so the daemon sees the disconnect (e.g. stops
   * an exec stream). One listener per request, and no child logger: the line carries `req`.
   */
  const finish = (req: http.IncomingMessage, res: http.ServerResponse, r: Route, id: string, started: number, upstream: http.ClientRequest | undefined, admitted?: Admission): void => {
    admitted?.release();
    const finished = res.writableFinished;
    if (!finished) upstream?.destroy();
    const seconds = (performance.now() - started) / 1000;
    const tenantLabel = r.tenantId ?? "-";
    metrics.observeRequest(tenantLabel, res.statusCode, seconds);
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const pathOnly = q < 0 ? url : url.slice(0, q);
    if (accessLog) log.info("request", { req: id, tenant: tenantLabel, method: req.method, path: pathOnly, status: res.statusCode, ms: Math.round(seconds * 1000), aborted: !finished });
    if (r.ok && ((req.method === "POST" && VM_CREATE.test(url)) || (req.method === "DELETE" && VM_DELETE.test(url)))) {
      void audit.record({ actor: `tenant:${r.tenantId}`, action: req.method === "POST" ? "vm.create" : "vm.delete", tenant: r.tenantId, requestId: id, status: res.statusCode, details: { method: req.method, path: pathOnly } }, (err) => log.error("audit write failed", { req: id, err }));
    }
  };
  const accessLog = log.enabled("info");

  /** An upstream request failed (daemon down, reset, bad answer): JSON 502/503, or a reset once the response started. */
  const upstreamFailed = (err: Error, res: http.ServerResponse, tenantId: string, id: string): void => {
    const code = errnoCode(err);
    if (res.destroyed || res.writableEnded) {
      // The client went away (or was answered) first: `finish` destroyed the upstream request.
      log.debug("upstream request ended after the client", { req: id, tenant: tenantId, code, err: err.message });
      return;
    }
    log.warn("upstream error", { req: id, tenant: tenantId, code, err: err.message });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // Refused or missing socket: the daemon is down. Reset before any response: it died
    // under this request (kill -9, crash); both are "down", retryable — unless the tenant was
    // deleted meanwhile (its daemon stopped on purpose): a retry could only get 401.
    const down = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
    const now = tenants.gatewayTarget(tenantId);
    const deleted = now === undefined || now.status === "deleting";
    const e = deleted
      ? new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${tenantId} was deleted while this request ran`)
      : down
        ? new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${tenantId} is not answering; retry later`)
        : new PaddockError("ERR_UPSTREAM_FAILED", `the daemon of tenant ${tenantId} failed to answer (${code ?? "error"})`);
    const retry = down && !deleted;
    const answer = errorResponse(e);
    sendJson(res, answer.status, JSON.stringify(answer.body), { "x-request-id": id, ...(retry ? { "retry-after": String(RETRY_AFTER_S) } : {}) });
  };

  /**
   * Plain HTTP: one `http.request` to the daemon's socket, bodies piped both ways — http-proxy's
   * web pass without its generic machinery (options merge, url.parse/urlJoin, per-header
   * setHeader on the answer, an event per request to restore the raw path), with the headers handed to Node as flat arrays (its fast path) and
   * a bodyless request ended at once instead of piped. Why: issue 6 figure 3. CPU per request
   * of the proxy process, autocannon GET /nodes at 16 and 64 connections on a stub daemon,
   * medians of 4 on this 2-core VM: a bare `proxy.web()` 82–92 µs vs a bare `http.request`
   * pipe 64–81 µs; this gateway on http-proxy 171–175 µs vs on this path 112–145 µs (same
   * run). WebSocket upgrades still go through `proxy.ws()`.
   *
   * What http-proxy did and this keeps: method, raw path and query (the request line as
   * sent), the client's headers (as parsed by Node: duplicates joined) minus the stripped
   * ones plus the gateway's, `content-length: 0` on a bodyless DELETE/OPTIONS, the body
   * streamed; the answer's status, reason and raw headers (plus the gateway's `x-request-id`,
   * which replaces one from the daemon, and `connection` when the daemon sent none: the
   * client's, else keep-alive; an HTTP/1.0 client gets no `transfer-encoding` and
   * `connection` defaults to close), body piped.
   */
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, r: Route & { ok: true }, id: string): http.ClientRequest | undefined => {
    const src = req.headers;
    const headers: string[] = [];
    for (const k in src) {
      if (STRIPPED.has(k)) continue;
      const v = src[k];
      if (v === undefined) continue;
      if (typeof v === "string") headers.push(k, v);
      else for (const x of v) headers.push(k, x);
    }
    if ((req.method === "DELETE" || req.method === "OPTIONS") && src["content-length"] === undefined && src["transfer-encoding"] === undefined) headers.push("content-length", "0");
    headers.push("x-forwarded-for", req.socket.remoteAddress ?? "unix", "x-forwarded-proto", "http");
    if (src.host !== undefined) headers.push("x-forwarded-host", src.host);
    headers.push("x-request-id", id, "x-paddock-tenant", r.tenantId);
    let upstream: http.ClientRequest;
    try {
      upstream = http.request({ socketPath: r.socketPath, agent: upstreamAgent, method: req.method, path: req.url, headers });
    } catch (err) {
      // Node refuses a request line or header it would not send (ERR_UNESCAPED_CHARACTERS, ERR_INVALID_CHAR…).
      const e = errnoCode(err) === "ERR_UNESCAPED_CHARACTERS"
        ? new PaddockError("ERR_URL_MALFORMED", `request cannot be forwarded: ${(err as Error).message}`)
        : new PaddockError("ERR_HEADER_INVALID", `request cannot be forwarded: ${(err as Error).message}`);
      sendJson(res, 400, JSON.stringify(errorResponse(e).body), { "x-request-id": id, connection: "close" });
      return undefined;
    }
    upstream.on("error", (err) => upstreamFailed(err, res, r.tenantId, id));
    upstream.on("response", (up) => {
      if (res.headersSent || res.writableEnded) {
        // Answered already (body idle 408): discard.
        up.resume();
        return;
      }
      const raw = up.rawHeaders;
      const out: string[] = ["x-request-id", id];
      const http10 = req.httpVersion === "1.0";
      let connection = false;
      for (let i = 0; i < raw.length; i += 2) {
        const k = raw[i] as string;
        const lower = k.toLowerCase();
        if (lower === "x-request-id" || (http10 && lower === "transfer-encoding")) continue;
        if (lower === "connection") {
          if (http10) continue;
          connection = true;
        }
        out.push(k, raw[i + 1] as string);
      }
      if (http10) out.push("connection", src.connection ?? "close");
      else if (!connection) out.push("connection", src.connection ?? "keep-alive");
      // A daemon that dies mid-answer: reset the client's connection (the answer is cut).
      up.on("error", () => res.destroy());
      if (up.statusMessage) res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      else res.writeHead(up.statusCode ?? 502, out);
      up.pipe(res);
    });
    // A bodyless request (GET, most execs) is sent at once; the pipe is only for bodies.
    if (requestHasBody(req)) req.pipe(upstream);
    else {
      upstream.end();
      req.resume();
    }
    return upstream;
  };

  // Check header deadlines every 5 s (Node's default 30 s would let a trickle live ~60 s).
  const server = http.createServer({ connectionsCheckingInterval: 5_000 }, (req, res) => {
    const id = requestId();
    const started = performance.now();
    // Ending the session (revocation, suspension) cuts both sides; the upstream exists only once forwarded.
    const live: { upstream?: http.ClientRequest } = {};
    const { r, admitted } = admit(route(req), req, (reason) => {
      live.upstream?.destroy();
      // Not answered yet: the client gets the reason (401 revoked, 403 suspended, 404 deleted)
      // rather than a reset; a stream already under way is cut.
      if (!res.headersSent && !res.destroyed) {
        const { status, body } = errorResponse(reason);
        sendJson(res, status, JSON.stringify(body), { "x-request-id": id, connection: "close" });
      } else res.destroy();
    });
    if (!r.ok) {
      res.once("close", () => finish(req, res, r, id, started, undefined));
      if (r.status === 401) metrics.observeAuthFailure();
      // Drain nothing: the body is not read; close the connection after answering.
      sendJson(res, r.status, r.body, { "x-request-id": id, connection: "close", ...(r.headers ?? {}) });
      return;
    }
    const upstream = forward(req, res, r, id);
    live.upstream = upstream;
    res.once("close", () => finish(req, res, r, id, started, upstream, admitted));
    // Only a request with a body can be cut by the body idle bound (its onTimeout needs this).
    if (upstream && requestHasBody(req)) upstreams.set(req, { upstream, id });
  });

  // A body trickle (or a stall) before the response starts: 408 and abort the upstream request.
  boundRequestBodyIdle(server, {
    idleMs: deps.bodyIdleMs ?? BODY_IDLE_TIMEOUT_MS,
    onTimeout: (req, res) => {
      const u = upstreams.get(req);
      log.warn("request body idle timeout", { req: u?.id, path: (req.url ?? "").split("?")[0] });
      if (u && !res.headersSent) res.setHeader("x-request-id", u.id);
      u?.upstream.destroy();
    },
  });

  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const id = requestId();
    const rlog = log.child({ req: id });
    socket.on("error", (err) => rlog.debug("client socket error", { err: err.message }));
    // A live WebSocket holds a connection and a request slot until its socket closes.
    const { r, admitted } = admit(route(req), req, () => socket.destroy());
    if (!r.ok) {
      if (r.status === 401) metrics.observeAuthFailure();
      endSocketWithJson(socket, r.status, r.body, { "x-request-id": id, ...(r.headers ?? {}) });
      rlog.info("upgrade refused", { status: r.status, path: (req.url ?? "").split("?")[0] });
      return;
    }
    socket.once("close", () => admitted?.release());
    prepareHeaders(req, id, r.tenantId);
    rlog.info("upgrade", { tenant: r.tenantId, path: (req.url ?? "").split("?")[0] });
    try {
      proxyWs(req, socket, head, r);
    } catch (err) {
      // http-proxy builds the upstream request synchronously: Node refuses a header it would not send.
      rlog.info("upgrade refused", { status: 400, err: (err as Error).message });
      endSocketWithJson(socket, 400, JSON.stringify(errorResponse(new PaddockError("ERR_HEADER_INVALID", `request cannot be forwarded: ${(err as Error).message}`)).body), { "x-request-id": id });
    }
  });

  const proxyWs = (req: http.IncomingMessage, socket: Duplex, head: Buffer, r: Route & { ok: true }): void => {
    const rlog = log.child({ req: req.headers["x-request-id"] });
    proxy.ws(req, socket, head, { target: { socketPath: r.socketPath } as unknown as httpProxy.ProxyTargetUrl }, (err) => {
      rlog.warn("upstream websocket error", { tenant: r.tenantId, err: (err as Error).message });
      if (!socket.destroyed) {
        const body = JSON.stringify(errorResponse(new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${r.tenantId} is not answering; retry later`)).body);
        endSocketWithJson(socket, 503, body, { "retry-after": String(RETRY_AFTER_S) });
      }
    });
  };

  // Long exec streams and wait-exit calls must not be cut: no request/idle timeout, only a
  // bound on receiving headers (slowloris).
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  server.timeout = 0;
  server.keepAliveTimeout = 5_000;
  // Malformed requests never reach a route: answer them here in the same JSON error shape
  // (431 for oversized headers, 408 for headers not received in time, else 400).
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.end(clientErrorReply(err));
  });
  // Every accepted socket counts against the descriptor budget; past the budget plus half the
  // reserve Node drops new connections unanswered (https://nodejs.org/api/net.html#servermaxconnections),
  // so the process itself never meets EMFILE.
  server.on("connection", (socket: Socket) => admission.trackClientSocket(socket));
  server.maxConnections = admission.maxClientSockets;
  server.on("close", () => {
    proxy.close();
    upstreamAgent.destroy();
  });
  return server;
}
