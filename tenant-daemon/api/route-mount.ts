/**
 * Mounts the route table (routes.ts) on Express: one Express route per path, holding the
 * handlers of the methods the table lists and, last, the 405 answer for every other method.
 * How a group's paths match and what its wrong methods get is set here, per group:
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
import express, { type Request, type RequestHandler, type Response, type Router } from "express";
import { errorResponse, PaddockError } from "../../shared/errors.js";
import { ROUTES, pathTemplate, type HttpMethod, type Route, type RouteGroup, type RouteHandlerNames } from "./routes.js";

/** A route's handler: one Express handler or a chain (a body parser, then the handler). */
export type RouteHandler = RequestHandler | readonly RequestHandler[];

/** The handlers of each group by name, as the *-routes.ts modules build them. */
export type RouteHandlers = { [G in RouteGroup]: Readonly<Record<RouteHandlerNames[G], RouteHandler>> };

interface GroupRules {
  /** Match like Express's defaults (case-insensitive, optional trailing slash) instead of exactly. */
  loose: boolean;
  /** A GET route also answers HEAD (Express) when the table lists no HEAD for the path. */
  headFromGet: boolean;
  /** The answer to a method the table does not list for `path`; undefined: the handler answers every method. */
  wrongMethod?: (path: string, methods: readonly HttpMethod[]) => RequestHandler;
}

function answer405(res: Response, method: string, shownPath: string, allow?: readonly HttpMethod[]): void {
  if (allow !== undefined) res.setHeader("Allow", allow.join(", "));
  const { status, body } = errorResponse(new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${method} not allowed on ${shownPath}`));
  res.status(status).json(body);
}

/** `/vm/sbox-1/exec/abc` → `/vm/{hostname}/exec/abc`, as the agent routes' messages name a path. */
export function agentPathShown(req: Request): string {
  return req.path.replace(/^\/vm\/[^/]+/, "/vm/{hostname}");
}

const DAEMON: GroupRules = {
  loose: false,
  headFromGet: true,
  wrongMethod: (_path, methods) => (req, res) => answer405(res, req.method, req.path, methods),
};

const RULES: Readonly<Record<RouteGroup, GroupRules>> = {
  daemon: DAEMON,
  vm: DAEMON,
  commit: DAEMON,
  stats: DAEMON,
  agent: { loose: false, headFromGet: false, wrongMethod: () => (req, res) => answer405(res, req.method, agentPathShown(req)) },
  secrets: { loose: true, headFromGet: true, wrongMethod: (path) => (req, res) => answer405(res, req.method, pathTemplate(path)) },
  events: { loose: false, headFromGet: false, wrongMethod: DAEMON.wrongMethod },
  proxy: DAEMON,
  upgrade: { loose: false, headFromGet: false },
  preview: { loose: false, headFromGet: false },
};

function chain(h: RouteHandler): RequestHandler[] {
  return typeof h === "function" ? [h] : [...h];
}

/**
 * Mount `routes` (default: the whole table) on `target`, in table order, for the groups that
 * `handlers` has; routes of other groups are left out (a router of only the agent and secrets
 * routes, say). Unknown paths fall through to whatever `target` has next.
 * @throws Error when one path has routes of two groups (a table mistake).
 */
export function mountRoutes(target: { use(router: Router): unknown }, handlers: Partial<RouteHandlers>, routes: readonly Route[] = ROUTES): void {
  const byPath = new Map<string, Route[]>();
  for (const r of routes) {
    if (handlers[r.group] === undefined) continue;
    const rows = byPath.get(r.path) ?? [];
    if (rows.length > 0 && rows[0]?.group !== r.group) throw new Error(`route table: ${r.path} has routes of groups ${rows[0]?.group} and ${r.group}`);
    rows.push(r);
    byPath.set(r.path, rows);
  }
  let current: { loose: boolean; router: Router } | undefined;
  for (const [path, rows] of byPath) {
    const group = (rows[0] as Route).group;
    const rules = RULES[group];
    if (current?.loose !== rules.loose) {
      current = { loose: rules.loose, router: express.Router(rules.loose ? {} : { strict: true, caseSensitive: true }) };
      target.use(current.router);
    }
    const impl = handlers[group] as Readonly<Record<string, RouteHandler>>;
    const route = current.router.route(path);
    if (rules.wrongMethod === undefined) {
      route.all(...chain(impl[(rows[0] as Route).handler] as RouteHandler));
      continue;
    }
    const methods = rows.map((r) => r.method);
    const wrong = rules.wrongMethod(path, methods);
    if (!rules.headFromGet && methods.includes("GET") && !methods.includes("HEAD")) route.head(wrong);
    for (const r of rows) {
      const h = chain(impl[r.handler] as RouteHandler);
      switch (r.method) {
        case "GET": route.get(...h); break;
        case "HEAD": route.head(...h); break;
        case "POST": route.post(...h); break;
        case "PATCH": route.patch(...h); break;
        case "DELETE": route.delete(...h); break;
      }
    }
    route.all(wrong);
  }
}
