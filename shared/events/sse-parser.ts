/**
 * An incremental parser of a `text/event-stream` body as the WHATWG spec interprets it
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
 * `id`, `event`, `data` and `retry` fields, comments ignored, an event dispatched at a blank line;
 * `id` is the stream's last event ID, kept across events until another `id:` sets it. Bounded:
 * a line or an event longer than `maxEventBytes` is an error, so a peer cannot grow the buffer
 * without limit.
 */

/** One dispatched event: `event` defaults to `message`; `id` is the last `id:` field seen (undefined before any). */
export interface SseMessage {
  id: string | undefined;
  event: string;
  data: string;
}

/** Feed chunks with {@link SseParser.push}; it returns the events they completed. */
export class SseParser {
  private buf = "";
  private lastId: string | undefined;
  private event = "";
  private data: string[] = [];
  private dataBytes = 0;
  private readonly maxEventBytes: number;
  /** The last valid `retry:` field (the server's reconnection delay), ms; undefined before any. */
  retryMs: number | undefined;

  /** @param maxEventBytes the largest line and event accepted (default 64 KiB). */
  constructor(maxEventBytes = 64 * 1024) {
    this.maxEventBytes = maxEventBytes;
  }

  /**
   * Parse `chunk` (UTF-8 text).
   * @returns the events completed by it, in order.
   * @throws Error when a line or an event exceeds the bound.
   */
  push(chunk: string): SseMessage[] {
    this.buf += chunk;
    const out: SseMessage[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) !== -1) {
      const line = this.buf.slice(0, nl).replace(/\r$/, "");
      this.buf = this.buf.slice(nl + 1);
      if (line === "") {
        if (this.data.length > 0) out.push({ id: this.lastId, event: this.event || "message", data: this.data.join("\n") });
        this.event = "";
        this.data = [];
        this.dataBytes = 0;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") this.lastId = value;
      else if (field === "event") this.event = value;
      else if (field === "data") {
        this.dataBytes += value.length + 1;
        if (this.dataBytes > this.maxEventBytes) throw new Error(`event stream: an event is larger than ${this.maxEventBytes} bytes`);
        this.data.push(value);
      } else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
    }
    if (this.buf.length > this.maxEventBytes) throw new Error(`event stream: a line is longer than ${this.maxEventBytes} bytes`);
    return out;
  }
}
