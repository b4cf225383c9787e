/**
 * Small HTTP helpers for the guest agent. The agent serves plain `node:http` (no Express) to
 * keep its resident size small; these helpers give handlers the Slicer conventions: JSON
 * bodies, the `{"error","code"}` error shape, query parsing and the uid/gid convention
 * (docs/slicer-api.md#request-and-response-conventions).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { PaddockError, errorResponse, type ErrorCode } from "../../shared/errors.js";
import { readJsonObjectBounded } from "../../shared/http/read-body.js";

/** A parsed agent request: method, path below `/v1`, query. */
export interface AgentRequest {
  req: IncomingMessage;
  res: ServerResponse;
  method: string;
  /** Path below `/v1`, e.g. `/exec/ex_1/logs`. */
  path: string;
  query: URLSearchParams;
}

/** Write a JSON response with `status`. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Answer an error in the Slicer shape. If the response already started, the socket is
 * destroyed instead so the client sees a truncated stream rather than a lie.
 */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy(err instanceof Error ? err : undefined);
    return;
  }
  const { status, body } = errorResponse(err);
  sendJson(res, status, body);
}

/** Shorthand for a client error. */
export function badRequest(message: string, code: ErrorCode = "ERR_BAD_REQUEST"): PaddockError {
  return new PaddockError(code, message);
}

/**
 * Parse a JSON object control body leniently (empty ⇒ `{}`), at most `maxBytes` (default 1 MiB).
 * Data bodies (stdin, cp) are always streamed.
 * @throws PaddockError ERR_BODY_TOO_LARGE (413), ERR_BODY_INVALID_JSON (400).
 */
export function readJsonObject(req: IncomingMessage, maxBytes = 1 << 20): Promise<Record<string, unknown>> {
  return readJsonObjectBounded(req, maxBytes);
}

/** Query boolean: `true`/`1` ⇒ true, `false`/`0`/absent/empty ⇒ false, anything else ⇒ 400. */
export function queryBool(q: URLSearchParams, name: string): boolean {
  const v = q.get(name);
  if (v === null || v === "") return false;
  const l = v.toLowerCase();
  if (l === "true" || l === "1") return true;
  if (l === "false" || l === "0") return false;
  throw badRequest(`invalid boolean for ${name}: ${JSON.stringify(v)}`, "ERR_QUERY_INVALID");
}

/** Query integer (decimal, optional sign); absent/empty ⇒ undefined; anything else ⇒ 400. */
export function queryInt(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null || v === "") return undefined;
  if (!/^-?\d+$/.test(v)) throw badRequest(`invalid integer for ${name}: ${JSON.stringify(v)}`, "ERR_QUERY_INVALID");
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw badRequest(`integer out of range for ${name}`, "ERR_QUERY_INVALID");
  return n;
}

/**
 * Parse an octal permission string (`0644`, `755`, `0o600`) into mode bits (≤ 0o7777).
 * @throws PaddockError `code` (default ERR_BAD_REQUEST; a query value: ERR_QUERY_INVALID) when malformed.
 */
export function parseOctalMode(text: string, what = "permissions", code: ErrorCode = "ERR_BAD_REQUEST"): number {
  const t = text.trim().replace(/^0o/i, "");
  if (!/^[0-7]{1,4}$/.test(t)) throw badRequest(`invalid ${what} ${JSON.stringify(text)}: expected an octal string such as 0644`, code);
  return parseInt(t, 8);
}

/** Format mode bits as a 4-digit octal string (`0644`), permission and special bits only. */
export function formatOctalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}
