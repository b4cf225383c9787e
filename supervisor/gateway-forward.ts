/**
 * The gateway's plain-HTTP proxy: one undici dispatch per request on the pool of the tenant
 * daemon's socket (supervisor/gateway-upstream.ts), bodies streamed both ways with backpressure
 * (never buffered: exec NDJSON and SSE stream through), the client's identity, proxy and
 * hop-by-hop headers replaced by the gateway's, and upstream failures mapped to JSON answers.
 */
import http from "node:http";
import type { Dispatcher } from "undici";
import { PaddockError, errnoCode, errorResponse } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { requestHasBody } from "../shared/body-idle-timeout.js";
import { RETRY_AFTER_S, type OkRoute, type TenantResolver } from "./gateway-route.js";
import { UPSTREAM_IDLE_MS, type UpstreamPools, type UpstreamRequest } from "./gateway-upstream.js";

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


/** A `Connection` value that is one `keep-alive` or `close` token. */
const KEEP_OR_CLOSE = /^\s*(?:keep-alive|close)\s*$/i;

/** A `close` token in a `Connection` value. */
const CLOSE_TOKEN = /(?:^|,)\s*close\s*(?:,|$)/i;

/**
 * Request headers that are not forwarded besides {@link STRIPPED_HEADERS}: hop-by-hop ones
 * (RFC 9110 §7.6.1, https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1; undici refuses
 * `connection` lists it cannot parse, `keep-alive`, `transfer-encoding` and `upgrade`, and sets
 * its own framing and `connection`) and `expect` (Node's server already answered
 * `100-continue`; undici refuses it).
 */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect"]);

/**
 * The header names a client's `Connection` value lists (hop-by-hop by its word), lower case;
 * `close`/`keep-alive` and the names the gateway sets itself (`x-forwarded-*`, `x-request-id`,
 * `x-paddock-*`) are never listed. Undefined when there is none (the common case).
 */
function connectionListed(value: string | undefined): Set<string> | undefined {
  // The usual values (autocannon, curl, browsers) list no header name: no split.
  if (value === undefined || KEEP_OR_CLOSE.test(value)) return undefined;
  let names: Set<string> | undefined;
  for (const token of value.split(",")) {
    const n = token.trim().toLowerCase();
    if (n === "" || n === "close" || n === "keep-alive" || n === "x-request-id" || n.startsWith("x-forwarded-") || n.startsWith("x-paddock-")) continue;
    (names ??= new Set()).add(n);
  }
  return names;
}

/**
 * The keep-alive agent for WebSocket upgrades (http-proxy, supervisor/gateway-upgrade.ts) and
 * for the one plain request undici cannot send as it was (a bodyless DELETE/OPTIONS, which gets
 * `content-length: 0`, see {@link HttpForwarder}).
 *
 * Idle connections are closed by the gateway (after 2 s) well before the daemon's
 * keepAliveTimeout (5 s) closes them, so a reused connection never meets a close already in
 * flight from the daemon (EPIPE/ECONNRESET). The agent's `timeout` applies only to free
 * sockets: Node's agent destroys a socket on timeout only while it sits in the free list, so
 * a long WebSocket is never cut.
 */
export function createUpstreamAgent(): http.Agent {
  return new http.Agent({ keepAlive: true, timeout: UPSTREAM_IDLE_MS, scheduling: "lifo", maxFreeSockets: 64 });
}

/**
 * Forwards plain HTTP requests to tenant daemons with undici's `Dispatcher.dispatch`
 * (https://undici.nodejs.org/#/docs/api/Dispatcher.md#dispatcherdispatchoptions-handler) on
 * the daemon socket's pool: the request head is one string write, the answer's raw headers and
 * body chunks come straight from undici's parser, no `IncomingMessage`/`ClientRequest` streams.
 * CPU per request of a bare proxy on a stub daemon: 430/209/198 µs with `http.request`,
 * 366/115/101 µs with this at 1/16/64 clients (docs/performance.md, "Gateway, third look").
 *
 * What is forwarded (as http-proxy did, and the gateway on `http.request` after it): method,
 * raw path and query (the request line as sent), the client's headers (as parsed by Node:
 * duplicates joined) minus {@link STRIPPED_HEADERS}, minus the hop-by-hop ones (`connection`
 * and the names it lists, `keep-alive`, `proxy-connection`, `te`, `trailer`,
 * `transfer-encoding`, `upgrade`, `expect`), plus the gateway's `x-forwarded-*`,
 * `x-request-id` and `x-paddock-tenant`; `content-length` is kept (undici checks the body
 * against it), a chunked body still arriving is streamed as chunked (one already complete when
 * the request is written is sent with its length). A bodyless DELETE/OPTIONS gets
 * `content-length: 0`, which undici never sends on those methods (RFC 9110 §8.6 "SHOULD NOT"),
 * so that one goes through Node's `http.request` on `agent`, answered by the same code.
 *
 * The answer: status, reason and raw headers (latin1; plus the gateway's `x-request-id`, which
 * replaces one from the daemon, and `connection` when the daemon sent none: the client's, else
 * keep-alive; a client that sent `Connection: close` gets `connection: close` in place of the
 * daemon's `connection`/`keep-alive`, as the daemon answered when that header still crossed;
 * an HTTP/1.0 client gets no `transfer-encoding` and `connection` defaults to close), the body streamed with backpressure (undici's socket paused while the client's
 * response buffer is full, resumed on its `drain`). 1xx answers are not passed on.
 */
export class HttpForwarder {
  private readonly pools: UpstreamPools;
  private readonly agent: http.Agent;
  private readonly tenants: TenantResolver;
  /** @internal for {@link Answer} */
  readonly log: Logger;

  constructor(pools: UpstreamPools, agent: http.Agent, tenants: TenantResolver, log: Logger) {
    this.pools = pools;
    this.agent = agent;
    this.tenants = tenants;
    this.log = log;
  }

  /**
   * Forward `req` to the routed daemon and stream its answer into `res`. A request undici (or
   * Node) will not send is answered 400 (`ERR_URL_MALFORMED`, `ERR_HEADER_INVALID`) here; an
   * upstream failure is answered by {@link upstreamFailed}.
   * @returns the upstream request (to abort it), or undefined when it could not be built (answered already).
   */
  forward(req: http.IncomingMessage, res: http.ServerResponse, r: OkRoute, id: string, plan?: ForwardPlan): UpstreamRequest | undefined {
    const src = req.headers;
    const listed = connectionListed(src.connection);
    const headers: string[] = [];
    if (plan) {
      const p = plan.headers;
      for (let i = 0; i < p.length; i += 2) {
        const k = (p[i] as string).toLowerCase();
        if (HOP_BY_HOP.has(k) || listed?.has(k) === true) continue;
        headers.push(p[i] as string, p[i + 1] as string);
      }
    } else {
      for (const k in src) {
        if (STRIPPED.has(k) || HOP_BY_HOP.has(k) || listed?.has(k) === true) continue;
        const v = src[k];
        if (v === undefined) continue;
        if (typeof v === "string") headers.push(k, v);
        else for (const x of v) headers.push(k, x);
      }
      headers.push("x-forwarded-for", req.socket.remoteAddress ?? "unix", "x-forwarded-proto", "http");
      if (src.host !== undefined) headers.push("x-forwarded-host", src.host);
    }
    headers.push("x-request-id", id, "x-paddock-tenant", r.tenantId);
    const answer = new Answer(this, req, res, r.tenantId, id, plan?.rewriteAnswer);
    const path = plan?.path ?? req.url ?? "/";
    const method = req.method ?? "GET";
    const hasBody = requestHasBody(req);
    if (!hasBody && (method === "DELETE" || method === "OPTIONS")) {
      if (src["content-length"] === undefined) headers.push("content-length", "0");
      this.viaAgent(r.socketPath, method, path, headers, answer);
    } else {
      this.pools.get(r.socketPath).dispatch({ path, method, headers, body: hasBody ? req : null }, answer);
    }
    if (answer.refused) return undefined;
    // A bodyless request (GET, most execs) is sent at once; its (empty) stream is drained.
    if (!hasBody) req.resume();
    return answer;
  }

  /** Send one request with Node's `http.request` on the agent, feeding `answer` as undici would. */
  private viaAgent(socketPath: string, method: string, path: string, headers: string[], answer: Answer): void {
    let up: http.ClientRequest;
    try {
      up = http.request({ socketPath, agent: this.agent, method, path, headers });
    } catch (err) {
      // Node refuses a request line or header it would not send (ERR_UNESCAPED_CHARACTERS, ERR_INVALID_CHAR…).
      answer.refuse(errnoCode(err) === "ERR_UNESCAPED_CHARACTERS", err as Error);
      return;
    }
    answer.onConnect((err) => up.destroy(err));
    up.on("error", (err) => answer.onError(err));
    up.on("response", (m) => {
      m.on("error", (err) => answer.onError(err));
      m.on("data", (chunk: Buffer) => {
        if (!answer.onData(chunk)) m.pause();
      });
      m.on("end", () => answer.onComplete());
      answer.onHeaders(m.statusCode ?? 502, m.rawHeaders, () => m.resume(), m.statusMessage ?? "");
    });
    up.end();
  }

  /**
   * An upstream request failed before its answer head (daemon down, reset, bad answer): JSON
   * 404 when the tenant was deleted meanwhile, 503 `ERR_TENANT_UNAVAILABLE` + Retry-After when
   * the daemon is down (connect refused or no socket: `ECONNREFUSED`/`ENOENT`; the connection
   * reset under the request: undici's `UND_ERR_SOCKET`, `ECONNRESET`, `EPIPE`), else 502
   * `ERR_UPSTREAM_FAILED`; a reset of the client's connection once the response started.
   * @internal for {@link Answer}
   */
  upstreamFailed(err: Error, res: http.ServerResponse, tenantId: string, id: string): void {
    const code = errnoCode(err);
    if (res.destroyed || res.writableEnded) {
      // The client went away (or was answered) first: the request's end aborted the upstream request.
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
    const down = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE" || code === "UND_ERR_SOCKET";
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

/**
 * One forwarded request's undici handler (the callbacks of
 * https://undici.nodejs.org/#/docs/api/Dispatcher.md, which undici 7's core calls directly)
 * and its {@link UpstreamRequest} handle. Writes the answer into `res`; once the gateway
 * aborts it (client gone, session ended, body idle 408) it writes nothing more.
 */
class Answer implements Dispatcher.DispatchHandler, UpstreamRequest {
  /** The request was refused before it was sent (answered 400). */
  refused = false;
  private abortUpstream: ((err?: Error) => void) | undefined;
  /** Aborted by the gateway (its error, if any, is not an upstream failure). */
  private cancelled = false;
  /** The answer head was written to the client. */
  private headed = false;
  /** The answer is not for the client (it was answered already): its body is dropped. */
  private discard = false;
  /** onComplete or onError ran. */
  private done = false;

  constructor(
    private readonly fwd: HttpForwarder,
    private readonly req: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    private readonly tenantId: string,
    private readonly id: string,
    private readonly rewrite: ((headers: string[]) => string[]) | undefined,
  ) {}

  abort(): void {
    if (this.cancelled || this.done) return;
    this.cancelled = true;
    this.abortUpstream?.();
  }

  /** Answer 400: the request line (`url`) or a header cannot be sent. */
  refuse(url: boolean, err: Error): void {
    this.refused = true;
    this.done = true;
    const e = url
      ? new PaddockError("ERR_URL_MALFORMED", `request cannot be forwarded: ${err.message}`)
      : new PaddockError("ERR_HEADER_INVALID", `request cannot be forwarded: ${err.message}`);
    sendJson(this.res, 400, JSON.stringify(errorResponse(e).body), { "x-request-id": this.id, connection: "close" });
  }

  onConnect(abort: (err?: Error) => void): void {
    // Aborted while queued for a connection: never send it.
    if (this.cancelled) abort();
    else this.abortUpstream = abort;
  }

  onHeaders(status: number, raw: Buffer[] | string[], resume: () => void, statusText: string): boolean {
    // 1xx (never a 101 here: upgrades go through supervisor/gateway-upgrade.ts) is not passed on.
    if (status < 200) return true;
    const res = this.res;
    if (this.cancelled || res.headersSent || res.writableEnded) {
      // Answered already (body idle 408): discard.
      this.discard = true;
      return true;
    }
    let out: string[] = ["x-request-id", this.id];
    const http10 = this.req.httpVersion === "1.0";
    const clientConnection = this.req.headers.connection;
    // The client's `connection` is not forwarded (hop-by-hop), so the daemon's answer speaks
    // for the gateway's pooled connection: a client that asked to close gets `connection:
    // close` (and no `keep-alive`), what the daemon answered when the header still crossed.
    const clientClose = clientConnection !== undefined && CLOSE_TOKEN.test(clientConnection);
    let connection = false;
    for (let i = 0; i < raw.length; i += 2) {
      const rk = raw[i] as Buffer | string;
      const rv = raw[i + 1] as Buffer | string;
      const k = typeof rk === "string" ? rk : rk.toString("latin1");
      const lower = k.toLowerCase();
      if (lower === "x-request-id" || (http10 && lower === "transfer-encoding")) continue;
      if (lower === "connection") {
        if (http10 || clientClose) continue;
        connection = true;
      }
      if (clientClose && !http10 && lower === "keep-alive") continue;
      out.push(k, typeof rv === "string" ? rv : rv.toString("latin1"));
    }
    if (http10) out.push("connection", clientConnection ?? "close");
    else if (clientClose) out.push("connection", "close");
    else if (!connection) out.push("connection", clientConnection ?? "keep-alive");
    if (this.rewrite) out = this.rewrite(out);
    this.headed = true;
    if (statusText) res.writeHead(status, statusText, out);
    else res.writeHead(status, out);
    res.on("drain", resume);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.discard) return true;
    // false pauses undici's socket until resume (the client's `drain`).
    return this.res.write(chunk);
  }

  onComplete(): void {
    if (this.done) return;
    this.done = true;
    if (!this.discard) this.res.end();
  }

  onError(err: Error): void {
    if (this.done) return;
    const code = errnoCode(err);
    if (code === "UND_ERR_INVALID_ARG" && this.abortUpstream === undefined) {
      // undici refused the request (called back from dispatch): a path or header it will not send.
      this.refuse(/path/.test(err.message), err);
      return;
    }
    this.done = true;
    if (this.cancelled || this.discard) {
      this.fwd.log.debug("upstream request aborted", { req: this.id, tenant: this.tenantId, code, err: err.message });
      return;
    }
    // A daemon that dies mid-answer: reset the client's connection (the answer is cut).
    if (this.headed) this.res.destroy();
    else this.fwd.upstreamFailed(err, this.res, this.tenantId, this.id);
  }
}
