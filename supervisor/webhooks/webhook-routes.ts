/**
 * The admin API's webhook routes (docs/admin-api.openapi.yaml), mounted under `/admin/v1` behind
 * the admin token by supervisor/admin-api.ts:
 *
 *   POST   /tenants/{id}/webhooks                              {url, events?, secret?} → 201, secret shown once
 *   GET    /tenants/{id}/webhooks                              → list (no secrets)
 *   DELETE /tenants/{id}/webhooks/{webhookId}                  → 204
 *   GET    /tenants/{id}/webhooks/{webhookId}/deliveries       ?limit&before → delivery log, newest first
 *
 * Webhook targets are chosen by the operator, who is trusted with them (docs/security.md): the
 * URL is checked for shape only (http or https, a host, no credentials), not for where it points.
 */
import type { Request, Response, Router } from "express";
import { PaddockError } from "../../shared/errors.js";
import { VM_EVENT_TYPES } from "../../shared/events/vm-events.js";
import { TENANT_EVENT_TYPES } from "../events/tenant-events.js";
import { pathParam, queryInt, queryString, requestBody } from "../admin-request.js";
import type { Delivery, WebhookRecord } from "./outbox.js";
import type { CreateWebhookInput, WebhookService } from "./webhook-service.js";
import type { AuditLog } from "../audit-log.js";
import type { Logger } from "../../shared/logger.js";

/** Every event type a webhook can ask for. */
export const WEBHOOK_EVENT_TYPES: readonly string[] = [...VM_EVENT_TYPES.map((t) => `vm.${t}`), ...TENANT_EVENT_TYPES.map((t) => `tenant.${t}`)];

/** Longest webhook URL accepted, characters. */
const MAX_URL_LENGTH = 2048;

/**
 * A create body: `url` (http/https, a host, no user or password, ≤ 2048 characters), `events`
 * (a non-empty list of distinct {@link WEBHOOK_EVENT_TYPES}; absent: all), `secret` (16–256
 * printable ASCII characters, no spaces; absent: generated). Nothing else.
 * @throws PaddockError ERR_WEBHOOK_INVALID naming the field.
 */
export function readCreateWebhook(body: Record<string, unknown>): CreateWebhookInput {
  for (const k of Object.keys(body)) if (k !== "url" && k !== "events" && k !== "secret") throw new PaddockError("ERR_WEBHOOK_INVALID", `unknown field ${JSON.stringify(k)} (fields: url, events, secret)`);
  const raw = body.url;
  if (typeof raw !== "string" || raw.length === 0 || raw.length > MAX_URL_LENGTH) throw new PaddockError("ERR_WEBHOOK_INVALID", `url: expected a string of 1-${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new PaddockError("ERR_WEBHOOK_INVALID", "url: not a valid absolute URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new PaddockError("ERR_WEBHOOK_INVALID", "url: expected an http or https URL");
  if (url.hostname === "") throw new PaddockError("ERR_WEBHOOK_INVALID", "url: expected a host");
  if (url.username !== "" || url.password !== "") throw new PaddockError("ERR_WEBHOOK_INVALID", "url: credentials in the URL are refused (the signature authenticates deliveries)");
  const out: CreateWebhookInput = { url: url.href };
  if (body.events !== undefined) {
    const ev = body.events;
    if (!Array.isArray(ev) || ev.length === 0 || ev.length > WEBHOOK_EVENT_TYPES.length) throw new PaddockError("ERR_WEBHOOK_INVALID", "events: expected a non-empty list of event types");
    for (const t of ev) if (typeof t !== "string" || !WEBHOOK_EVENT_TYPES.includes(t)) throw new PaddockError("ERR_WEBHOOK_INVALID", `events: ${JSON.stringify(t)} is not an event type (one of ${WEBHOOK_EVENT_TYPES.join(", ")})`);
    if (new Set(ev).size !== ev.length) throw new PaddockError("ERR_WEBHOOK_INVALID", "events: an event type is repeated");
    out.events = ev as string[];
  }
  if (body.secret !== undefined) {
    if (typeof body.secret !== "string" || !/^[\x21-\x7e]{16,256}$/.test(body.secret)) throw new PaddockError("ERR_WEBHOOK_INVALID", "secret: expected 16-256 printable ASCII characters without spaces");
    out.secret = body.secret;
  }
  return out;
}

/** A webhook as the admin API shows it (never its secret). */
export function webhookView(h: WebhookRecord): Record<string, unknown> {
  return {
    id: h.id,
    url: h.url,
    events: h.events,
    created_at: h.createdAt,
    ...(h.disabledAt !== undefined ? { disabled_at: h.disabledAt, disabled_reason: h.disabledReason } : {}),
  };
}

/** A delivery log entry as the admin API shows it. */
export function deliveryView(d: Delivery): Record<string, unknown> {
  return {
    id: d.id,
    event_id: d.eventId,
    ...(d.eventType !== undefined ? { event_type: d.eventType } : {}),
    state: d.state,
    attempts: d.attempts,
    ...(d.lastStatus !== undefined ? { last_status: d.lastStatus } : {}),
    ...(d.lastError !== undefined ? { last_error: d.lastError } : {}),
    ...(d.nextAttemptAtMs !== undefined && d.state === "pending" ? { next_attempt_at: new Date(d.nextAttemptAtMs).toISOString() } : {}),
    ...(d.deliveredAt !== undefined ? { delivered_at: d.deliveredAt } : {}),
    created_at: d.createdAt,
  };
}

/** `before` of a deliveries page (the `Paddock-Next-Cursor` of the previous one). @throws PaddockError ERR_QUERY_INVALID. */
function readBefore(req: Request): number | undefined {
  const v = queryString(req, "before");
  if (v === undefined) return undefined;
  if (!/^\d{1,15}$/.test(v)) throw new PaddockError("ERR_QUERY_INVALID", "before: expected the Paddock-Next-Cursor of a previous page");
  return Number(v);
}

/**
 * Mount the webhook routes on the admin router `r` (already behind the admin token and JSON body
 * parser); adding and removing a webhook is recorded in `audit` (`webhook.create`, `webhook.delete`).
 */
export function mountWebhookRoutes(r: Router, webhooks: WebhookService, audit: AuditLog, log: Logger): void {
  const record = (res: Response, action: string, tenant: string, details: Record<string, unknown>): void => {
    void audit.record({ actor: "admin", action, tenant, requestId: (res.locals as { requestId?: string }).requestId, details }, (err) => log.error("audit write failed", { err }));
  };

  r.post("/tenants/:id/webhooks", async (req, res) => {
    const input = readCreateWebhook(requestBody(req));
    const h = await webhooks.create(pathParam(req, "id"), input);
    record(res, "webhook.create", pathParam(req, "id"), { webhook_id: h.id, url: h.url, events: h.events });
    res.status(201).json({ ...webhookView(h), secret: h.secret });
  });

  r.get("/tenants/:id/webhooks", (req, res) => {
    res.json(webhooks.list(pathParam(req, "id")).map(webhookView));
  });

  r.delete("/tenants/:id/webhooks/:webhookId", async (req, res) => {
    await webhooks.remove(pathParam(req, "id"), pathParam(req, "webhookId"));
    record(res, "webhook.delete", pathParam(req, "id"), { webhook_id: pathParam(req, "webhookId") });
    res.status(204).end();
  });

  // Newest first; the header Paddock-Next-Cursor carries `before` of the next (older) page.
  r.get("/tenants/:id/webhooks/:webhookId/deliveries", (req, res) => {
    const page = webhooks.deliveries(pathParam(req, "id"), pathParam(req, "webhookId"), queryInt(req, "limit", 100, 1000), readBefore(req));
    if (page.nextBefore !== undefined) res.setHeader("Paddock-Next-Cursor", String(page.nextBefore));
    res.json(page.deliveries.map(deliveryView));
  });
}
