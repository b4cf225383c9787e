/**
 * The gateway's plain-HTTP proxy: one `http.request` per request to the tenant daemon's
 * socket on a keep-alive agent, bodies piped both ways (never buffered: exec NDJSON and SSE
 * stream through), the client's identity and proxy headers replaced by the gateway's, and
 * upstream failures mapped to JSON answers.
 */
import http from "node:http";
import { PaddockError, errnoCode, errorResponse } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { requestHasBody } from "../shared/body-idle-timeout.js";
import { RETRY_AFTER_S, type OkRoute, type TenantResolver } from "./gateway-route.js";

/** Headers a client may not set: identity and proxy metadata are the gateway's to set. */
export const STRIPPED_HEADERS: readonly string[] = ["authorization", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-request-id", "x-paddock-tenant"];
const STRIPPED = new Set(STRIPPED_HEADERS);

/**
 * A rewrite of what one request forwards (preview requests, supervisor/preview/preview-gateway.ts):
 * the daemon path, the whole header list, and an edit of the answer's headers.
 */
export interface ForwardPlan {
  /** Request target sent to the daemon instead of the client's. */
  path: string;
  /**
   * Headers sent to the daemon as a flat name/value list, instead of the client's minus
   * {@link STRIPPED_HEADERS} plus the gateway's `X-Forwarded-*` (`X-Request-Id` and
   * `X-Paddock-Tenant` are added to either).
   */
  headers: string[];
  /** Edit of the answer's flat header list before it is written (e.g. drop `Set-Cookie`). */
  rewriteAnswer?: (headers: string[]) => string[];
}

/** Answer `res` with a serialised JSON `body` (and `headers`); the response ends. */
export function sendJson(res: http.ServerResponse, status: number, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/**
 * The keep-alive agent for upstream connections (plain requests and WebSocket upgrades).
 *
 * Idle connections are closed by the gateway (after 2 s) well before the daemon's
 * keepAliveTimeout (5 s) closes them. A reused connection therefore never meets a close
 * already in flight from the daemon (that race gave EPIPE/ECONNRESET with the default agent),
 * and a request does not pay a fresh connect + accept each time (the benchmark measured the
 * gateway at 22% of direct throughput with one connection per request). The agent's
 * `timeout` applies only to free sockets: Node's agent destroys a socket on timeout only
 * while it sits in the free list, so long exec streams are never cut.
 */
export function createUpstreamAgent(): http.Agent {
  return new http.Agent({ keepAlive: true, timeout: 2_000, scheduling: "lifo", maxFreeSockets: 64 });
}

/**
 * Forwards plain HTTP requests to tenant daemons: http-proxy's web pass without its generic
 * machinery (options merge, url.parse/urlJoin, per-header setHeader on the answer, an event
 * per request to restore the raw path), with the headers handed to Node as flat arrays (its
 * fast path) and a bodyless request ended at once instead of piped. CPU per request of the
 * proxy process (autocannon GET /nodes at 16 and 64 connections on a stub daemon, medians
 * of 4 on a 2-core VM; the gateway benchmarks are in scripts/bench/): a bare `proxy.web()`
 * 82–92 µs vs a bare `http.request` pipe 64–81 µs; the gateway on http-proxy 171–175 µs vs
 * on this path 112–145 µs (same run).
 *
 * What http-proxy did and this keeps: method, raw path and query (the request line as
 * sent), the client's headers (as parsed by Node: duplicates joined) minus the stripped
 * ones plus the gateway's, `content-length: 0` on a bodyless DELETE/OPTIONS, the body
 * streamed; the answer's status, reason and raw headers (plus the gateway's `x-request-id`,
 * which replaces one from the daemon, and `connection` when the daemon sent none: the
 * client's, else keep-alive; an HTTP/1.0 client gets no `transfer-encoding` and
 * `connection` defaults to close), body piped.
 */
export class HttpForwarder {
  private readonly agent: http.Agent;
  private readonly tenants: TenantResolver;
  private readonly log: Logger;

  constructor(agent: http.Agent, tenants: TenantResolver, log: Logger) {
    this.agent = agent;
    this.tenants = tenants;
    this.log = log;
  }

  /**
   * Forward `req` to the routed daemon and pipe its answer into `res`. A request Node will not
   * send is answered 400 (`ERR_URL_MALFORMED`, `ERR_HEADER_INVALID`) here; an upstream
   * failure is answered by {@link upstreamFailed}.
   * @returns the upstream request, or undefined when it could not be built (answered already).
   */
  forward(req: http.IncomingMessage, res: http.ServerResponse, r: OkRoute, id: string, plan?: ForwardPlan): http.ClientRequest | undefined {
    const src = req.headers;
    let headers: string[] = [];
    if (plan) headers = [...plan.headers];
    else {
      for (const k in src) {
        if (STRIPPED.has(k)) continue;
        const v = src[k];
        if (v === undefined) continue;
        if (typeof v === "string") headers.push(k, v);
        else for (const x of v) headers.push(k, x);
      }
      headers.push("x-forwarded-for", req.socket.remoteAddress ?? "unix", "x-forwarded-proto", "http");
      if (src.host !== undefined) headers.push("x-forwarded-host", src.host);
    }
    if ((req.method === "DELETE" || req.method === "OPTIONS") && src["content-length"] === undefined && src["transfer-encoding"] === undefined) headers.push("content-length", "0");
    headers.push("x-request-id", id, "x-paddock-tenant", r.tenantId);
    let upstream: http.ClientRequest;
    try {
      upstream = http.request({ socketPath: r.socketPath, agent: this.agent, method: req.method, path: plan?.path ?? req.url, headers });
    } catch (err) {
      // Node refuses a request line or header it would not send (ERR_UNESCAPED_CHARACTERS, ERR_INVALID_CHAR…).
      const e = errnoCode(err) === "ERR_UNESCAPED_CHARACTERS"
        ? new PaddockError("ERR_URL_MALFORMED", `request cannot be forwarded: ${(err as Error).message}`)
        : new PaddockError("ERR_HEADER_INVALID", `request cannot be forwarded: ${(err as Error).message}`);
      sendJson(res, 400, JSON.stringify(errorResponse(e).body), { "x-request-id": id, connection: "close" });
      return undefined;
    }
    upstream.on("error", (err) => this.upstreamFailed(err, res, r.tenantId, id));
    upstream.on("response", (up) => {
      if (res.headersSent || res.writableEnded) {
        // Answered already (body idle 408): discard.
        up.resume();
        return;
      }
      const raw = up.rawHeaders;
      let out: string[] = ["x-request-id", id];
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
      if (plan?.rewriteAnswer) out = plan.rewriteAnswer(out);
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
  }

  /**
   * An upstream request failed (daemon down, reset, bad answer): JSON 404 when the tenant was
   * deleted meanwhile, 503 `ERR_TENANT_UNAVAILABLE` + Retry-After when the daemon is down, else
   * 502 `ERR_UPSTREAM_FAILED`; a reset once the response started (its headers were sent).
   */
  private upstreamFailed(err: Error, res: http.ServerResponse, tenantId: string, id: string): void {
    const code = errnoCode(err);
    if (res.destroyed || res.writableEnded) {
      // The client went away (or was answered) first: the request's end destroyed the upstream request.
      this.log.debug("upstream request ended after the client", { req: id, tenant: tenantId, code, err: err.message });
      return;
    }
    this.log.warn("upstream error", { req: id, tenant: tenantId, code, err: err.message });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // Refused or missing socket: the daemon is down. Reset before any response: it died
    // under this request (kill -9, crash); both are "down", retryable — unless the tenant was
    // deleted meanwhile (its daemon stopped on purpose): a retry could only get 401.
    const down = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
    const now = this.tenants.gatewayTarget(tenantId);
    const deleted = now === undefined || now.status === "deleting";
    const e = deleted
      ? new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${tenantId} was deleted while this request ran`)
      : down
        ? new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${tenantId} is not answering; retry later`)
        : new PaddockError("ERR_UPSTREAM_FAILED", `the daemon of tenant ${tenantId} failed to answer (${code ?? "error"})`);
    const retry = down && !deleted;
    const answer = errorResponse(e);
    sendJson(res, answer.status, JSON.stringify(answer.body), { "x-request-id": id, ...(retry ? { "retry-after": String(RETRY_AFTER_S) } : {}) });
  }
}
