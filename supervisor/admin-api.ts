/**
 * The admin API (docs/admin-api.openapi.yaml): Express on its own listener, every route but
 * `/healthz` behind the admin bearer token. Routes are thin: parse and check the request
 * (supervisor/admin-request.ts), call {@link TenantService} with typed inputs, shape JSON
 * (snake_case, like the Slicer API).
 *
 * Errors: 4xx as `{"error","code"}`; PaddockErrors with a 5xx status keep their message
 * (this API is operator-only and a failed daemon start must show the daemon's output);
 * anything else is logged with its stack and answered with a generic 500.
 */
import express, { type NextFunction, type Request, type Response } from "express";
import { randomUUID } from "node:crypto";
import { PaddockError, errorResponse } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { parseBearer } from "../shared/http/bearer.js";
import { hashToken, hashesEqual } from "./tokens.js";
import { checkUpdateFields, pathParam, queryInt, readAuditQuery, readCreateTenant, readIssueToken, readListFilter, readSuspendReason, readTenantUpdate, requestBody } from "./admin-request.js";
import type { TenantService, Actor } from "./tenant-service.js";
import type { TenantRecord } from "./tenant-registry.js";
import { limitsView } from "./tenant-limits.js";
import type { HostInfo } from "./host-info.js";
import type { AuditLog } from "./audit-log.js";
import type { SupervisorMetrics } from "./metrics.js";
import type { TenantEvents } from "./events/tenant-events.js";
import { mountTenantEventRoutes } from "./events/events-routes.js";
import type { WebhookService } from "./webhooks/webhook-service.js";
import { mountWebhookRoutes } from "./webhooks/webhook-routes.js";

/** Largest JSON body of the admin API, bytes (express.json's `limit`; a number is bytes: https://github.com/expressjs/body-parser#limit). */
export const ADMIN_BODY_LIMIT_BYTES = 256 * 1024;

/** Dependencies of the admin app. */
export interface AdminDeps {
  tenants: TenantService;
  host: HostInfo;
  audit: AuditLog;
  metrics: SupervisorMetrics;
  log: Logger;
  /** SHA-256 of the admin token. */
  adminTokenHash: string;
  /** Tenant events (`GET /admin/v1/events`) and webhooks (`/admin/v1/tenants/{id}/webhooks…`); absent: no such routes. */
  events?: TenantEvents;
  webhooks?: WebhookService;
  /**
   * The build the supervisor runs, `<version>+<build>` (shared/build-info.ts, read once at its
   * start), shown as `supervisor.version` by `GET /admin/v1/host`; absent: not shown.
   */
  version?: string;
}

type Locals = { requestId: string; log: Logger };

function locals(res: Response): Locals {
  return res.locals as Locals;
}

function actor(res: Response): Actor {
  return { actor: "admin", requestId: locals(res).requestId };
}

/** The tenant as the admin API shows it (no token hashes, ever). */
export function tenantView(t: TenantRecord, tenants: TenantService): Record<string, unknown> {
  const d = tenants.daemonInfo(t.id);
  return {
    id: t.id,
    status: t.status,
    ...(t.statusReason ? { status_reason: t.statusReason } : {}),
    template: t.template,
    labels: t.labels,
    // The effective limits: create filled every one from the template or `default_limits`.
    limits: limitsView(t.limits),
    host_groups: Object.fromEntries(Object.entries(t.overrides).map(([g, o]) => [g, {
      ...(o.vcpu !== undefined ? { vcpu: o.vcpu } : {}),
      ...(o.ramBytes !== undefined ? { ram_mb: o.ramBytes / 2 ** 20 } : {}),
      ...(o.storageSizeBytes !== undefined ? { storage_size: `${o.storageSizeBytes / 2 ** 20}M` } : {}),
      ...(o.warmPool !== undefined ? { warm_pool: o.warmPool } : {}),
    }])),
    ...(t.image !== undefined ? { image: t.image } : {}),
    ...(t.hypervisor !== undefined ? { hypervisor: t.hypervisor } : {}),
    ranges: t.blocks.map((b) => ({ host_group: b.hostGroup, cidr: b.cidr })),
    ...(t.uidRange !== undefined ? { userns: { uid_start: t.uidRange.uidStart, size: t.uidRange.size } } : {}),
    socket_path: tenants.socketPath(t.id),
    daemon: {
      state: d.state,
      ...(d.pid !== undefined ? { pid: d.pid } : {}),
      restarts: d.restarts,
      ...(d.uptimeSeconds !== undefined ? { uptime_seconds: d.uptimeSeconds } : {}),
      ...(t.daemon.startedAt ? { started_at: t.daemon.startedAt } : {}),
      // The build its process runs (recorded at its spawn, kept across adoptions), while it has one.
      ...(d.pid !== undefined && t.daemon.version ? { version: t.daemon.version } : {}),
      ...(t.daemon.lastExit ? { last_exit: t.daemon.lastExit } : {}),
      ...(t.daemon.lastError ? { last_error: t.daemon.lastError } : {}),
    },
    tokens: t.tokens.map((k) => ({ id: k.id, created_at: k.createdAt, ...(k.expiresAt ? { expires_at: k.expiresAt } : {}), ...(k.revokedAt ? { revoked_at: k.revokedAt } : {}) })),
    pending_restart: t.pendingRestart === true,
    created_at: t.createdAt,
    updated_at: t.updatedAt,
  };
}

/**
 * 405 `ERR_METHOD_NOT_ALLOWED` for a path `router` serves with other methods, with `Allow`
 * naming them (GET implies HEAD); any other request goes on (to the 404). Reads the routes
 * the router holds (its `stack` of layers and each route's `methods`, router 2:
 * https://github.com/pillarjs/router/blob/v2.2.0/lib/route.js), so it stays in step with
 * every route mounted on it, the events and webhooks routes included.
 */
function methodNotAllowed(router: express.Router): express.RequestHandler {
  type RouteLayer = { route?: { methods?: Record<string, boolean> }; match?: (path: string) => boolean };
  return (req, res, next) => {
    const allowed = new Set<string>();
    for (const layer of router.stack as RouteLayer[]) {
      const methods = layer.route?.methods;
      if (methods === undefined || typeof layer.match !== "function" || !layer.match(req.path)) continue;
      for (const [m, on] of Object.entries(methods)) if (on && m !== "_all") allowed.add(m.toUpperCase());
    }
    if (allowed.size === 0 || allowed.has(req.method)) {
      next();
      return;
    }
    if (allowed.has("GET")) allowed.add("HEAD");
    res.setHeader("Allow", [...allowed].sort().join(", "));
    next(new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on ${req.baseUrl}${req.path}`));
  };
}

/**
 * Log an admin request that ended in a 5xx. A 507 is a refusal for want of room (the host's pid,
 * user-namespace or disk budget, docs/error-codes.md), expected whenever a host is full: one
 * warning with its code and message. Any other 5xx is a failure: an error line with the error
 * and its stack.
 * @param status the HTTP status sent (>= 500).
 */
export function logAdminFailure(l: Logger, err: unknown, status: number): void {
  if (status === 507 && err instanceof PaddockError) l.warn("admin request refused: no room", { code: err.code, error: err.message });
  else l.error("admin request failed", { err });
}

/** Build the admin Express app. */
export function createAdminApp(deps: AdminDeps): express.Express {
  const { tenants, host, audit, metrics, log } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.use((req, res, next) => {
    const requestId = randomUUID();
    res.locals.requestId = requestId;
    res.locals.log = log.child({ req: requestId });
    res.setHeader("x-request-id", requestId);
    const started = Date.now();
    res.on("finish", () => locals(res).log.info("admin request", { method: req.method, path: req.path, status: res.statusCode, ms: Date.now() - started }));
    next();
  });

  app.get("/healthz", (_req, res) => {
    res.type("text/plain").send("OK");
  });

  // Admin auth: hash the presented token and compare hashes in constant time.
  app.use((req, _res, next) => {
    const presented = parseBearer(req.get("authorization"));
    if (!hashesEqual(hashToken(presented ?? ""), deps.adminTokenHash) || presented === undefined) {
      next(new PaddockError("ERR_AUTH_REQUIRED", "missing or invalid admin token"));
      return;
    }
    next();
  });

  app.get("/metrics", async (_req, res) => {
    const { byStatus, restarts } = tenants.metricsInputs();
    const text = await metrics.render(byStatus, restarts);
    res.type(metrics.contentType).send(text);
  });

  const r = express.Router();
  // JSON whatever the Content-Type (as the tenant daemon's API): a body sent without
  // `application/json` (curl -d) must not be ignored and the request run on defaults.
  r.use(express.json({ limit: ADMIN_BODY_LIMIT_BYTES, strict: true, type: () => true }));

  r.get("/tenants", (req, res) => {
    res.json(tenants.list(readListFilter(req)).map((t) => tenantView(t, tenants)));
  });

  r.post("/tenants", async (req, res) => {
    const out = await tenants.create(readCreateTenant(requestBody(req)), actor(res));
    res.status(201).json({ ...tenantView(out.tenant, tenants), token: out.token, token_id: out.tokenId });
  });

  r.get("/tenants/:id", async (req, res) => {
    const t = tenants.get(pathParam(req, "id"));
    const usage = await tenants.usage(t.id);
    res.json({
      ...tenantView(t, tenants),
      vms: usage ? { total: usage.total, by_status: usage.vms } : null,
      resources: usage ? { vcpu: usage.vcpu, ram_bytes: usage.ramBytes, disk_bytes: usage.diskBytes } : null,
    });
  });

  r.patch("/tenants/:id", async (req, res) => {
    const id = pathParam(req, "id");
    const b = requestBody(req);
    // Refused in this order: a field that cannot change, an unknown tenant (404), a bad value.
    checkUpdateFields(b);
    tenants.get(id);
    res.json(tenantView(await tenants.update(id, readTenantUpdate(b), actor(res)), tenants));
  });

  r.delete("/tenants/:id", async (req, res) => {
    await tenants.delete(pathParam(req, "id"), actor(res));
    res.status(204).end();
  });

  r.post("/tenants/:id/suspend", async (req, res) => {
    const reason = readSuspendReason(requestBody(req));
    const out = await tenants.suspend(pathParam(req, "id"), reason, actor(res));
    res.json({ ...tenantView(out.tenant, tenants), paused_vms: out.paused, errors: out.errors, already_suspended: out.alreadySuspended });
  });

  r.post("/tenants/:id/resume", async (req, res) => {
    const out = await tenants.resume(pathParam(req, "id"), actor(res));
    res.json({ ...tenantView(out.tenant, tenants), resumed_vms: out.resumed, errors: out.errors, already_active: out.alreadyActive });
  });

  r.post("/tenants/:id/restart", async (req, res) => {
    res.json(tenantView(await tenants.restart(pathParam(req, "id"), actor(res)), tenants));
  });

  r.post("/tenants/:id/tokens", async (req, res) => {
    const out = await tenants.issueToken(pathParam(req, "id"), readIssueToken(requestBody(req)), actor(res));
    res.status(201).json({ id: out.id, token: out.token, created_at: out.createdAt, ...(out.expiresAt ? { expires_at: out.expiresAt } : {}) });
  });

  // A fresh revoke answers 204; one of a token already revoked answers 200 with
  // `{id, revoked_at, already_revoked: true}` (docs/admin-api.openapi.yaml), so a caller can tell
  // (the CLI says so). Both are read in the revoke's own registry update, so of two revokes
  // racing one answers 204.
  r.delete("/tenants/:id/tokens/:tokenId", async (req, res) => {
    const tokenId = pathParam(req, "tokenId");
    const out = await tenants.revokeToken(pathParam(req, "id"), tokenId, actor(res));
    if (!out.alreadyRevoked) res.status(204).end();
    else res.status(200).json({ id: tokenId, revoked_at: out.revokedAt, already_revoked: true });
  });

  r.get("/tenants/:id/logs", async (req, res) => {
    const lines = await tenants.logs(pathParam(req, "id"), queryInt(req, "lines", 100, 10_000));
    res.json({ lines });
  });

  r.get("/host", async (_req, res) => {
    const snap = await host.snapshot();
    let vcpu = 0, ramBytes = 0, diskBytes = 0;
    const perTenant = await Promise.all(tenants.list({}).map(async (t) => ({ id: t.id, usage: await tenants.usage(t.id) })));
    for (const p of perTenant) {
      vcpu += p.usage?.vcpu ?? 0;
      ramBytes += p.usage?.ramBytes ?? 0;
      diskBytes += p.usage?.diskBytes ?? 0;
    }
    res.json({
      ...snap,
      ...(deps.version !== undefined ? { supervisor: { version: deps.version } } : {}),
      committed: { vcpu, ram_bytes: ramBytes, disk_bytes: diskBytes, tenants_reporting: perTenant.filter((p) => p.usage).length, tenants_total: perTenant.length },
      capacity: { vcpu: snap.cpu.cores, ram_bytes: snap.memory.total_bytes, disk_bytes: snap.disk?.size_bytes ?? null },
    });
  });

  // Paged, newest page first: a page is the newest `limit` entries below `cursor`, oldest first;
  // the header Paddock-Next-Cursor carries the cursor of the next (older) page (supervisor/audit-log.ts).
  r.get("/audit", async (req, res) => {
    const page = await audit.read(readAuditQuery(req));
    if (page.nextCursor !== undefined) res.setHeader("Paddock-Next-Cursor", page.nextCursor);
    res.json(page.entries);
  });

  if (deps.events) mountTenantEventRoutes(r, deps.events, log);
  if (deps.webhooks) mountWebhookRoutes(r, deps.webhooks, audit, log);
  r.use(methodNotAllowed(r));

  app.use("/admin/v1", r);

  app.use((_req, _res, next) => next(new PaddockError("ERR_NOT_FOUND", "no such route")));

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const l = (res.locals as Partial<Locals>).log ?? log;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // express.json() errors carry `type` and `status`.
    const e = err as { type?: string; status?: number; message?: string };
    if (e.type === "entity.parse.failed") err = new PaddockError("ERR_BODY_INVALID_JSON", "request body is not valid JSON");
    else if (e.type === "entity.too.large") err = new PaddockError("ERR_BODY_TOO_LARGE", `request body is too large: at most ${ADMIN_BODY_LIMIT_BYTES} bytes`);
    if (err instanceof PaddockError && err.status >= 500 && err.code !== "ERR_INTERNAL") {
      logAdminFailure(l, err, err.status);
      res.status(err.status).json({ error: err.message, code: err.code, ...(err.details ?? {}) });
      return;
    }
    const r2 = errorResponse(err);
    if (r2.status >= 500) logAdminFailure(l, err, r2.status);
    if (r2.status === 401) res.setHeader("www-authenticate", 'Bearer realm="paddock-admin"');
    res.status(r2.status).json(r2.body);
  });
  return app;
}
