/**
 * Express plumbing shared by the daemon's routes: async handlers, the one error middleware,
 * the direct error answer of the agent and secrets routes, the encoded-`?` shim and the 404.
 */
import type { NextFunction, Request, RequestHandler, Response } from "express";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";

/**
 * The path parameter `name` of `req` (Express has percent-decoded it).
 * @throws PaddockError ERR_BAD_REQUEST when it is missing or empty.
 */
export function pathParam(req: Request, name: string): string {
  const v = req.params[name];
  if (typeof v !== "string" || v.length === 0) throw new PaddockError("ERR_BAD_REQUEST", `missing ${name}`);
  return v;
}

/** Wrap an async handler so a rejection reaches the error middleware. */
export function asyncHandler(fn: (req: Request, res: Response) => Promise<void> | void): RequestHandler {
  return (req, res, next) => {
    Promise.resolve()
      .then(() => fn(req, res))
      .catch(next);
  };
}

/**
 * The encoded-`?` shim: the Go SDK's `GetHostGroupNodes` puts the query string,
 * percent-encoded, inside the path (`/hostgroup/g/nodes%3Ftag=name%253Dx`). When the path
 * holds an encoded `?` and there is no real query, split there and treat the rest as query.
 */
export function encodedQueryShim(req: Request, _res: Response, next: NextFunction): void {
  const url = req.url;
  if (!url.includes("?")) {
    const m = /%3f/i.exec(url);
    if (m) req.url = `${url.slice(0, m.index)}?${decodeURIComponent(url.slice(m.index + 3))}`;
  }
  next();
}

/** 404 `ERR_NOT_FOUND` for a path the route table does not know (wrong methods get 405 there). */
export function notFoundHandler(): RequestHandler {
  return (req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}`, code: "ERR_NOT_FOUND" });
  };
}

/**
 * Answer `err` on `res` directly, for the agent and secrets routes (they do not pass errors to
 * the error middleware): the status and `{"error","code"}` body of `errorResponse`. An error
 * that is not a PaddockError client error is logged as `agent endpoint failed`. When the
 * answer has already started, `res` is destroyed instead.
 */
export function sendError(res: Response, err: unknown, logger: Logger): void {
  if (!(err instanceof PaddockError) || !err.isClientError) logger.error("agent endpoint failed", { err });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, body } = errorResponse(err);
  res.status(status).json(body);
}

/**
 * The one error middleware: PaddockError 4xx → `{"error","code"}`; body-parser errors → 400/413;
 * anything else is logged with its stack and answered with a generic 500. If headers were
 * already sent, the socket is destroyed: a half-sent answer must not look complete.
 */
export function errorMiddleware(logger: Logger) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    let e = err;
    const bp = err as { type?: string; status?: number };
    if (bp && typeof bp === "object" && typeof bp.type === "string" && typeof bp.status === "number") {
      if (bp.type === "entity.too.large") e = new PaddockError("ERR_BODY_TOO_LARGE", "request body too large");
      else if (bp.status < 500) e = new PaddockError("ERR_BODY_INVALID_JSON", `invalid JSON body: ${(err as Error).message}`);
    } else if (err instanceof URIError) {
      // A percent-escape that does not decode (the router's params): the client's mistake.
      e = new PaddockError("ERR_URL_MALFORMED", "the path's percent-escapes do not decode", { cause: err });
    }
    const { status, body } = errorResponse(e);
    if (status >= 500) logger.error("request failed", { method: req.method, path: req.path, err: e });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.status(status).json(body);
  };
}
