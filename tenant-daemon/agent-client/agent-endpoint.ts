/**
 * How the daemon reaches one VM's guest agent, and how it checks that an answer came from it.
 *
 * The channel is a Unix socket the host binds in a host-only directory and hands to the VM as
 * an inherited listener (tenant-daemon/runtime/native/paddock-nsutil.c `listen`): no guest can
 * move, replace or redirect it. Runtimes without fd passing (gVisor) use the reverse channel
 * instead: the host listens in a host-only directory and the agent dials out to it
 * (agent-dial-pool.ts); {@link agentConnectOptions} picks the transport per endpoint. On top of that, every answer (responses and 101 upgrades alike)
 * must carry the VM's per-boot proof in {@link AGENT_PROOF_HEADER}: a secret the daemon made
 * for this boot and wrote into the VM's read-only boot.json, which no other VM can read. An
 * answer without it, or with another VM's, is refused with `ERR_VM_AGENT_UNAVAILABLE`, and the
 * header is never passed on to API clients.
 */
import crypto from "node:crypto";
import type { ClientRequestArgs, IncomingHttpHeaders } from "node:http";
import { PaddockError } from "../../shared/errors.js";
import { AGENT_PROOF_HEADER } from "../agent/boot.js";
import { DEFAULT_TAKE_TIMEOUT_MS, type AgentDialPool } from "./agent-dial-pool.js";

export { AGENT_PROOF_HEADER };

/** One VM's agent: where to connect and what its answers must prove. */
export interface AgentEndpoint {
  /** VM name, for messages. */
  hostname: string;
  /** Host path of the agent listener (in `<runDir>/vms/<hostname>/`, host-only). */
  socketPath: string;
  /** The per-boot proof (64 hex chars) the agent's answers must carry. */
  proof: string;
  /**
   * The reverse channel's pool when the agent dials out to the host (agent-dial-pool.ts);
   * undefined ⇒ connect to {@link socketPath}.
   */
  dial?: AgentDialPool;
}

/**
 * The `http.request` options that open a connection to `endpoint`'s agent: `{ socketPath }`
 * for the inherited-listener channel, or a `createConnection` that takes one of the agent's
 * dialed connections (waiting up to `waitMs`; the request then fails with the pool's
 * PaddockError ERR_VM_AGENT_UNAVAILABLE). Each pooled connection carries one request.
 */
export function agentConnectOptions(endpoint: AgentEndpoint, waitMs = DEFAULT_TAKE_TIMEOUT_MS): Pick<ClientRequestArgs, "socketPath" | "createConnection"> {
  const pool = endpoint.dial;
  if (pool === undefined) return { socketPath: endpoint.socketPath };
  return {
    createConnection: (_opts, oncreate) => {
      pool.take(waitMs).then((s) => oncreate(null, s), (err: Error) => oncreate(err, undefined as never));
      return undefined;
    },
  };
}

/** A fresh per-boot proof: 32 random bytes, hex. */
export function newAgentProof(): string {
  return crypto.randomBytes(32).toString("hex");
}

/** True when `headers` carry `endpoint`'s proof (constant-time compare). */
export function answerIsFromAgent(endpoint: AgentEndpoint, headers: IncomingHttpHeaders): boolean {
  const got = headers[AGENT_PROOF_HEADER];
  if (typeof got !== "string" || endpoint.proof === "") return false;
  const a = crypto.createHash("sha256").update(got).digest();
  const b = crypto.createHash("sha256").update(endpoint.proof).digest();
  return crypto.timingSafeEqual(a, b);
}

/**
 * Check an answer's proof.
 * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE (503) when the answer did not come from `endpoint`'s agent.
 */
export function assertAnswerFromAgent(endpoint: AgentEndpoint, headers: IncomingHttpHeaders): void {
  if (!answerIsFromAgent(endpoint, headers)) {
    throw new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${endpoint.hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`);
  }
}
