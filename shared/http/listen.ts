/**
 * Binding an HTTP server to a Unix socket or a TCP address, the one way both apps do it
 * (the supervisor's gateway and admin API, the tenant daemon's API), and closing it with
 * every connection it accepted.
 *
 * A Unix socket path where no process answers is a stale file from an earlier run and is
 * replaced; one where a process answers is refused. The socket file gets the given mode.
 */
import { promises as fs } from "node:fs";
import type http from "node:http";
import net from "node:net";
import path from "node:path";
import { PaddockError } from "../errors.js";

/** Where to listen: a Unix socket path, or a TCP host and port (0 = any free port). */
export type ListenTarget = { kind: "unix"; socketPath: string } | { kind: "tcp"; host: string; port: number };

/** Resolves true when a process accepts a connection on the Unix socket at `socketPath`. */
export function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * Refuse early when `target` is taken: a Unix socket another process answers on, or a TCP
 * port already bound (port 0 is never taken). {@link listenHttp} checks again when it binds.
 * @throws PaddockError ERR_SOCKET_IN_USE
 */
export async function assertListenFree(target: ListenTarget): Promise<void> {
  if (target.kind === "unix") {
    if (await socketAnswers(target.socketPath)) throw new PaddockError("ERR_SOCKET_IN_USE", `another process is already listening on ${target.socketPath}`);
    return;
  }
  if (target.port === 0) return;
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (err: NodeJS.ErrnoException) => reject(inUse(err, target)));
    probe.listen(target.port, target.host, () => probe.close(() => resolve()));
  });
}

/**
 * Bind `server` to `target`. For a Unix socket: create its directory (0755) if missing,
 * refuse a live socket, replace a stale one, then chmod the socket to `socketMode` (octal,
 * e.g. 0o660).
 * @returns the socket path, or the bound TCP address (`net.AddressInfo`, with the real port
 *   when 0 was asked).
 * @throws PaddockError ERR_SOCKET_IN_USE when the socket answers or the port is bound; the
 *   server's other listen errors as they are.
 */
export async function listenHttp(server: http.Server, target: ListenTarget, socketMode: number): Promise<string | net.AddressInfo> {
  trackConnections(server);
  if (target.kind === "unix") {
    const { socketPath } = target;
    await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
    await assertListenFree(target);
    await fs.rm(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    await fs.chmod(socketPath, socketMode);
    return socketPath;
  }
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => reject(inUse(err, target)));
    server.listen(target.port, target.host, () => resolve());
  });
  return server.address() as net.AddressInfo;
}

function inUse(err: NodeJS.ErrnoException, t: { host: string; port: number }): Error {
  return err.code === "EADDRINUSE" ? new PaddockError("ERR_SOCKET_IN_USE", `${t.host}:${t.port} is already in use`, { cause: err }) : err;
}

/** Every socket a server bound by {@link listenHttp} accepted and that is still open. */
const accepted = new WeakMap<http.Server, Set<net.Socket>>();

function trackConnections(server: http.Server): void {
  if (accepted.has(server)) return;
  const open = new Set<net.Socket>();
  accepted.set(server, open);
  server.on("connection", (socket: net.Socket) => {
    open.add(socket);
    socket.once("close", () => open.delete(socket));
  });
}

/**
 * Stop `server` and end every connection it holds, then resolve once it has closed.
 * `server.closeAllConnections()` ends only the connections Node's HTTP server still parses:
 * a socket handed to an `upgrade` listener (a WebSocket shell or port forward) has left that
 * list (https://nodejs.org/docs/latest-v20.x/api/http.html#servercloseallconnections) but
 * still holds `close()` open. Those accepted since {@link listenHttp} are destroyed too, so a
 * stop never waits for a client to hang up. Never rejects.
 */
export async function closeHttpServer(server: http.Server): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
    for (const socket of accepted.get(server) ?? []) socket.destroy();
  });
}
