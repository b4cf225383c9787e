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

/** What {@link EventLog.since} found for a `Last-Event-ID`. */
export type Replay = RingReplay<VmEvent>;

/** Numbered VM events in a ring bounded by count and age, and their live subscribers (shared/events/event-ring.ts). */
export class EventLog extends EventRing<VmEvent> {}
