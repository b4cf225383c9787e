/**
 * The life of one admitted gateway request: its admission under the tenant's caps
 * (supervisor/gateway-admission.ts), what ending its session does (revocation, suspension,
 * deletion), and its end — the admission released, the upstream request aborted if the
 * client went away, metrics, one access log line and the audit entry of a VM create/delete.
 */
import type http from "node:http";
import { errorResponse, type PaddockError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { AuditLog } from "./audit-log.js";
import { responseCodeLabel, type SupervisorMetrics } from "./metrics.js";
import { isRefusal, type Admission, type GatewayAdmission } from "./gateway-admission.js";
import { sendJson } from "./gateway-forward.js";
import { refusal, type Route } from "./gateway-route.js";
import type { UpstreamRequest } from "./gateway-upstream.js";

/** VM create/delete paths of the Slicer API, which the gateway audits. */
const VM_CREATE = /^\/hostgroup\/[^/]+\/nodes\/?(\?|$)/;
const VM_DELETE = /^\/hostgroup\/[^/]+\/nodes\/[^/?]+\/?(\?|$)/;

/**
 * Admission of a routed request: a refusal becomes a Route answering 429/503 + Retry-After;
 * `end` ends the request or WebSocket if its session is ended (revocation, suspension,
 * deletion). A refused route passes through untouched.
 * @returns the route to answer or forward, and the admission to release at its end.
 */
export function admitRoute(admission: GatewayAdmission, r: Route, req: http.IncomingMessage, end: (reason: PaddockError) => void): { r: Route; admitted?: Admission } {
  if (!r.ok) return { r };
  const a = admission.admit({ tenantId: r.tenantId, tokenId: r.tokenId, socket: req.socket, end });
  if (isRefusal(a)) return { r: refusal(a.error, r.tenantId, { "retry-after": String(a.retryAfterS) }) };
  return { r, admitted: a };
}

/**
 * What ending a plain request's session does: the upstream request (once forwarded, in
 * `live`) is aborted; a client not answered yet gets the reason (401 revoked, 403 suspended,
 * 404 deleted) and the connection closes, a stream already under way is cut.
 */
export function endRequestSession(res: http.ServerResponse, id: string, live: { upstream?: UpstreamRequest }): (reason: PaddockError) => void {
  return (reason) => {
    live.upstream?.abort();
    if (!res.headersSent && !res.destroyed) {
      const { status, body } = errorResponse(reason);
      sendJson(res, status, JSON.stringify(body), { "x-request-id": id, connection: "close" });
    } else res.destroy();
  };
}

/** Records the end of each plain request: metrics, the access log line, VM audit entries. */
export class RequestFinisher {
  private readonly metrics: SupervisorMetrics;
  private readonly audit: AuditLog;
  private readonly log: Logger;
  /** Whether info lines are written at all (checked once: the access line is per request). */
  private readonly accessLog: boolean;

  constructor(metrics: SupervisorMetrics, audit: AuditLog, log: Logger) {
    this.metrics = metrics;
    this.audit = audit;
    this.log = log;
    this.accessLog = log.enabled("info");
  }

  /**
   * The end of a request (the response finished, or the client went away), from its `close`:
   * the admission is released; if the response did not finish, the upstream request is
   * aborted so the daemon sees the disconnect (e.g. stops an exec stream); then metrics (code
   * `aborted` when no answer head was sent: supervisor/metrics.ts `responseCodeLabel`), one
   * access line (`started` is a `performance.now()` in ms; `aborted: true` when the response
   * did not finish, and no `status` when no answer head was sent either, as the daemon's line
   * does: tenant-daemon/api/access-log.ts) and the audit entry of a VM create/delete (not for
   * preview requests, `vmAudit` false: their paths are the app's). No child logger: the line
   * carries `req`.
   */
  finish(req: http.IncomingMessage, res: http.ServerResponse, r: Route, id: string, started: number, upstream: UpstreamRequest | undefined, admitted?: Admission, vmAudit = true): void {
    admitted?.release();
    const finished = res.writableFinished;
    if (!finished) upstream?.abort();
    const seconds = (performance.now() - started) / 1000;
    const tenantLabel = r.tenantId ?? "-";
    this.metrics.observeRequest(tenantLabel, responseCodeLabel(res), seconds);
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const pathOnly = q < 0 ? url : url.slice(0, q);
    if (this.accessLog) this.log.info("request", { req: id, tenant: tenantLabel, method: req.method, path: pathOnly, ...(finished || res.headersSent ? { status: res.statusCode } : {}), ms: Math.round(seconds * 1000), aborted: !finished });
    if (vmAudit && r.ok && ((req.method === "POST" && VM_CREATE.test(url)) || (req.method === "DELETE" && VM_DELETE.test(url)))) {
      void this.audit.record({ actor: `tenant:${r.tenantId}`, action: req.method === "POST" ? "vm.create" : "vm.delete", tenant: r.tenantId, requestId: id, status: res.statusCode, details: { method: req.method, path: pathOnly } }, (err) => this.log.error("audit write failed", { req: id, err }));
    }
  }
}
