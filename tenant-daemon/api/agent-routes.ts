/**
 * The agent-backed VM routes: `/vm/{hostname}/{health,exec…,cp,fs/*}` are streamed to the VM's
 * guest agent as `/v1/…` (agent-client/agent-stream.ts). Paths and auth are in routes.ts.
 *
 * {@link createAgentRouter} builds a request listener of only these, the secrets routes and the
 * plain answers of the WebSocket paths, for tests that put them behind their own server.
 */
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { SecretStore } from "../secrets/secret-store.js";
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import { streamToAgent } from "../agent-client/agent-stream.js";
import { sendError, type ApiRequest, type ApiResponse } from "./http-util.js";
import { compileRoutes, serveRoutes, type RouteHandlers } from "./route-mount.js";
import { createSecretHandlers } from "./secrets-routes.js";
import { createPlainUpgradeHandlers } from "./ws-upgrade.js";

/**
 * The agent of a running VM.
 * @throws PaddockError ERR_VM_NOT_FOUND (404), ERR_VM_PAUSED (409), ERR_VM_NOT_RUNNING (409).
 */
export type ResolveAgent = (hostname: string) => AgentEndpoint;

/**
 * The handler: resolve the VM's agent from the path's hostname and stream the request to
 * `/v1<rest of the path><query>`. Errors are answered directly (http-util.ts `sendError`,
 * logged through `logger` when not a client error): what `resolveAgent` throws, and 503
 * ERR_VM_AGENT_UNAVAILABLE when the agent is unreachable or its answer lacks the VM's proof,
 * unless the VM went meanwhile (404 ERR_VM_NOT_FOUND "was deleted while this request ran", or
 * what `resolveAgent` throws now: {@link agentFailure}). With `secretsSettled`, a request other
 * than health waits for the VM's boot-time secret delivery first (a create without `wait`
 * answers before it; without this an exec sent at once could run before the VM's secrets were
 * written).
 */
export function createAgentHandlers(resolveAgent: ResolveAgent, logger: Logger, secretsSettled?: SecretsSettled): RouteHandlers["agent"] {
  const send = (req: ApiRequest, res: ApiResponse, hostname: string, sub: string): void => {
    const endpoint = resolveAgent(hostname);
    const qIndex = req.originalUrl.indexOf("?");
    const search = qIndex === -1 ? "" : req.originalUrl.slice(qIndex);
    streamToAgent(endpoint, req, res, `/v1${sub}${search}`, (err) => sendError(res, agentFailure(err, hostname, resolveAgent), logger));
  };
  const refuse = (req: ApiRequest, res: ApiResponse, err: unknown): void => {
    req.resume();
    sendError(res, err, logger);
  };
  return {
    forward: (req, res) => {
      // Every agent path of the table is /vm/:hostname/<sub>.
      const m = /^\/vm\/([^/]+)(\/.*)$/.exec(req.path) as RegExpExecArray;
      const sub = m[2] as string;
      try {
        const hostname = decodeURIComponent(m[1] as string);
        // Health answers at once (clients poll it while a VM boots); everything else waits for
        // the boot's secret delivery, so a first exec sees the VM's secrets.
        const settled = sub === "/health" ? undefined : secretsSettled?.(hostname);
        if (settled === undefined) send(req, res, hostname, sub);
        else {
          // Refused now when the VM cannot be asked (paused, stopped); resolved again after the
          // wait, as it may have gone meanwhile.
          resolveAgent(hostname);
          settled.then(() => {
            if (res.destroyed || res.writableEnded) return;
            try {
              send(req, res, hostname, sub);
            } catch (err) {
              refuse(req, res, err);
            }
          }, (err: unknown) => refuse(req, res, err));
        }
      } catch (err) {
        refuse(req, res, err);
      }
    },
  };
}

/**
 * The boot-time secret delivery of VM `hostname` (tenant-daemon/vm/vm-secrets-sync.ts), as a
 * promise that settles when it has ended (delivered, failed or given up: within its own 60 s
 * bound); undefined when there is none to wait for.
 */
export type SecretsSettled = (hostname: string) => Promise<unknown> | undefined;

/**
 * What to answer for a request whose agent failed before any answer: when the VM is no longer
 * there to ask (deleted meanwhile: 404 ERR_VM_NOT_FOUND; stopped or paused: what
 * `resolveAgent` says now) that, since a 503 ERR_VM_AGENT_UNAVAILABLE tells the client to
 * retry; else `err` as it is.
 */
function agentFailure(err: unknown, hostname: string, resolveAgent: ResolveAgent): unknown {
  if (!isPaddockError(err) || err.code !== "ERR_VM_AGENT_UNAVAILABLE") return err;
  try {
    resolveAgent(hostname);
    return err;
  } catch (now) {
    if (isPaddockError(now) && now.code === "ERR_VM_NOT_FOUND") return new PaddockError("ERR_VM_NOT_FOUND", `VM ${hostname} was deleted while this request ran`, { cause: err });
    return now;
  }
}

/** What {@link createAgentRouter} needs. */
export interface AgentRouterDeps {
  resolveAgent: ResolveAgent;
  /** What agent requests wait for first (see {@link createAgentHandlers}); absent: nothing. */
  secretsSettled?: SecretsSettled;
  secrets: SecretStore;
  logger: Logger;
}

/**
 * A request listener of the table's agent, WebSocket-path (plain requests: 400/405) and
 * secrets routes, matched as the daemon matches them; serve it with
 * `createApiServer(listener)` (http-util.ts). Unknown paths answer 404;
 * wrong methods on known paths 405.
 */
export function createAgentRouter(deps: AgentRouterDeps): (req: ApiRequest, res: ApiResponse) => void {
  const log = deps.logger.child({ component: "agent-router" });
  const lookup = compileRoutes({
    agent: createAgentHandlers(deps.resolveAgent, log, deps.secretsSettled),
    upgrade: createPlainUpgradeHandlers(),
    secrets: createSecretHandlers(deps.secrets, log),
  });
  return serveRoutes(lookup, log);
}
