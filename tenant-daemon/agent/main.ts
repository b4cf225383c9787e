/**
 * Guest agent entry point (composition root). Runs as PID 2 under tini inside every VM:
 *
 * 1. read `$PADDOCK_AGENT_DIR/boot.json` (default dir `/run/paddock-agent`, read-only);
 * 2. in a VM (`PADDOCK_AGENT_ETC` set): write the guest's /etc/hostname and /etc/resolv.conf
 *    from it, from inside the guest, so the host never writes into the guest's tree; in proxy
 *    mode also the proxy's login-shell profile and CA (egress-env.ts);
 * 3. accept on the listener inherited as fd `$PADDOCK_AGENT_FD` (HTTP, routes under `/v1`); or,
 *    with `$PADDOCK_AGENT_DIAL` (a host socket path; runtimes without fd passing, e.g. gVisor),
 *    dial out to it and serve on a pool of `$PADDOCK_AGENT_DIAL_POOL` (default 3) idle
 *    connections (reverse-transport.ts); or, with neither (host-process tests), listen on
 *    `$PADDOCK_AGENT_DIR/agent.sock`;
 * 4. in a VM: serve the guest-local socket of `slicer-agent secrets sync` (secrets-local.ts);
 * 5. run userdata once (guard `/etc/slicer/userdata-ran`, overridable with
 *    `PADDOCK_AGENT_USERDATA_GUARD` for host-process tests), its script in
 *    `$PADDOCK_AGENT_WORK_DIR` (default: the agent dir).
 *
 * Imports are limited to node builtins and shared/ to keep the resident size small.
 *
 * Run with the arguments `secrets sync` (the guest's `slicer-agent` wrapper), it is instead the
 * command that asks the running agent to re-apply its secrets (secrets-local.ts); with
 * `upload check|finalise|abort`, the guest half of the Go SDK's chunked copy (upload.ts). In a VM
 * the agent links that wrapper at {@link SLICER_AGENT_LINK}, where the SDK runs it.
 */
import { existsSync, lstatSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AGENT_SOCKET_NAME, readBootConfig, type AgentBootConfig } from "./boot.js";
import { createAgentApp } from "./agent-app.js";
import { applyEgressProxy, egressSessionEnv } from "./egress-env.js";
import { serveReverse } from "./reverse-transport.js";
import { LOCAL_SECRETS_SOCKET, runSecretsCommand, serveLocalSecrets } from "./secrets-local.js";
import { listenInherited, listenUnix } from "./unix-transport.js";
import { runUploadCommand } from "./upload.js";
import { runUserdataOnce, type UserdataState } from "./userdata.js";
import { UserDirectory } from "./users.js";

/** Where Slicer's guests have `slicer-agent` and the Go SDK's chunked copy runs it. */
export const SLICER_AGENT_LINK = "/usr/local/bin/slicer-agent";

/** The guest's users: `/etc/passwd` (or `$PADDOCK_AGENT_PASSWD`) and boot.json's default user. */
function guestUsers(boot: AgentBootConfig | null): UserDirectory {
  return new UserDirectory(
    process.env.PADDOCK_AGENT_PASSWD ?? "/etc/passwd",
    boot?.default_user ? { ...boot.default_user, shell: "/bin/sh" } : null,
    egressSessionEnv(boot?.egress_proxy ?? null),
  );
}

async function main(): Promise<void> {
  const startedAtNs = process.hrtime.bigint();
  const agentDir = process.env.PADDOCK_AGENT_DIR ?? "/run/paddock-agent";
  const boot = readBootConfig(agentDir);
  const users = guestUsers(boot);
  let userdata: UserdataState = { ran: boot.userdata === null, exitCode: undefined };
  const app = createAgentApp({ boot, users, userdata: () => userdata, startedAtNs });
  const etcDir = process.env.PADDOCK_AGENT_ETC;
  if (etcDir !== undefined && etcDir !== "") {
    writeGuestIdentity(etcDir, boot);
    linkSlicerAgent();
    if (boot.egress_proxy !== null) applyEgressProxy(etcDir, boot.egress_proxy, (line) => process.stderr.write(`paddock-agent: ${line}\n`));
  }
  const inheritedFd = process.env.PADDOCK_AGENT_FD;
  const dialPath = process.env.PADDOCK_AGENT_DIAL;
  const socketPath = path.join(agentDir, AGENT_SOCKET_NAME);
  let stopServing: () => void;
  if (dialPath !== undefined && dialPath !== "") {
    const poolSize = Number.parseInt(process.env.PADDOCK_AGENT_DIAL_POOL ?? "", 10);
    const reverse = serveReverse(dialPath, app.handle, app.upgrade, {
      size: Number.isInteger(poolSize) && poolSize > 0 && poolSize <= 64 ? poolSize : undefined,
      log: (line) => process.stdout.write(`paddock-agent: ${line}\n`),
    });
    process.stdout.write(`paddock-agent ${boot.agent_version}: dialing ${dialPath}\n`);
    stopServing = () => {
      reverse.close();
      reverse.server.closeAllConnections();
    };
  } else {
    const server = inheritedFd !== undefined && inheritedFd !== ""
      ? await listenInherited(Number.parseInt(inheritedFd, 10), app.handle, app.upgrade)
      : await listenUnix(socketPath, app.handle, app.upgrade);
    process.stdout.write(`paddock-agent ${boot.agent_version}: listening on ${inheritedFd ? `inherited fd ${inheritedFd}` : socketPath}\n`);
    stopServing = () => {
      server.close();
      server.closeAllConnections();
    };
  }
  // Only in a VM (fd or dial): a host-process agent must not bind a path in the host's /run.
  const inVm = (inheritedFd !== undefined && inheritedFd !== "") || (dialPath !== undefined && dialPath !== "");
  const local = inVm
    ? await serveLocalSecrets(LOCAL_SECRETS_SOCKET, app.secrets).catch((err: unknown) => {
      process.stderr.write(`paddock-agent: ${LOCAL_SECRETS_SOCKET}: ${err instanceof Error ? err.message : String(err)}; \`slicer-agent secrets sync\` will not work\n`);
      return undefined;
    })
    : undefined;

  const stop = (signal: string): void => {
    process.stdout.write(`paddock-agent: ${signal}, shutting down\n`);
    app.shutdown();
    stopServing();
    local?.close();
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));

  await runUserdataOnce({
    script: boot.userdata,
    guardPath: process.env.PADDOCK_AGENT_USERDATA_GUARD ?? "/etc/slicer/userdata-ran",
    workDir: ensureDir(process.env.PADDOCK_AGENT_WORK_DIR || agentDir),
    targetUser: users.defaultUser().name,
    onState: (s) => {
      userdata = s;
    },
  });
}

/** Write /etc/hostname (and /etc/resolv.conf when the boot config has one) under `etcDir`. */
function writeGuestIdentity(etcDir: string, boot: AgentBootConfig): void {
  try {
    mkdirSync(etcDir, { recursive: true, mode: 0o755 });
    writeFileSync(path.join(etcDir, "hostname"), `${boot.hostname}\n`, { mode: 0o644 });
    if (boot.resolv_conf !== null) writeFileSync(path.join(etcDir, "resolv.conf"), boot.resolv_conf, { mode: 0o644 });
  } catch (err) {
    // The guest's root may have made /etc read-only or odd: the agent still serves.
    process.stderr.write(`paddock-agent: writing ${etcDir}/hostname or resolv.conf failed: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

/**
 * In a VM: link {@link SLICER_AGENT_LINK} to the toolbox's `slicer-agent` wrapper (beside this
 * bundle, both under `/.paddock/app`), from inside the guest, unless the image already has
 * something at that path.
 */
function linkSlicerAgent(): void {
  const wrapper = path.join(path.dirname(process.argv[1] ?? ""), "slicer-agent");
  try {
    if (lstatSync(SLICER_AGENT_LINK, { throwIfNoEntry: false }) !== undefined || !existsSync(wrapper)) return;
    mkdirSync(path.dirname(SLICER_AGENT_LINK), { recursive: true, mode: 0o755 });
    symlinkSync(wrapper, SLICER_AGENT_LINK);
  } catch (err) {
    // A read-only or odd /usr/local: the SDK's chunked copy then reports unsupported and falls back.
    process.stderr.write(`paddock-agent: linking ${SLICER_AGENT_LINK}: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

/** The boot config if it can be read (the guest commands only need its default user). */
function bootOrNull(agentDir: string): AgentBootConfig | null {
  try {
    return readBootConfig(agentDir);
  } catch {
    return null;
  }
}

/** Make `dir` (0700) and return it. */
function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

if (process.argv[2] === "secrets") {
  runSecretsCommand(process.argv.slice(2)).then((code) => process.exit(code), () => process.exit(1));
} else if (process.argv[2] === "upload") {
  const users = guestUsers(bootOrNull(process.env.PADDOCK_AGENT_DIR ?? "/run/paddock-agent"));
  const io = { out: (t: string) => process.stdout.write(t), err: (t: string) => process.stderr.write(t) };
  runUploadCommand(process.argv.slice(2), users, io).then((code) => {
    process.exitCode = code;
  }, () => {
    process.exitCode = 1;
  });
} else {
  main().catch((err: unknown) => {
    process.stderr.write(`paddock-agent: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
