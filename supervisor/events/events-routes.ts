/**
 * `GET /admin/v1/events`: the supervisor's tenant events (supervisor/events/tenant-events.ts) as a
 * server-sent-events stream, behind the admin token like the rest of the admin API. Same frames,
 * `Last-Event-ID` resume, `reset`, heartbeat and slow-client drop as a daemon's `GET /events`
 * (shared/events/sse-stream.ts). `?tenant=<id>` keeps one tenant's events.
 */
import type { Router } from "express";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { TENANT_ID_PATTERN } from "../../shared/tenant-config.js";
import { lastEventId, streamEvents } from "../../shared/events/sse-stream.js";
import { queryString } from "../admin-request.js";
import type { TenantEvents } from "./tenant-events.js";

/** Mount `GET /events` on the admin router `r`. */
export function mountTenantEventRoutes(r: Router, events: TenantEvents, log: Logger): void {
  const l = log.child({ component: "admin-events" });
  r.get("/events", (req, res) => {
    const tenant = queryString(req, "tenant");
    if (tenant !== undefined && !TENANT_ID_PATTERN.test(tenant)) throw new PaddockError("ERR_QUERY_INVALID", "tenant: expected a tenant id");
    streamEvents(res, events.ring, { lastId: lastEventId(req.headers, req.query), log: l, ...(tenant !== undefined ? { filter: (e) => e.tenant === tenant } : {}) });
  });
}
