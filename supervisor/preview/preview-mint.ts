/**
 * `POST /vm/{hostname}/preview-tokens` at the gateway (a Paddock extension; docs/slicer-api.md#preview-urls),
 * authenticated with the tenant's own token: body `{"port": 1–65535, "ttl": "<Go duration>"}`
 * (`ttl` optional, default `preview.default_ttl`, at most `preview.max_ttl`; unknown fields are
 * refused) → 201 `{"token","url_host"?,"url_path","expires_at","hostname","port"}`.
 *
 * The VM must exist in the tenant's daemon (`GET /vm/{hostname}`, whose `created_at` the token
 * is bound to); the token is signed with the tenant's preview key (preview-keys.ts), audited as
 * `preview_token.mint` (hostname, port, expiry; never the token) and counted in
 * `paddock_preview_tokens_minted_total`.
 */
import type http from "node:http";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { parseGoDurationMs } from "../../shared/time.js";
import type { AuditLog } from "../audit-log.js";
import { daemonRequest } from "../daemon-client.js";
import { sendJson } from "../gateway-forward.js";
import type { OkRoute } from "../gateway-route.js";
import type { SupervisorMetrics } from "../metrics.js";
import type { PreviewConfig } from "../supervisor-config.js";
import { VM_HOSTNAME_PATTERN, previewHostName, previewPathPrefix } from "./preview-address.js";
import type { PreviewKeys } from "./preview-keys.js";
import { signPreviewToken } from "./preview-token.js";

/** The mint route's path: `/vm/{hostname}/preview-tokens`. */
const MINT_PATH = /^\/vm\/([^/?]+)\/preview-tokens(\?.*)?$/;
/** Largest mint body, bytes. */
const MAX_BODY_BYTES = 4096;

/** What minting needs. */
export interface PreviewMintDeps {
  keys: PreviewKeys;
  config: PreviewConfig;
  audit: AuditLog;
  metrics: SupervisorMetrics;
  log: Logger;
}

/** True when `req` is a mint request (`POST /vm/{hostname}/preview-tokens`). */
export function isMintRequest(req: http.IncomingMessage): boolean {
  return req.method === "POST" && MINT_PATH.test(req.url ?? "");
}

/** A parsed mint body. */
export interface MintInput {
  port: number;
  ttlMs: number;
}

/**
 * Validate a mint body.
 * @throws PaddockError ERR_BODY_INVALID_JSON, ERR_PREVIEW_REQUEST_INVALID (no or bad port, bad
 *   or over-long ttl, unknown field).
 */
export function parseMintBody(text: string, config: PreviewConfig): MintInput {
  let body: unknown;
  try {
    body = JSON.parse(text === "" ? "{}" : text);
  } catch (err) {
    throw new PaddockError("ERR_BODY_INVALID_JSON", `invalid JSON body: ${(err as Error).message}`);
  }
  const bad = (m: string): PaddockError => new PaddockError("ERR_PREVIEW_REQUEST_INVALID", m);
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw bad("the body must be a JSON object {\"port\": …, \"ttl\": …}");
  const o = body as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== "port" && k !== "ttl") throw bad(`unknown field ${JSON.stringify(k)} (known: port, ttl)`);
  const port = o.port;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) throw bad("port: an integer 1-65535 is required");
  let ttlMs = config.defaultTtlMs;
  if (o.ttl !== undefined) {
    if (typeof o.ttl !== "string") throw bad("ttl: a Go duration string such as \"30m\" or \"2h\"");
    try {
      ttlMs = parseGoDurationMs(o.ttl, "ttl");
    } catch (err) {
      throw bad((err as Error).message);
    }
    if (ttlMs < 1000) throw bad("ttl: at least 1s");
    if (ttlMs > config.maxTtlMs) throw bad(`ttl: at most ${config.maxTtlMs / 1000}s (preview.max_ttl)`);
  }
  return { port, ttlMs };
}

/** Read a small body whole. @throws PaddockError ERR_BODY_TOO_LARGE */
function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    req.on("data", (c: Buffer) => {
      total += c.length;
      if (total > MAX_BODY_BYTES) {
        req.pause();
        reject(new PaddockError("ERR_BODY_TOO_LARGE", `a preview-token request body is at most ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/**
 * Answer one mint request of the tenant routed in `r` (authenticated with its tenant token).
 * Errors are answered as JSON: the body's (400/413), the daemon's answer for the VM (404
 * ERR_VM_NOT_FOUND, …), 503 when the daemon does not answer.
 */
export async function mintPreviewToken(deps: PreviewMintDeps, req: http.IncomingMessage, res: http.ServerResponse, r: OkRoute, id: string): Promise<void> {
  const m = MINT_PATH.exec(req.url ?? "") as RegExpExecArray;
  try {
    let hostname: string;
    try {
      hostname = decodeURIComponent(m[1] as string);
    } catch {
      throw new PaddockError("ERR_URL_MALFORMED", "the path's percent-escapes do not decode");
    }
    if (!VM_HOSTNAME_PATTERN.test(hostname)) throw new PaddockError("ERR_PREVIEW_REQUEST_INVALID", `${JSON.stringify(hostname)} is not a VM hostname`);
    const input = parseMintBody(await readBody(req), deps.config);
    let vm;
    try {
      vm = await daemonRequest(r.socketPath, "GET", `/vm/${hostname}`, { timeoutMs: 10_000, maxBytes: 1 << 20 });
    } catch (err) {
      throw err instanceof PaddockError ? err : new PaddockError("ERR_TENANT_UNAVAILABLE", `the daemon of tenant ${r.tenantId} is not answering; retry later`, { cause: err });
    }
    if (vm.status !== 200) {
      // The daemon's own answer (404 ERR_VM_NOT_FOUND, …) goes back as it is.
      sendJson(res, vm.status, vm.body, { "x-request-id": id });
      return;
    }
    const createdAt = (JSON.parse(vm.body) as { created_at?: unknown }).created_at;
    if (typeof createdAt !== "string") throw new PaddockError("ERR_UPSTREAM_FAILED", `the daemon's answer for VM ${hostname} has no created_at`);
    const key = await deps.keys.ensure(r.tenantId);
    const expiresAtS = Math.floor((Date.now() + input.ttlMs) / 1000);
    const token = signPreviewToken(key, { tenantId: r.tenantId, hostname, port: input.port, vmCreatedAt: createdAt, expiresAtS });
    const expiresAt = new Date(expiresAtS * 1000).toISOString();
    const base = deps.config.baseDomain;
    const body = {
      token,
      ...(base !== undefined ? { url_host: previewHostName(r.tenantId, hostname, input.port, base) } : {}),
      url_path: previewPathPrefix(r.tenantId, hostname, input.port),
      expires_at: expiresAt,
      hostname,
      port: input.port,
    };
    void deps.audit.record({ actor: `tenant:${r.tenantId}`, action: "preview_token.mint", tenant: r.tenantId, requestId: id, status: 201, details: { hostname, port: input.port, expires_at: expiresAt, vm_created_at: createdAt } }, (err) => deps.log.error("audit write failed", { req: id, err }));
    deps.metrics.observePreviewMint(r.tenantId);
    sendJson(res, 201, JSON.stringify(body), { "x-request-id": id, "cache-control": "no-store" });
  } catch (err) {
    const { status, body } = errorResponse(err);
    if (status >= 500) deps.log.error("preview token mint failed", { req: id, err });
    if (!res.headersSent) sendJson(res, status, JSON.stringify(body), { "x-request-id": id, ...(status === 413 ? { connection: "close" } : {}) });
  }
}
