/**
 * The one route table of the tenant daemon's API: every HTTP route and WebSocket upgrade the
 * daemon serves (the host-group, VM, agent, secrets and stats parts of the Slicer REST API),
 * the handler module that answers it, and whether it needs the bearer token.
 *
 * - `method`, `path`: a path-to-regexp 8 template, the syntax Express 5 uses (`:hostname`,
 *   `:group`, `:id`, `:name` are one path segment each, percent-decoded; route-mount.ts).
 * - `group`: the handler module: `daemon` (daemon-routes.ts), `vm` (vm-routes.ts), `commit`
 *   (commit-routes.ts: commits and forks), `agent`
 *   (agent-routes.ts: streamed to the VM's guest agent), `secrets` (secrets-routes.ts), `stats`
 *   (stats-routes.ts), `events` (events-routes.ts: the lifecycle event stream), `upgrade`
 *   (WebSocket upgrades, ws-upgrade.ts), `preview` (preview-routes.ts: every method proxied to a
 *   port inside the VM). The group also decides
 *   how a path matches and what a wrong method gets (route-mount.ts).
 * - `handler`: the name of the handler within its group's module.
 * - `auth`: `bearer` when the token is required (it is configured only for TCP listens;
 *   auth.ts does the check), `none` for the one public path, `/healthz`. The check is decided
 *   by path before routing: any method on a public path goes on without a token (POST /healthz
 *   gets its 405), every other path, known or not, needs it (401 before 404), and so does every
 *   upgrade request.
 *
 * Paths not in this table answer 404; a known path with a method it does not list answers
 * 405 (route-mount.ts). Routes are tried in table order.
 */

/** An HTTP method a route answers. */
export type HttpMethod = "GET" | "HEAD" | "POST" | "PATCH" | "DELETE";

/** Handler names of daemon-routes.ts. */
export type DaemonHandler = "healthz" | "info" | "metrics";
/** Handler names of vm-routes.ts. */
export type VmHandler =
  | "listHostGroups" | "listGroupNodes" | "createNode" | "deleteNode" | "listNodes"
  | "describeVm" | "getTags" | "patchTags" | "shutdown" | "relaunch" | "pause" | "resume"
  | "suspend" | "restore" | "logs";
/** Handler names of commit-routes.ts (Slicer's cold fork). */
export type CommitHandler = "commitVm" | "listCommits" | "deleteCommit" | "forkCommit";
/** Handler names of agent-routes.ts (every agent route streams to the agent the same way). */
export type AgentHandler = "forward";
/** Handler names of secrets-routes.ts. */
export type SecretsHandler = "list" | "create" | "update" | "delete";
/** Handler names of stats-routes.ts. */
export type StatsHandler = "allNodes" | "oneNode";
/** Handler names of events-routes.ts. */
export type EventsHandler = "stream";
/** Handler names of proxy-routes.ts (Slicer's `/proxy/v1` egress proxy admin). */
export type ProxyHandler =
  | "listClients" | "createClient" | "clientRules" | "deleteClient"
  | "listSecrets" | "createSecret" | "deleteSecret"
  | "addAllow" | "deleteAllows" | "revokeAllow";
/** Handler names of preview-routes.ts. */
export type PreviewHandler = "proxy";
/** The WebSocket upgrades of ws-upgrade.ts (also the agent stream each opens). */
export type UpgradeHandler = "shell" | "forward";

/** The handler names of each group. */
export interface RouteHandlerNames {
  daemon: DaemonHandler;
  vm: VmHandler;
  commit: CommitHandler;
  agent: AgentHandler;
  secrets: SecretsHandler;
  stats: StatsHandler;
  events: EventsHandler;
  proxy: ProxyHandler;
  upgrade: UpgradeHandler;
  preview: PreviewHandler;
}

/** A group of routes: one handler module. */
export type RouteGroup = keyof RouteHandlerNames;

/** One row of the table: `method path` → `group.handler`, with its auth. */
export type Route = {
  [G in RouteGroup]: { method: HttpMethod; path: string; group: G; handler: RouteHandlerNames[G]; auth: "bearer" | "none" };
}[RouteGroup];

/** Every route of the daemon's API, in the order they are tried. */
export const ROUTES: readonly Route[] = [
  // The daemon itself.
  { method: "GET", path: "/healthz", group: "daemon", handler: "healthz", auth: "none" },
  { method: "HEAD", path: "/healthz", group: "daemon", handler: "healthz", auth: "none" },
  { method: "GET", path: "/info", group: "daemon", handler: "info", auth: "bearer" },
  { method: "GET", path: "/metrics", group: "daemon", handler: "metrics", auth: "bearer" },

  // Host groups and the VM lifecycle (VmService).
  { method: "GET", path: "/hostgroup", group: "vm", handler: "listHostGroups", auth: "bearer" },
  { method: "GET", path: "/hostgroup/:group/nodes", group: "vm", handler: "listGroupNodes", auth: "bearer" },
  { method: "POST", path: "/hostgroup/:group/nodes", group: "vm", handler: "createNode", auth: "bearer" },
  { method: "DELETE", path: "/hostgroup/:group/nodes/:hostname", group: "vm", handler: "deleteNode", auth: "bearer" },
  { method: "GET", path: "/nodes", group: "vm", handler: "listNodes", auth: "bearer" },
  { method: "GET", path: "/devices", group: "vm", handler: "listNodes", auth: "bearer" },
  // Cold fork (commit-routes.ts): before /vm/:hostname, so `commits` is never read as a hostname.
  { method: "GET", path: "/vm/commits", group: "commit", handler: "listCommits", auth: "bearer" },
  { method: "DELETE", path: "/vm/commits/:id", group: "commit", handler: "deleteCommit", auth: "bearer" },
  { method: "POST", path: "/vm/commits/:id/fork", group: "commit", handler: "forkCommit", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/commit", group: "commit", handler: "commitVm", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname", group: "vm", handler: "describeVm", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/tags", group: "vm", handler: "getTags", auth: "bearer" },
  { method: "PATCH", path: "/vm/:hostname/tags", group: "vm", handler: "patchTags", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/shutdown", group: "vm", handler: "shutdown", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/relaunch", group: "vm", handler: "relaunch", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/pause", group: "vm", handler: "pause", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/resume", group: "vm", handler: "resume", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/suspend", group: "vm", handler: "suspend", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/restore", group: "vm", handler: "restore", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/logs", group: "vm", handler: "logs", auth: "bearer" },

  // Streamed to the VM's guest agent as `/v1/<rest of the path>` (exec, cp, fs, health).
  { method: "GET", path: "/vm/:hostname/health", group: "agent", handler: "forward", auth: "bearer" },
  { method: "HEAD", path: "/vm/:hostname/health", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/exec", group: "agent", handler: "forward", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/exec", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/exec/:id", group: "agent", handler: "forward", auth: "bearer" },
  { method: "DELETE", path: "/vm/:hostname/exec/:id", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/exec/:id/logs", group: "agent", handler: "forward", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/exec/:id/kill", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/exec/:id/wait-exit", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/cp", group: "agent", handler: "forward", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/cp", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/fs/readdir", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/fs/stat", group: "agent", handler: "forward", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/fs/watch", group: "agent", handler: "forward", auth: "bearer" },
  { method: "POST", path: "/vm/:hostname/fs/mkdir", group: "agent", handler: "forward", auth: "bearer" },
  { method: "DELETE", path: "/vm/:hostname/fs/remove", group: "agent", handler: "forward", auth: "bearer" },

  // WebSocket upgrades (ws-upgrade.ts); a plain request on these paths gets 400/405.
  { method: "GET", path: "/vm/:hostname/shell", group: "upgrade", handler: "shell", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/forward", group: "upgrade", handler: "forward", auth: "bearer" },

  // Preview traffic (preview-routes.ts): every method (the row's GET stands for all) and, on the
  // upgrade path, WebSockets are proxied to 127.0.0.1:{port} in the VM, the prefix stripped.
  { method: "GET", path: "/vm/:hostname/preview/:port{/*rest}", group: "preview", handler: "proxy", auth: "bearer" },
  { method: "GET", path: "/vm/:hostname/preview/:port/", group: "preview", handler: "proxy", auth: "bearer" },

  // The tenant's secrets (SecretStore).
  { method: "GET", path: "/secrets", group: "secrets", handler: "list", auth: "bearer" },
  { method: "POST", path: "/secrets", group: "secrets", handler: "create", auth: "bearer" },
  { method: "PATCH", path: "/secrets/:name", group: "secrets", handler: "update", auth: "bearer" },
  { method: "DELETE", path: "/secrets/:name", group: "secrets", handler: "delete", auth: "bearer" },

  // NodeStat snapshots (VmStatsCollector).
  { method: "GET", path: "/nodes/stats", group: "stats", handler: "allNodes", auth: "bearer" },
  { method: "GET", path: "/node/:hostname/stats", group: "stats", handler: "oneNode", auth: "bearer" },

  // The lifecycle event stream (server-sent events; EventLog).
  { method: "GET", path: "/events", group: "events", handler: "stream", auth: "bearer" },

  // The egress proxy's clients, secrets and allow rules (proxy-routes.ts, ProxyStore).
  { method: "GET", path: "/proxy/v1/clients", group: "proxy", handler: "listClients", auth: "bearer" },
  { method: "POST", path: "/proxy/v1/clients", group: "proxy", handler: "createClient", auth: "bearer" },
  { method: "GET", path: "/proxy/v1/clients/:name", group: "proxy", handler: "clientRules", auth: "bearer" },
  { method: "DELETE", path: "/proxy/v1/clients/:name", group: "proxy", handler: "deleteClient", auth: "bearer" },
  { method: "GET", path: "/proxy/v1/secrets", group: "proxy", handler: "listSecrets", auth: "bearer" },
  { method: "POST", path: "/proxy/v1/secrets", group: "proxy", handler: "createSecret", auth: "bearer" },
  { method: "DELETE", path: "/proxy/v1/secrets/:name", group: "proxy", handler: "deleteSecret", auth: "bearer" },
  { method: "POST", path: "/proxy/v1/allows", group: "proxy", handler: "addAllow", auth: "bearer" },
  { method: "POST", path: "/proxy/v1/allows/revoke", group: "proxy", handler: "revokeAllow", auth: "bearer" },
  { method: "DELETE", path: "/proxy/v1/allows/:client/:host", group: "proxy", handler: "deleteAllows", auth: "bearer" },
];

/**
 * The paths any method may use without the token: those of `auth: "none"` routes, for plain
 * HTTP (`upgrade: false`) or for WebSocket upgrades (`upgrade: true`; none today).
 * @throws Error when a public path has a parameter or also has a `bearer` route (a table mistake).
 */
export function publicPaths(routes: readonly Route[], upgrade: boolean): string[] {
  const mine = routes.filter((r) => (r.group === "upgrade") === upgrade);
  const open = [...new Set(mine.filter((r) => r.auth === "none").map((r) => r.path))];
  for (const p of open) {
    if (p.includes(":")) throw new Error(`route table: public path ${p} has a parameter; auth is decided by exact path`);
    if (mine.some((r) => r.path === p && r.auth !== "none")) throw new Error(`route table: ${p} is both public and bearer-only`);
  }
  return open;
}

/**
 * A path as it is shown in messages: `/vm/:hostname/shell` → `/vm/{hostname}/shell`.
 */
export function pathTemplate(path: string): string {
  return path.replace(/:(\w+)/g, "{$1}");
}
