/**
 * On-demand secrets re-sync from inside the guest: `/.paddock/app/slicer-agent secrets sync`
 * (docs/slicer-api.md#secrets).
 *
 * Slicer's guest agent pulls secrets from a host server and `slicer-agent secrets sync` pulls
 * again (https://docs.slicervm.com/reference/secrets). Paddock's guest cannot send requests to
 * the host (the agent channel is one the host connects to), so the command asks the local agent
 * instead to write again the set the host pushed last: files changed or removed in the guest
 * come back, and files of secrets not in that set go. The host pushes every change itself
 * (tenant-daemon/vm/vm-secrets-sync.ts), so that set is the current one unless a push failed.
 *
 * The agent serves this on a guest-local Unix socket ({@link LOCAL_SECRETS_SOCKET}, mode 0600,
 * so guest root only) with one route, `POST /v1/secrets/sync`; nothing of it reaches the host.
 */
import http, { type Server } from "node:http";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { sendError, sendJson } from "./http-util.js";
import type { SecretsSyncer } from "./secrets-sync.js";
import { listenUnix } from "./unix-transport.js";

/** The guest-local socket of the re-sync command. */
export const LOCAL_SECRETS_SOCKET = "/run/slicer/agent-secrets.sock";

/**
 * Serve `POST /v1/secrets/sync` (re-apply the host's last set, 200 `{"synced":[names]}`, 404
 * ERR_SECRET_NOT_FOUND before the first push) on `socketPath`; other paths 404, other methods 405.
 * @throws Error when the socket cannot be bound.
 */
export async function serveLocalSecrets(socketPath: string, secrets: SecretsSyncer): Promise<Server> {
  mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  return listenUnix(socketPath, (req, res) => {
    const url = new URL(req.url ?? "/", "http://agent");
    req.resume();
    const work = async (): Promise<void> => {
      if (url.pathname !== "/v1/secrets/sync") throw new PaddockError("ERR_NOT_FOUND", `no route ${url.pathname}`);
      if (req.method !== "POST") throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on ${url.pathname}`);
      sendJson(res, 200, { synced: await secrets.reapply() });
    };
    work().catch((err: unknown) => sendError(res, err));
  });
}

/**
 * The guest command: `slicer-agent secrets sync` (argv after the script). Prints the names
 * written, or the error.
 * @returns the exit code: 0 done, 1 failed, 2 usage.
 */
export async function runSecretsCommand(args: readonly string[], socketPath = LOCAL_SECRETS_SOCKET): Promise<number> {
  if (args.length !== 2 || args[0] !== "secrets" || args[1] !== "sync") {
    process.stderr.write("usage: slicer-agent secrets sync\n");
    return 2;
  }
  try {
    const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ socketPath, method: "POST", path: "/v1/secrets/sync" }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
      });
      req.setTimeout(30_000, () => req.destroy(new Error("timed out after 30 s")));
      req.on("error", reject);
      req.end();
    });
    const body = JSON.parse(text) as { synced?: string[]; error?: string };
    if (status !== 200) throw new Error(body.error ?? `answered ${status}`);
    const names = body.synced ?? [];
    process.stdout.write(`synced ${names.length} secret${names.length === 1 ? "" : "s"}${names.length ? `: ${names.join(" ")}` : ""}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`slicer-agent secrets sync: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
