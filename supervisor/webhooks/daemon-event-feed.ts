/**
 * Reading one tenant daemon's VM events for its webhooks: `GET /events` (docs/slicer-api.md) on
 * the daemon's Unix socket — a channel the supervisor created, never a path inside a tree a guest
 * writes — resumed with `Last-Event-ID` = the last VM event id stored in the tenant's outbox, so
 * events the daemon emitted while the supervisor was down (or between reconnects) are fetched as
 * long as the daemon still holds them. A `reset` (the daemon no longer holds what follows the
 * cursor, or it restarted) is handed on as such: what the daemon holds is taken and the gap is
 * recorded. Each event is checked field by field and rebuilt from the known fields before it is
 * handed on; a malformed one is logged and skipped. Events are handled one at a time (the
 * stream is paused meanwhile); the stream reconnects with backoff (250 ms doubling to 5 s) until
 * {@link DaemonEventFeed.stop}.
 */
import http from "node:http";
import type { Logger } from "../../shared/logger.js";
import { SseParser, type SseMessage } from "../../shared/events/sse-parser.js";
import { VM_EVENT_TYPES, type VmEvent, type VmEventType } from "../../shared/events/vm-events.js";

/** What the feed hands on. */
export type FeedItem =
  | { kind: "event"; event: VmEvent }
  /** The daemon could not resume after the cursor: `firstId` is the oldest event it still holds (null: none). */
  | { kind: "reset"; firstId: number | null };

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5000;

/**
 * A VM event rebuilt from the daemon's JSON, or undefined when a field is missing or wrong
 * (ids are safe integers; strings are bounded, so a daemon cannot make the outbox grow).
 */
export function readVmEvent(data: string): VmEvent | undefined {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const str = (x: unknown, max: number): x is string => typeof x === "string" && x.length > 0 && x.length <= max;
  if (!Number.isSafeInteger(o.id) || (o.id as number) < 0) return undefined;
  if (!VM_EVENT_TYPES.includes(o.type as VmEventType)) return undefined;
  if (!str(o.hostname, 253) || !str(o.hostgroup, 253) || !str(o.reason, 64) || !str(o.time, 64)) return undefined;
  const e: VmEvent = { id: o.id as number, type: o.type as VmEventType, hostname: o.hostname, hostgroup: o.hostgroup, reason: o.reason as VmEvent["reason"], time: o.time };
  if (str(o.deadline, 64)) e.deadline = o.deadline;
  if (o.action === "delete" || o.action === "shutdown") e.action = o.action;
  if (Number.isSafeInteger(o.oom_kills) && (o.oom_kills as number) >= 1) e.oom_kills = o.oom_kills as number;
  if (o.fallback_from === "suspend") {
    e.fallback_from = o.fallback_from;
    if (str(o.refusal, 1024)) e.refusal = o.refusal;
  }
  return e;
}

/** One tenant's subscription to its daemon's VM events. */
export class DaemonEventFeed {
  private readonly socketPath: string;
  private readonly cursor: () => number | undefined;
  private readonly handle: (item: FeedItem) => Promise<void>;
  private readonly log: Logger;
  private req: http.ClientRequest | undefined;
  private stopped = false;
  private backoffMs = MIN_BACKOFF_MS;
  private retryTimer: NodeJS.Timeout | undefined;
  private connectedWaiters: (() => void)[] = [];
  private connected = false;

  /**
   * @param cursor the last VM event id stored (the `Last-Event-ID` of each (re)connect)
   * @param handle takes one item durably; the next one waits for it. A rejection is logged and
   *   the stream reconnects from the cursor (the item is read again).
   */
  constructor(opts: { socketPath: string; cursor: () => number | undefined; handle: (item: FeedItem) => Promise<void>; log: Logger }) {
    this.socketPath = opts.socketPath;
    this.cursor = opts.cursor;
    this.handle = opts.handle;
    this.log = opts.log;
  }

  /** Connect (and keep reconnecting until {@link stop}). */
  start(): void {
    this.connect();
  }

  /** Reconnect now if waiting to (the daemon just became ready). */
  poke(): void {
    if (this.stopped || this.req) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.backoffMs = MIN_BACKOFF_MS;
    this.connect();
  }

  /** Resolve once the stream is open (the daemon's subscription exists), or after `timeoutMs`. */
  waitConnected(timeoutMs: number): Promise<void> {
    if (this.connected || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.connectedWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Close the stream and stop reconnecting. */
  stop(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.req?.destroy();
    this.req = undefined;
    this.wakeConnected();
  }

  private wakeConnected(): void {
    const w = this.connectedWaiters;
    this.connectedWaiters = [];
    for (const f of w) f();
  }

  private retryLater(why: string): void {
    this.connected = false;
    this.req = undefined;
    if (this.stopped || this.retryTimer) return;
    this.log.debug("daemon event stream closed; reconnecting", { why, in_ms: this.backoffMs });
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.connect();
    }, this.backoffMs);
    this.retryTimer.unref();
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
  }

  private connect(): void {
    if (this.stopped || this.req) return;
    const last = this.cursor();
    const req = http.request({ socketPath: this.socketPath, method: "GET", path: "/events", agent: false, headers: { accept: "text/event-stream", ...(last !== undefined ? { "last-event-id": String(last) } : {}) } });
    this.req = req;
    let failed = false;
    const fail = (why: string): void => {
      if (failed) return;
      failed = true;
      req.destroy();
      if (this.req === req) this.retryLater(why);
    };
    req.on("error", (err) => fail(err.message));
    req.on("response", (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        fail(`GET /events answered ${res.statusCode}`);
        return;
      }
      this.connected = true;
      this.backoffMs = MIN_BACKOFF_MS;
      this.wakeConnected();
      res.setEncoding("utf8");
      const parser = new SseParser();
      let queue: Promise<void> = Promise.resolve();
      res.on("data", (chunk: string) => {
        let msgs: SseMessage[];
        try {
          msgs = parser.push(chunk);
        } catch (err) {
          this.log.warn("daemon event stream refused", { err: (err as Error).message });
          fail((err as Error).message);
          return;
        }
        if (msgs.length === 0) return;
        res.pause();
        queue = queue.then(async () => {
          for (const m of msgs) {
            if (failed) return;
            const item = this.item(m);
            if (item) await this.handle(item);
          }
          if (!failed) res.resume();
        }).catch((err: unknown) => {
          this.log.error("could not store a daemon event; reconnecting from the cursor", { err });
          fail("handler failed");
        });
      });
      res.on("end", () => void queue.then(() => fail("stream ended")));
      res.on("error", (err) => fail(err.message));
    });
    req.end();
  }

  /** The item of one SSE message (undefined: not one the feed hands on). */
  private item(m: SseMessage): FeedItem | undefined {
    if (m.event === "reset") {
      let firstId: number | null = null;
      try {
        const v = (JSON.parse(m.data) as { first_id?: unknown }).first_id;
        if (Number.isSafeInteger(v)) firstId = v as number;
      } catch {}
      return { kind: "reset", firstId };
    }
    if (m.event === "dropped") return undefined; // the end follows; the reconnect resumes from the cursor
    // The egress proxy's refusals share the daemon's stream (tenant-daemon/events/event-log.ts) but
    // are not lifecycle events: they stay on GET /events and in the metrics, not in webhooks.
    if (m.event === "egress_denied" || m.event === "egress_audit") return undefined;
    const e = readVmEvent(m.data);
    if (!e) {
      this.log.warn("daemon sent a malformed VM event; skipped", { event: m.event, bytes: m.data.length });
      return undefined;
    }
    return { kind: "event", event: e };
  }
}
