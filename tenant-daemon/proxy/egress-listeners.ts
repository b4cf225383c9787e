/**
 * Where the egress proxy (egress-proxy.ts) accepts connections, and the bound on them: one
 * `net.Server` per listen address, whose connections go to the proxy's one http server. Each
 * client connection holds a descriptor of the daemon, so at most `maxConnections` are open over
 * all listeners (more are closed on accept); one silent for {@link HELLO_TIMEOUT_MS} after
 * accept is closed, an idle one after `idleMs`. A connection whose first byte opens a TLS
 * handshake (a client configured with `HTTPS_PROXY=https://…`, Slicer's documented form) is
 * terminated with a leaf of the tenant CA first. The TCP peer of each stream handed on is kept
 * ({@link EgressListeners.peer}): the proxy identifies VMs by it.
 */
import type http from "node:http";
import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { normaliseHostName } from "../../shared/tenant-config-proxy.js";
import { HELLO_TIMEOUT_MS, prefixed } from "./egress-streams.js";
import type { ProxyCa } from "./proxy-ca.js";
import { canonicalIp } from "./proxy-rules.js";

/** What {@link EgressListeners} works with (EgressProxy builds it). */
export interface EgressListenersDeps {
  /** The http server each accepted connection is handed to (`connection` event). */
  server: http.Server;
  /** The tenant CA (leaves for clients that speak TLS to the proxy). */
  ca: ProxyCa;
  /** Most client connections open at once over all listeners. */
  maxConnections: number;
  /** Idle timeout of a connection once it sent its first byte, ms. */
  idleMs: number;
  log: Logger;
}

/** The proxy's listeners and the client connections they accepted. */
export class EgressListeners {
  private readonly deps: EgressListenersDeps;
  private readonly listeners = new Map<string, net.Server>();
  private readonly sockets = new Set<net.Socket>();
  /** The TCP peer of each stream the http server reads (they are wrappers without an address of their own). */
  private readonly peerOf = new WeakMap<object, string>();
  private closed = false;

  constructor(deps: EgressListenersDeps) {
    this.deps = deps;
  }

  /**
   * Accept proxy connections on `host:port` (one call per address; 0 ⇒ a free port, see {@link address}).
   * @throws PaddockError ERR_NETWORK_ADDRESS_IN_USE when the address is taken, ERR_NETWORK_SETUP_FAILED
   *   when the host has no such address (EADDRNOTAVAIL); ERR_INTERNAL after close.
   */
  async listen(host: string, port: number): Promise<void> {
    if (this.closed) throw new PaddockError("ERR_INTERNAL", "the egress proxy is closed");
    const key = `${host}:${port}`;
    if (this.listeners.has(key)) return;
    const srv = net.createServer((socket) => {
      socket.on("error", () => undefined);
      // Each client connection holds a descriptor of the daemon: past the bound it is closed at once.
      if (this.sockets.size >= this.deps.maxConnections) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      // A connection that sends nothing is closed after HELLO_TIMEOUT_MS, not the idle timeout.
      socket.setTimeout(HELLO_TIMEOUT_MS, () => socket.destroy());
      this.accept(socket);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once("error", (err: NodeJS.ErrnoException) => reject(listenError(err, key)));
      srv.listen({ host, port }, () => resolve());
    });
    srv.on("error", (err) => this.deps.log.error("egress listener failed", { listen: key, err }));
    const bound = srv.address() as net.AddressInfo;
    this.listeners.set(key, srv);
    if (port === 0) this.listeners.set(`${host}:${bound.port}`, srv);
    this.deps.log.info("egress proxy listening", { host, port: bound.port });
  }

  /** The port `listen(host, 0)` got (undefined when not listening there). */
  address(host: string, port = 0): number | undefined {
    const a = this.listeners.get(`${host}:${port}`)?.address();
    return a && typeof a === "object" ? a.port : undefined;
  }

  /** Stop accepting on `host:port`; connections already open stay until they end. */
  async unlisten(host: string, port: number): Promise<void> {
    const srv = this.listeners.get(`${host}:${port}`);
    if (!srv) return;
    for (const [k, v] of [...this.listeners]) if (v === srv) this.listeners.delete(k);
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }

  /** The TCP peer address of a stream the http server reads (undefined: not one of ours). */
  peer(stream: object): string | undefined {
    return this.peerOf.get(stream);
  }

  /**
   * Stop every listener and destroy every client connection now; resolves once the listeners
   * closed. Idempotent; {@link listen} refuses after it.
   */
  close(): Promise<void> {
    this.closed = true;
    const servers = [...new Set(this.listeners.values())];
    this.listeners.clear();
    for (const s of this.sockets) s.destroy();
    return Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);
  }

  /**
   * Hand a new connection to the http server: as it is, or, when its first byte opens a TLS
   * handshake, through TLS terminated with a leaf of the tenant CA for the name the client
   * asked for (its SNI) or else the address it connected to.
   */
  private accept(socket: net.Socket): void {
    socket.once("data", (first: Buffer) => {
      socket.pause();
      socket.setTimeout(this.deps.idleMs, () => socket.destroy());
      const stream = prefixed(socket, first);
      const peer = socket.remoteAddress;
      if (peer !== undefined) this.peerOf.set(stream, peer);
      if (first[0] !== 0x16) {
        this.deps.server.emit("connection", stream);
        return;
      }
      const local = canonicalIp(socket.localAddress ?? "127.0.0.1");
      this.deps.ca.leafFor(local).then((fallback) => {
        const secure = new tls.TLSSocket(stream, {
          isServer: true,
          secureContext: tls.createSecureContext(fallback),
          ALPNProtocols: ["http/1.1"],
          SNICallback: (name, cb) => {
            const n = normaliseHostName(name);
            if (n === undefined) return cb(null, undefined);
            this.deps.ca.leafFor(n).then((leaf) => cb(null, tls.createSecureContext(leaf)), (err: Error) => cb(err, undefined));
          },
        });
        secure.on("error", () => socket.destroy());
        if (peer !== undefined) this.peerOf.set(secure, peer);
        this.deps.server.emit("connection", secure satisfies Duplex);
      }, (err: unknown) => {
        this.deps.log.error("egress proxy certificate failed", { err });
        socket.destroy();
      });
    });
  }
}

/** The error of a failed listen on `key` (`host:port`): a taken address and a missing one told apart. */
function listenError(err: NodeJS.ErrnoException, key: string): Error {
  if (err.code === "EADDRINUSE") return new PaddockError("ERR_NETWORK_ADDRESS_IN_USE", `egress proxy cannot listen on ${key}: the address is in use`, { cause: err });
  if (err.code === "EADDRNOTAVAIL") return new PaddockError("ERR_NETWORK_SETUP_FAILED", `egress proxy cannot listen on ${key}: the host has no such address (EADDRNOTAVAIL)`, { cause: err });
  return err;
}
