/**
 * A small HTTP client for the Slicer/Paddock APIs over a Unix socket (`http.request({socketPath})`)
 * or http(s). Responses are handed back as streams (exec NDJSON, cp downloads are never
 * buffered); JSON helpers turn non-2xx answers into {@link ApiError}s carrying the server's
 * `error` and `code` (docs/slicer-api.md#errors).
 */
import http from "node:http";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { bearerHeader } from "../shared/http/bearer.js";
import { ApiError, ConnectError } from "./cli-errors.js";
import type { Target } from "./target.js";

/** Query parameters in order; undefined values are skipped, repeated keys kept. */
export type QueryParams = ReadonlyArray<readonly [string, string | number | boolean | undefined]>;

/** Options of one request. */
export interface RequestOptions {
  query?: QueryParams;
  /** JSON body (sets Content-Type: application/json). */
  json?: unknown;
  /** Raw body: a buffer, or a stream piped with backpressure (chunked unless `contentLength`). */
  body?: Buffer | Readable;
  contentType?: string;
  contentLength?: number;
  headers?: Record<string, string>;
}

/** Build `path?query` with percent-encoding (pure). */
export function buildPath(path: string, query: QueryParams = []): string {
  const q = new URLSearchParams();
  for (const [k, v] of query) if (v !== undefined) q.append(k, String(v));
  const s = q.toString();
  return s === "" ? path : `${path}?${s}`;
}

/**
 * Read a whole response body, up to `maxBytes` (more ⇒ truncated; used for JSON and error bodies,
 * never for file or exec payloads).
 */
export async function readBody(res: http.IncomingMessage, maxBytes = 64 * 2 ** 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res) {
    const b = chunk as Buffer;
    if (total < maxBytes) chunks.push(b.subarray(0, maxBytes - total));
    total += b.length;
  }
  return Buffer.concat(chunks);
}

/** The ApiError for a non-2xx response (consumes the body). */
export async function toApiError(res: http.IncomingMessage): Promise<ApiError> {
  const text = (await readBody(res, 64 * 1024).catch(() => Buffer.alloc(0))).toString("utf8").trim();
  let error = text || (res.statusMessage ?? "request failed");
  let code: string | undefined;
  let fields: Record<string, unknown> = {};
  try {
    const body = JSON.parse(text) as { error?: unknown; code?: unknown; message?: unknown };
    if (typeof body.error === "string" && body.error !== "") error = body.error;
    else if (typeof body.message === "string" && body.message !== "") error = body.message;
    if (typeof body.code === "string") code = body.code;
    if (typeof body === "object" && body !== null && !Array.isArray(body)) fields = body as Record<string, unknown>;
  } catch {}
  return new ApiError(res.statusCode ?? 0, error, code, fields);
}

function connectHint(target: Target, err: NodeJS.ErrnoException): string {
  if (target.kind === "unix" && (err.code === "ENOENT" || err.code === "ECONNREFUSED")) return " (is the tenant daemon running? `paddock daemon up FILE`)";
  if (err.code === "ECONNREFUSED") return ` (is the supervisor running? \`paddock up\`; or set ${target.addressHint ?? "--url / PADDOCK_URL"})`;
  if (err.code === "ENOTFOUND" || err.code === "EAI_AGAIN") return ` (the host name does not resolve; check ${target.addressHint ?? "--url / PADDOCK_URL"})`;
  if (err.code === "EACCES") return " (permission denied on the socket; run as its owner or root)";
  return "";
}

/** One API endpoint plus its bearer token. */
export class ApiClient {
  constructor(readonly target: Target) {}

  /**
   * Send a request and resolve with the response as soon as its headers arrive, whatever the
   * status. The caller consumes the body.
   * @throws ConnectError when the endpoint cannot be reached.
   */
  async open(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    // node:https (and TLS) only loads for https targets: it costs ~80 ms of start-up otherwise.
    const transport = this.target.kind === "http" && this.target.url.protocol === "https:" ? await import("node:https") : http;
    const headers: Record<string, string> = { "User-Agent": "paddock-cli", ...(opts.headers ?? {}) };
    if (this.target.token !== undefined) headers.Authorization = bearerHeader(this.target.token);
    let payload: Buffer | Readable | undefined = opts.body;
    if (opts.json !== undefined) {
      payload = Buffer.from(JSON.stringify(opts.json));
      headers["Content-Type"] = "application/json";
    } else if (opts.contentType !== undefined) {
      headers["Content-Type"] = opts.contentType;
    }
    if (Buffer.isBuffer(payload)) headers["Content-Length"] = String(payload.length);
    else if (opts.contentLength !== undefined) headers["Content-Length"] = String(opts.contentLength);
    const fullPath = buildPath(path, opts.query);
    const t = this.target;
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        const e = err as NodeJS.ErrnoException;
        reject(e.code && ["ENOENT", "ECONNREFUSED", "EACCES", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET", "EHOSTUNREACH", "ETIMEDOUT"].includes(e.code)
          ? new ConnectError(`cannot reach the API at ${t.display}: ${e.message}${connectHint(t, e)}`, { cause: err })
          : e);
      };
      const onResponse = (res: http.IncomingMessage): void => {
        if (settled) {
          res.resume();
          return;
        }
        settled = true;
        resolve(res);
      };
      const req = t.kind === "unix"
        ? http.request({ socketPath: t.socketPath, path: fullPath, method, headers }, onResponse)
        : transport.request(
            { host: t.url.hostname, port: t.url.port || undefined, path: fullPath, method, headers },
            onResponse,
          );
      req.on("error", fail);
      if (payload === undefined) req.end();
      else if (Buffer.isBuffer(payload)) req.end(payload);
      else pipeline(payload, req).catch(fail);
    });
  }

  /**
   * {@link open}, then turn a non-2xx status into an ApiError.
   * @throws ApiError with the server's `error`/`code`; ConnectError.
   */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<http.IncomingMessage> {
    const res = await this.open(method, path, opts);
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) throw await toApiError(res);
    return res;
  }

  /**
   * {@link send} and parse the body as JSON (empty body ⇒ undefined; non-JSON ⇒ the text).
   * @throws ApiError; ConnectError.
   */
  async json<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.send(method, path, opts);
    const text = (await readBody(res)).toString("utf8");
    if (text.trim() === "") return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      return text as T;
    }
  }
}

/** Path segment encoding for hostnames, group names and ids. */
export function seg(s: string): string {
  return encodeURIComponent(s);
}
