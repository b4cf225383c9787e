/**
 * One tenant's durable webhook state: its webhooks (with their signing secrets), the outbox of
 * deliveries with their attempts, and the cursor of the daemon's VM event stream (the last VM
 * event id stored). It lives in `<state>/supervisor/webhooks/<tenant>/journal.ndjson` (0600, in
 * a 0700 dir the supervisor alone writes): an append-only journal, one JSON record a line, each
 * append fsynced before it resolves, so an event is "taken" only once it is on disk. Loading
 * replays the journal; a torn last line (a crash mid-append) is ignored, anything else that does
 * not parse refuses the load (ERR_STATE_CORRUPT: never overwritten). When the journal passes
 * {@link COMPACT_BYTES} it is rewritten as a snapshot of what is live (temp file + fsync +
 * rename, shared/state-store.ts `writeFileAtomic`).
 *
 * Pure bookkeeping: no HTTP here (supervisor/webhooks/dispatcher.ts delivers).
 */
import { promises as fs, constants as fsConstants } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { writeFileAtomic } from "../../shared/state-store.js";

/** Journal size that triggers a compaction, bytes. */
export const COMPACT_BYTES = 1 << 20;
/** Finished (delivered, failed, gap) deliveries kept per webhook for the delivery log. */
export const FINISHED_KEPT = 500;
/** Pending deliveries per webhook beyond which new events are recorded as a gap, not queued. */
export const MAX_PENDING = 10_000;

/** A webhook as stored. `events` null: every event type. */
export interface WebhookRecord {
  id: string;
  url: string;
  events: string[] | null;
  /** The signing secret (HMAC key), shown to the operator once at creation. */
  secret: string;
  createdAt: string;
  /** Set when the receiver answered 410 Gone: no more deliveries. */
  disabledAt?: string;
  disabledReason?: string;
}

/** `pending` (queued or between attempts), `delivered` (a 2xx), `failed` (given up), `gap` (events missed, nothing sent). */
export type DeliveryState = "pending" | "delivered" | "failed" | "gap";

/** One event for one webhook and what became of it. */
export interface Delivery {
  /** `dlv_` + 24 hex digits; the `Paddock-Delivery-Id` header. */
  id: string;
  webhookId: string;
  /** Order within the tenant's outbox. */
  seq: number;
  /** `vm-<id>` or `tenant-<id>`; the `Paddock-Event-Id` header (receivers dedupe by it). */
  eventId: string;
  /** `vm.created`, `tenant.suspended`, …; undefined for a gap. */
  eventType: string | undefined;
  /** The exact JSON body sent and signed. */
  body: string;
  state: DeliveryState;
  attempts: number;
  lastStatus?: number;
  lastError?: string;
  /** When the next attempt is due (pending only), ms since the epoch. */
  nextAttemptAtMs?: number;
  deliveredAt?: string;
  createdAt: string;
}

/** A journal record. */
type JournalRecord =
  | { op: "hook"; hook: WebhookRecord }
  | { op: "unhook"; id: string }
  | { op: "disable"; id: string; at: string; reason: string }
  | { op: "enq"; d: Delivery }
  | { op: "att"; wh: string; id: string; attempts: number; status?: number; error?: string; next: number }
  | { op: "end"; wh: string; id: string; state: "delivered" | "failed"; attempts: number; status?: number; error?: string; at: string }
  | { op: "cursor"; vm: number };

/** What a caller queues: one event, with its body, for the webhooks whose filter takes `eventType`. */
export interface OutboxEvent {
  eventId: string;
  eventType: string;
  body: string;
}

/** The outcome of one attempt, as the dispatcher reports it. */
export type AttemptOutcome =
  | { kind: "delivered"; status: number }
  | { kind: "retry"; status?: number; error: string; nextAttemptAtMs: number }
  | { kind: "failed"; status?: number; error: string }
  | { kind: "gone"; status: number };

/** A new delivery id. */
function deliveryId(): string {
  return "dlv_" + randomBytes(12).toString("hex");
}

/** One tenant's webhooks, deliveries and VM cursor, kept in memory and journaled. */
export class TenantOutbox {
  readonly tenantId: string;
  readonly dir: string;
  private readonly file: string;
  private readonly hooks = new Map<string, WebhookRecord>();
  /** By webhook: deliveries oldest first (pending and the kept finished ones). */
  private readonly deliveries = new Map<string, Delivery[]>();
  private cursor: number | undefined;
  private seq = 0;
  private handle: fs.FileHandle | undefined;
  private bytes = 0;
  private chain: Promise<unknown> = Promise.resolve();
  /** Set by {@link close} and {@link remove}: later appends are refused. */
  private closed = false;

  private constructor(tenantId: string, dir: string) {
    this.tenantId = tenantId;
    this.dir = dir;
    this.file = path.join(dir, "journal.ndjson");
  }

  /**
   * Open (creating dir 0700 and file 0600 when missing) and replay the tenant's journal.
   * @throws PaddockError ERR_STATE_CORRUPT when a record other than a torn last line does not parse.
   */
  static async open(tenantId: string, dir: string): Promise<TenantOutbox> {
    const o = new TenantOutbox(tenantId, dir);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    let text = "";
    try {
      text = await fs.readFile(o.file, "utf8");
    } catch (err) {
      if (errnoCode(err) !== "ENOENT") throw err;
    }
    const lines = text.split("\n");
    const complete = text.endsWith("\n") || text === "" ? lines.length - 1 : lines.length;
    for (let i = 0; i < complete; i++) {
      const line = lines[i] as string;
      if (line === "") continue;
      let rec: JournalRecord;
      try {
        rec = JSON.parse(line) as JournalRecord;
      } catch (err) {
        // A crash mid-append leaves a torn last line: the append never resolved, drop it.
        if (i === complete - 1 && !text.endsWith("\n")) break;
        throw new PaddockError("ERR_STATE_CORRUPT", `webhook journal ${o.file} line ${i + 1} is not valid JSON; refusing to load it (move it aside to recover)`, { cause: err });
      }
      o.apply(rec);
    }
    // Rewrite at once: drops a torn tail, so the next append starts on a line of its own.
    await o.compact();
    return o;
  }

  // ---- reads --------------------------------------------------------------------------

  /** The webhooks, oldest first. */
  webhooks(): WebhookRecord[] {
    return [...this.hooks.values()];
  }

  /** One webhook, or undefined. */
  webhook(id: string): WebhookRecord | undefined {
    return this.hooks.get(id);
  }

  /** The last VM event id stored (undefined: none yet). */
  vmCursor(): number | undefined {
    return this.cursor;
  }

  /** The oldest pending delivery of `webhookId` (deliveries of a webhook go out in order). */
  head(webhookId: string): Delivery | undefined {
    return this.deliveries.get(webhookId)?.find((d) => d.state === "pending");
  }

  /** Pending deliveries of every webhook. */
  pendingCount(): number {
    let n = 0;
    for (const list of this.deliveries.values()) for (const d of list) if (d.state === "pending") n++;
    return n;
  }

  /**
   * A page of `webhookId`'s delivery log, newest first: at most `limit` deliveries with `seq`
   * below `beforeSeq` (all when undefined). @returns the page and the seq to ask for next (undefined at the end).
   */
  page(webhookId: string, limit: number, beforeSeq: number | undefined): { deliveries: Delivery[]; nextBefore: number | undefined } {
    const list = (this.deliveries.get(webhookId) ?? []).filter((d) => beforeSeq === undefined || d.seq < beforeSeq);
    const out = list.slice(-limit).reverse();
    const last = out[out.length - 1];
    return { deliveries: out, nextBefore: list.length > limit && last ? last.seq : undefined };
  }

  // ---- changes (each journaled and fsynced before it resolves) -------------------------

  /** Add a webhook. */
  async addWebhook(hook: WebhookRecord): Promise<void> {
    await this.append([{ op: "hook", hook }]);
  }

  /** Remove a webhook and its deliveries (pending ones are never sent). @returns false when unknown. */
  async removeWebhook(id: string): Promise<boolean> {
    if (!this.hooks.has(id)) return false;
    await this.append([{ op: "unhook", id }]);
    return true;
  }

  /**
   * Queue `event` for every enabled webhook whose filter takes it, and move the VM cursor to
   * `vmCursor` when given, in one fsynced append. An event already queued for a webhook (same
   * event id, e.g. re-read after a crash before the cursor was stored) is not queued twice.
   * @returns the deliveries queued.
   */
  async enqueue(event: OutboxEvent, opts: { vmCursor?: number } = {}): Promise<Delivery[]> {
    const recs: JournalRecord[] = [];
    const now = Date.now();
    for (const h of this.hooks.values()) {
      if (h.disabledAt !== undefined) continue;
      if (h.events !== null && !h.events.includes(event.eventType)) continue;
      const list = this.deliveries.get(h.id) ?? [];
      if (list.some((d) => d.eventId === event.eventId)) continue;
      const pending = list.filter((d) => d.state === "pending").length;
      const base = { id: deliveryId(), webhookId: h.id, seq: 0, eventId: event.eventId, createdAt: new Date(now).toISOString(), attempts: 0 };
      if (pending >= MAX_PENDING) {
        recs.push({ op: "enq", d: { ...base, eventType: event.eventType, body: "", state: "gap", lastError: `outbox full (${MAX_PENDING} pending): event not queued` } });
      } else {
        recs.push({ op: "enq", d: { ...base, eventType: event.eventType, body: event.body, state: "pending", nextAttemptAtMs: now } });
      }
    }
    if (opts.vmCursor !== undefined) recs.push({ op: "cursor", vm: opts.vmCursor });
    if (recs.length === 0) return [];
    const queued = await this.append(recs);
    return queued.filter((d) => d.state === "pending");
  }

  /**
   * Record in every webhook's delivery log that VM events after `afterId` up to `firstHeldId`
   * may be lost (the daemon no longer held them), and move the cursor.
   */
  async recordGap(message: string, eventId: string, vmCursor: number | undefined): Promise<void> {
    const recs: JournalRecord[] = [];
    const at = new Date().toISOString();
    for (const h of this.hooks.values()) {
      recs.push({ op: "enq", d: { id: deliveryId(), webhookId: h.id, seq: 0, eventId, eventType: undefined, body: "", state: "gap", attempts: 0, lastError: message, createdAt: at } });
    }
    if (vmCursor !== undefined) recs.push({ op: "cursor", vm: vmCursor });
    if (recs.length) await this.append(recs);
  }

  /** Record the outcome of an attempt at `d` (a 410 also disables the webhook). */
  async recordAttempt(d: Delivery, outcome: AttemptOutcome): Promise<void> {
    const attempts = d.attempts + 1;
    const at = new Date().toISOString();
    const recs: JournalRecord[] = [];
    switch (outcome.kind) {
      case "delivered":
        recs.push({ op: "end", wh: d.webhookId, id: d.id, state: "delivered", attempts, status: outcome.status, at });
        break;
      case "retry":
        recs.push({ op: "att", wh: d.webhookId, id: d.id, attempts, ...(outcome.status !== undefined ? { status: outcome.status } : {}), error: outcome.error, next: outcome.nextAttemptAtMs });
        break;
      case "failed":
        recs.push({ op: "end", wh: d.webhookId, id: d.id, state: "failed", attempts, ...(outcome.status !== undefined ? { status: outcome.status } : {}), error: outcome.error, at });
        break;
      case "gone":
        recs.push({ op: "end", wh: d.webhookId, id: d.id, state: "failed", attempts, status: outcome.status, error: "receiver answered 410 Gone: webhook disabled", at });
        recs.push({ op: "disable", id: d.webhookId, at, reason: "receiver answered 410 Gone" });
        break;
    }
    await this.append(recs);
  }

  /** Close the journal file (after every append settled); later appends are refused. */
  async close(): Promise<void> {
    this.closed = true;
    await this.chain.catch(() => undefined);
    await this.handle?.close().catch(() => undefined);
    this.handle = undefined;
  }

  /** Close and remove the tenant's webhook directory (the tenant was deleted). Later appends are dropped. */
  async remove(): Promise<void> {
    await this.close();
    await fs.rm(this.dir, { recursive: true, force: true });
  }

  // ---- journal ------------------------------------------------------------------------

  /** Apply `recs` in memory and append them with one fsync (serialised). @returns the deliveries `enq` records added. */
  private append(recs: JournalRecord[]): Promise<Delivery[]> {
    const next = this.chain.then(async () => {
      if (this.closed) throw new PaddockError("ERR_TENANT_UNAVAILABLE", `the webhook outbox of tenant ${this.tenantId} is closed (supervisor stopping, or tenant deleted)`);
      for (const r of recs) if (r.op === "enq") r.d.seq = ++this.seq;
      const text = recs.map((r) => JSON.stringify(r)).join("\n") + "\n";
      this.handle ??= await fs.open(this.file, fsConstants.O_WRONLY | fsConstants.O_APPEND | fsConstants.O_CREAT, 0o600);
      await this.handle.write(text);
      await this.handle.datasync();
      this.bytes += Buffer.byteLength(text);
      // In memory only once it is on disk: what the dispatcher sees is durable.
      const added: Delivery[] = [];
      for (const r of recs) {
        this.apply(r);
        if (r.op === "enq") added.push(r.d);
      }
      if (this.bytes > COMPACT_BYTES) await this.compact();
      return added;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Rewrite the journal as a snapshot of what is live (webhooks, cursor, kept deliveries). */
  private async compact(): Promise<void> {
    const recs: JournalRecord[] = [...this.hooks.values()].map((hook) => ({ op: "hook", hook }));
    if (this.cursor !== undefined) recs.push({ op: "cursor", vm: this.cursor });
    for (const list of this.deliveries.values()) for (const d of list) recs.push({ op: "enq", d });
    const text = recs.map((r) => JSON.stringify(r) + "\n").join("");
    await this.handle?.close();
    this.handle = undefined;
    await writeFileAtomic(this.file, text, 0o600);
    this.bytes = Buffer.byteLength(text);
  }

  /** Apply one record to the in-memory state (replay and live appends alike). */
  private apply(r: JournalRecord): void {
    switch (r.op) {
      case "hook":
        this.hooks.set(r.hook.id, r.hook);
        if (!this.deliveries.has(r.hook.id)) this.deliveries.set(r.hook.id, []);
        break;
      case "unhook":
        this.hooks.delete(r.id);
        this.deliveries.delete(r.id);
        break;
      case "disable": {
        const h = this.hooks.get(r.id);
        if (h) {
          h.disabledAt = r.at;
          h.disabledReason = r.reason;
        }
        break;
      }
      case "enq": {
        const list = this.deliveries.get(r.d.webhookId);
        if (!list) break;
        list.push(r.d);
        this.seq = Math.max(this.seq, r.d.seq);
        this.trimFinished(list);
        break;
      }
      case "att": {
        const d = this.deliveries.get(r.wh)?.find((x) => x.id === r.id);
        if (!d) break;
        d.attempts = r.attempts;
        if (r.status !== undefined) d.lastStatus = r.status;
        else delete d.lastStatus;
        if (r.error !== undefined) d.lastError = r.error;
        d.nextAttemptAtMs = r.next;
        break;
      }
      case "end": {
        const list = this.deliveries.get(r.wh);
        const d = list?.find((x) => x.id === r.id);
        if (!list || !d) break;
        d.state = r.state;
        d.attempts = r.attempts;
        if (r.status !== undefined) d.lastStatus = r.status;
        else delete d.lastStatus;
        if (r.error !== undefined) d.lastError = r.error;
        else delete d.lastError;
        delete d.nextAttemptAtMs;
        if (r.state === "delivered") d.deliveredAt = r.at;
        // The body is only needed to send it: a finished delivery keeps its log line, not its payload.
        d.body = "";
        this.trimFinished(list);
        break;
      }
      case "cursor":
        this.cursor = r.vm;
        break;
    }
  }

  /** Keep at most {@link FINISHED_KEPT} finished deliveries in `list` (the oldest go). */
  private trimFinished(list: Delivery[]): void {
    let finished = 0;
    for (const d of list) if (d.state !== "pending") finished++;
    for (let i = 0; finished > FINISHED_KEPT && i < list.length;) {
      if ((list[i] as Delivery).state !== "pending") {
        list.splice(i, 1);
        finished--;
      } else i++;
    }
  }
}
