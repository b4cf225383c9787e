/**
 * Guest agent entry point (composition root). Runs as PID 2 under tini inside every VM:
 *
 * 1. read `$PADDOCK_AGENT_DIR/boot.json` (default dir `/run/paddock-agent`);
 * 2. listen on `$PADDOCK_AGENT_DIR/agent.sock` (HTTP, routes under `/v1`);
 * 3. run userdata once (guard `/etc/slicer/userdata-ran`, overridable with
 *    `PADDOCK_AGENT_USERDATA_GUARD` for host-process tests).
 *
 * Imports are limited to node builtins and shared/ to keep the resident size small.
 */
import path from "node:path";
import { AGENT_SOCKET_NAME, readBootConfig } from "./boot.js";
import { createAgentApp } from "./agent-app.js";
import { listenUnix } from "./unix-transport.js";
import { runUserdataOnce, type UserdataState } from "./userdata.js";
import { UserDirectory } from "./users.js";

async function main(): Promise<void> {
  const startedAtNs = process.hrtime.bigint();
  const agentDir = process.env.PADDOCK_AGENT_DIR ?? "/run/paddock-agent";
  const boot = readBootConfig(agentDir);
  const users = new UserDirectory(
    process.env.PADDOCK_AGENT_PASSWD ?? "/etc/passwd",
    boot.default_user ? { ...boot.default_user, shell: "/bin/sh" } : null,
  );
  let userdata: UserdataState = { ran: boot.userdata === null, exitCode: undefined };
  const app = createAgentApp({ boot, users, userdata: () => userdata, startedAtNs });
  const socketPath = path.join(agentDir, AGENT_SOCKET_NAME);
  const server = await listenUnix(socketPath, app.handle, app.upgrade);
  process.stdout.write(`paddock-agent ${boot.agent_version}: listening on ${socketPath}\n`);

  const stop = (signal: string): void => {
    process.stdout.write(`paddock-agent: ${signal}, shutting down\n`);
    app.shutdown();
    server.close();
    server.closeAllConnections();
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));

  await runUserdataOnce({
    script: boot.userdata,
    guardPath: process.env.PADDOCK_AGENT_USERDATA_GUARD ?? "/etc/slicer/userdata-ran",
    workDir: agentDir,
    targetUser: users.defaultUser().name,
    onState: (s) => {
      userdata = s;
    },
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`paddock-agent: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
