/**
 * A small HTTP client for a tenant daemon's Slicer API on its Unix socket (docs/slicer-api.md): the
 * supervisor uses it for readiness (`GET /healthz`), VM listing and pause/resume at
 * suspend. Adapter: knows sockets and JSON, no rules.
 */
import http from "node:http";
import { PaddockError } from "../shared/errors.js";

/**
 * Largest daemon answer the supervisor reads into memory, bytes: `GET /nodes` of a tenant at
 * a large VM count is ~1 KiB per VM, so 4 MiB leaves room for thousands.
 */
export const MAX_DAEMON_ANSWER_BYTES = 4 << 20;

/** A response read whole (the supervisor only makes small calls). */
export interface DaemonResponse {
  status: number;
  body: string;
}

/** One VM as listed by `GET /nodes` (docs/slicer-api.md#list-vms), the fields the supervisor uses. */
export interface DaemonNode {
  hostname: string;
  hostgroup: string;
  status: string;
  cpus?: number;
  ram_bytes?: number;
  persistent?: boolean;
}

/**
 * One request to the daemon; the answer is read whole, up to `maxBytes` (default
 * {@link MAX_DAEMON_ANSWER_BYTES}).
 * @throws the socket error (ENOENT, ECONNREFUSED, …), PaddockError `ERR_TENANT_UNAVAILABLE`
 *   on timeout, or `ERR_UPSTREAM_TOO_LARGE` when the answer is larger than `maxBytes`.
 */
export function daemonRequest(socketPath: string, method: string, urlPath: string, opts: { timeoutMs?: number; body?: unknown; maxBytes?: number } = {}): Promise<DaemonResponse> {
  const maxBytes = opts.maxBytes ?? MAX_DAEMON_ANSWER_BYTES;
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = http.request(
      { socketPath, method, path: urlPath, headers: payload === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        let total = 0;
        res.on("data", (c: Buffer) => {
          total += c.length;
          if (total <= maxBytes) {
            chunks.push(c);
            return;
          }
          const err = new PaddockError("ERR_UPSTREAM_TOO_LARGE", `daemon at ${socketPath} answered ${method} ${urlPath} with more than ${maxBytes} bytes`);
          req.destroy(err);
          reject(err);
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 5000, () => req.destroy(new PaddockError("ERR_TENANT_UNAVAILABLE", `daemon at ${socketPath} did not answer ${method} ${urlPath} within ${opts.timeoutMs ?? 5000} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** True when `GET /healthz` answers 200 (any error ⇒ false). */
export async function daemonHealthy(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  try {
    const r = await daemonRequest(socketPath, "GET", "/healthz", { timeoutMs });
    return r.status === 200;
  } catch {
    return false;
  }
}

/**
 * `GET /nodes` of a daemon.
 * @throws PaddockError `ERR_TENANT_UNAVAILABLE` when the daemon cannot be reached or answers badly.
 */
export async function listDaemonNodes(socketPath: string, timeoutMs = 3000): Promise<DaemonNode[]> {
  let r: DaemonResponse;
  try {
    r = await daemonRequest(socketPath, "GET", "/nodes", { timeoutMs });
  } catch (err) {
    if (err instanceof PaddockError && err.code === "ERR_UPSTREAM_TOO_LARGE") throw err;
    throw new PaddockError("ERR_TENANT_UNAVAILABLE", `tenant daemon is not reachable: ${(err as Error).message}`, { cause: err });
  }
  if (r.status !== 200) throw new PaddockError("ERR_TENANT_UNAVAILABLE", `tenant daemon answered GET /nodes with ${r.status}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.body);
  } catch (err) {
    throw new PaddockError("ERR_TENANT_UNAVAILABLE", "tenant daemon answered GET /nodes with invalid JSON", { cause: err });
  }
  if (!Array.isArray(parsed)) throw new PaddockError("ERR_TENANT_UNAVAILABLE", "tenant daemon answered GET /nodes with a non-list");
  return parsed.filter((n): n is DaemonNode => typeof n === "object" && n !== null && typeof (n as DaemonNode).hostname === "string");
}

/**
 * `POST /vm/{h}/pause` or `/resume`.
 * @throws PaddockError `ERR_TENANT_UNAVAILABLE` on a transport error or a non-2xx answer.
 */
export async function setVmPaused(socketPath: string, hostname: string, paused: boolean): Promise<void> {
  const action = paused ? "pause" : "resume";
  let r: DaemonResponse;
  try {
    r = await daemonRequest(socketPath, "POST", `/vm/${encodeURIComponent(hostname)}/${action}`, { timeoutMs: 15_000 });
  } catch (err) {
    throw new PaddockError("ERR_TENANT_UNAVAILABLE", `could not ${action} VM ${hostname}: ${(err as Error).message}`, { cause: err });
  }
  if (r.status < 200 || r.status >= 300) throw new PaddockError("ERR_TENANT_UNAVAILABLE", `could not ${action} VM ${hostname}: daemon answered ${r.status} ${r.body.slice(0, 200)}`);
}
