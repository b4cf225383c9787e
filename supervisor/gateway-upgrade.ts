/**
 * WebSocket upgrades through the gateway (shells, port forwards): the same authentication
 * and admission as a plain request, then http-proxy's `ws()` to the daemon's socket
 * (`target: { socketPath }`) with the request line exactly as the client sent it. A live
 * WebSocket holds a connection and a request slot until its socket closes; ending its
 * session (revocation, suspension, deletion) destroys both sides.
 */
import type http from "node:http";
import type { Duplex } from "node:stream";
import { randomUUID } from "node:crypto";
import httpProxy from "http-proxy";
import { PaddockError, errorResponse } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { endAndClose, httpJsonAnswer } from "../shared/http-input.js";
import type { GatewayAdmission } from "./gateway-admission.js";
import type { SupervisorMetrics } from "./metrics.js";
import { STRIPPED_HEADERS } from "./gateway-forward.js";
import { RETRY_AFTER_S, routeRequest, type OkRoute, type TenantResolver } from "./gateway-route.js";
import { admitRoute } from "./gateway-session.js";
import type { ForwardPlan } from "./gateway-forward.js";
import type { PreviewGateway } from "./preview/preview-gateway.js";

/**
 * Write a whole HTTP/1.1 answer with a serialised JSON `body` (and `headers`) on a raw client
 * socket, then close it (even when the client never reads nor closes, endAndClose): for
 * upgrades, which have no ServerResponse.
 */
function endSocketWithJson(socket: Duplex, status: number, body: string, headers: Record<string, string>): void {
  endAndClose(socket, httpJsonAnswer(status, body, headers));
}

/** Rewrite the headers forwarded upstream on a WebSocket upgrade (http-proxy copies req.headers). */
function prepareHeaders(req: http.IncomingMessage, id: string, tenantId: string): void {
  const host = req.headers.host;
  for (const h of STRIPPED_HEADERS) delete req.headers[h];
  req.headers["x-forwarded-for"] = req.socket.remoteAddress ?? "unix";
  req.headers["x-forwarded-proto"] = "http";
  if (host !== undefined) req.headers["x-forwarded-host"] = host;
  req.headers["x-request-id"] = id;
  req.headers["x-paddock-tenant"] = tenantId;
}

/** Replace the upgrade's target and headers by a preview plan's (http-proxy copies req.url and req.headers). */
function applyPlan(req: http.IncomingMessage, plan: ForwardPlan, id: string, tenantId: string): void {
  const headers: http.IncomingHttpHeaders = {};
  for (let i = 0; i < plan.headers.length; i += 2) {
    const k = plan.headers[i] as string;
    const v = plan.headers[i + 1] as string;
    const prev = headers[k];
    headers[k] = prev === undefined ? v : `${String(prev)}, ${v}`;
  }
  headers["x-request-id"] = id;
  headers["x-paddock-tenant"] = tenantId;
  req.headers = headers;
  req.url = plan.path;
}

/** The http-proxy instance carrying WebSocket upgrades to tenant daemons. */
export class WebSocketProxy {
  private readonly proxy: httpProxy;
  private readonly log: Logger;

  /** Upstream connections go through `agent` (shared with plain requests, supervisor/gateway-forward.ts). */
  constructor(agent: http.Agent, log: Logger) {
    this.log = log;
    this.proxy = httpProxy.createProxyServer({ xfwd: false, ws: true, proxyTimeout: 0, timeout: 0, agent });
    // Keep the request line exactly as the client sent it (http-proxy's urlJoin collapses `//`
    // and would normalise the path; the daemon must see what the client sent).
    this.proxy.on("proxyReqWs", (proxyReq, req, socket) => {
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
    // An 'error' event without a listener would throw and kill the supervisor: log it instead.
    this.proxy.on("error", (err) => log.error("proxy error without handler", { err }));
  }

  /**
   * Forward an admitted upgrade: the client's identity and proxy headers are replaced by the
   * gateway's, then `ws()`. A header Node will not send is answered 400 `ERR_HEADER_INVALID`;
   * a daemon not answering, 503 `ERR_TENANT_UNAVAILABLE` + Retry-After.
   */
  forward(req: http.IncomingMessage, socket: Duplex, head: Buffer, r: OkRoute, id: string, rlog: Logger, plan?: ForwardPlan): void {
    if (plan) applyPlan(req, plan, id, r.tenantId);
    else prepareHeaders(req, id, r.tenantId);
    rlog.info("upgrade", { tenant: r.tenantId, path: (req.url ?? "").split("?")[0] });
    try {
      this.ws(req, socket, head, r);
    } catch (err) {
      // http-proxy builds the upstream request synchronously: Node refuses a header it would not send.
      rlog.info("upgrade refused", { status: 400, err: (err as Error).message });
      endSocketWithJson(socket, 400, JSON.stringify(errorResponse(new PaddockError("ERR_HEADER_INVALID", `request cannot be forwarded: ${(err as Error).message}`)).body), { "x-request-id": id });
    }
  }

  private ws(req: http.IncomingMessage, socket: Duplex, head: Buffer, r: OkRoute): void {
    const rlog = this.log.child({ req: req.headers["x-request-id"] });
    this.proxy.ws(req, socket, head, { target: { socketPath: r.socketPath } as unknown as httpProxy.ProxyTargetUrl }, (err) => {
      rlog.warn("upstream websocket error", { tenant: r.tenantId, err: (err as Error).message });
      if (!socket.destroyed) {
        const body = JSON.stringify(errorResponse(new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${r.tenantId} is not answering; retry later`)).body);
        endSocketWithJson(socket, 503, body, { "retry-after": String(RETRY_AFTER_S) });
      }
    });
  }

  /** Stop the proxy (the gateway server closed). */
  close(): void {
    this.proxy.close();
  }
}

/** What {@link handleUpgrade} uses. */
export interface UpgradeDeps {
  tenants: TenantResolver;
  admission: GatewayAdmission;
  metrics: SupervisorMetrics;
  log: Logger;
  proxy: WebSocketProxy;
  /** Preview upgrades (supervisor/preview/preview-gateway.ts); absent: none. */
  previews?: PreviewGateway;
}

/**
 * The gateway server's `upgrade` handler: route and admit the request like a plain one; a
 * refusal is written on the raw socket (JSON, the route's status and headers), an admitted
 * upgrade is forwarded and released when its socket closes.
 */
export function handleUpgrade(deps: UpgradeDeps, req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
  const { metrics, log } = deps;
  const id = randomUUID();
  const rlog = log.child({ req: id });
  socket.on("error", (err) => rlog.debug("client socket error", { err: err.message }));
  // A live WebSocket holds a connection and a request slot until its socket closes; ending its
  // session destroys the socket (and with it the daemon side, see the proxyReqWs handler).
  const pv = deps.previews?.route(req, true);
  const { r, admitted } = admitRoute(deps.admission, pv ? pv.r : routeRequest(deps.tenants, req), req, () => socket.destroy());
  if (pv) metrics.observePreview(r.tenantId ?? "-", pv.addr?.form ?? "-", pv.auth ?? "none", r.ok ? 101 : r.status);
  if (pv?.answer && !pv.r.ok) {
    // The path form's trailing-slash redirect: nothing to upgrade yet.
    endAndClose(socket, `HTTP/1.1 ${pv.answer.status} Permanent Redirect\r\nLocation: ${pv.answer.headers.location ?? "/"}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
    return;
  }
  if (!r.ok) {
    if (r.status === 401) metrics.observeAuthFailure();
    endSocketWithJson(socket, r.status, r.body, { "x-request-id": id, ...(r.headers ?? {}) });
    rlog.info("upgrade refused", { status: r.status, path: (req.url ?? "").split("?")[0] });
    return;
  }
  socket.once("close", () => admitted?.release());
  deps.proxy.forward(req, socket, head, r, id, rlog, pv?.plan);
}
