/**
 * The one bearer-token check of the tenant daemon's API, for plain HTTP requests (the
 * {@link requireBearer} middleware, before routing) and WebSocket upgrades (ws-upgrade.ts,
 * before anything else). A token is configured only when the API listens on TCP
 * (`api.auth`); on the Unix socket there is none and every request goes on.
 *
 * Which paths are public is read from the route table (routes.ts `publicPaths`).
 */
import crypto from "node:crypto";
import type { RequestHandler } from "express";

/** Decides whether a request may go on: the token matches, or its path is public. */
export class BearerAuth {
  private readonly expected: Buffer | undefined;
  private readonly open: ReadonlySet<string>;

  /**
   * @param token the API's bearer token, or undefined when auth is off (every request admitted).
   * @param publicPaths exact request paths (`req.path`, no query) that need no token.
   */
  constructor(token: string | undefined, publicPaths: readonly string[]) {
    this.expected = token === undefined ? undefined : sha256(token);
    this.open = new Set(publicPaths);
  }

  /**
   * True when a request for `path` carrying the `Authorization` header value `authorization`
   * may go on: auth is off, the path is public, or the header is `Bearer <token>` (scheme
   * case-insensitive; compared as SHA-256 digests in constant time).
   */
  admits(path: string, authorization: string | undefined): boolean {
    if (this.expected === undefined || this.open.has(path)) return true;
    const m = /^Bearer (.*)$/i.exec(authorization ?? "");
    const given = sha256(m?.[1] ?? "");
    return !!m && crypto.timingSafeEqual(given, this.expected);
  }
}

/**
 * Express middleware answering 401 `{"error":"unauthorized","code":"ERR_AUTH_REQUIRED"}` to a
 * request {@link BearerAuth.admits} refuses (checked on `req.path`).
 */
export function requireBearer(auth: BearerAuth): RequestHandler {
  return (req, res, next) => {
    if (auth.admits(req.path, req.headers.authorization)) return next();
    res.status(401).json({ error: "unauthorized", code: "ERR_AUTH_REQUIRED" });
  };
}

function sha256(s: string): Buffer {
  return crypto.createHash("sha256").update(s).digest();
}
