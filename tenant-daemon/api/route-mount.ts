/**
 * Compiles the route table (routes.ts) into the daemon's one route lookup: a request's path
 * is matched against the table's paths in table order (path-to-regexp, the matcher Express
 * used, https://github.com/pillarjs/path-to-regexp), the first path that matches decides, and
 * its method picks the handler or, last, the 405 answer. How a group's paths match and what
 * its wrong methods get is set here, per group:
 *
 * | group | path match | HEAD on a GET route | 405 answer |
 * |---|---|---|---|
 * | daemon, vm, commit, stats, proxy | exact (case, trailing `/`) | answered by the GET handler | `Allow` = the listed methods; message names the request path |
 * | agent | exact | 405 unless listed | no `Allow`; message names `/vm/{hostname}/…` |
 * | secrets | case-insensitive, optional trailing `/` | answered by the GET handler | no `Allow`; message names `/secrets` or `/secrets/{name}` |
 * | events | exact | 405 (a stream has no HEAD) | as daemon |
 * | upgrade | exact | — | the group's handler answers every method (a plain request on a WebSocket path) |
 * | preview | exact prefix, any rest | — | the group's handler answers every method (proxied to the VM's port) |
 *
 * Every 405 body is `{"error":"method M not allowed on …","code":"ERR_METHOD_NOT_ALLOWED"}`.
 */
import { match, type MatchFunction } from "path-to-regexp";
import { errorResponse, PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { answerError, answerNotFound, type ApiRequest, type ApiResponse, type Handler } from "./http-util.js";
import { ROUTES, pathTemplate, type HttpMethod, type Route, type RouteGroup, type RouteHandlerNames } from "./routes.js";

/** A route's handler. */
export type RouteHandler = Handler;

/** The handlers of each group by name, as the *-routes.ts modules build them. */
export type RouteHandlers = { [G in RouteGroup]: Readonly<Record<RouteHandlerNames[G], RouteHandler>> };

interface GroupRules {
  /** Match case-insensitively with an optional trailing slash instead of exactly. */
  loose: boolean;
  /** A GET route also answers HEAD when the table lists no HEAD for the path. */
  headFromGet: boolean;
  /** The answer to a method the table does not list for `path`; undefined: the handler answers every method. */
  wrongMethod?: (path: string, methods: readonly HttpMethod[]) => Handler;
}

function answer405(res: ApiResponse, method: string, shownPath: string, allow?: readonly HttpMethod[]): void {
  if (allow !== undefined) res.setHeader("Allow", allow.join(", "));
  const { status, body } = errorResponse(new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${method} not allowed on ${shownPath}`));
  res.status(status).json(body);
}

/** `/vm/sbox-1/exec/abc` → `/vm/{hostname}/exec/abc`, as the agent routes' messages name a path. */
export function agentPathShown(req: ApiRequest): string {
  return req.path.replace(/^\/vm\/[^/]+/, "/vm/{hostname}");
}

const DAEMON: GroupRules = {
  loose: false,
  headFromGet: true,
  wrongMethod: (_path, methods) => (req, res) => answer405(res, req.method ?? "", req.path, methods),
};

const RULES: Readonly<Record<RouteGroup, GroupRules>> = {
  daemon: DAEMON,
  vm: DAEMON,
  commit: DAEMON,
  stats: DAEMON,
  agent: { loose: false, headFromGet: false, wrongMethod: () => (req, res) => answer405(res, req.method ?? "", agentPathShown(req)) },
  secrets: { loose: true, headFromGet: true, wrongMethod: (path) => (req, res) => answer405(res, req.method ?? "", pathTemplate(path)) },
  events: { loose: false, headFromGet: false, wrongMethod: DAEMON.wrongMethod },
  proxy: DAEMON,
  upgrade: { loose: false, headFromGet: false },
  preview: { loose: false, headFromGet: false },
};

/** A path parameter as the router decodes it. @throws PaddockError ERR_URL_MALFORMED (400). */
function decodeParam(value: string): string {
  if (!value.includes("%")) return value;
  try {
    return decodeURIComponent(value);
  } catch (err) {
    throw new PaddockError("ERR_URL_MALFORMED", "the path's percent-escapes do not decode", { cause: err });
  }
}

/** One path of the table, compiled: its matcher and the handler of each method. */
interface CompiledPath {
  match: MatchFunction<Partial<Record<string, string | string[]>>>;
  /** The handler of each method the path answers; `any`: every other method. */
  byMethod: ReadonlyMap<string, Handler>;
  any: Handler;
}

/** Finds the handler of a request, with `req.params` set; undefined: no path of the table matches. */
export type RouteLookup = (req: ApiRequest) => Handler | undefined;

/**
 * Compile `routes` (default: the whole table), in table order, for the groups that
 * `handlers` has; routes of other groups are left out (the agent and secrets routes alone,
 * say).
 * @throws Error when one path has routes of two groups (a table mistake).
 */
export function compileRoutes(handlers: Partial<RouteHandlers>, routes: readonly Route[] = ROUTES): RouteLookup {
  const byPath = new Map<string, Route[]>();
  for (const r of routes) {
    if (handlers[r.group] === undefined) continue;
    const rows = byPath.get(r.path) ?? [];
    if (rows.length > 0 && rows[0]?.group !== r.group) throw new Error(`route table: ${r.path} has routes of groups ${rows[0]?.group} and ${r.group}`);
    rows.push(r);
    byPath.set(r.path, rows);
  }
  const compiled: CompiledPath[] = [];
  for (const [path, rows] of byPath) {
    const group = (rows[0] as Route).group;
    const rules = RULES[group];
    const impl = handlers[group] as Readonly<Record<string, Handler>>;
    const matcher = rules.loose
      ? match(path.replace(/\/+$/, ""), { sensitive: false, end: true, trailing: true, decode: decodeParam })
      : match(path, { sensitive: true, end: true, trailing: false, decode: decodeParam });
    if (rules.wrongMethod === undefined) {
      compiled.push({ match: matcher, byMethod: new Map(), any: impl[(rows[0] as Route).handler] as Handler });
      continue;
    }
    const methods = rows.map((r) => r.method);
    const byMethod = new Map<string, Handler>(rows.map((r) => [r.method, impl[r.handler] as Handler]));
    const get = byMethod.get("GET");
    if (rules.headFromGet && get !== undefined && !byMethod.has("HEAD")) byMethod.set("HEAD", get);
    compiled.push({ match: matcher, byMethod, any: rules.wrongMethod(path, methods) });
  }
  return (req) => {
    const path = req.path;
    for (const c of compiled) {
      const m = c.match(path);
      if (m === false) continue;
      req.params = m.params as Record<string, string | string[]>;
      return c.byMethod.get(req.method ?? "") ?? c.any;
    }
    return undefined;
  };
}

/**
 * A request listener serving only `handlers`' routes (for tests that put some of them behind
 * their own server, and the daemon's last step): unknown paths get 404 ERR_NOT_FOUND, errors
 * the one error answer (http-util.ts).
 */
export function serveRoutes(lookup: RouteLookup, logger: Logger): (req: ApiRequest, res: ApiResponse) => void {
  return (req, res) => {
    req.originalUrl = req.url ?? "";
    runHandler(req, res, () => {
      const handler = lookup(req);
      if (handler === undefined) return answerNotFound(req, res);
      return handler(req, res);
    }, logger);
  };
}

/** Run `step`; a throw or a rejection gets the one error answer. */
export function runHandler(req: ApiRequest, res: ApiResponse, step: () => void | Promise<void>, logger: Logger): void {
  try {
    const p = step();
    if (p !== undefined) p.catch((err: unknown) => answerError(logger, err, req, res));
  } catch (err) {
    answerError(logger, err, req, res);
  }
}
