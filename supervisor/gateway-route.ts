/**
 * Token → tenant resolution for the gateway: `Authorization: Bearer <tenant token>` → the
 * tenant's daemon socket, or the answer refusing the request. 401 for unknown, expired,
 * revoked or missing tokens has one body and the same work (supervisor/tokens.ts `TokenIndex`).
 */
import type http from "node:http";
import { PaddockError, errorResponse } from "../shared/errors.js";
import { requestTargetProblem } from "../shared/http-input.js";
import { parseBearer } from "../shared/http/bearer.js";
import type { GatewayTarget } from "./tenant-service.js";

/** Seconds a client is told to wait when a daemon is down. */
export const RETRY_AFTER_S = 2;

const UNAUTHORIZED_BODY = JSON.stringify({ error: "missing, invalid, expired or revoked token", code: "ERR_AUTH_REQUIRED" });

/** What the gateway asks of the tenants (supervisor/tenant-service.ts `TenantService`). */
export interface TenantResolver {
  /** The owner of a presented bearer token, or undefined (unknown, expired, revoked, missing). */
  authenticate(token: string | undefined): { tenantId: string; tokenId: string } | undefined;
  /** Where a tenant's requests go, or undefined for a tenant that no longer exists. */
  gatewayTarget(tenantId: string): GatewayTarget | undefined;
}

/**
 * Outcome of authenticating and routing one request: where it goes, or the answer to send
 * instead (`status`, a serialised JSON `body`, extra `headers`; `tenantId` when it is known).
 */
export type Route = { ok: true; tenantId: string; tokenId: string; socketPath: string } | { ok: false; status: number; body: string; headers?: Record<string, string>; tenantId?: string };

/** A routed request. */
export type OkRoute = Route & { ok: true };

/** A refusing Route answering `err` (its status and JSON body) for `tenantId`, with `extraHeaders`. */
export function refusal(err: PaddockError, tenantId: string, extraHeaders?: Record<string, string>): Route {
  const r = errorResponse(err);
  return { ok: false, status: r.status, body: JSON.stringify(r.body), headers: extraHeaders, tenantId };
}

/** The one 401 answer (same body whatever was wrong with the token). */
export function unauthorized(): Route {
  return { ok: false, status: 401, body: UNAUTHORIZED_BODY, headers: { "www-authenticate": 'Bearer realm="paddock"' } };
}

/**
 * Authenticate and route a request, refusing in this order: 401 `ERR_AUTH_REQUIRED` (no
 * live token, or its tenant is gone), 403 `ERR_TENANT_SUSPENDED`, 404 `ERR_TENANT_NOT_FOUND`
 * (being deleted), 503 `ERR_TENANT_UNAVAILABLE` + Retry-After (daemon not running), 400
 * `ERR_URL_MALFORMED` (a request target that is not a decodable path, shared/http-input.ts).
 */
export function routeRequest(tenants: TenantResolver, req: http.IncomingMessage): Route {
  // Same work for every token: hash, Map lookup by hash, one constant-time compare.
  const owner = tenants.authenticate(parseBearer(req.headers.authorization));
  if (!owner) return unauthorized();
  return routeTenant(tenants, owner, req);
}

/**
 * Route a request already authenticated for `owner` (a tenant token, or a preview token whose
 * `tokenId` names it) with the refusals of {@link routeRequest} after the token check.
 */
export function routeTenant(tenants: TenantResolver, owner: { tenantId: string; tokenId: string }, req: http.IncomingMessage): Route {
  const target = tenants.gatewayTarget(owner.tenantId);
  if (!target) return unauthorized();
  if (target.status === "suspended") return refusal(new PaddockError("ERR_TENANT_SUSPENDED", `tenant ${target.tenantId} is suspended`), target.tenantId);
  if (target.status === "deleting") return refusal(new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${target.tenantId} is being deleted`), target.tenantId);
  if (!target.daemonUp) {
    return refusal(new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${target.tenantId} is not running (${target.status}); retry later`), target.tenantId, { "retry-after": String(RETRY_AFTER_S) });
  }
  const bad = requestTargetProblem(req.url);
  if (bad !== undefined) return refusal(new PaddockError("ERR_URL_MALFORMED", bad), target.tenantId);
  return { ok: true, tenantId: target.tenantId, tokenId: owner.tokenId, socketPath: target.socketPath };
}
