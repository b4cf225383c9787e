/**
 * A small server-sent-events client for tests: a real `http.request` (Unix socket or TCP) whose
 * `text/event-stream` body is parsed by the product's parser (shared/events/sse-parser.ts).
 */
import http from "node:http";
import type { Target } from "./http.js";
import { SseParser } from "../../shared/events/sse-parser.js";

/** One dispatched event: `event` defaults to `message`; `json` is `data` parsed when it is JSON. */
export interface SseEvent {
  id: string | undefined;
  event: string;
  data: string;
  json: Record<string, unknown> | undefined;
}

/** An open event stream. */
export class SseClient {
  /** Every event received so far, in order. */
  readonly events: SseEvent[] = [];
  /** The response status and headers. */
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  /** True once the server ended the stream or the connection failed. */
  ended = false;
  private waiters: (() => void)[] = [];
  private req: http.ClientRequest | undefined;
  private res: http.IncomingMessage | undefined;

  /**
   * Open `path` on `target` with `headers` (e.g. Last-Event-ID, Authorization); resolves once
   * the response headers arrived. @throws Error when the connection fails.
   */
  static open(target: Target, path = "/events", headers: Record<string, string> = {}): Promise<SseClient> {
    const c = new SseClient();
    return new Promise((resolve, reject) => {
      const req = http.request({ ...target, method: "GET", path, headers: { accept: "text/event-stream", ...headers } });
      c.req = req;
      req.on("error", (err) => {
        c.finish();
        reject(err);
      });
      req.on("response", (res) => {
        c.res = res;
        c.status = res.statusCode ?? 0;
        c.headers = res.headers;
        res.setEncoding("utf8");
        // A test stream may carry large events; the bound only guards against a runaway peer.
        const parser = new SseParser(64 * 1024 * 1024);
        res.on("data", (chunk: string) => {
          for (const m of parser.push(chunk)) {
            let json: Record<string, unknown> | undefined;
            try {
              json = JSON.parse(m.data) as Record<string, unknown>;
            } catch {
              json = undefined;
            }
            c.events.push({ ...m, json });
            c.wake();
          }
        });
        res.on("end", () => c.finish());
        res.on("error", () => c.finish());
        resolve(c);
      });
      req.end();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private finish(): void {
    this.ended = true;
    this.wake();
  }

  /**
   * Resolve with the first event (from index `from` on) matching `pred`.
   * @throws Error when the stream ends first or after `timeoutMs`, listing what it received.
   */
  async waitFor(pred: (e: SseEvent) => boolean, timeoutMs = 60_000, from = 0): Promise<SseEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.slice(from).find(pred);
      if (found) return found;
      if (this.ended) throw new Error(`event stream ended first; received: ${this.summary()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching event after ${timeoutMs} ms; received: ${this.summary()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Resolve once the server ended the stream. @throws Error after `timeoutMs`. */
  async waitEnd(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error("event stream still open");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Stop reading (the socket's receive window fills; the server's buffer grows). */
  pause(): void {
    this.res?.pause();
  }

  /** Read again after {@link pause}. */
  resume(): void {
    this.res?.resume();
  }

  /** `type hostname reason` of each event, for messages. */
  summary(): string {
    return (this.events.length > 20 ? `(${this.events.length - 20} more) ` : "") + this.events.slice(-20).map((e) => `${e.event}${e.json?.hostname ? ` ${String(e.json.hostname)}` : ""}${e.json?.reason ? ` (${String(e.json.reason)})` : ""}`).join(", ");
  }

  /** Close the connection. */
  close(): void {
    this.req?.destroy();
    this.res?.destroy();
    this.finish();
  }
}
