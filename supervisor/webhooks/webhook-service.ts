/**
 * Tenants' webhooks: what the admin API's webhook routes call (supervisor/webhooks/webhook-routes.ts),
 * and where events come in — the tenant's VM events from its daemon
 * (supervisor/webhooks/daemon-event-feed.ts) and its tenant events
 * (supervisor/events/tenant-events.ts). Each event is appended to the tenant's outbox
 * (supervisor/webhooks/outbox.ts, fsynced) and then delivered in the background
 * (supervisor/webhooks/dispatcher.ts).
 *
 * State: `<state>/supervisor/webhooks/<tenant>/`. A tenant's `deleted` event is queued, then
 * each webhook gets one final attempt at what is pending (bounded by
 * {@link FINAL_ATTEMPTS_MS}), then the directory — webhooks, outbox, cursor — is removed. A
 * directory of a tenant the registry does not know (a supervisor stopped mid-removal) is removed
 * at start.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { TENANT_ID_PATTERN } from "../../shared/tenant-config.js";
import type { VmEvent } from "../../shared/events/vm-events.js";
import type { TenantEvent } from "../events/tenant-events.js";
import { DaemonEventFeed, type FeedItem } from "./daemon-event-feed.js";
import { WebhookDispatcher, type DeliveryResult, type WebhookPolicy } from "./dispatcher.js";
import { TenantOutbox, type Delivery, type WebhookRecord } from "./outbox.js";
import { newWebhookSecret } from "./signer.js";

/** Webhooks per tenant at most. */
export const MAX_WEBHOOKS_PER_TENANT = 16;
/** How long a deleted tenant's final delivery attempts may take together, ms. */
export const FINAL_ATTEMPTS_MS = 30_000;
/** How long a webhook create waits for the daemon's event stream to open, ms. */
const FEED_OPEN_WAIT_MS = 5000;

/** A checked webhook create (supervisor/webhooks/webhook-request.ts). */
export interface CreateWebhookInput {
  url: string;
  /** Event types (`vm.created`, `tenant.deleted`, …); undefined: all. */
  events?: string[];
  /** The signing secret; undefined: one is generated. */
  secret?: string;
}

/** What the service needs from the rest of the supervisor. */
export interface WebhookServiceDeps {
  /** `<state>/supervisor/webhooks`. */
  dir: string;
  policy: WebhookPolicy;
  log: Logger;
  /** The tenant's status, undefined when there is no such tenant. */
  tenantStatus: (id: string) => string | undefined;
  /** The tenant daemon's socket path (supervisor/tenant-paths.ts). */
  socketPath: (id: string) => string;
  /** Counts each delivery attempt's result (metrics). */
  onResult?: (r: DeliveryResult) => void;
}

/** The webhook body of a VM event: `event`, `event_id`, `tenant`, then the daemon's event fields. */
export function vmEventBody(tenant: string, e: VmEvent): { eventId: string; eventType: string; body: string } {
  const eventId = `vm-${e.id}`;
  const eventType = `vm.${e.type}`;
  return { eventId, eventType, body: JSON.stringify({ event: eventType, event_id: eventId, tenant, ...e }) };
}

/** The webhook body of a tenant event. */
export function tenantEventBody(e: TenantEvent): { eventId: string; eventType: string; body: string } {
  const eventId = `tenant-${e.id}`;
  const eventType = `tenant.${e.type}`;
  return { eventId, eventType, body: JSON.stringify({ event: eventType, event_id: eventId, ...e }) };
}

/** The tenants' webhooks, outboxes, daemon feeds and the dispatcher. */
export class WebhookService {
  private readonly deps: WebhookServiceDeps;
  private readonly outboxes = new Map<string, TenantOutbox>();
  private readonly feeds = new Map<string, DaemonEventFeed>();
  private readonly dispatcher: WebhookDispatcher;
  private readonly removals = new Set<Promise<void>>();
  /** By tenant: the cursor whose gap was last recorded (an idle new daemon run resets every reconnect; one entry is enough). */
  private readonly gapAt = new Map<string, number>();
  private readonly log: Logger;

  constructor(deps: WebhookServiceDeps) {
    this.deps = deps;
    this.log = deps.log;
    this.dispatcher = new WebhookDispatcher({ policy: deps.policy, outboxes: () => this.outboxes.values(), log: deps.log, ...(deps.onResult ? { onResult: deps.onResult } : {}) });
  }

  /**
   * Load the outboxes of known tenants (their pending deliveries resume, their feeds reconnect
   * from the stored cursor) and remove those of tenants the registry does not know.
   * @throws PaddockError ERR_STATE_CORRUPT from a journal that does not parse.
   */
  async init(): Promise<void> {
    await fs.mkdir(this.deps.dir, { recursive: true, mode: 0o700 });
    let names: string[] = [];
    try {
      names = await fs.readdir(this.deps.dir);
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    for (const name of names) {
      // Only directories named like tenants are ours to load or remove.
      if (!TENANT_ID_PATTERN.test(name)) continue;
      const dir = path.join(this.deps.dir, name);
      if (this.deps.tenantStatus(name) === undefined) {
        this.log.warn("removing the webhooks of a tenant the registry does not know", { tenant: name, dir });
        await fs.rm(dir, { recursive: true, force: true });
        continue;
      }
      const o = await TenantOutbox.open(name, dir);
      this.outboxes.set(name, o);
      this.syncFeed(name);
    }
    this.dispatcher.kick();
  }

  // ---- admin API ------------------------------------------------------------------------

  /**
   * Add a webhook to a tenant. Events from the moment it is added are delivered (the call waits,
   * up to 5 s, for the daemon's event stream to open).
   * @returns the webhook, with its secret (shown this once).
   * @throws PaddockError ERR_TENANT_NOT_FOUND, ERR_TENANT_INVALID (being deleted),
   *   ERR_WEBHOOK_LIMIT (already {@link MAX_WEBHOOKS_PER_TENANT}).
   */
  async create(tenantId: string, input: CreateWebhookInput): Promise<WebhookRecord> {
    const o = await this.outboxFor(tenantId, true);
    if (o.webhooks().length >= MAX_WEBHOOKS_PER_TENANT) throw new PaddockError("ERR_WEBHOOK_LIMIT", `tenant ${tenantId} already has ${MAX_WEBHOOKS_PER_TENANT} webhooks`);
    const hook: WebhookRecord = { id: "wh_" + randomBytes(8).toString("hex"), url: input.url, events: input.events ?? null, secret: input.secret ?? newWebhookSecret(), createdAt: new Date().toISOString() };
    await o.addWebhook(hook);
    const feed = this.syncFeed(tenantId);
    await feed?.waitConnected(FEED_OPEN_WAIT_MS);
    return hook;
  }

  /**
   * A tenant's webhooks (secrets included: the route leaves them out).
   * @throws PaddockError ERR_TENANT_NOT_FOUND.
   */
  list(tenantId: string): WebhookRecord[] {
    this.checkTenant(tenantId);
    return this.outboxes.get(tenantId)?.webhooks() ?? [];
  }

  /**
   * Remove a webhook and its pending deliveries.
   * @throws PaddockError ERR_TENANT_NOT_FOUND, ERR_WEBHOOK_NOT_FOUND.
   */
  async remove(tenantId: string, webhookId: string): Promise<void> {
    this.checkTenant(tenantId);
    const o = this.outboxes.get(tenantId);
    if (!o || !(await o.removeWebhook(webhookId))) throw new PaddockError("ERR_WEBHOOK_NOT_FOUND", `tenant ${tenantId} has no webhook ${webhookId}`);
    this.syncFeed(tenantId);
  }

  /**
   * A page of a webhook's delivery log, newest first.
   * @throws PaddockError ERR_TENANT_NOT_FOUND, ERR_WEBHOOK_NOT_FOUND.
   */
  deliveries(tenantId: string, webhookId: string, limit: number, beforeSeq: number | undefined): { deliveries: Delivery[]; nextBefore: number | undefined } {
    this.checkTenant(tenantId);
    const o = this.outboxes.get(tenantId);
    if (!o?.webhook(webhookId)) throw new PaddockError("ERR_WEBHOOK_NOT_FOUND", `tenant ${tenantId} has no webhook ${webhookId}`);
    return o.page(webhookId, limit, beforeSeq);
  }

  /** Pending deliveries over all tenants (the outbox depth gauge). */
  outboxDepth(): number {
    let n = 0;
    for (const o of this.outboxes.values()) n += o.pendingCount();
    return n;
  }

  // ---- event sources --------------------------------------------------------------------

  /**
   * Take a tenant event (the sink of supervisor/events/tenant-events.ts): queue it durably for
   * the tenant's webhooks. A `deleted` event then starts the removal of the tenant's webhooks.
   */
  async takeTenantEvent(e: TenantEvent): Promise<void> {
    const o = this.outboxes.get(e.tenant);
    if (!o) return;
    const queued = await o.enqueue(tenantEventBody(e));
    if (e.type !== "deleted") {
      if (queued.length) this.dispatcher.kick();
      return;
    }
    this.feeds.get(e.tenant)?.stop();
    this.feeds.delete(e.tenant);
    // No longer listed: the dispatcher leaves it to the final attempts.
    this.outboxes.delete(e.tenant);
    this.gapAt.delete(e.tenant);
    const p = (async () => {
      await this.dispatcher.finalAttempts(o, FINAL_ATTEMPTS_MS);
      await o.remove();
    })().catch((err: unknown) => this.log.error("could not finish the webhooks of a deleted tenant", { tenant: e.tenant, err }));
    this.removals.add(p);
    void p.finally(() => this.removals.delete(p));
  }

  /** The tenant's daemon became ready: reconnect its event stream now. */
  daemonReady(tenantId: string): void {
    this.feeds.get(tenantId)?.poke();
  }

  /** Stop: feeds closed, in-flight deliveries aborted (they stay pending), journals closed. */
  async close(): Promise<void> {
    for (const f of this.feeds.values()) f.stop();
    this.feeds.clear();
    await this.dispatcher.close();
    await Promise.allSettled([...this.removals]);
    await Promise.allSettled([...this.outboxes.values()].map((o) => o.close()));
  }

  // ---- inside ---------------------------------------------------------------------------

  /** @throws PaddockError ERR_TENANT_NOT_FOUND. */
  private checkTenant(tenantId: string): string {
    // The id becomes a directory name: only the registry's id shape, whatever the registry answers.
    const status = TENANT_ID_PATTERN.test(tenantId) ? this.deps.tenantStatus(tenantId) : undefined;
    if (status === undefined) throw new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${tenantId} not found`);
    return status;
  }

  /** The tenant's outbox, opened (created with `create`) when missing. @throws PaddockError ERR_TENANT_NOT_FOUND, ERR_TENANT_INVALID. */
  private async outboxFor(tenantId: string, create: boolean): Promise<TenantOutbox> {
    const status = this.checkTenant(tenantId);
    if (status === "deleting") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${tenantId} is being deleted`);
    let o = this.outboxes.get(tenantId);
    if (!o && create) {
      // The id passed TENANT_ID_PATTERN in the registry: a single path component.
      o = await TenantOutbox.open(tenantId, path.join(this.deps.dir, tenantId));
      this.outboxes.set(tenantId, this.outboxes.get(tenantId) ?? o);
      o = this.outboxes.get(tenantId) as TenantOutbox;
    }
    if (!o) throw new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${tenantId} has no webhooks`);
    return o;
  }

  /** Run the tenant's daemon feed while it has an enabled webhook; stop it otherwise. @returns the feed, if running. */
  private syncFeed(tenantId: string): DaemonEventFeed | undefined {
    const o = this.outboxes.get(tenantId);
    const wanted = o !== undefined && o.webhooks().some((h) => h.disabledAt === undefined);
    let feed = this.feeds.get(tenantId);
    if (!wanted) {
      feed?.stop();
      this.feeds.delete(tenantId);
      return undefined;
    }
    if (!feed) {
      const log = this.log.child({ tenant: tenantId });
      feed = new DaemonEventFeed({ socketPath: this.deps.socketPath(tenantId), cursor: () => o.vmCursor(), handle: (item) => this.takeVmItem(o, item, log), log });
      this.feeds.set(tenantId, feed);
      feed.start();
    }
    return feed;
  }

  /** Store one item of the daemon's feed (an event, or a reset that may be a gap). */
  private async takeVmItem(o: TenantOutbox, item: FeedItem, log: Logger): Promise<void> {
    const cursor = o.vmCursor();
    if (item.kind === "reset") {
      // Without a cursor nothing was promised yet; with one, events after it may be gone.
      if (cursor !== undefined && (item.firstId === null || item.firstId > cursor + 1) && this.gapAt.get(o.tenantId) !== cursor) {
        this.gapAt.set(o.tenantId, cursor);
        const message = `VM events after id ${cursor} may be lost: the daemon no longer held them (it restarted, or they passed its retention); the first it still held was ${item.firstId ?? "none"}`;
        log.warn("daemon event stream reset: events may be lost", { after_id: cursor, first_id: item.firstId });
        await o.recordGap(message, `vm-gap-${cursor}`, undefined);
      }
      return;
    }
    // After a reset the daemon replays what it holds: what the cursor covers was stored already.
    if (cursor !== undefined && item.event.id <= cursor) return;
    const queued = await o.enqueue(vmEventBody(o.tenantId, item.event), { vmCursor: item.event.id });
    if (queued.length) this.dispatcher.kick();
  }
}
