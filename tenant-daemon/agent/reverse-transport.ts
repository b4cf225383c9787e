/**
 * Serve the agent app over connections the agent DIALS OUT to a listener the host made (the
 * reverse agent channel, for runtimes that cannot hand the guest an inherited listener, e.g.
 * gVisor 20221219 without fd passing: docs/gvisor-findings.md §5). The host binds a Unix socket
 * in a host-only directory and binds that directory read-only into the guest
 * (tenant-daemon/agent-client/agent-dial-pool.ts); the agent keeps a few idle connections to it
 * open. The host takes one idle connection per request and speaks HTTP/1.1 on it as the client,
 * with the agent as the server: every dialed socket is fed to the agent's http.Server as if it
 * had been accepted (`server.emit("connection", socket)`), so handlers, upgrades (shell,
 * forward) and the per-boot proof header work exactly as on the inherited listener.
 *
 * Pool: `size` idle connections. As soon as one carries a request (or closes), a replacement is
 * dialed. A failed dial (no listener yet, the daemon restarting) is retried with exponential
 * backoff, from {@link MIN_BACKOFF_MS} to {@link MAX_BACKOFF_MS}; an idle connection the host
 * closes without using it counts as a failure too, so a host that refuses connections is not
 * hammered.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import net from "node:net";
import type { Duplex } from "node:stream";
import { AGENT_SERVER_OPTIONS } from "./unix-transport.js";

/** Default number of idle connections kept open to the host. */
export const DEFAULT_DIAL_POOL_SIZE = 3;
/** First retry delay after a failed dial, ms. */
export const MIN_BACKOFF_MS = 50;
/** Largest retry delay, ms (bounds how long a restarted daemon waits for the agent to come back). */
export const MAX_BACKOFF_MS = 2_000;
/** An idle connection closed by the host sooner than this after it was dialed counts as a failed dial, ms. */
const SHORT_LIVED_MS = 1_000;

/** A running reverse transport. */
export interface ReverseServer {
  /** The agent's HTTP server (never listening: it only receives dialed sockets). */
  server: Server;
  /** Idle connections open right now. */
  idleCount(): number;
  /** Stop dialing, close idle connections; connections carrying a request finish on their own. */
  close(): void;
}

/**
 * Dial `socketPath` and serve `handler` (and `upgrade`, for `Connection: Upgrade` requests) on
 * every connection, keeping `size` idle connections open (see the file header). Timeouts as in
 * unix-transport.ts: none on requests, because exec streams, log follows and wait-exit are
 * long-lived. Never throws for an unreachable host: it keeps retrying until {@link ReverseServer.close}.
 * `log` receives one line per change between reachable and unreachable.
 */
export function serveReverse(
  socketPath: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  upgrade: ((req: IncomingMessage, socket: Duplex, head: Buffer) => void) | undefined,
  opts: { size?: number; log?: (line: string) => void } = {},
): ReverseServer {
  const size = Math.max(1, opts.size ?? DEFAULT_DIAL_POOL_SIZE);
  const log = opts.log ?? (() => undefined);
  const idle = new Set<net.Socket>();
  let dialing = 0;
  let backoffMs = 0;
  let retryTimer: NodeJS.Timeout | undefined;
  let closed = false;
  let reachable: boolean | undefined;

  // A request (or upgrade) on an idle connection takes it out of the pool: dial a replacement.
  const taken = (socket: net.Socket): void => {
    if (idle.delete(socket)) fill();
  };
  const server = createServer(AGENT_SERVER_OPTIONS, (req, res) => {
    taken(req.socket as net.Socket);
    handler(req, res);
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    taken(req.socket as net.Socket);
    if (upgrade) upgrade(req, socket, head);
    else socket.destroy();
  });
  server.timeout = 0;

  const failed = (why: string): void => {
    if (reachable !== false) log(`agent channel ${socketPath} unreachable (${why}); retrying`);
    reachable = false;
    backoffMs = backoffMs === 0 ? MIN_BACKOFF_MS : Math.min(MAX_BACKOFF_MS, backoffMs * 2);
    if (retryTimer === undefined && !closed) {
      retryTimer = setTimeout(() => {
        retryTimer = undefined;
        fill();
      }, backoffMs);
    }
  };

  const dialOne = (): void => {
    dialing++;
    const socket = net.connect(socketPath);
    let connected = false;
    socket.once("error", (err) => {
      if (connected) return; // the http server owns it now and handles its errors
      dialing--;
      failed((err as NodeJS.ErrnoException).code ?? err.message);
    });
    socket.once("connect", () => {
      connected = true;
      dialing--;
      if (closed) {
        socket.destroy();
        return;
      }
      if (reachable !== true) log(`agent channel ${socketPath} connected`);
      reachable = true;
      const dialedAt = Date.now();
      idle.add(socket);
      socket.once("close", () => {
        // Closed before it carried a request: the host dropped it (or went away).
        if (!idle.delete(socket)) return;
        if (Date.now() - dialedAt < SHORT_LIVED_MS) failed("closed by the host unused");
        else fill();
      });
      server.emit("connection", socket);
      fill();
    });
  };

  function fill(): void {
    if (closed || retryTimer !== undefined) return;
    while (idle.size + dialing < size) dialOne();
    // A full pool that stays up resets the backoff.
    if (reachable === true && idle.size >= size) backoffMs = 0;
  }

  fill();
  return {
    server,
    idleCount: () => idle.size,
    close: () => {
      closed = true;
      if (retryTimer !== undefined) clearTimeout(retryTimer);
      retryTimer = undefined;
      for (const s of idle) s.destroy();
      idle.clear();
      server.close();
    },
  };
}
