/**
 * The tenant gateway: `Authorization: Bearer <tenant token>` → tenant → that tenant's daemon
 * socket (docs/ARCHITECTURE.md, "The path of a create"). This file builds the HTTP server
 * and wires its pieces:
 * - token → tenant resolution and the refusals before any forwarding
 *   (supervisor/gateway-route.ts): 401 for unknown, expired, revoked or missing tokens (one
 *   body, the same work), 403 suspended, 404 being deleted, 503 + Retry-After daemon down,
 *   400 `ERR_URL_MALFORMED` for a request target that is not a decodable path;
 * - admission (supervisor/gateway-admission.ts): each request and WebSocket passes the
 *   tenant's connection, concurrency and rate caps and the global descriptor budget, or gets
 *   429/503 + Retry-After; admitted ones are registered by tenant and token id so that
 *   revocation, suspension and deletion end them (supervisor/gateway-session.ts);
 * - the plain-HTTP proxy (supervisor/gateway-forward.ts, on undici: one connection pool per
 *   daemon socket, supervisor/gateway-upstream.ts): the request goes through unchanged
 *   (method, raw path and query, streamed body; no body parser ever sits in front, responses
 *   are streamed with backpressure, not buffered), the token, hop-by-hop headers and
 *   client-sent `Forwarded`/`X-Forwarded-*`/`X-Real-IP` are dropped and the gateway sets its
 *   own `X-Forwarded-*` and `X-Request-Id` (also on every response); upstream errors become
 *   JSON 502/503, or a reset once headers were sent;
 * - WebSocket upgrades (supervisor/gateway-upgrade.ts): the same auth and admission, then
 *   http-proxy's `ws()` on a keep-alive `http.Agent`;
 * - the end of each request (supervisor/gateway-session.ts): a client abort aborts the
 *   upstream request (its daemon connection closes); metrics, one access log line
 *   (batched writes, shared/logger.ts) and the audit entry of a VM create/delete.
 *
 * No server timeout cuts a long response: only header reception is bounded, and a request
 * body still being received before the response starts (no byte for `bodyIdleMs` ⇒ 408
 * ERR_REQUEST_BODY_TIMEOUT, shared/body-idle-timeout.ts; the upstream request is aborted).
 * A header Node will not forward gets 400 `ERR_HEADER_INVALID` (shared/http-input.ts).
 */
import http from "node:http";
import type { Socket } from "node:net";
import { randomUUID } from "node:crypto";
import type { Logger } from "../shared/logger.js";
import { responseCodeLabel, type SupervisorMetrics } from "./metrics.js";
import type { AuditLog } from "./audit-log.js";
import { BODY_IDLE_TIMEOUT_MS, boundRequestBodyIdle, requestHasBody } from "../shared/body-idle-timeout.js";
import { clientErrorReply, endAndClose } from "../shared/http-input.js";
import type { GatewayAdmission } from "./gateway-admission.js";
import { routeRequest, type TenantResolver } from "./gateway-route.js";
import { HttpForwarder, createUpstreamAgent, sendJson } from "./gateway-forward.js";
import { UpstreamPools, type UpstreamRequest } from "./gateway-upstream.js";
import { RequestFinisher, admitRoute, endRequestSession } from "./gateway-session.js";
import { WebSocketProxy, handleUpgrade } from "./gateway-upgrade.js";
import type { PreviewConfig } from "./supervisor-config.js";
import type { PreviewKeys } from "./preview/preview-keys.js";
import { PreviewGateway } from "./preview/preview-gateway.js";
import { isMintRequest, mintPreviewToken } from "./preview/preview-mint.js";

export { RETRY_AFTER_S } from "./gateway-route.js";

/** Dependencies of the gateway. */
export interface GatewayDeps {
  /** Token and tenant lookups (supervisor/tenant-service.ts `TenantService`). */
  tenants: TenantResolver;
  metrics: SupervisorMetrics;
  audit: AuditLog;
  log: Logger;
  /** Per-tenant caps, descriptor budget and the live-session registry (shared with the tenant service). */
  admission: GatewayAdmission;
  /** Idle bound on a request body still being received, ms (default {@link BODY_IDLE_TIMEOUT_MS}; 0 disables). */
  bodyIdleMs?: number;
  /** Preview URLs (supervisor/preview/); absent: no preview routes and no mint route. */
  preview?: { config: PreviewConfig; keys: PreviewKeys };
}

/** Build the gateway's HTTP server (not yet listening). */
export function createGatewayServer(deps: GatewayDeps): http.Server {
  const { tenants, metrics, audit, log, admission } = deps;
  const upstreamAgent = createUpstreamAgent();
  const upstreamPools = new UpstreamPools();
  const forwarder = new HttpForwarder(upstreamPools, upstreamAgent, tenants, log);
  const wsProxy = new WebSocketProxy(upstreamAgent, log);
  const finisher = new RequestFinisher(metrics, audit, log);
  const previews = deps.preview ? new PreviewGateway({ tenants, keys: deps.preview.keys, config: deps.preview.config }) : undefined;
  const previewMint = deps.preview ? { ...deps.preview, audit, metrics, log } : undefined;
  /** The upstream request of each proxied request with a body, for the body idle bound's abort. */
  const upstreams = new WeakMap<http.IncomingMessage, { upstream: UpstreamRequest; id: string }>();

  // Check header deadlines every 5 s (Node's default 30 s would let a trickle live ~60 s).
  const server = http.createServer({ connectionsCheckingInterval: 5_000 }, (req, res) => {
    const id = randomUUID();
    const started = performance.now();
    // Ending the session (revocation, suspension) cuts both sides; the upstream exists only once forwarded.
    const live: { upstream?: UpstreamRequest } = {};
    const pv = previews?.route(req, false);
    if (pv) res.once("close", () => metrics.observePreview(pv.r.tenantId ?? "-", pv.addr?.form ?? "-", pv.auth ?? "none", responseCodeLabel(res)));
    const { r, admitted } = admitRoute(admission, pv ? pv.r : routeRequest(tenants, req), req, endRequestSession(res, id, live));
    // A preview redirect: to the trailing slash (nothing routed), or the query token exchanged
    // for the cookie (routed and admitted; a refused admission is answered below instead).
    if (pv?.answer && (r.ok || !pv.r.ok)) {
      res.once("close", () => finisher.finish(req, res, r, id, started, undefined, admitted, false));
      req.resume();
      res.writeHead(pv.answer.status, { ...pv.answer.headers, "x-request-id": id, "content-length": 0 });
      res.end();
      return;
    }
    if (!r.ok) {
      res.once("close", () => finisher.finish(req, res, r, id, started, undefined));
      if (r.status === 401) metrics.observeAuthFailure();
      // Drain nothing: the body is not read; close the connection after answering.
      sendJson(res, r.status, r.body, { "x-request-id": id, connection: "close", ...(r.headers ?? {}) });
      return;
    }
    if (!pv && previewMint && isMintRequest(req)) {
      res.once("close", () => finisher.finish(req, res, r, id, started, undefined, admitted));
      void mintPreviewToken(previewMint, req, res, r, id);
      return;
    }
    const upstream = forwarder.forward(req, res, r, id, pv?.plan);
    live.upstream = upstream;
    res.once("close", () => finisher.finish(req, res, r, id, started, upstream, admitted, pv === undefined));
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
      u?.upstream.abort();
    },
  });

  server.on("upgrade", (req: http.IncomingMessage, socket, head: Buffer) => handleUpgrade({ tenants, admission, metrics, log, proxy: wsProxy, previews }, req, socket, head));

  // Long exec streams and wait-exit calls must not be cut: no request/idle timeout, only a
  // bound on receiving headers (slowloris).
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  server.timeout = 0;
  server.keepAliveTimeout = 5_000;
  // Malformed requests never reach a route: answer them here in the same JSON error shape
  // (431 for oversized headers, 408 for headers not received in time, else 400).
  // The socket is closed after the answer even if the client never reads nor closes (endAndClose).
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => endAndClose(socket, clientErrorReply(err)));
  // Every accepted socket counts against the descriptor budget; past the budget plus half the
  // reserve Node drops new connections unanswered (https://nodejs.org/api/net.html#servermaxconnections),
  // so the process itself never meets EMFILE.
  server.on("connection", (socket: Socket) => admission.trackClientSocket(socket));
  server.maxConnections = admission.maxClientSockets;
  server.on("close", () => {
    wsProxy.close();
    upstreamPools.destroy();
    upstreamAgent.destroy();
  });
  return server;
}
