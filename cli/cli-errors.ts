/**
 * Errors and exit codes of the `paddock` CLI.
 *
 * Exit codes scripts can rely on (printed by `paddock --help`):
 *
 * | code | meaning |
 * |---|---|
 * | 0 | ok |
 * | 1 | runtime or API error (daemon unreachable, 400/401/408/5xx, local I/O) |
 * | 2 | usage error (unknown flag, missing argument, bad value) |
 * | 3 | not found (HTTP 404) |
 * | 4 | conflict or forbidden (HTTP 403 / 409); `paddock up` refused with ERR_STATE_LOCKED or ERR_SOCKET_IN_USE (supervisor/main.ts `describeStartError`) |
 * | n | `vm exec`: the remote command's own exit code |
 */

import { PaddockError } from "../shared/errors.js";

/** Exit codes of the CLI (see the table above). */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, NOT_FOUND: 3, CONFLICT: 4 } as const;

/** A command line the CLI cannot act on (unknown flag, missing or malformed value) ⇒ exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * A non-2xx answer of a Slicer/Paddock API. `error` and `code` come from the server's JSON body
 * (`{"error","code"}`, docs/slicer-api.md#errors); a plain-text body ends up in `error`.
 */
export class ApiError extends Error {
  readonly status: number;
  readonly error: string;
  readonly code: string | undefined;
  /** The other fields of the server's JSON error body (e.g. `tenant`, `daemon_code`); empty when none. */
  readonly fields: Readonly<Record<string, unknown>>;

  constructor(status: number, error: string, code: string | undefined, fields: Record<string, unknown> = {}) {
    super(`HTTP ${status}: ${error}${code ? ` (${code})` : ""}`);
    this.name = "ApiError";
    this.status = status;
    this.error = error;
    this.code = code;
    this.fields = fields;
  }
}

/**
 * The API (or the network path to it) could not be reached at all: connection refused, socket
 * missing, DNS failure. Exit 1 with a hint about the target.
 */
export class ConnectError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConnectError";
  }
}

/** The exit code for an error thrown by a command (table in the file comment). */
export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.USAGE;
  if (err instanceof ApiError) {
    if (err.status === 404) return EXIT.NOT_FOUND;
    if (err.status === 403 || err.status === 409) return EXIT.CONFLICT;
  }
  // Local checks done by Paddock's own modules (e.g. an invalid image name) carry the same statuses.
  if (err instanceof PaddockError) {
    if (err.status === 400) return EXIT.USAGE;
    if (err.status === 404) return EXIT.NOT_FOUND;
    if (err.status === 403 || err.status === 409) return EXIT.CONFLICT;
  }
  return EXIT.ERROR;
}

/** One line describing an error for stderr (no stack for expected failures). */
export function describeError(err: unknown): string {
  if (err instanceof ApiError) return `error: ${err.error}${err.code ? ` (${err.code}, HTTP ${err.status})` : ` (HTTP ${err.status})`}`;
  if (err instanceof UsageError) return `usage error: ${err.message}`;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return `error: ${err.message}${typeof code === "string" && !err.message.includes(code) ? ` (${code})` : ""}`;
  }
  return `error: ${String(err)}`;
}
