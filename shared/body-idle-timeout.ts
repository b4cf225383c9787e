/**
 * An idle bound on the INCOMING request body of an HTTP server
 * (docs/slicer-api.md#where-it-is-served): a client that sends headers and then trickles the body
 * (or stops sending it) must not hold a request open forever, yet the servers set
 * `requestTimeout = 0` so that long exec streams and waits are never cut.
 *
 * Rule: while a request's body is still being received and no response has started, the
 * request fails when no body byte arrives for `idleMs`: 408 `ERR_REQUEST_BODY_TIMEOUT`
 * (JSON, connection closed) if no header was sent, else the socket is destroyed.
 * - Never applies to a request without a body (no Transfer-Encoding, Content-Length absent or 0:
 *   no timer is set), once the body is complete, once the response
 *   has started (an exec stream with stdin: a user who stops typing is not a trickle; the
 *   session is bounded by its own timeout), nor to upgrades (WebSocket shell/forward).
 * - Backpressure is not idleness: while received bytes wait in the request's buffer (the
 *   consumer, e.g. a guest reading stdin slowly, is behind), the clock does not run.
 * Progress is read from the socket's `bytesRead` (counted by the handle, so it works while
 * the parser consumes the socket natively), sampled every `checkEveryMs`.
 */
import type http from "node:http";
import { PaddockError, errorResponse } from "./errors.js";

/** Default idle limit on a request body still being received, ms. */
export const BODY_IDLE_TIMEOUT_MS = 60_000;

/** Options of {@link boundRequestBodyIdle}. */
export interface BodyIdleOptions {
  /** No body byte for this long while the body is being read ⇒ 408 / destroy, ms (default {@link BODY_IDLE_TIMEOUT_MS}). */
  idleMs?: number;
  /** Sampling interval, ms (default min(1000, idleMs / 4)). */
  checkEveryMs?: number;
  /** Called when a request is cut, before the 408 is written (for logs/metrics, or to add a header). */
  onTimeout?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}

/**
 * Whether a request carries a body (RFC 9112 §6.3,
 * https://www.rfc-editor.org/rfc/rfc9112#section-6.3): only with Transfer-Encoding or a
 * non-zero Content-Length. Valid from the `request` event on (headers parsed).
 */
export function requestHasBody(req: http.IncomingMessage): boolean {
  if (req.headers["transfer-encoding"] !== undefined) return true;
  const length = req.headers["content-length"];
  return length !== undefined && length !== "0";
}

/**
 * Install the body idle bound on `server` (before its request handler runs).
 * @param server an http.Server; its `request` listeners are not otherwise changed.
 */
export function boundRequestBodyIdle(server: http.Server, opts: BodyIdleOptions = {}): void {
  const idleMs = opts.idleMs ?? BODY_IDLE_TIMEOUT_MS;
  if (!(idleMs > 0)) return;
  const everyMs = opts.checkEveryMs ?? Math.max(10, Math.min(1000, Math.floor(idleMs / 4)));
  server.prependListener("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    // A bodyless request (most: GET /nodes, exec without stdin) needs no timer. `complete` is
    // still false here even for those (the parser emits `request` before the message end).
    if (req.complete || !requestHasBody(req)) return;
    const socket = req.socket;
    let lastBytes = socket.bytesRead;
    let lastProgress = Date.now();
    const stop = (): void => {
      clearInterval(timer);
      res.off("close", stop);
    };
    const timer = setInterval(() => {
      if (req.complete || res.headersSent || res.writableEnded || req.destroyed || socket.destroyed) {
        stop();
        return;
      }
      const bytes = socket.bytesRead;
      if (bytes !== lastBytes || req.readableLength > 0) {
        lastBytes = bytes;
        lastProgress = Date.now();
        return;
      }
      if (Date.now() - lastProgress < idleMs) return;
      stop();
      opts.onTimeout?.(req, res);
      const err = new PaddockError("ERR_REQUEST_BODY_TIMEOUT", `no request body bytes received for ${idleMs} ms`);
      const r = errorResponse(err);
      const body = JSON.stringify(r.body);
      // Respond, then close: the rest of the body will never be read.
      res.shouldKeepAlive = false;
      res.writeHead(r.status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), connection: "close" });
      res.end(body, () => socket.destroy());
      // Whatever the route does next (a proxy's upstream request, a body parser) sees the
      // request end as aborted.
      req.unpipe();
    }, everyMs);
    timer.unref();
    res.on("close", stop);
  });
}
