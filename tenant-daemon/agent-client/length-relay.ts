/**
 * The byte-level relay of an agent's `Content-Length` answer body (binary cp out), beside the
 * chunked one (chunked-relay.ts): once Node's HTTP client has parsed the answer's head and the
 * daemon has checked it and written its own head with the same `Content-Length`, exactly that
 * many bytes of the agent's socket reads go to the client's socket as slices, without the HTTP
 * client's parse and copy of each piece (docs/performance.md "cp out, binary on the byte path").
 *
 * The agent is the guest's: a byte past the declared length would be read by the API client
 * (or the gateway's pooled connection) as the start of the next response. So the length is
 * taken only in its one plain form, the body is cut at it, and the caller drops the agent's
 * connection once it is reached (anything after it is never read).
 */
import type http from "node:http";
import { PaddockError } from "../../shared/errors.js";
import { ChunkedPassThrough, type BodyCheck, type ChunkedPush } from "./chunked-relay.js";

/** Most decimal digits of a `Content-Length` relayed raw (10^15 B ≈ 888 TiB, within a double's exact integers). */
export const MAX_LENGTH_DIGITS = 15;

/**
 * Passes exactly `length` bytes of a body read in pieces of any size: slices of the pushed
 * buffers (no copy), never a byte past the length.
 */
export class LengthPassThrough implements BodyCheck {
  private left: number;

  /** @param length the declared body length, bytes (an integer ≥ 1). */
  constructor(length: number) {
    this.left = length;
  }

  /**
   * Take the next bytes of the body.
   * @param d the next bytes as read (not copied; the returned slice shares its memory).
   * @returns the bytes of `d` up to the declared length, and whether it was reached (bytes of `d` past it are dropped).
   * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE on a push after the length was reached.
   */
  push(d: Buffer): ChunkedPush {
    if (this.left === 0) throw new PaddockError("ERR_VM_AGENT_UNAVAILABLE", "guest agent sent bytes after the declared end of its answer; the answer was cut");
    const take = Math.min(this.left, d.length);
    this.left -= take;
    const pieces = take === 0 ? [] : [take === d.length ? d : d.subarray(0, take)];
    return { pieces, done: this.left === 0 };
  }
}

/**
 * The declared length of an agent's answer if it is in the plain form relayed raw: 1 to
 * {@link MAX_LENGTH_DIGITS} ASCII digits, a value ≥ 1 (0 is a complete answer, left to Node's
 * client); undefined otherwise (absent, repeated, signed, spaced: the answer takes the old path).
 */
export function plainContentLength(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string" || value.length > MAX_LENGTH_DIGITS || !/^[0-9]+$/.test(value)) return undefined;
  const n = Number(value);
  return n >= 1 ? n : undefined;
}

/**
 * Which check, if any, the answer `ur` to `req` may be relayed raw through onto `res`, whose
 * head was flushed with `sent` (the headers given to `res.writeHead`: `ur`'s, less the dropped
 * ones; Node keeps headers given that way out of `res.getHeader`):
 * {@link ChunkedPassThrough} when both are chunked; {@link LengthPassThrough} when `ur` has a
 * plain `Content-Length` ≥ 1 and no `Transfer-Encoding`, and `res` declares the very same
 * length, not chunked, to an HTTP/1.1 client for a request whose answer has a body (not HEAD,
 * not 204/304); undefined for everything else (the caller pipes through Node's HTTP client as
 * before).
 */
export function rawBodyCheck(req: http.IncomingMessage, res: http.ServerResponse, ur: http.IncomingMessage, sent: Readonly<Record<string, string | string[]>>): BodyCheck | undefined {
  const te = ur.headers["transfer-encoding"];
  const cl = ur.headers["content-length"];
  if (res.chunkedEncoding) return te === "chunked" && cl === undefined ? new ChunkedPassThrough() : undefined;
  if (te !== undefined || req.method === "HEAD" || req.httpVersion !== "1.1") return undefined;
  const status = ur.statusCode;
  if (status === 204 || status === 304 || status === undefined || status < 200) return undefined;
  const length = plainContentLength(cl);
  if (length === undefined || sent["content-length"] !== cl || sent["transfer-encoding"] !== undefined) return undefined;
  return new LengthPassThrough(length);
}
