/**
 * The VM service's {@link AgentPort} over the guest agent client (tenant-daemon/agent-client)
 * and the agent's boot file (tenant-daemon/agent/boot.ts).
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { EgressGuestBoot } from "../network/egress-proxy-wiring.js";
import { agentHealth, syncSecretsToAgent } from "../agent-client/agent-http.js";
import { DEFAULT_SECRETS_DIR, writeAgentBootConfig } from "../agent/boot.js";
import { DEFAULT_GUEST_USER } from "../../shared/image-store.js";
import type { SecretStore } from "../secrets/secret-store.js";
import { PADDOCK_VERSION } from "../../shared/version.js";
import type { AgentPort } from "./vm-service.js";

/**
 * Build the agent port. `secrets` is the tenant's secret store (docs/slicer-api.md#secrets);
 * `egress` gives a proxy-mode VM's boot data (tenant-daemon/network/egress-proxy-wiring.ts).
 */
export function createAgentPort(deps: { secrets: SecretStore; logger: Logger; egress?: { guestBoot(): Promise<EgressGuestBoot> } }): AgentPort {
  return {
    health: (endpoint, timeoutMs) => agentHealth(endpoint, timeoutMs),
    writeBoot: async (bootDir, boot, owner) => {
      let egress: EgressGuestBoot | undefined;
      if (boot.egressProxy) {
        if (deps.egress === undefined) throw new PaddockError("ERR_VM_START_FAILED", `${boot.hostname} is in an egress_proxy host group but this daemon runs no egress proxy`);
        egress = await deps.egress.guestBoot();
      }
      // The boot dir is host-only and made fresh for each boot (vm-boot.ts boot()); the guest
      // sees it through a read-only bind and can neither write nor replace anything in it.
      writeAgentBootConfig(bootDir, {
        hostname: boot.hostname,
        userdata: boot.userdata ?? null,
        default_user: { name: DEFAULT_GUEST_USER.name, uid: DEFAULT_GUEST_USER.uid, gid: DEFAULT_GUEST_USER.gid, home: DEFAULT_GUEST_USER.home },
        secrets_dir: DEFAULT_SECRETS_DIR,
        agent_version: PADDOCK_VERSION,
        resolv_conf: boot.resolvConf ?? null,
        agent_proof: boot.proof,
        egress_proxy: egress === undefined ? null : { env: egress.env, ca_pem: egress.caPem },
      }, owner);
    },
    syncSecrets: async (endpoint, names, timeoutMs) => {
      const synced = await syncSecretsToAgent(endpoint, deps.secrets, names, timeoutMs);
      deps.logger.debug("secrets synced", { hostname: endpoint.hostname, synced });
    },
  };
}
