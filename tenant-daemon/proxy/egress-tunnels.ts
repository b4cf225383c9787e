/**
 * The egress proxy's open CONNECT tunnels (egress-proxy.ts decides which open): the table of
 * them with the load bound they share with in-flight requests, and the two ways bytes go once a
 * tunnel is open — spliced unseen to the connected upstream, or intercepted (TLS terminated with
 * a leaf of the tenant CA, or plain HTTP read) and handed, request by request, to the proxy's
 * inner http server. A tunnel ends when any of its sockets does, when a rule change leaves it
 * uncovered ({@link EgressTunnels.destroy}), or at close.
 */
import type http from "node:http";
import type net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import type { Logger } from "../../shared/logger.js";
import type { EgressTelemetry } from "./egress-telemetry.js";
import type { ProxyCa } from "./proxy-ca.js";

/** Where a tunnel goes and why it was let open. */
export interface Tunnel {
  client: string;
  host: string;
  port: number;
  /** `splice`: bytes unseen; `inspect`: inner requests matched one by one; `audit`: no rule, audit mode. */
  kind: "splice" | "inspect" | "audit";
  sockets: Duplex[];
}

/** What {@link EgressTunnels} works with (EgressProxy builds it). */
export interface EgressTunnelsDeps {
  /** The server of requests inside intercepted tunnels (`connection` event). */
  inner: http.Server;
  /** The tenant CA (leaves for intercepted TLS). */
  ca: ProxyCa;
  telemetry: EgressTelemetry;
  /** Idle timeout of a spliced upstream, ms. */
  idleMs: number;
  log: Logger;
}

/** The open tunnels of one proxy, and what is in flight against its bound. */
export class EgressTunnels {
  private readonly deps: EgressTunnelsDeps;
  private readonly tunnels = new Set<Tunnel>();
  /** The tunnel each stream handed to the inner server belongs to. */
  private readonly tunnelOf = new WeakMap<Duplex, Tunnel>();
  /** The upstream an intercepted tunnel's requests go to (resolved and checked once, at CONNECT). */
  private readonly upstreamOf = new WeakMap<Tunnel, { ip: string; tls: boolean }>();
  private active = 0;

  constructor(deps: EgressTunnelsDeps) {
    this.deps = deps;
  }

  /** Tunnels open plus requests in flight: what `maxTunnels` bounds. */
  get load(): number {
    return this.active;
  }

  /** Tunnels open now. */
  get size(): number {
    return this.tunnels.size;
  }

  /** Every open tunnel (a copy: destroying while iterating is fine). */
  all(): Tunnel[] {
    return [...this.tunnels];
  }

  /** Count a new tunnel as open. */
  open(t: Tunnel): void {
    this.tunnels.add(t);
    this.active++;
  }

  /** Whether `t` is still open (not destroyed meanwhile). */
  isOpen(t: Tunnel): boolean {
    return this.tunnels.has(t);
  }

  /** End `t`: destroy its sockets. Idempotent. */
  destroy(t: Tunnel): void {
    if (!this.tunnels.delete(t)) return;
    this.active--;
    for (const s of t.sockets) s.destroy();
  }

  /** Destroy every tunnel (the proxy closes). */
  destroyAll(): void {
    for (const t of this.all()) this.destroy(t);
  }

  /** Count a request as in flight; call the returned function once when it ends. */
  beginRequest(): () => void {
    this.active++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.active--;
    };
  }

  /** The tunnel of a request the inner server reads (by its socket), and where its requests go. */
  inner(socket: object): { tunnel: Tunnel; upstream: { ip: string; tls: boolean } | undefined } | undefined {
    const tunnel = this.tunnelOf.get(socket as Duplex);
    return tunnel === undefined ? undefined : { tunnel, upstream: this.upstreamOf.get(tunnel) };
  }

  /** Bytes both ways, unseen, between the client and its connected upstream. */
  splice(tunnel: Tunnel, socket: Duplex, first: Buffer, upstream: net.Socket, rule: string): void {
    const { telemetry } = this.deps;
    socket.on("error", () => this.destroy(tunnel));
    socket.on("close", () => this.destroy(tunnel));
    upstream.setTimeout(this.deps.idleMs, () => this.destroy(tunnel));
    if (first.length > 0) upstream.write(first);
    telemetry.moved(tunnel.client, rule, "up", first.length);
    socket.on("data", (c: Buffer) => telemetry.moved(tunnel.client, rule, "up", c.length));
    upstream.on("data", (c: Buffer) => telemetry.moved(tunnel.client, rule, "down", c.length));
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.resume();
  }

  /**
   * Terminate TLS (`serverName` set: a leaf of the tenant CA for the tunnel's host) or read
   * plain HTTP inside the tunnel, and hand it to the inner server; its requests go to `ip`.
   */
  intercept(tunnel: Tunnel, socket: Duplex, serverName: string | undefined, ip: string): void {
    tunnel.sockets.push(socket);
    const start = (stream: Duplex): void => {
      this.tunnelOf.set(stream, tunnel);
      this.upstreamOf.set(tunnel, { ip, tls: serverName !== undefined });
      if (stream !== socket) tunnel.sockets.push(stream);
      stream.on("close", () => this.destroy(tunnel));
      this.deps.inner.emit("connection", stream);
    };
    if (serverName === undefined) {
      start(socket);
      return;
    }
    this.deps.ca.leafFor(tunnel.host).then(
      (leaf) => {
        if (!this.tunnels.has(tunnel)) return;
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: tls.createSecureContext(leaf), ALPNProtocols: ["http/1.1"] });
        secure.on("error", () => this.destroy(tunnel));
        start(secure);
      },
      (err: unknown) => {
        this.deps.log.error("egress leaf certificate failed", { err });
        this.destroy(tunnel);
      },
    );
  }
}
