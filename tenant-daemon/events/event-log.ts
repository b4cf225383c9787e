/**
 * The tenant daemon's lifecycle event log: every VM transition (created, ready, paused, resumed,
 * suspended, restored, stopped, relaunched, expired, exited, deleted), and OOM kills inside a VM
 * that keeps running (oom), with its reason, numbered,
 * kept in a bounded ring for `Last-Event-ID` resumes and fanned out to live subscribers (the
 * `GET /events` stream, tenant-daemon/api/events-routes.ts). In memory only: a daemon restart
 * starts a new log whose ids are all above the previous run's. The ring itself is
 * shared/events/event-ring.ts; the wire types are shared/events/vm-events.ts.
 */
import { EventRing, type RingReplay } from "../../shared/events/event-ring.js";
import type { VmEvent } from "../../shared/events/vm-events.js";

export type { VmEvent, VmEventReason, VmEventType } from "../../shared/events/vm-events.js";
export { DEFAULT_EVENT_RETENTION } from "../../shared/events/event-ring.js";

/** What a caller gives {@link EventLog.emit}; the log adds `id` and `time`. */
export type VmEventInput = Omit<VmEvent, "id" | "time">;

/** What an egress refusal names: the client, the target, why, and for HTTP the method and path. */
export interface EgressRefusal {
  /** The proxy client (from the VM's address or its proxy token). */
  client: string;
  host: string;
  port: number;
  /** Why: `no_rule`, `method_path`, `sni_mismatch`, `upstream_refused`, `not_tls`, `bad_host_header`. */
  reason: string;
  method?: string;
  /** The request path without its query (TLS-intercepted and plain HTTP requests). */
  path?: string;
}

/**
 * An egress proxy event (tenant-daemon/proxy/egress-telemetry.ts): `egress_denied` (a request
 * the proxy refused) or `egress_audit` (one it would have refused, let through in audit mode).
 * Rate-limited: at most one per client and host per window, `suppressed` counting the like
 * ones the window swallowed before it, and a cap on all of them per window.
 */
export interface EgressEvent extends EgressRefusal {
  id: number;
  type: "egress_denied" | "egress_audit";
  /** Like events of this client and host not sent since the previous one. */
  suppressed: number;
  time: string;
}

/** What the proxy gives {@link EventLog.emit} for an egress event. */
export type EgressEventInput = Omit<EgressEvent, "id" | "time">;

/** Every event of the log. */
export type DaemonEvent = VmEvent | EgressEvent;

/** What {@link EventLog.since} found for a `Last-Event-ID`. */
export type Replay = RingReplay<DaemonEvent>;

/**
 * Numbered VM and egress events in a ring bounded by count and age, and their live subscribers
 * (shared/events/event-ring.ts).
 */
export class EventLog extends EventRing<DaemonEvent> {
  /** Number, timestamp, store and deliver an event to every subscriber (synchronously). @returns the stored event. */
  override emit(input: VmEventInput): VmEvent;
  override emit(input: EgressEventInput): EgressEvent;
  override emit(input: VmEventInput | EgressEventInput): DaemonEvent {
    return super.emit(input as Omit<DaemonEvent, "id" | "time">);
  }
}

/** Whether `e` is a VM transition (it names a VM), not an egress event. */
export function isVmEvent(e: DaemonEvent): e is VmEvent {
  return "hostname" in e;
}
