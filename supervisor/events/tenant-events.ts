/**
 * The supervisor's tenant events: a tenant created, suspended, resumed, its daemon restarted
 * (after a crash or by the operator), deleted. Numbered in a ring (shared/events/event-ring.ts)
 * that `GET /admin/v1/events` streams with the same `Last-Event-ID`/`reset` semantics as a
 * daemon's `GET /events`, and handed to the webhooks (supervisor/webhooks/webhook-service.ts),
 * whose outbox is the durable part: the ring itself is in memory only.
 */
import { EventRing, type EventRingOptions } from "../../shared/events/event-ring.js";

/** The kinds of tenant event. */
export const TENANT_EVENT_TYPES = ["created", "suspended", "resumed", "daemon_restarted", "deleted"] as const;

/** A kind of tenant event. */
export type TenantEventType = (typeof TENANT_EVENT_TYPES)[number];

/**
 * A tenant event as stored and sent (SSE `data:` JSON). `time` is RFC 3339.
 * `reason`: `operator` (an admin API call) or, for `daemon_restarted`, `crash` (the daemon
 * exited on its own and the process manager started it again; `exit` says how it ended).
 * `message`: the suspension reason for `suspended`.
 */
export interface TenantEvent {
  id: number;
  type: TenantEventType;
  tenant: string;
  reason: "operator" | "crash";
  time: string;
  /** For `daemon_restarted` after a crash: how the daemon ended (`daemon exited with code 9`). */
  exit?: string;
  /** For `suspended`: the operator's reason. */
  message?: string;
}

/** What a publisher gives; the ring adds `id` and `time`. */
export type TenantEventInput = Omit<TenantEvent, "id" | "time">;

/** Receives every published tenant event and may take it durably before the publish resolves. */
export type TenantEventSink = (e: TenantEvent) => Promise<void>;

/** The supervisor's tenant event log and the sinks that must see each event. */
export class TenantEvents {
  /** The ring `GET /admin/v1/events` streams. */
  readonly ring: EventRing<TenantEvent>;
  private readonly sinks: TenantEventSink[] = [];

  constructor(opts: EventRingOptions = {}) {
    this.ring = new EventRing<TenantEvent>(opts);
  }

  /** Add a sink (the webhooks): it gets every event published from now on. */
  addSink(sink: TenantEventSink): void {
    this.sinks.push(sink);
  }

  /**
   * Number and store `input`, stream it to live clients, and wait until every sink took it
   * (the webhook outbox appends it with fsync). A failing sink is reported to `onError`; the
   * publish never throws.
   * @returns the stored event.
   */
  async publish(input: TenantEventInput, onError: (err: unknown) => void): Promise<TenantEvent> {
    const e = this.ring.emit(input);
    await Promise.all(this.sinks.map((s) => s(e).catch(onError)));
    return e;
  }
}
