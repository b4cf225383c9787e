/**
 * The request and response the daemon's handlers see, on node:http without a framework: the
 * server is created by {@link createApiServer}, so every request is an {@link ApiRequest}
 * (`path`, `params`, `query`, `originalUrl`, `body`) and every response an {@link ApiResponse}
 * (`status`, `type`, `json`, `send`), the few helpers the handlers used from Express, answering
 * with the same bytes Express 5 did (status, `Content-Type` with `charset=utf-8`,
 * `Content-Length`, no body on HEAD, 204 without content headers). Also: the one error answer,
 * the direct error answer of the agent and secrets routes, the encoded-`?` shim and the 404.
 */
import http from "node:http";
import { parse as legacyUrlParse } from "node:url";
import qs from "qs";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";

/** Characters after which Express's URL parser (parseurl) falls back to `url.parse`. */
const SLOW_PATH_CHARS = /[\t\n\f\r #\u00a0\ufeff]/;

/** The path and raw query of a request target, as Express's `req.path` and query parser read it. */
function splitTarget(url: string): { pathname: string; search: string | null } {
  if (SLOW_PATH_CHARS.test(url)) {
    const u = legacyUrlParse(url);
    return { pathname: u.pathname ?? "", search: u.query as string | null };
  }
  const q = url.indexOf("?");
  return q === -1 ? { pathname: url, search: null } : { pathname: url.slice(0, q), search: url.slice(q + 1) };
}

/** A request of the daemon's API server. */
export class ApiRequest extends http.IncomingMessage {
  /** The request target as received, before the encoded-`?` shim rewrote `url`. */
  originalUrl = "";
  /** The matched route's path parameters, percent-decoded (route-mount.ts); `{}` before routing. */
  params: Record<string, string | string[]> = {};
  /** The JSON body, once json-body.ts has read it; undefined when the request had none. */
  body: unknown = undefined;

  /** The path of `url` (no query): what routes, auth and logs match on. */
  get path(): string {
    return splitTarget(this.url ?? "").pathname;
  }

  /**
   * The query of `url`, parsed as Express's `extended` parser does (qs, prototypes allowed):
   * a repeated key is an array, `a[b]=c` an object. A new object on each read.
   */
  get query(): Record<string, unknown> {
    return qs.parse(splitTarget(this.url ?? "").search ?? "", { allowPrototypes: true });
  }
}

/** `type` with its charset set to utf-8 (added when absent), as Express's `send` of a string does. */
function utf8(type: string): string {
  return /;\s*charset=/i.test(type) ? type.replace(/(;\s*charset=)("[^"]*"|[^;]*)/i, "$1utf-8") : `${type}; charset=utf-8`;
}

/** A response of the daemon's API server. */
export class ApiResponse extends http.ServerResponse {
  /** Set the status code (chainable). */
  status(code: number): this {
    this.statusCode = code;
    return this;
  }

  /** Set `Content-Type` to a full media type (`text/plain`; {@link send} adds `charset=utf-8`). */
  type(mediaType: string): this {
    this.setHeader("Content-Type", mediaType);
    return this;
  }

  /** Answer `value` as JSON (`application/json; charset=utf-8` unless a type was set). */
  json(value: unknown): void {
    if (!this.hasHeader("Content-Type")) this.setHeader("Content-Type", "application/json; charset=utf-8");
    this.send(JSON.stringify(value) as string | undefined);
  }

  /**
   * Answer a text body: `Content-Type` gets `charset=utf-8` (`text/html` when none was set),
   * `Content-Length` its byte length; a 204 or 304 drops both and the body; HEAD sends no body.
   */
  send(text: string | undefined): void {
    if (text !== undefined) {
      const type = this.getHeader("Content-Type");
      this.setHeader("Content-Type", typeof type === "string" ? utf8(type) : "text/html; charset=utf-8");
      if (!this.hasHeader("Transfer-Encoding")) this.setHeader("Content-Length", Buffer.byteLength(text));
    }
    let body = text;
    if (this.statusCode === 204 || this.statusCode === 304) {
      this.removeHeader("Content-Type");
      this.removeHeader("Content-Length");
      this.removeHeader("Transfer-Encoding");
      body = "";
    }
    if (this.req.method === "HEAD" || body === undefined) this.end();
    else this.end(body, "utf8");
  }
}

/**
 * An HTTP server whose requests are {@link ApiRequest}s and responses {@link ApiResponse}s,
 * calling `listener` for each request (not for upgrades). Not listening yet.
 */
export function createApiServer(listener: (req: ApiRequest, res: ApiResponse) => void): http.Server {
  // node builds every request and response of this server from these classes; http.Server's
  // type parameters do not widen to the defaults by themselves, hence the cast.
  const options: http.ServerOptions = { IncomingMessage: ApiRequest, ServerResponse: ApiResponse as unknown as typeof http.ServerResponse };
  return http.createServer(options, listener as unknown as http.RequestListener);
}

/** A route's handler. A throw or a rejection is answered by {@link answerError}. */
export type Handler = (req: ApiRequest, res: ApiResponse) => void | Promise<void>;

/**
 * The path parameter `name` of `req` (percent-decoded by the route match).
 * @throws PaddockError ERR_BAD_REQUEST when it is missing or empty.
 */
export function pathParam(req: ApiRequest, name: string): string {
  const v = req.params[name];
  if (typeof v !== "string" || v.length === 0) throw new PaddockError("ERR_BAD_REQUEST", `missing ${name}`);
  return v;
}

/**
 * The encoded-`?` shim: the Go SDK's `GetHostGroupNodes` puts the query string,
 * percent-encoded, inside the path (`/hostgroup/g/nodes%3Ftag=name%253Dx`). When the path
 * holds an encoded `?` and there is no real query, split there and treat the rest as query.
 */
export function encodedQueryShim(req: ApiRequest): void {
  const url = req.url ?? "";
  if (!url.includes("?")) {
    const m = /%3f/i.exec(url);
    if (m) req.url = `${url.slice(0, m.index)}?${decodeURIComponent(url.slice(m.index + 3))}`;
  }
}

/** 404 `ERR_NOT_FOUND` for a path the route table does not know (wrong methods get 405 there). */
export function answerNotFound(req: ApiRequest, res: ApiResponse): void {
  res.status(404).json({ error: `no route for ${req.method} ${req.path}`, code: "ERR_NOT_FOUND" });
}

/**
 * Answer `err` on `res` directly, for the agent and secrets routes: the status and
 * `{"error","code"}` body of `errorResponse`. An error that is not a PaddockError client error
 * is logged as `agent endpoint failed`. When the answer has already started, `res` is
 * destroyed instead.
 */
export function sendError(res: ApiResponse, err: unknown, logger: Logger): void {
  if (!(err instanceof PaddockError) || !err.isClientError) logger.error("agent endpoint failed", { err });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, body } = errorResponse(err);
  res.status(status).json(body);
}

/**
 * The one error answer of a failed request: PaddockError 4xx → `{"error","code"}`; anything
 * else is logged with its stack and answered with a generic 500. If headers were already sent,
 * the socket is destroyed: a half-sent answer must not look complete. Two 5xx are the
 * client's doing and logged at info without a stack: 501 (the request asked for something this
 * daemon does not support) and a request whose client went away before its answer.
 */
export function answerError(logger: Logger, err: unknown, req: ApiRequest, res: ApiResponse): void {
  const { status, body } = errorResponse(err);
  const clientGone = req.readableAborted || (res.destroyed && !res.writableFinished);
  if (status === 501) logger.info("request refused: not supported", { method: req.method, path: req.path, code: body.code, message: body.error });
  else if (status >= 500 && clientGone) logger.info("request ended: the client went away", { method: req.method, path: req.path, message: err instanceof Error ? err.message : String(err) });
  else if (status >= 500) logger.error("request failed", { method: req.method, path: req.path, err });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(status).json(body);
}
