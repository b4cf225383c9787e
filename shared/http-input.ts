/**
 * The request-target check both HTTP servers (gateway and tenant daemon) run before routing:
 * a path that cannot be decoded is the client's mistake (400), never a 500 from a
 * `decodeURIComponent` deep in a router; and the answer to a request Node's parser refused.
 */
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { PaddockError, errorResponse } from "./errors.js";

/**
 * Why a request target (`req.url`: path and optional query) is malformed, or undefined when
 * it is well formed. Checked: it starts with `/` (origin-form, RFC 9112 §3.2.1,
 * https://www.rfc-editor.org/rfc/rfc9112#section-3.2.1); every `%` in the path starts a
 * two-hex-digit escape; the path's escapes decode to valid UTF-8 (RFC 3986 §2.1,
 * https://www.rfc-editor.org/rfc/rfc3986#section-2.1); the same for the query, whose parser
 * (qs) would otherwise keep a bad escape as written (`cmd=%ZZ` ran the command `%ZZ`).
 */
export function requestTargetProblem(url: string | undefined): string | undefined {
  if (url === undefined || !url.startsWith("/")) return "the request target must be a path starting with /";
  const q = url.indexOf("?");
  const parts: Array<[string, string]> = [["path", q < 0 ? url : url.slice(0, q)], ["query", q < 0 ? "" : url.slice(q + 1)]];
  for (const [what, text] of parts) {
    if (!text.includes("%")) continue;
    if (/%(?![0-9A-Fa-f]{2})/.test(text)) return `the ${what} has a % that does not start a two-hex-digit escape`;
    try {
      decodeURIComponent(text);
    } catch {
      return `the ${what}'s percent-escapes do not decode to UTF-8`;
    }
  }
  return undefined;
}

/** llhttp parse errors about a header (https://github.com/nodejs/llhttp/blob/main/src/llhttp/constants.ts). */
const HEADER_PARSE_ERRORS = new Set(["HPE_INVALID_HEADER_TOKEN", "HPE_INVALID_CONTENT_LENGTH", "HPE_UNEXPECTED_CONTENT_LENGTH", "HPE_INVALID_TRANSFER_ENCODING", "HPE_INVALID_CHUNK_SIZE", "HPE_LF_EXPECTED", "HPE_CR_EXPECTED"]);

/**
 * The whole HTTP/1.1 answer (JSON error body, `connection: close`) for a request Node's
 * parser refused (`clientError`): 431 for oversized headers, 408 for headers not received
 * in time, 400 `ERR_HEADER_INVALID` for a malformed header, else 400 `ERR_BAD_REQUEST`.
 * @param err the `clientError` error (`code` is llhttp's `HPE_*` or `ERR_HTTP_REQUEST_TIMEOUT`).
 */
export function clientErrorReply(err: NodeJS.ErrnoException, extraHeaders: Record<string, string> = {}): string {
  const e = err.code === "HPE_HEADER_OVERFLOW" ? new PaddockError("ERR_BAD_REQUEST", "request headers too large", { status: 431 })
    : err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? new PaddockError("ERR_BAD_REQUEST", "request headers not received in time", { status: 408 })
      : HEADER_PARSE_ERRORS.has(err.code ?? "") ? new PaddockError("ERR_HEADER_INVALID", `malformed request header (${err.code})`)
        : new PaddockError("ERR_BAD_REQUEST", "malformed HTTP request");
  return httpJsonAnswer(e.status, JSON.stringify(errorResponse(e).body), extraHeaders);
}

/** A whole HTTP/1.1 answer with a serialised JSON `body`, closing the connection (for raw sockets: upgrades, parse errors). */
export function httpJsonAnswer(status: number, body: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${extra}\r\n${body}`;
}

/**
 * How long a socket ended by {@link endAndClose} may stay open for its client to read the
 * answer and close, ms.
 */
export const END_AND_CLOSE_LINGER_MS = 2_000;

/**
 * Write `answer` (a whole HTTP/1.1 answer with `connection: close`) on a raw socket that
 * carries no ServerResponse (a request Node's parser refused, a refused upgrade) and close it:
 * the socket is ended, then destroyed when it closes no later than `lingerMs` (default
 * {@link END_AND_CLOSE_LINGER_MS}) after. `socket.end()` alone half-closes and waits for the
 * client's own end: HTTP servers are `allowHalfOpen` (https://nodejs.org/api/net.html#netcreateserveroptions-connectionlistener)
 * and an upgraded or refused socket has no server timeout left, so a client that never read
 * nor closed held the socket and its descriptor for as long as it liked (one token-less client
 * held every socket of the gateway's budget: test/security/hostile-gateway-linger.test.ts).
 * The linger (not an immediate destroy) lets a client that sent more than was read still get
 * the answer before the kernel's reset. A socket already unwritable is destroyed at once.
 */
export function endAndClose(socket: Duplex, answer: string, lingerMs = END_AND_CLOSE_LINGER_MS): void {
  if (socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const timer = setTimeout(() => socket.destroy(), lingerMs);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
  socket.end(answer);
}
