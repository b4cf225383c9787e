/**
 * The guest agent's request handler, independent of the transport (Unix socket under runc,
 * vsock under Firecracker later). Routes under `/v1`: health, exec (+ background), cp, fs,
 * secrets sync.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { networkInterfaces } from "node:os";
import { readFileSync } from "node:fs";
import { PaddockError } from "../../shared/errors.js";
import { AGENT_PROOF_HEADER, type AgentBootConfig } from "./boot.js";
import { CopyHandler } from "./cp.js";
import { BackgroundExecs } from "./exec-background.js";
import { handleForegroundExec } from "./exec-foreground.js";
import { Forwards, parseUpstream } from "./forward.js";
import { FsHandler } from "./fs-ops.js";
import { handleFsWatch } from "./fs-watch.js";
import { pid1UptimeSeconds, readGuestStats } from "./guest-stats.js";
import { queryBool, sendError, sendJson, type AgentRequest } from "./http-util.js";
import { ShellSessions } from "./shell.js";
import { AGENT_UPGRADE_PROTOCOL, rejectUpgrade } from "./upgrade-util.js";
import { SecretsSyncer } from "./secrets-sync.js";
import type { UserdataState } from "./userdata.js";
import type { UserDirectory } from "./users.js";

/** Health JSON (docs/slicer-api.md#agent-health). Durations are integer nanoseconds. */
export interface AgentHealth {
  hostname: string;
  agent_uptime: number;
  agent_version: string;
  system_uptime: number;
  userdata_ran: boolean;
  userdata_exit_code?: number;
  ip: string;
}

/** First non-loopback IPv4 address, "" if none. */
export function primaryIpv4(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "";
}

/**
 * The VM's uptime in ns, health's `system_uptime` (Slicer's agent reports its microVM's: "the
 * uptime of the system", https://github.com/slicervm/sdk/blob/main/types.go
 * SlicerAgentHealthResponse): how long PID 1 of the VM's PID namespace has run (guest-stats.ts
 * pid1UptimeSeconds), since in a runc VM `/proc/uptime` is the host kernel's. `/proc/uptime`
 * itself when `/proc/1/stat` cannot be read; 0 when neither can. At least 1 once read.
 */
export function systemUptimeNs(): number {
  let up: string;
  try {
    up = readFileSync("/proc/uptime", "utf8");
  } catch {
    return 0;
  }
  let stat = "";
  try {
    stat = readFileSync("/proc/1/stat", "utf8");
  } catch {
    // no PID 1 to read: the kernel's uptime below
  }
  const s = stat !== "" ? pid1UptimeSeconds(up, stat) : parseFloat(up.split(" ")[0] ?? "0");
  return Number.isFinite(s) ? Math.max(1, Math.round(s * 1e9)) : 0;
}

/** Dependencies of {@link createAgentApp}. */
export interface AgentAppDeps {
  boot: AgentBootConfig;
  users: UserDirectory;
  /** Current userdata progress. */
  userdata: () => UserdataState;
  /** `process.hrtime.bigint()` at agent start. */
  startedAtNs: bigint;
}

/** The agent app: a request listener, an upgrade listener (shell, forward) and a shutdown hook. */
export interface AgentApp {
  handle: (req: IncomingMessage, res: ServerResponse) => void;
  /** `GET /v1/shell?…` and `GET /v1/forward?upstream=…` with `Upgrade: paddock-stream`. */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** The secrets dir, shared with the guest-local socket (secrets-local.ts). */
  secrets: SecretsSyncer;
  shutdown: () => void;
}

/** Build the agent's handlers (composition happens in main.ts). */
export function createAgentApp(deps: AgentAppDeps): AgentApp {
  const bg = new BackgroundExecs(deps.users);
  const cp = new CopyHandler(deps.users);
  const fs = new FsHandler(deps.users);
  // Every answer carries the per-boot proof, so the daemon can tell it comes from this VM's agent.
  const proofHeaders: Record<string, string> = deps.boot.agent_proof === "" ? {} : { [AGENT_PROOF_HEADER]: deps.boot.agent_proof };
  const shells = new ShellSessions(deps.users, proofHeaders);
  const forwards = new Forwards(proofHeaders);
  const secrets = new SecretsSyncer(deps.boot.secrets_dir);

  const health = (): AgentHealth => {
    const ud = deps.userdata();
    return {
      hostname: deps.boot.hostname,
      agent_uptime: Math.max(1, Number(process.hrtime.bigint() - deps.startedAtNs)),
      agent_version: deps.boot.agent_version,
      system_uptime: systemUptimeNs(),
      userdata_ran: ud.ran,
      ...(ud.exitCode !== undefined ? { userdata_exit_code: ud.exitCode } : {}),
      ip: primaryIpv4(),
    };
  };

  const route = async (ctx: AgentRequest): Promise<void> => {
    const { method, path } = ctx;
    const notAllowed = (): never => {
      throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${method} not allowed on ${path}`);
    };
    if (path === "/health") {
      if (method === "HEAD") {
        ctx.res.writeHead(200, { "Content-Type": "application/json" });
        ctx.res.end();
        return;
      }
      if (method !== "GET") notAllowed();
      sendJson(ctx.res, 200, health());
      return;
    }
    if (path === "/exec" && method === "POST") {
      if (queryBool(ctx.query, "background")) await bg.launch(ctx);
      else handleForegroundExec(ctx, deps.users);
      return;
    }
    if (path === "/exec" || path.startsWith("/exec/")) {
      if (await bg.handle(ctx)) return;
      notAllowed();
    }
    if (path === "/cp") {
      if (method === "POST") await cp.upload(ctx);
      else if (method === "GET") await cp.download(ctx);
      else notAllowed();
      return;
    }
    if (path === "/fs/watch") {
      if (method !== "GET") notAllowed();
      await handleFsWatch(ctx, deps.users);
      return;
    }
    if (path.startsWith("/fs/") && (await fs.handle(ctx))) return;
    if (path === "/stats") {
      if (method !== "GET") notAllowed();
      sendJson(ctx.res, 200, readGuestStats());
      return;
    }
    if (path === "/shell" || path === "/forward") {
      throw new PaddockError("ERR_BAD_REQUEST", `${path} needs an HTTP upgrade (Upgrade: ${AGENT_UPGRADE_PROTOCOL})`);
    }
    if (path === "/secrets/sync") {
      if (method !== "POST") notAllowed();
      await secrets.handleHostSync(ctx);
      return;
    }
    throw new PaddockError("ERR_NOT_FOUND", `no agent route ${method} /v1${path}`);
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    for (const [k, v] of Object.entries(proofHeaders)) res.setHeader(k, v);
    const url = new URL(req.url ?? "/", "http://agent");
    if (!url.pathname.startsWith("/v1/")) {
      sendError(res, new PaddockError("ERR_NOT_FOUND", `no agent route ${url.pathname}`));
      return;
    }
    const ctx: AgentRequest = { req, res, method: req.method ?? "GET", path: url.pathname.slice(3), query: url.searchParams };
    route(ctx).catch((err: unknown) => {
      if (!(err instanceof PaddockError) || !err.isClientError) {
        process.stderr.write(`paddock-agent: ${req.method} ${req.url}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      }
      // Drain an unread upload so the client receives the error instead of a reset.
      if (!req.readableEnded) req.resume();
      sendError(res, err);
    });
  };

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on("error", () => undefined);
    const url = new URL(req.url ?? "/", "http://agent");
    const work = async (): Promise<void> => {
      if ((req.headers.upgrade ?? "").toLowerCase() !== AGENT_UPGRADE_PROTOCOL) {
        throw new PaddockError("ERR_BAD_REQUEST", `unsupported upgrade ${JSON.stringify(req.headers.upgrade ?? "")}`);
      }
      if (req.method !== "GET") throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on ${url.pathname}`);
      if (url.pathname === "/v1/shell") await shells.open(url.searchParams, socket, head);
      else if (url.pathname === "/v1/forward") forwards.open(parseUpstream(url.searchParams.get("upstream")), socket, head);
      else throw new PaddockError("ERR_NOT_FOUND", `no agent upgrade route ${url.pathname}`);
    };
    work().catch((err: unknown) => {
      if (!(err instanceof PaddockError) || !err.isClientError) {
        process.stderr.write(`paddock-agent: upgrade ${req.url}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      }
      rejectUpgrade(socket, err, proofHeaders);
    });
  };

  return {
    handle,
    upgrade,
    secrets,
    shutdown: () => {
      bg.shutdown();
      shells.shutdown();
      forwards.shutdown();
    },
  };
}
