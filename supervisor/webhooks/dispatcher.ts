/**
 * Delivering the outbox (supervisor/webhooks/outbox.ts): POST each pending delivery to its
 * webhook's URL, signed (supervisor/webhooks/signer.ts), and record what happened.
 *
 * - Order: a webhook's deliveries go out one at a time, oldest first; a delivery being retried
 *   holds back the later ones of its webhook until it is delivered or given up.
 * - Outcomes: any 2xx is delivered; 410 Gone disables the webhook (its pending deliveries stay in
 *   the log, unsent); anything else (another status, a connection error, no answer within
 *   `timeoutMs`, a redirect: none is followed) is retried after an exponential backoff with
 *   jitter — `initialBackoffMs · 2^(n-1)`, capped at `maxBackoffMs`, then a random 50–100 % of
 *   it — until `maxAttempts` attempts, then given up (`failed`).
 * - At most `concurrency` requests at once over all tenants; nothing here runs on an API
 *   request's path (the outbox append is all an event waits for).
 * - At least once: an attempt whose outcome was not yet journaled when the supervisor stopped is
 *   made again after the restart. Receivers dedupe by `Paddock-Event-Id`.
 */
import http from "node:http";
import https from "node:https";
import type { Logger } from "../../shared/logger.js";
import { PADDOCK_VERSION } from "../../shared/version.js";
import { signWebhook } from "./signer.js";
import type { AttemptOutcome, Delivery, TenantOutbox, WebhookRecord } from "./outbox.js";

/** Retry and transport settings (supervisor config `webhooks:`). */
export interface WebhookPolicy {
  /** Backoff after the first failed attempt, ms (doubled per attempt). */
  initialBackoffMs: number;
  /** Backoff cap, ms. */
  maxBackoffMs: number;
  /** Attempts before a delivery is given up. */
  maxAttempts: number;
  /** Bound of one request (connect to end of the answer's head), ms. */
  timeoutMs: number;
  /** Requests in flight at once over all webhooks. */
  concurrency: number;
}

/** Defaults: 1 s doubling to 1 h, 24 attempts (≈ 12 h), 10 s per request, 8 at once. */
export const DEFAULT_WEBHOOK_POLICY: Readonly<WebhookPolicy> = Object.freeze({ initialBackoffMs: 1000, maxBackoffMs: 3_600_000, maxAttempts: 24, timeoutMs: 10_000, concurrency: 8 });

/** Delivery results counted by the metrics (`paddock_webhook_deliveries_total{result}`). */
export type DeliveryResult = "delivered" | "retry" | "failed" | "gone";

/** The delay before attempt `attempts + 1`, ms: capped exponential backoff with 50–100 % jitter. */
export function backoffMs(policy: Pick<WebhookPolicy, "initialBackoffMs" | "maxBackoffMs">, attempts: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.min(40, Math.max(0, attempts - 1)));
  return Math.round(base * (0.5 + random() * 0.5));
}

/**
 * POST `body` to `url` with `headers`, bounded by `timeoutMs`; the answer's body is read (up to
 * 4 KiB, for the delivery log) and dropped. @returns the status. @throws Error on a transport
 * failure or timeout.
 */
function post(url: URL, headers: Record<string, string>, body: string, timeoutMs: number, signal: AbortSignal): Promise<{ status: number; text: string }> {
  const mod = url.protocol === "https:" ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method: "POST", headers: { ...headers, "content-length": String(Buffer.byteLength(body)) }, agent: false, signal }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        if (text.length < 4096) text += c.slice(0, 4096 - text.length);
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on("close", () => clearTimeout(timer));
    req.on("error", reject);
    req.end(body);
  });
}

/** Delivers every tenant's outbox. */
export class WebhookDispatcher {
  private readonly policy: WebhookPolicy;
  private readonly outboxes: () => Iterable<TenantOutbox>;
  private readonly log: Logger;
  private readonly onResult: (r: DeliveryResult) => void;
  /** In-flight attempts by delivery id. */
  private readonly inFlight = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Infinity;
  private closed = false;
  private readonly abort = new AbortController();

  /**
   * @param outboxes the live outboxes (a tenant being deleted is no longer listed)
   * @param onResult counts each attempt's result (metrics)
   */
  constructor(opts: { policy: WebhookPolicy; outboxes: () => Iterable<TenantOutbox>; log: Logger; onResult?: (r: DeliveryResult) => void }) {
    this.policy = opts.policy;
    this.outboxes = opts.outboxes;
    this.log = opts.log;
    this.onResult = opts.onResult ?? (() => undefined);
  }

  /** Look for due deliveries now (after an enqueue or an outcome) and schedule the next look. */
  kick(): void {
    if (this.closed) return;
    const now = Date.now();
    let nextDue = Infinity;
    for (const o of this.outboxes()) {
      for (const h of o.webhooks()) {
        if (h.disabledAt !== undefined) continue;
        const d = o.head(h.id);
        if (!d || this.inFlight.has(d.id)) continue;
        const due = d.nextAttemptAtMs ?? now;
        if (due > now) {
          nextDue = Math.min(nextDue, due);
          continue;
        }
        if (this.inFlight.size >= this.policy.concurrency) return; // an outcome kicks again
        this.start(o, h, d);
      }
    }
    this.schedule(nextDue);
  }

  /**
   * One last attempt at every pending delivery of `outbox` (a deleted tenant: its final
   * `deleted` event), in order per webhook, stopping at a webhook's first failure; bounded by
   * `deadlineMs` overall. Waits for the outbox's attempts already in flight first.
   */
  async finalAttempts(outbox: TenantOutbox, deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    await Promise.allSettled([...this.inFlight.values()]);
    await Promise.allSettled(outbox.webhooks().filter((h) => h.disabledAt === undefined).map(async (h) => {
      for (let d = outbox.head(h.id); d && Date.now() < end && !this.closed; d = outbox.head(h.id)) {
        const outcome = await this.attempt(outbox, h, d);
        // A final attempt: nothing comes after it, so a retry is recorded as given up.
        const final: AttemptOutcome = outcome.kind === "retry" ? { kind: "failed", ...(outcome.status !== undefined ? { status: outcome.status } : {}), error: `${outcome.error} (tenant deleted: not retried)` } : outcome;
        await this.record(outbox, d, final);
        if (final.kind !== "delivered") break;
      }
    }));
  }

  /** Stop: no new attempts, in-flight requests aborted (their deliveries stay pending and are retried after a restart). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private schedule(atMs: number): void {
    if (atMs === Infinity || this.closed) return;
    if (this.timer && this.timerAtMs <= atMs) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAtMs = atMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAtMs = Infinity;
      this.kick();
    }, Math.max(0, atMs - Date.now()));
    this.timer.unref();
  }

  private start(o: TenantOutbox, h: WebhookRecord, d: Delivery): void {
    const p = (async () => {
      const outcome = await this.attempt(o, h, d);
      if (this.closed && outcome.kind !== "delivered") return; // aborted by close: stays pending
      await this.record(o, d, outcome);
    })()
      .catch((err: unknown) => this.log.error("webhook delivery bookkeeping failed", { tenant: o.tenantId, webhook: h.id, delivery: d.id, err }))
      .finally(() => {
        this.inFlight.delete(d.id);
        this.kick();
      });
    this.inFlight.set(d.id, p);
  }

  private async record(o: TenantOutbox, d: Delivery, outcome: AttemptOutcome): Promise<void> {
    this.onResult(outcome.kind);
    const l = { tenant: o.tenantId, webhook: d.webhookId, delivery: d.id, event_id: d.eventId, attempt: d.attempts + 1 };
    if (outcome.kind === "delivered") this.log.info("webhook delivered", { ...l, status: outcome.status });
    else if (outcome.kind === "gone") this.log.warn("webhook receiver answered 410 Gone; webhook disabled", l);
    else this.log.warn(outcome.kind === "retry" ? "webhook delivery failed; will retry" : "webhook delivery given up", { ...l, status: outcome.status, error: outcome.error });
    await o.recordAttempt(d, outcome);
  }

  /** Make one attempt at `d` and classify the answer (never throws). */
  private async attempt(o: TenantOutbox, h: WebhookRecord, d: Delivery): Promise<AttemptOutcome> {
    const attempts = d.attempts + 1;
    const headers: Record<string, string> = {
      "content-type": "application/json",
      "user-agent": `Paddock-Webhooks/${PADDOCK_VERSION}`,
      "paddock-event-id": d.eventId,
      "paddock-event-type": d.eventType ?? "",
      "paddock-delivery-id": d.id,
      "paddock-delivery-attempt": String(attempts),
      "paddock-tenant": o.tenantId,
      "paddock-signature": signWebhook(h.secret, d.body),
    };
    let status: number | undefined;
    let error: string;
    try {
      const r = await post(new URL(h.url), headers, d.body, this.policy.timeoutMs, this.abort.signal);
      status = r.status;
      if (status >= 200 && status < 300) return { kind: "delivered", status };
      if (status === 410) return { kind: "gone", status };
      error = `receiver answered ${status}${r.text ? `: ${r.text.slice(0, 200)}` : ""}`;
    } catch (err) {
      error = (err as Error).message;
    }
    if (attempts >= this.policy.maxAttempts) return { kind: "failed", ...(status !== undefined ? { status } : {}), error: `${error} (gave up after ${attempts} attempts)` };
    return { kind: "retry", ...(status !== undefined ? { status } : {}), error, nextAttemptAtMs: Date.now() + backoffMs(this.policy, attempts) };
  }
}
