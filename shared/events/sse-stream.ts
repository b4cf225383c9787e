/**
 * Serving an {@link EventRing} as a server-sent-events stream
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html). Each event is
 *
 *     id: <integer>
 *     event: <type>
 *     data: <the event as JSON>
 *
 * A `Last-Event-ID` header (what EventSource sends when it reconnects) replays exactly the
 * events after that id while the ring still holds them; otherwise the stream starts with one
 * `event: reset` (data `{"reason":"retention","first_id":…}`) followed by every event still
 * held: the client missed some and should re-read the state. A comment line every
 * {@link HEARTBEAT_MS} keeps idle proxies from closing the stream. A client that reads more
 * slowly than events arrive is cut off once more than `maxBufferedBytes` wait unsent: it gets a
 * final `event: dropped` and the connection closes. Used by the tenant daemon's `GET /events`
 * and the supervisor's `GET /admin/v1/events`.
 */
import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import { PaddockError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { EventRing, RingEvent } from "./event-ring.js";

/** Interval of the keep-alive comment line, ms. */
export const HEARTBEAT_MS = 15_000;
/** Default bound of unsent bytes per client before it is dropped. */
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;
/** How long a dropped client's socket may take to take its last bytes before it is destroyed, ms. */
const DROP_GRACE_MS = 5_000;

/** One SSE frame of `event`. */
function frame(event: RingEvent & { type: string }): string {
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * The `Last-Event-ID` of a request (header, or `last_event_id` query for clients that cannot set
 * headers): undefined when absent; NaN (a reset) when not a decimal integer.
 * @param query the parsed query (`req.query`)
 * @throws PaddockError ERR_QUERY_INVALID when the query value is repeated.
 */
export function lastEventId(headers: IncomingHttpHeaders, query: Record<string, unknown>): number | undefined {
  const q = query.last_event_id;
  if (Array.isArray(q)) throw new PaddockError("ERR_QUERY_INVALID", "last_event_id may be given once");
  const header = headers["last-event-id"];
  const raw = typeof header === "string" ? header : typeof q === "string" ? q : undefined;
  if (raw === undefined || raw === "") return undefined;
  return /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
}

/** Options of {@link streamEvents}. */
export interface StreamEventsOptions<E> {
  /** The client's `Last-Event-ID` ({@link lastEventId}). */
  lastId: number | undefined;
  /** Logs the drop of a slow client. */
  log: Logger;
  /** Unsent bytes per client above which it is dropped (default {@link DEFAULT_MAX_BUFFERED_BYTES}). */
  maxBufferedBytes?: number;
  /** Only events passing this are sent (replayed and live); default all. */
  filter?: (e: E) => boolean;
}

/**
 * Answer `res` with the event stream of `ring`: 200, the replay for `opts.lastId`, then every
 * new event until the client goes away (or is dropped as too slow).
 */
export function streamEvents<E extends RingEvent & { type: string }>(res: ServerResponse, ring: EventRing<E>, opts: StreamEventsOptions<E>): void {
  const maxBuffered = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  const pass = opts.filter ?? (() => true);
  const replay = ring.since(opts.lastId);
  res.statusCode = 200;
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
    opts.log.warn("events client dropped: too slow", { buffered_bytes: res.writableLength, limit: maxBuffered });
    res.write(`event: dropped\ndata: ${JSON.stringify({ reason: "slow_client", buffered_bytes: res.writableLength, limit_bytes: maxBuffered })}\n\n`);
    stop();
    res.end();
    // A client that does not read at all would hold its buffer for ever.
    setTimeout(() => res.destroy(), DROP_GRACE_MS).unref();
  };
  const unsubscribe = ring.subscribe((e) => {
    if (pass(e)) send(frame(e));
  });
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
  for (const e of replay.events) if (pass(e)) send(frame(e));
}
