/**
 * Daemon-side calls into a guest agent over its channel (agent-endpoint.ts): health (readiness) and secrets
 * sync, stats. Streaming calls (exec, cp, fs) are agent-stream.ts; shell and forward sessions
 * agent-ws.ts.
 */
import http from "node:http";
import type { Duplex } from "node:stream";
import { PaddockError } from "../../shared/errors.js";
import type { GuestStats } from "../agent/guest-stats.js";
import type { SecretStore } from "../secrets/secret-store.js";
import type { AgentHealth } from "../agent/agent-app.js";
import { agentConnectOptions, answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";

/** Largest JSON answer read from an agent, bytes (health, stats, secrets sync). */
const MAX_AGENT_JSON_BYTES = 1 << 20;

/** Agent health (`GET /vm/{hostname}/health`); durations in integer nanoseconds. The agent's own wire type. */
export type AgentHealthInfo = AgentHealth;

/**
 * One JSON request to the agent, bounded by `timeoutMs` and {@link MAX_AGENT_JSON_BYTES}.
 * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE (503) when the agent does not answer in time,
 *   is not listening, answers without the VM's proof (agent-endpoint.ts), too much, or
 *   non-2xx / non-JSON.
 */
export function agentJsonRequest(endpoint: AgentEndpoint, method: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = http.request(
      {
        ...agentConnectOptions(endpoint, timeoutMs),
        method,
        path,
        headers: payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {},
      },
      (res) => {
        if (!answerIsFromAgent(endpoint, res.headers)) {
          clearTimeout(timer);
          req.destroy();
          reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path}: the answer on ${endpoint.hostname}'s agent channel did not come from its agent (missing or wrong proof)`));
          return;
        }
        const chunks: Buffer[] = [];
        let total = 0;
        res.on("data", (c: Buffer) => {
          total += c.length;
          if (total > MAX_AGENT_JSON_BYTES) {
            clearTimeout(timer);
            req.destroy();
            reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path} answered more than ${MAX_AGENT_JSON_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on("error", (err) => reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path}: ${err.message}`, { cause: err })));
        res.on("end", () => {
          clearTimeout(timer);
          const text = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path} answered ${status}: ${text.slice(0, 500)}`));
            return;
          }
          try {
            resolve(text === "" ? {} : (JSON.parse(text) as unknown));
          } catch (err) {
            reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path} answered invalid JSON`, { cause: err }));
          }
        });
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    // A 101 (the agent is the guest's to replace): without this listener Node drops the
    // socket and reports nothing, so neither the answer nor the timeout would ever settle this.
    req.on("upgrade", (_res, socket: Duplex) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path} switched protocols on a plain request`));
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent ${method} ${path}: ${err.message}`, { cause: err }));
    });
    req.end(payload);
  });
}

/**
 * `GET /v1/health` of `endpoint`'s agent.
 * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE when unreachable, slow (> `timeoutMs`) or malformed.
 */
export async function agentHealth(endpoint: AgentEndpoint, timeoutMs: number): Promise<AgentHealthInfo> {
  const body = await agentJsonRequest(endpoint, "GET", "/v1/health", undefined, timeoutMs);
  const h = body as Partial<AgentHealthInfo>;
  if (typeof h !== "object" || h === null || typeof h.agent_uptime !== "number" || typeof h.userdata_ran !== "boolean") {
    throw new PaddockError("ERR_VM_AGENT_UNAVAILABLE", "guest agent health answer is missing agent_uptime/userdata_ran");
  }
  return h as AgentHealthInfo;
}

/**
 * Push the VM's granted secrets to its agent: all secrets when `allowedNames` is
 * undefined, else only those names. The agent writes them to `/run/slicer/secrets/<name>` with
 * the stored mode/uid/gid and removes files of secrets no longer granted.
 * @returns the names the agent reports as synced.
 * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE when the agent refuses or is unreachable.
 */
export async function syncSecretsToAgent(
  endpoint: AgentEndpoint,
  secrets: SecretStore,
  allowedNames: readonly string[] | undefined,
  timeoutMs = 30_000,
): Promise<string[]> {
  const list = await secrets.readForDelivery(allowedNames);
  const body = {
    secrets: list.map((s) => ({ name: s.info.name, data: s.data.toString("base64"), permissions: s.info.permissions, uid: s.info.uid, gid: s.info.gid })),
  };
  const res = (await agentJsonRequest(endpoint, "POST", "/v1/secrets/sync", body, timeoutMs)) as { synced?: unknown };
  return Array.isArray(res.synced) ? res.synced.filter((n): n is string => typeof n === "string") : [];
}

/** The fields of {@link GuestStats}, each a finite number in a valid answer. */
const GUEST_STATS_FIELDS = [
  "uptimeSeconds", "loadAvg1", "loadAvg5", "loadAvg15", "openFiles", "openConnections", "networkReadTotal", "networkWriteTotal", "entropy",
] as const satisfies readonly (keyof GuestStats)[];

/**
 * `GET /v1/stats` of the agent: guest-side counters for NodeStat snapshots (api/vm-stats.ts).
 * The answer is the guest's (its root can replace the agent), so only the known fields are
 * kept and each must be a finite number: anything else would travel into every client's
 * `/nodes/stats` array.
 * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE when unreachable, slow (> `timeoutMs`) or malformed.
 */
export async function agentStats(endpoint: AgentEndpoint, timeoutMs: number): Promise<GuestStats> {
  const body = await agentJsonRequest(endpoint, "GET", "/v1/stats", undefined, timeoutMs);
  const o = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const out = {} as GuestStats;
  for (const k of GUEST_STATS_FIELDS) {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v)) throw new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent stats answer: ${k} is not a number`);
    out[k] = v;
  }
  return out;
}
