/**
 * Serve the agent app over HTTP: on a listening socket inherited from the host (in a VM: the
 * listener tenant-daemon/runtime/native/paddock-nsutil.c binds in a host-only directory and the
 * runtime passes as fd 3), or on a Unix socket path (host-process tests). A microVM guest would
 * feed vsock connections to the same handler.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { chmodSync, rmSync } from "node:fs";
import type { Duplex } from "node:stream";

/**
 * Stream buffer marks of the agent's connections, bytes (`highWaterMark` of its sockets,
 * requests and responses). Node's default 16 KiB is less than one exec frame (~128 KiB for a
 * 64 KiB pipe read, the payload twice) or one socket read: every frame paused the command's
 * pipe until the daemon had read it, and a cp upload paused the socket on every chunk. With 1 MiB
 * a few frames or upload chunks are in flight per connection (docs/performance.md).
 */
export const AGENT_STREAM_BUFFER_BYTES = 1024 * 1024;

/** The agent's HTTP server options (both transports). */
export const AGENT_SERVER_OPTIONS = { requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 5_000, highWaterMark: AGENT_STREAM_BUFFER_BYTES } as const;

/**
 * Listen on `socketPath` (a stale socket file is removed first; mode 0600); `upgrade`
 * receives `Connection: Upgrade` requests (shell, forward). Timeouts are
 * disabled because exec streams, log follows and wait-exit are long-lived.
 */
export async function listenUnix(
  socketPath: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
): Promise<Server> {
  rmSync(socketPath, { force: true });
  const server = createServer(AGENT_SERVER_OPTIONS, handler);
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

/**
 * Accept on the listening socket inherited as file descriptor `fd` (see the file header). Node
 * marks the descriptor close-on-exec once it owns it, so commands the agent runs never inherit
 * the listener. Same handlers and timeouts as {@link listenUnix}.
 * @throws Error when `fd` is not a listening socket.
 */
export async function listenInherited(
  fd: number,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void,
): Promise<Server> {
  const server = createServer(AGENT_SERVER_OPTIONS, handler);
  if (upgrade) server.on("upgrade", upgrade);
  server.timeout = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ fd }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return server;
}
