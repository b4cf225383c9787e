/**
 * `GET /events`: the tenant's VM lifecycle events as a server-sent-events stream
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html). Each event is
 *
 *     id: <integer>
 *     event: <type>
 *     data: {"id":…,"type":…,"hostname":…,"hostgroup":…,"reason":…,"time":…}
 *
 * A `Last-Event-ID` header (what EventSource sends when it reconnects) replays exactly the
 * events after that id while the ring (tenant-daemon/events/event-log.ts) still holds them;
 * otherwise the stream starts with one `event: reset` (data `{"reason":"retention","first_id":…}`)
 * followed by every event still held: the client missed some and should list `/nodes` again.
 * A comment line every {@link HEARTBEAT_MS} keeps idle proxies from closing the stream. A
 * client that reads more slowly than events arrive is cut off once more than
 * `maxBufferedBytes` wait unsent: it gets a final `event: dropped` and the connection closes.
 */
import type { Request, RequestHandler } from "express";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { DaemonEvent, EventLog } from "../events/event-log.js";
import type { RouteHandlers } from "./route-mount.js";

/** Interval of the keep-alive comment line, ms. */
export const HEARTBEAT_MS = 15_000;
/** Default bound of unsent bytes per client before it is dropped. */
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;
/** How long a dropped client's socket may take to take its last bytes before it is destroyed, ms. */
const DROP_GRACE_MS = 5_000;

/** What the events route reads. */
export interface EventRouteDeps {
  events: EventLog;
  logger: Logger;
  /** Unsent bytes per client above which it is dropped (default {@link DEFAULT_MAX_BUFFERED_BYTES}). */
  maxBufferedBytes?: number;
}

/** One SSE frame of `event`. */
function frame(event: DaemonEvent): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * The `Last-Event-ID` of a request (header, or `last_event_id` query for clients that cannot set
 * headers): undefined when absent; NaN (a reset) when not a decimal integer.
 * @throws PaddockError ERR_QUERY_INVALID when the query value is repeated.
 */
function lastEventId(req: Request): number | undefined {
  const q = req.query.last_event_id;
  if (Array.isArray(q)) throw new PaddockError("ERR_QUERY_INVALID", "last_event_id may be given once");
  const header = req.headers["last-event-id"];
  const raw = typeof header === "string" ? header : typeof q === "string" ? q : undefined;
  if (raw === undefined || raw === "") return undefined;
  return /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
}

/** The handlers of routes.ts group `events`. */
export function createEventHandlers(deps: EventRouteDeps): RouteHandlers["events"] {
  const maxBuffered = deps.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const log = deps.logger.child({ component: "events" });
  const stream: RequestHandler = (req, res) => {
    const replay = deps.events.since(lastEventId(req));
    res.status(200);
    res.setHeader("content-type", "text/event-stream; charset=utf-8");
    res.setHeader("cache-control", "no-cache, no-transform");
    // Reverse proxies that buffer by default (nginx) pass this stream through as it comes.
    res.setHeader("x-accel-buffering", "no");
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    let closed = false;
    const send = (text: string): void => {
      if (closed) return;
      res.write(text);
      if (res.writableLength > maxBuffered) drop();
    };
    const drop = (): void => {
      if (closed) return;
      log.warn("events client dropped: too slow", { buffered_bytes: res.writableLength, limit: maxBuffered });
      res.write(`event: dropped\ndata: ${JSON.stringify({ reason: "slow_client", buffered_bytes: res.writableLength, limit_bytes: maxBuffered })}\n\n`);
      stop();
      res.end();
      // A client that does not read at all would hold its buffer for ever.
      setTimeout(() => res.destroy(), DROP_GRACE_MS).unref();
    };
    const unsubscribe = deps.events.subscribe((e) => send(frame(e)));
    const heartbeat = setInterval(() => send(": keep-alive\n\n"), HEARTBEAT_MS);
    heartbeat.unref();
    function stop(): void {
      closed = true;
      unsubscribe();
      clearInterval(heartbeat);
    }
    res.on("close", stop);
    send("retry: 2000\n\n");
    if (replay.kind === "reset") send(`event: reset\ndata: ${JSON.stringify({ reason: "retention", first_id: replay.events[0]?.id ?? null })}\n\n`);
    for (const e of replay.events) send(frame(e));
  };
  return { stream };
}
