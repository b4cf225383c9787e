/**
 * Paddock's one error type (docs/error-codes.md lists the codes; docs/slicer-api.md#errors the
 * wire shape).
 *
 * Every error that may reach a client carries a stable string code `ERR_<AREA>_<WHAT>`,
 * an HTTP status and an optional cause. 4xx errors are shown to clients as
 * `{"error": message, "code": code}` (the Slicer error shape plus a code); anything else is
 * logged with its stack and answered with a generic 500.
 */

/** Every code Paddock emits, with its HTTP status. `docs/error-codes.md` lists them; a unit test keeps both in step. */
export const ERROR_CODES = {
  ERR_INTERNAL: 500,
  ERR_NOT_FOUND: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_BAD_REQUEST: 400,
  ERR_BODY_INVALID_JSON: 400,
  ERR_BODY_TOO_LARGE: 413,
  ERR_AUTH_REQUIRED: 401,
  ERR_CONFIG_INVALID: 400,
  ERR_CONFIG_UNSUPPORTED: 400,
  ERR_HOSTGROUP_NOT_FOUND: 404,
  ERR_VM_NOT_FOUND: 404,
  ERR_VM_PROTECTED: 403,
  ERR_VM_INVALID_REQUEST: 400,
  ERR_VM_SIZE_EXCEEDED: 400,
  ERR_VM_WAIT_TIMEOUT: 408,
  ERR_VM_PAUSED: 409,
  ERR_VM_NOT_RUNNING: 409,
  ERR_VM_ALREADY_RUNNING: 409,
  ERR_VM_NOT_PERSISTENT: 409,
  ERR_VM_START_FAILED: 500,
  ERR_VM_AGENT_UNAVAILABLE: 503,
  ERR_VM_UNSUPPORTED: 501,
  ERR_VM_SUSPEND_REFUSED: 409,
  ERR_VM_WAKE_FAILED: 503,
  ERR_TAGS_INVALID: 400,
  ERR_VM_NAME_INVALID: 400,
  ERR_VM_NAME_TAKEN: 409,
  ERR_TTL_INVALID: 400,
  ERR_TTL_OVER_MAX: 400,
  ERR_EXPIRES_AT_INVALID: 400,
  ERR_FIELD_UNSUPPORTED: 501,
  ERR_QUERY_INVALID: 400,
  ERR_LIMIT_EXCEEDED: 403,
  ERR_NETWORK_EXHAUSTED: 409,
  ERR_NETWORK_OVERLAP: 400,
  ERR_NETWORK_SETUP_FAILED: 500,
  ERR_NETWORK_ADDRESS_IN_USE: 409,
  ERR_IMAGE_NOT_FOUND: 400,
  ERR_IMAGE_BUILD_FAILED: 500,
  ERR_IMAGE_CORRUPT: 500,
  ERR_STORAGE_FAILED: 500,
  ERR_RUNTIME_FAILED: 500,
  ERR_RUNTIME_UNAVAILABLE: 500,
  ERR_EXEC_FAILED: 500,
  ERR_EXEC_TIMEOUT: 500,
  ERR_STATE_CORRUPT: 500,
  ERR_STATE_LOCKED: 409,
  ERR_SOCKET_IN_USE: 409,
  ERR_SECRET_NOT_FOUND: 404,
  ERR_SECRET_EXISTS: 409,
  ERR_SECRET_INVALID: 400,
  ERR_PATH_NOT_FOUND: 404,
  ERR_PATH_INVALID: 400,
  ERR_EXEC_NOT_FOUND: 404,
  ERR_EXEC_REAPED: 410,
  ERR_EXEC_RUNNING: 409,
  ERR_EXEC_BUDGET: 503,
  ERR_WATCH_FAILED: 503,
  ERR_TENANT_NOT_FOUND: 404,
  ERR_TENANT_EXISTS: 409,
  ERR_TENANT_INVALID: 400,
  ERR_TENANT_SUSPENDED: 403,
  ERR_TENANT_UNAVAILABLE: 503,
  ERR_TOKEN_NOT_FOUND: 404,
  ERR_TEMPLATE_NOT_FOUND: 400,
  ERR_UPSTREAM_FAILED: 502,
  ERR_DAEMON_START_FAILED: 500,
  ERR_VM_DISK_FULL: 507,
  ERR_STATE_NO_SPACE: 507,
  ERR_REQUEST_BODY_TIMEOUT: 408,
  ERR_CP_BAD_NAME: 502,
  ERR_CP_BAD_ARCHIVE: 502,
  ERR_CP_MANIFEST_INVALID: 400,
  ERR_CP_CHUNK_INVALID: 400,
  ERR_USERNS_RANGE_TAKEN: 409,
  ERR_USERNS_EXHAUSTED: 507,
  ERR_TENANT_ID_IN_USE: 409,
  ERR_PIDS_BUDGET_EXCEEDED: 507,
  ERR_CGROUP_SETUP_FAILED: 500,
  ERR_RATE_LIMITED: 429,
  ERR_TOO_MANY_REQUESTS: 429,
  ERR_TOO_MANY_CONNECTIONS: 429,
  ERR_GATEWAY_BUSY: 503,
  ERR_URL_MALFORMED: 400,
  ERR_HEADER_INVALID: 400,
  ERR_UPSTREAM_TOO_LARGE: 502,
  ERR_STORAGE_OVERCOMMIT: 507,
  ERR_COMMIT_NOT_FOUND: 404,
  ERR_COMMIT_IN_USE: 409,
  ERR_COMMIT_CACHE_KEY_TAKEN: 409,
  ERR_COMMIT_INVALID_REQUEST: 400,
  ERR_SECRETS_TOO_MANY: 409,
  ERR_SECRETS_TOO_LARGE: 413,
  ERR_WEBHOOK_INVALID: 400,
  ERR_WEBHOOK_NOT_FOUND: 404,
  ERR_WEBHOOK_LIMIT: 409,
  ERR_PROXY_INVALID: 400,
  ERR_PROXY_UNSUPPORTED: 400,
  ERR_PROXY_CLIENT_NOT_FOUND: 404,
  ERR_PROXY_CLIENT_EXISTS: 409,
  ERR_PROXY_SECRET_NOT_FOUND: 404,
  ERR_PROXY_SECRET_EXISTS: 409,
  ERR_PROXY_RULE_NOT_FOUND: 404,
  ERR_PROXY_RULE_EXISTS: 409,
  ERR_PROXY_LIMIT: 409,
  ERR_EGRESS_AUTH_REQUIRED: 407,
  ERR_EGRESS_DENIED: 403,
  ERR_EGRESS_UPSTREAM_REFUSED: 403,
  ERR_EGRESS_BUSY: 503,
  ERR_EGRESS_UPSTREAM_UNRESOLVED: 502,
  ERR_EGRESS_UPSTREAM_FAILED: 502,
  ERR_PREVIEW_ADDRESS_INVALID: 400,
  ERR_PREVIEW_REQUEST_INVALID: 400,
  ERR_PREVIEW_UPSTREAM_FAILED: 502,
  ERR_FILE_UNREADABLE: 500,
  ERR_EXEC_STREAM_CUT: 502,
  ERR_SHELL_SESSION_CUT: 502,
} as const;

/** A stable error code, `ERR_<AREA>_<WHAT>`. */
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * The one error class. `status` defaults to the code's status in {@link ERROR_CODES}.
 * `details` is extra JSON merged into the client body for 4xx (e.g. the config problems list).
 */
export class PaddockError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; status?: number; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "PaddockError";
    this.code = code;
    this.status = options.status ?? ERROR_CODES[code];
    this.details = options.details;
  }

  /** True for client errors (4xx), whose message is safe to show. */
  get isClientError(): boolean {
    return this.status >= 400 && this.status < 500;
  }
}

/** Narrow an unknown thrown value to a PaddockError of the given code. */
export function isPaddockError(err: unknown, code?: ErrorCode): err is PaddockError {
  return err instanceof PaddockError && (code === undefined || err.code === code);
}

/** Node's `errno` error shape (`ENOENT`, `EEXIST`, …). */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === "object" && err !== null && "code" in err && typeof (err as { code: unknown }).code === "string") {
    return (err as { code: string }).code;
  }
  return undefined;
}

/**
 * The JSON body and status a client sees for an error (docs/slicer-api.md#errors).
 * Client errors keep their message and code; everything else becomes a generic 500.
 */
export function errorResponse(err: unknown): { status: number; body: Record<string, unknown> } {
  if (err instanceof PaddockError && err.status < 500) {
    return { status: err.status, body: { error: err.message, code: err.code, ...(err.details ?? {}) } };
  }
  if (err instanceof PaddockError && err.status !== 500) {
    return { status: err.status, body: { error: err.message, code: err.code } };
  }
  return { status: 500, body: { error: "internal error", code: "ERR_INTERNAL" } };
}
