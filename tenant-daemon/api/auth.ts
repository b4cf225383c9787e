/**
 * The one bearer-token check of the tenant daemon's API, for plain HTTP requests (the
 * server's request listener checks {@link BearerAuth.admits} before routing and answers
 * {@link answerUnauthorized}) and WebSocket upgrades (ws-upgrade.ts,
 * before anything else). A token is configured only when the API listens on TCP
 * (`api.auth`); on the Unix socket there is none and every request goes on.
 *
 * Which paths are public is read from the route table (routes.ts `publicPaths`).
 */
import type { ApiResponse } from "./http-util.js";
import { parseBearer, tokenMatches } from "../../shared/http/bearer.js";

/** Decides whether a request may go on: the token matches, or its path is public. */
export class BearerAuth {
  private readonly expected: string | undefined;
  private readonly open: ReadonlySet<string>;

  /**
   * @param token the API's bearer token, or undefined when auth is off (every request admitted).
   * @param publicPaths exact request paths (`req.path`, no query) that need no token.
   */
  constructor(token: string | undefined, publicPaths: readonly string[]) {
    this.expected = token;
    this.open = new Set(publicPaths);
  }

  /**
   * True when a request for `path` carrying the `Authorization` header value `authorization`
   * may go on: auth is off, the path is public, or the header presents the token
   * (shared/http/bearer.ts: parsed by `parseBearer`, compared in constant time).
   */
  admits(path: string, authorization: string | undefined): boolean {
    if (this.expected === undefined || this.open.has(path)) return true;
    return tokenMatches(parseBearer(authorization), this.expected);
  }
}

/** Answer 401 `{"error":"unauthorized","code":"ERR_AUTH_REQUIRED"}`: {@link BearerAuth.admits} refused the request. */
export function answerUnauthorized(res: ApiResponse): void {
  res.status(401).json({ error: "unauthorized", code: "ERR_AUTH_REQUIRED" });
}
