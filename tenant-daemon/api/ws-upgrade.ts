/**
 * The daemon's WebSocket endpoints, `GET /vm/{hostname}/shell` and `GET /vm/{hostname}/forward`
 * (the `upgrade` routes of routes.ts). The daemon's HTTP server hands every upgrade request to
 * {@link createAgentUpgradeHandler}, which:
 * 1. checks the bearer token (auth.ts; the upgrade carries the same header as any request);
 * 2. matches the path against the table's upgrade routes (404), the method (405, `Allow: GET`)
 *    and `Upgrade: websocket` (400); for forward, the `X-Inlets-Upstream` header (400);
 * 3. with `activity`, marks the VM active for the session's life and wakes it if its idle rule
 *    paused or suspended it (wake.ts; 503 ERR_VM_WAKE_FAILED);
 * 4. for a shell, with `secretsSettled`, waits for the VM's boot-time secret delivery, as the
 *    agent routes do (agent-routes.ts createAgentHandlers: the VM is resolved before the wait,
 *    so a VM that cannot be asked is refused at once, and again after it);
 * 5. resolves the VM (404, 409 paused/not running) and opens the matching agent stream
 *    (agent-client/agent-ws.ts `openAgentUpgrade`), completing the client's WebSocket
 *    handshake only once the agent answered 101; then relays the two (agent-ws.ts `relay`).
 *
 * A plain (non-upgrade) request on these paths is answered by {@link createPlainUpgradeHandlers}.
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import type { WebSocket, WebSocketServer } from "ws";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { parseUpstream } from "../agent/forward.js";
import { rejectUpgrade } from "../agent/upgrade-util.js";
import { openAgentUpgrade, relay } from "../agent-client/agent-ws.js";
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import { BearerAuth } from "./auth.js";
import type { Handler } from "./http-util.js";
import { agentPathShown, type RouteHandlers } from "./route-mount.js";
import { holdForUpgrade, type VmActivity } from "./wake.js";
import { ROUTES, pathTemplate, publicPaths, type Route, type UpgradeHandler } from "./routes.js";

/** What the upgrade handler needs from the composition root. */
export interface AgentUpgradeDeps {
  /**
   * The agent of a running VM.
   * @throws PaddockError ERR_VM_NOT_FOUND (404), ERR_VM_PAUSED (409), ERR_VM_NOT_RUNNING (409).
   */
  resolveAgent(hostname: string): AgentEndpoint;
  /** Bearer token when the API requires auth (TCP), else undefined. */
  authToken: string | undefined;
  logger: Logger;
  /** The idle tracker: a session is activity of its VM and wakes an idled one (wake.ts). */
  activity?: VmActivity;
  /**
   * The VM's boot-time secret delivery (VmService.secretsSettled), a promise that settles when
   * it has ended; undefined when there is none to wait for. A shell waits for it before its
   * agent stream is opened, so its first command sees the VM's secrets; absent: no wait.
   */
  secretsSettled?(hostname: string): Promise<unknown> | undefined;
}

/** The handler for `server.on("upgrade")`, plus a way to end every live session (daemon stop). */
export interface AgentUpgradeHandler {
  handle(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * Close every live WebSocket session (code 1001) and their agent streams, destroy the client
   * sockets of upgrades still under way (waiting for a wake, the secret delivery or the agent's
   * 101), and destroy every upgrade handed to {@link handle} afterwards: a session that opened
   * after the daemon's stop began would hold its HTTP server's `close()` open for as long as
   * the client liked.
   */
  closeAll(): void;
}

/** Largest WebSocket message accepted from a client (a shell frame or a forward chunk). */
const MAX_CLIENT_MESSAGE_BYTES = 4 << 20;

type UpgradeRoute = Extract<Route, { group: "upgrade" }>;

/** The table's upgrade routes with the regex of their path (one `[^/]+` per parameter, exact). */
const UPGRADES: readonly { route: UpgradeRoute; pattern: RegExp }[] = ROUTES
  .filter((r): r is UpgradeRoute => r.group === "upgrade")
  .map((route) => ({ route, pattern: new RegExp(`^${route.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:\w+/g, "([^/]+)")}$`) }));

/** The agent path each upgrade opens. @throws PaddockError ERR_BAD_REQUEST (400) for a bad forward upstream. */
const AGENT_PATHS: Readonly<Record<UpgradeHandler, (req: http.IncomingMessage, url: URL) => string>> = {
  shell: (_req, url) => `/v1/shell${url.search}`,
  forward: (req) => {
    const upstream = req.headers["x-inlets-upstream"];
    parseUpstream(Array.isArray(upstream) ? upstream[0] : upstream); // 400 before anything else
    return `/v1/forward?upstream=${encodeURIComponent(String(upstream))}`;
  },
};

/** Build the upgrade handler. */
export function createAgentUpgradeHandler(deps: AgentUpgradeDeps): AgentUpgradeHandler {
  const log = deps.logger.child({ component: "agent-ws" });
  const auth = new BearerAuth(deps.authToken, publicPaths(ROUTES, true));
  // `ws` is loaded with the first session, not at the daemon's start: most daemons never open
  // one, and the package costs idle memory (docs/performance.md, "Daemon memory and start,
  // third look").
  let wss: Promise<WebSocketServer> | undefined;
  const server = (): Promise<WebSocketServer> =>
    (wss ??= import("ws").then((m) => new m.WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_CLIENT_MESSAGE_BYTES })));
  const sessions = new Set<{ ws: WebSocket; agent: Duplex }>();
  /** Client sockets handed to `handle`, neither a session yet nor closed. */
  const pending = new Set<Duplex>();
  /** Set by closeAll: the daemon is stopping and takes no new session. */
  let closing = false;

  const refuse = (socket: Duplex, err: unknown): void => {
    if (!(err instanceof PaddockError) || !err.isClientError) log.error("upgrade failed", { err });
    rejectUpgrade(socket, err, err instanceof PaddockError && err.code === "ERR_METHOD_NOT_ALLOWED" ? { Allow: "GET" } : {});
  };

  const handle = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on("error", () => undefined);
    if (closing) {
      socket.destroy();
      return;
    }
    pending.add(socket);
    socket.once("close", () => pending.delete(socket));
    try {
      const url = new URL(req.url ?? "/", "http://daemon");
      if (!auth.admits(url.pathname, req.headers.authorization)) {
        rejectUpgrade(socket, new PaddockError("ERR_AUTH_REQUIRED", "unauthorized"));
        return;
      }
      let found: { route: UpgradeRoute; m: RegExpExecArray } | undefined;
      for (const u of UPGRADES) {
        const m = u.pattern.exec(url.pathname);
        if (m) {
          found = { route: u.route, m };
          break;
        }
      }
      if (!found) throw new PaddockError("ERR_NOT_FOUND", `no WebSocket route ${url.pathname}`);
      const { route, m } = found;
      if (req.method !== route.method) throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on ${pathTemplate(route.path)}`);
      if ((req.headers.upgrade ?? "").toLowerCase() !== "websocket") throw new PaddockError("ERR_BAD_REQUEST", "expected a WebSocket upgrade");
      const hostname = decodeURIComponent(m[1] as string);
      const kind = route.handler;
      const agentPath = AGENT_PATHS[kind](req, url);
      const open = (): void => openAgentUpgrade({
        endpoint: deps.resolveAgent(hostname), agentPath, kind, client: socket, logger: log,
        onUpgraded: (agentSocket) => {
          void server().then((wss) => {
            if (socket.destroyed) {
              agentSocket.destroy();
              return;
            }
            wss.handleUpgrade(req, socket, head, (ws) => {
              pending.delete(socket);
              const session = { ws, agent: agentSocket };
              sessions.add(session);
              log.info("session opened", { hostname, kind });
              relay(ws, agentSocket, kind === "shell", () => {
                sessions.delete(session);
                log.info("session closed", { hostname, kind });
              });
            });
          });
        },
      });
      // Run `next` once `wait` settles, unless the client left meanwhile; a failure refuses.
      const after = (wait: Promise<unknown>, next: () => void): void => {
        wait.then(() => {
          if (socket.destroyed) return;
          try {
            next();
          } catch (err) {
            refuse(socket, err);
          }
        }, (err: unknown) => refuse(socket, err));
      };
      // A shell runs commands: like exec, not before the VM's secrets are there.
      const start = (): void => {
        const settled = kind === "shell" ? deps.secretsSettled?.(hostname) : undefined;
        if (settled === undefined) return open();
        // Refused now when the VM cannot be asked (paused, stopped); resolved again after.
        deps.resolveAgent(hostname);
        after(settled, open);
      };
      if (deps.activity === undefined) start();
      else after(holdForUpgrade(deps.activity, hostname, socket), start);
    } catch (err) {
      refuse(socket, err);
    }
  };

  return {
    handle,
    closeAll: () => {
      closing = true;
      // Destroyed, the client socket aborts its agent request (agent-ws.ts openAgentUpgrade),
      // and every later step checks `socket.destroyed` before opening anything.
      for (const socket of pending) socket.destroy();
      pending.clear();
      for (const s of sessions) {
        s.ws.close(1001, "daemon stopping");
        s.agent.destroy();
        // A client that does not answer the close handshake must not hold the server open.
        setTimeout(() => s.ws.terminate(), 1000).unref();
      }
    },
  };
}

/**
 * The answer to a plain HTTP request (no upgrade) on a WebSocket path, for every method:
 * 400 ERR_BAD_REQUEST for GET, else 405 ERR_METHOD_NOT_ALLOWED (no `Allow`), both saying
 * `/vm/{hostname}/shell is a WebSocket endpoint: send GET with Upgrade: websocket`.
 */
export function createPlainUpgradeHandlers(): RouteHandlers["upgrade"] {
  const plain: Handler = (req, res) => {
    const err = new PaddockError(req.method === "GET" ? "ERR_BAD_REQUEST" : "ERR_METHOD_NOT_ALLOWED", `${agentPathShown(req)} is a WebSocket endpoint: send GET with Upgrade: websocket`);
    const { status, body } = errorResponse(err);
    res.status(status).json(body);
  };
  return { shell: plain, forward: plain };
}
