/**
 * The VM service's {@link AgentPort} over the guest agent client (tenant-daemon/agent-client)
 * and the agent's boot file (tenant-daemon/agent/boot.ts).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import type { Logger } from "../../shared/logger.js";
import { agentHealth, syncSecretsToAgent } from "../agent-client/agent-http.js";
import { BOOT_FILE_NAME, DEFAULT_SECRETS_DIR, parseBootConfig } from "../agent/boot.js";
import { DEFAULT_GUEST_USER } from "../images/image-store.js";
import type { SecretStore } from "../secrets/secret-store.js";
import { PADDOCK_VERSION } from "../api/server.js";
import type { AgentPort } from "./vm-service.js";

/** Build the agent port. `secrets` is the tenant's secret store (spec §2.12, §3.8). */
export function createAgentPort(deps: { secrets: SecretStore; logger: Logger }): AgentPort {
  return {
    health: (socketPath, timeoutMs) => agentHealth(socketPath, timeoutMs),
    writeBoot: async (agentDir, boot) => {
      // Asynchronous and without fsync (agent/boot.ts's writer fsyncs on the event loop): the
      // agent dir is in the run dir and boot.json is rewritten before every boot, so a crash
      // never needs it back. Still written to a temp file and renamed, so the agent never
      // reads half a file.
      const checked = parseBootConfig({
        hostname: boot.hostname,
        userdata: boot.userdata ?? null,
        default_user: { name: DEFAULT_GUEST_USER.name, uid: DEFAULT_GUEST_USER.uid, gid: DEFAULT_GUEST_USER.gid, home: DEFAULT_GUEST_USER.home },
        secrets_dir: DEFAULT_SECRETS_DIR,
        agent_version: PADDOCK_VERSION,
      });
      const file = path.join(agentDir, BOOT_FILE_NAME);
      const tmp = `${file}.${process.pid}.tmp`;
      // The agent dir is bind-mounted read-write into the guest: should an old one survive (a
      // daemon crash skips teardown), a guest symlink at the temp name must not be followed.
      // Unlink it, then create with O_EXCL ("wx"), which never follows a symlink.
      await fs.rm(tmp, { force: true });
      await fs.writeFile(tmp, JSON.stringify(checked) + "\n", { mode: 0o600, flag: "wx" });
      await fs.rename(tmp, file);
    },
    syncSecrets: async (socketPath, names) => {
      const synced = await syncSecretsToAgent(socketPath, deps.secrets, names);
      deps.logger.debug("secrets synced", { socketPath, synced });
    },
  };
}
