/**
 * Serve the agent app over HTTP on a Unix socket (the runc driver's transport; a
 * Firecracker guest will feed vsock connections to the same handler).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { chmodSync, rmSync } from "node:fs";
import type { Duplex } from "node:stream";

/**
 * Listen on `socketPath` (a stale socket file is removed first; mode 0600); `upgrade`
 * receives `Connection: Upgrade` requests (shell, forward). Timeouts are
 * disabled because exec streams, log follows and wait-exit are long-lived (spec §1.1).
 */
export async function listenUnix(
  socketPath: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
): Promise<Server> {
  rmSync(socketPath, { force: true });
  const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 5_000 }, handler);
  if (upgrade) server.on("upgrade", upgrade);
  server.timeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o600);
  return server;
}
