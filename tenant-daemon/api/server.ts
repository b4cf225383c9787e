/**
 * The tenant daemon's HTTP API server: node:http on a Unix socket or TCP (bearer auth on TCP),
 * no framework (http-util.ts has the request and response helpers). Each request: the request
 * target is checked, the encoded-`?` shim applied, the request counted for the metrics and
 * logged, the token checked (auth.ts), VM activity marked and idled VMs woken (wake.ts), then
 * it is routed by the one route table (routes.ts, compiled by route-mount.ts); unknown paths
 * get 404 and errors the one error answer (http-util.ts). WebSocket upgrades never reach the
 * request listener: {@link attachUpgradeHandler} hands them to ws-upgrade.ts.
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import type { SecretStore } from "../secrets/secret-store.js";
import type { VmService } from "../vm/vm-service.js";
import { accessLog } from "./access-log.js";
import { createAgentHandlers } from "./agent-routes.js";
import { createCommitHandlers } from "./commit-routes.js";
import { BearerAuth, answerUnauthorized } from "./auth.js";
import { createDaemonHandlers } from "./daemon-routes.js";
import { answerNotFound, createApiServer, encodedQueryShim, type ApiRequest, type ApiResponse } from "./http-util.js";
import type { DaemonMetrics, EgressVm } from "./metrics.js";
import { compileRoutes, runHandler } from "./route-mount.js";
import { ROUTES, publicPaths } from "./routes.js";
import { createSecretHandlers } from "./secrets-routes.js";
import { createStatsHandlers } from "./stats-routes.js";
import type { VmStatsCollector } from "./vm-stats.js";
import { createVmHandlers } from "./vm-routes.js";
import { createEventHandlers } from "./events-routes.js";
import { wakeMiddleware } from "./wake.js";
import type { EventLog } from "../events/event-log.js";
import type { ProxyStore } from "../proxy/proxy-store.js";
import { createProxyHandlers } from "./proxy-routes.js";
import { createPlainUpgradeHandlers } from "./ws-upgrade.js";
import { createPreviewProxy, type PreviewProxy } from "./preview-routes.js";
import { BODY_IDLE_TIMEOUT_MS, boundRequestBodyIdle } from "../../shared/body-idle-timeout.js";
import { clientErrorReply, endAndClose, httpJsonAnswer, requestTargetProblem } from "../../shared/http-input.js";
import { assertListenFree as assertFree, listenHttp } from "../../shared/http/listen.js";

/** What the API server is built from. */
export interface ApiServerDeps {
  config: TenantConfig;
  vms: VmService;
  metrics: DaemonMetrics;
  logger: Logger;
  /** Bearer token when auth is enabled (TCP). */
  authToken: string | undefined;
  /** The tenant's secret store (the `/secrets` routes). */
  secrets: SecretStore;
  /** NodeStat source of the stats routes. */
  stats: VmStatsCollector;
  /** The VMs whose host-side veth counters `/metrics` reads (egress families). */
  egressVms?: () => EgressVm[];
  /** Connections the API server holds open now (`slicer_system_open_connections`). */
  openConnections?: () => Promise<number>;
  /** Optional describe-VM `network` object provider (`GET /vm/{hostname}`). */
  describeNetwork?: (hostname: string) => unknown;
  /** The lifecycle event log `GET /events` streams (the one VmService emits into). */
  events: EventLog;
  /** The egress proxy's store (the `/proxy/v1` routes). */
  proxyStore: ProxyStore;
  /** The preview proxy (preview-routes.ts), shared with the upgrade handler; absent: one of its own. */
  preview?: PreviewProxy;
}

/** What the API server calls for each request (http-util.ts `createApiServer`). */
export type ApiListener = (req: ApiRequest, res: ApiResponse) => void;

/** Build the request listener (no server) serving every route of routes.ts. */
export function createApiApp(deps: ApiServerDeps): ApiListener {
  const { vms, logger } = deps;
  const agentLog = logger.child({ component: "agent-router" });
  const lookup = compileRoutes({
    daemon: createDaemonHandlers({ vms, metrics: deps.metrics, egressVms: deps.egressVms, openConnections: deps.openConnections }),
    vm: createVmHandlers({ config: deps.config, vms, describeNetwork: deps.describeNetwork }),
    commit: createCommitHandlers(vms),
    agent: createAgentHandlers((h) => vms.resolveAgent(h), agentLog, (h) => vms.secretsSettled(h)),
    upgrade: createPlainUpgradeHandlers(),
    secrets: createSecretHandlers(deps.secrets, agentLog, (name) => vms.secretChanged(name)),
    stats: createStatsHandlers(deps.stats),
    events: createEventHandlers({ events: deps.events, logger }),
    proxy: createProxyHandlers(deps.proxyStore, logger),
    preview: (deps.preview ?? createPreviewProxy({ resolveAgent: (h) => vms.resolveAgent(h), createdAt: (h) => vms.get(h).createdAt, authToken: deps.authToken, logger })).handlers,
  });
  const logRequest = accessLog(logger.child({ component: "api" }));
  const auth = new BearerAuth(deps.authToken, publicPaths(ROUTES, false));
  const wake = wakeMiddleware(vms.idle);
  const route = (req: ApiRequest, res: ApiResponse): void | Promise<void> => {
    const handler = lookup(req);
    return handler === undefined ? answerNotFound(req, res) : handler(req, res);
  };
  return (req, res) => {
    req.originalUrl = req.url ?? "";
    runHandler(req, res, () => {
      // Before anything decodes the path (the shim, the routes' params).
      const bad = requestTargetProblem(req.url);
      if (bad !== undefined) throw new PaddockError("ERR_URL_MALFORMED", bad);
      encodedQueryShim(req);
      const started = process.hrtime.bigint();
      res.on("finish", () => deps.metrics.request(req.method ?? "", res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
      logRequest(req, res);
      if (!auth.admits(req.path, req.headers.authorization)) return answerUnauthorized(res);
      // After the token check: an unauthenticated request never wakes a VM.
      const woken = wake(req, res);
      return woken === undefined ? route(req, res) : woken.then(() => route(req, res));
    }, logger);
  };
}

/**
 * Refuse early when the API's listen address is taken (shared/http/listen.ts), so a daemon
 * refuses before it changes anything; {@link listenApi} checks again when it binds.
 * @throws PaddockError ERR_SOCKET_IN_USE
 */
export async function assertListenFree(config: TenantConfig): Promise<void> {
  await assertFree(config.api);
}

/**
 * Listen on the configured socket or TCP address. A stale socket file is
 * replaced; a socket a live process answers on is refused. Socket mode 0660.
 * `opts.bodyIdleMs`: idle bound on a request body still being received before the response
 * starts (default BODY_IDLE_TIMEOUT_MS = 60 s; 0 disables; shared/body-idle-timeout.ts).
 * @throws PaddockError ERR_SOCKET_IN_USE
 */
export async function listenApi(app: ApiListener, config: TenantConfig, opts: { bodyIdleMs?: number } = {}): Promise<http.Server> {
  const server = createApiServer(app);
  // Long-lived responses (exec streams, waits up to 600 s) must not be cut; a request body
  // that stops arriving before the response starts is (408).
  boundRequestBodyIdle(server, { idleMs: opts.bodyIdleMs ?? BODY_IDLE_TIMEOUT_MS });
  server.requestTimeout = 0;
  server.timeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  // Malformed requests never reach the listener: the same JSON error shape, with a code.
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => endAndClose(socket, clientErrorReply(err)));
  await listenHttp(server, config.api, 0o660);
  return server;
}

/**
 * Route the server's HTTP upgrade requests (WebSocket `/vm/{hostname}/shell` and
 * `/vm/{hostname}/forward`) to `handler` (ws-upgrade.ts) after the same request-target check
 * as the app's (400 ERR_URL_MALFORMED); the request listener never sees them. The handler checks the token.
 */
export function attachUpgradeHandler(server: http.Server, handler: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void): void {
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const bad = requestTargetProblem(req.url);
    if (bad === undefined) return handler(req, socket, head);
    socket.on("error", () => undefined);
    endAndClose(socket, httpJsonAnswer(400, JSON.stringify({ error: bad, code: "ERR_URL_MALFORMED" })));
  });
}
