/**
 * A small HTTP client for a tenant daemon's Slicer API on its Unix socket (spec §2): the
 * supervisor uses it for readiness (`GET /healthz`), VM listing and pause/resume at
 * suspend. Adapter: knows sockets and JSON, no rules.
 */
import http from "node:http";
import { PaddockError } from "../shared/errors.js";

/** A response read whole (the supervisor only makes small calls). */
export interface DaemonResponse {
  status: number;
  body: string;
}

/** One VM as listed by `GET /nodes` (spec §2.2), the fields the supervisor uses. */
export interface DaemonNode {
  hostname: string;
  hostgroup: string;
  status: string;
  cpus?: number;
  ram_bytes?: number;
  persistent?: boolean;
}

/**
 * One request to the daemon.
 * @throws the socket error (ENOENT, ECONNREFUSED, …) or PaddockError `ERR_TENANT_UNAVAILABLE`
 *   on timeout.
 */
export function daemonRequest(socketPath: string, method: string, urlPath: string, opts: { timeoutMs?: number; body?: unknown } = {}): Promise<DaemonResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = http.request(
      { socketPath, method, path: urlPath, headers: payload === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
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
    throw new PaddockError("ERR_TENANT_UNAVAILABLE", `tenant daemon is not reachable: ${(err as Error).message}`, { cause: err });
  }
  if (r.status !== 200) throw new PaddockError("ERR_TENANT_UNAVAILABLE", `tenant daemon answered GET /nodes with ${r.status}`);
  const parsed = JSON.parse(r.body) as unknown;
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
