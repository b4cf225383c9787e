/**
 * The tenant's egress proxy engine: an HTTP forward proxy VMs reach (egressnet decides where
 * it listens and routes proxy-mode VMs to it) that lets a request out only when an allow rule
 * of the requesting client covers it (tenant-daemon/proxy/proxy-rules.ts).
 *
 * 1. Parsing is Node's http server: CONNECT (`connect` event) and absolute-form requests
 *    (`request`), headers at most 16 KiB. Each listen address gets a `net.Server` whose
 *    connections are handed to the one http server.
 * 2. Identity: `identify(remoteAddress)` (the VM's address → its client), else the
 *    `Proxy-Authorization` token (basic, user empty: `HTTPS_PROXY=http://:<token>@host:port`;
 *    the store compares SHA-256s); neither ⇒ 407.
 * 3. CONNECT host:port: the client's rules for it (none ⇒ 403). The first TLS record is read
 *    (tls-client-hello.ts) and its SNI must equal the CONNECT host (else the tunnel is closed).
 *    A rule with a secret or methods/paths (not passthrough) ⇒ TLS is terminated with a leaf of
 *    the tenant CA (proxy-ca.ts) and each inner request is matched and forwarded
 *    (egress-forward.ts), the client's Authorization replaced by the secret's; otherwise the
 *    bytes are spliced unseen.
 * 4. Absolute-form `http://` requests: matched and forwarded the same way.
 * 5. Upstream: resolved on the host (`resolveHost`), checked by the address guard
 *    (upstream-guard.ts) and connected to by that address only: no second lookup.
 * 6. Every open tunnel is re-checked when rules change (add, delete, revoke, TTL expiry, client
 *    or secret deletion): one no rule covers any more is destroyed.
 * 7. `mode: audit`: what would be refused for want of a rule is counted, told (`egress_audit`)
 *    and let through; identity and the address guard still hold.
 * 8. Bounded: at most `maxTunnels` tunnels and in-flight requests, and twice that many client
 *    connections (more are closed on accept: each is a descriptor of the daemon); a connection
 *    silent for {@link HELLO_TIMEOUT_MS} after accept is closed, idle sockets after
 *    `idleTimeoutMs`; the TLS ClientHello must come within {@link HELLO_TIMEOUT_MS}.
 *
 * Secret values are never logged nor put in an answer of the proxy's own: logs carry method,
 * host, port and the path without its query, with any secret value replaced by `[redacted]`.
 */
import http from "node:http";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import type { Registry } from "prom-client";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import { httpJsonAnswer } from "../../shared/http-input.js";
import type { Logger } from "../../shared/logger.js";
import { DEFAULT_PROXY_SETTINGS, normaliseHostName, type ProxySettings } from "../../shared/tenant-config-proxy.js";
import type { EgressEventInput } from "../events/event-log.js";
import { EgressTelemetry } from "./egress-telemetry.js";
import { HttpForwarder, type ForwardTarget } from "./egress-forward.js";
import { ProxyCa } from "./proxy-ca.js";
import { canonicalIp, matchablePath, needsInspection, requestMatch, type AllowRule } from "./proxy-rules.js";
import type { ProxyStore } from "./proxy-store.js";
import { parseClientHello } from "./tls-client-hello.js";
import { HELLO_TIMEOUT_MS, Refused, dialUpstream, parseAuthority, prefixed, readFirstRecord, safeUrl } from "./egress-streams.js";

export { HELLO_TIMEOUT_MS };
import { UpstreamGuard } from "./upstream-guard.js";

/** Largest request head the proxy parses, bytes. */
export const MAX_HEADER_BYTES = 16_384;

/** What the engine is built from (the interface between the engine and the network wiring). */
export interface EgressProxyDeps {
  /** Clients, secrets and rules (proxy-store.ts). */
  store: ProxyStore;
  /** The client of a VM by its source address, or undefined (then the proxy token decides). */
  identify(remoteAddress: string): string | undefined;
  /** Upstream name → one IP address (upstream-guard.ts `createHostResolver`). @throws PaddockError ERR_EGRESS_UPSTREAM_UNRESOLVED */
  resolveHost(host: string): Promise<string>;
  log: Logger;
  /** The daemon's prom-client registry the counters register in. */
  metrics: Registry;
  /** Where `egress_denied` / `egress_audit` events go (the daemon's `EventLog.emit`). */
  events: (e: EgressEventInput) => void;
  /** `<stateDir>`: the CA lives in `<stateDir>/proxy/` (0700; key 0600). */
  stateDir: string;
  /** Names the CA. */
  tenantId: string;
  /** `paddock.proxy` (default {@link DEFAULT_PROXY_SETTINGS}). */
  settings?: ProxySettings;
  /** More upstream CIDRs to refuse: the tenant's own ranges and `paddock.foreign_ranges`. */
  refusedRanges?: readonly string[];
  /** CA certificates (PEM) trusted for upstream TLS besides Node's bundled roots (tests; else NODE_EXTRA_CA_CERTS). */
  upstreamCaPems?: readonly string[];
}

/** Where a tunnel goes and why it was let open. */
interface Tunnel {
  client: string;
  host: string;
  port: number;
  /** `splice`: bytes unseen; `inspect`: inner requests matched one by one; `audit`: no rule, audit mode. */
  kind: "splice" | "inspect" | "audit";
  sockets: Duplex[];
}

/** The egress proxy of one tenant. */
export class EgressProxy {
  private readonly deps: EgressProxyDeps;
  private readonly settings: ProxySettings;
  private readonly server: http.Server;
  private readonly inner: http.Server;
  private readonly listeners = new Map<string, net.Server>();
  private readonly tunnels = new Set<Tunnel>();
  private readonly tunnelOf = new WeakMap<Duplex, Tunnel>();
  private readonly ca: ProxyCa;
  private readonly guard: UpstreamGuard;
  private readonly telemetry: EgressTelemetry;
  private readonly forwarder: HttpForwarder;
  private readonly unsubscribe: () => void;
  private readonly sockets = new Set<net.Socket>();
  /** The TCP peer of each stream the http server reads (they are wrappers without an address of their own). */
  private readonly peerOf = new WeakMap<object, string>();
  private active = 0;
  private closed = false;

  constructor(deps: EgressProxyDeps) {
    this.deps = deps;
    this.settings = deps.settings ?? DEFAULT_PROXY_SETTINGS;
    this.ca = new ProxyCa(path.join(deps.stateDir, "proxy"), deps.tenantId);
    this.guard = new UpstreamGuard({ extraRefused: deps.refusedRanges ?? [], unsafeAllow: this.settings.unsafeAllowUpstreams });
    this.telemetry = new EgressTelemetry(deps.metrics, deps.events);
    this.forwarder = new HttpForwarder({ upstreamCaPems: deps.upstreamCaPems ?? [], idleTimeoutMs: this.idleMs(), log: deps.log });
    const opts = { maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000 };
    this.server = http.createServer(opts, (req, res) => this.onRequest(req, res, undefined));
    this.server.on("connect", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onConnect(req, socket, head));
    this.server.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => this.answerRaw(socket, new Refused(400, "ERR_BAD_REQUEST", "upgrade", "upgrades through the proxy go inside a CONNECT tunnel")));
    this.server.on("clientError", (_err, socket) => socket.destroy());
    // Requests inside intercepted tunnels (TLS terminated, or plain HTTP in a CONNECT to port 80).
    this.inner = http.createServer(opts, (req, res) => this.onRequest(req, res, this.tunnelOf.get(req.socket)));
    this.inner.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => this.answerRaw(socket, new Refused(400, "ERR_BAD_REQUEST", "upgrade", "upgrades are not supported on intercepted tunnels")));
    this.inner.on("clientError", (_err, socket) => socket.destroy());
    this.unsubscribe = deps.store.onChange(() => this.recheckTunnels());
  }

  private idleMs(): number {
    return this.settings.idleTimeoutSeconds * 1000;
  }

  /** Most client connections open at once over all listeners: twice `maxTunnels` (tunnels plus kept-alive request connections). */
  private maxConnections(): number {
    return this.settings.maxTunnels * 2;
  }

  /**
   * Accept proxy connections on `host:port` (one call per address; 0 ⇒ a free port, see {@link address}).
   * @throws PaddockError ERR_NETWORK_ADDRESS_IN_USE when the address is taken, or after close.
   */
  async listen(host: string, port: number): Promise<void> {
    if (this.closed) throw new PaddockError("ERR_INTERNAL", "the egress proxy is closed");
    const key = `${host}:${port}`;
    if (this.listeners.has(key)) return;
    const srv = net.createServer((socket) => {
      socket.on("error", () => undefined);
      // Each client connection holds a descriptor of the daemon: past the bound it is closed at once.
      if (this.sockets.size >= this.maxConnections()) {
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
      srv.once("error", (err: NodeJS.ErrnoException) => reject(err.code === "EADDRINUSE" || err.code === "EADDRNOTAVAIL" ? new PaddockError("ERR_NETWORK_ADDRESS_IN_USE", `egress proxy cannot listen on ${key}: ${err.code}`, { cause: err }) : err));
      srv.listen({ host, port }, () => resolve());
    });
    srv.on("error", (err) => this.deps.log.error("egress listener failed", { listen: key, err }));
    const bound = srv.address() as net.AddressInfo;
    this.listeners.set(key, srv);
    if (port === 0) this.listeners.set(`${host}:${bound.port}`, srv);
    this.deps.log.info("egress proxy listening", { host, port: bound.port });
  }

  /**
   * Hand a new connection to the http server: as it is, or, when its first byte opens a TLS
   * handshake (a client configured with `HTTPS_PROXY=https://…`, Slicer's documented form),
   * through TLS terminated with a leaf of the tenant CA for the name the client asked for (its
   * SNI) or else the address it connected to.
   */
  private accept(socket: net.Socket): void {
    socket.once("data", (first: Buffer) => {
      socket.pause();
      socket.setTimeout(this.idleMs(), () => socket.destroy());
      const stream = prefixed(socket, first);
      const peer = socket.remoteAddress;
      if (peer !== undefined) this.peerOf.set(stream, peer);
      if (first[0] !== 0x16) {
        this.server.emit("connection", stream);
        return;
      }
      const local = canonicalIp(socket.localAddress ?? "127.0.0.1");
      this.ca.leafFor(local).then((fallback) => {
        const secure = new tls.TLSSocket(stream, {
          isServer: true,
          secureContext: tls.createSecureContext(fallback),
          ALPNProtocols: ["http/1.1"],
          SNICallback: (name, cb) => {
            const n = normaliseHostName(name);
            if (n === undefined) return cb(null, undefined);
            this.ca.leafFor(n).then((leaf) => cb(null, tls.createSecureContext(leaf)), (err: Error) => cb(err, undefined));
          },
        });
        secure.on("error", () => socket.destroy());
        if (peer !== undefined) this.peerOf.set(secure, peer);
        this.server.emit("connection", secure);
      }, (err: unknown) => {
        this.deps.log.error("egress proxy certificate failed", { err });
        socket.destroy();
      });
    });
  }

  /** The port `listen(host, 0)` got (undefined when not listening there). */
  address(host: string, port = 0): number | undefined {
    const a = this.listeners.get(`${host}:${port}`)?.address();
    return a && typeof a === "object" ? a.port : undefined;
  }

  /** Stop accepting on `host:port`; tunnels already open stay until they end. */
  async unlisten(host: string, port: number): Promise<void> {
    const srv = this.listeners.get(`${host}:${port}`);
    if (!srv) return;
    for (const [k, v] of [...this.listeners]) if (v === srv) this.listeners.delete(k);
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }

  /** Stop every listener and destroy every connection and tunnel. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    const servers = [...new Set(this.listeners.values())];
    this.listeners.clear();
    for (const t of this.tunnels) this.destroyTunnel(t);
    for (const s of this.sockets) s.destroy();
    this.forwarder.close();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  /** PEM of the tenant CA certificate (to install in VMs), created on first use. */
  caCertificatePem(): Promise<string> {
    return this.ca.certificatePem();
  }

  /** Tunnels open now (CONNECT), for tests and metrics. */
  openTunnels(): number {
    return this.tunnels.size;
  }

  // ---- identity ----

  /** The client of a request: by its address, else its Proxy-Authorization token. */
  private clientOf(req: http.IncomingMessage): string | undefined {
    const addr = this.peerOf.get(req.socket) ?? req.socket.remoteAddress;
    const byAddr = addr === undefined ? undefined : this.deps.identify(canonicalIp(addr));
    if (byAddr !== undefined) return byAddr;
    const auth = req.headers["proxy-authorization"];
    if (typeof auth !== "string") return undefined;
    const m = /^\s*(basic|bearer)\s+(\S+)\s*$/i.exec(auth);
    if (!m) return undefined;
    let token = m[2] as string;
    if ((m[1] as string).toLowerCase() === "basic") {
      const decoded = Buffer.from(token, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      token = colon === -1 ? decoded : decoded.slice(colon + 1);
    }
    return token === "" ? undefined : this.deps.store.clientByToken(token);
  }

  // ---- answers and logs ----

  private redact(text: string): string {
    let out = text;
    for (const v of this.deps.store.secretValues()) if (v.length >= 4) out = out.split(v).join("[redacted]");
    return out;
  }

  private logDecision(fields: { client?: string; method: string; host: string; port: number; path?: string; decision: string; reason?: string; rule?: string }): void {
    if (!this.deps.log.enabled("info")) return;
    this.deps.log.info("egress", { ...fields, host: this.redact(fields.host), ...(fields.path !== undefined ? { path: this.redact(fields.path) } : {}) });
  }

  private refusalBody(r: Refused): string {
    const { body } = errorResponse(new PaddockError(r.code, r.message, { status: r.status }));
    return JSON.stringify(body);
  }

  /** Answer a refusal on a raw socket (CONNECT, upgrades) and close it. */
  private answerRaw(socket: Duplex, r: Refused): void {
    socket.on("error", () => undefined);
    const headers: Record<string, string> = r.status === 407 ? { "proxy-authenticate": 'Basic realm="paddock-egress"' } : {};
    if (socket.writable) socket.end(httpJsonAnswer(r.status, this.refusalBody(r), headers));
    else socket.destroy();
  }

  private answer(res: http.ServerResponse, r: Refused): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (r.status === 407) res.setHeader("proxy-authenticate", 'Basic realm="paddock-egress"');
    res.writeHead(r.status, { "content-type": "application/json", connection: "close" }).end(this.refusalBody(r));
  }

  // ---- decisions ----

  private audit(): boolean {
    return this.settings.mode === "audit";
  }

  /**
   * Resolve `host` and check the address. `rules`: the rules that let the request in (a rule
   * naming the IP literal itself exempts it from the guard).
   */
  private async upstreamAddress(client: string, host: string, port: number, rules: readonly AllowRule[], method: string): Promise<string> {
    let ip: string;
    try {
      ip = await this.deps.resolveHost(host);
    } catch (err) {
      throw new Refused(502, "ERR_EGRESS_UPSTREAM_UNRESOLVED", "resolve", (err as Error).message);
    }
    const named = net.isIP(host) !== 0 && rules.some((r) => r.host === canonicalIp(host));
    const why = this.guard.refusal(ip, named);
    if (why !== undefined) {
      this.telemetry.refused({ client, host, port, reason: "upstream_refused", method }, false);
      throw new Refused(403, "ERR_EGRESS_UPSTREAM_REFUSED", "upstream_refused", `upstream ${host} refused: ${why}`);
    }
    return ip;
  }

  // ---- CONNECT ----

  private onConnect(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => undefined);
    this.connect(req, socket, head).catch((err: unknown) => {
      if (err instanceof Refused) this.answerRaw(socket, err);
      else {
        this.deps.log.error("egress tunnel failed", { err });
        socket.destroy();
      }
    });
  }

  private async connect(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const target = parseAuthority(req.url);
    if (!target) throw new Refused(400, "ERR_BAD_REQUEST", "bad_target", "CONNECT needs host:port");
    const { host, port } = target;
    const client = this.clientOf(req);
    if (client === undefined) {
      this.logDecision({ method: "CONNECT", host, port, decision: "auth_required" });
      throw new Refused(407, "ERR_EGRESS_AUTH_REQUIRED", "auth", "proxy authentication required");
    }
    const rules = this.deps.store.rulesFor(client, host, port);
    let kind: Tunnel["kind"] = rules.some(needsInspection) ? "inspect" : "splice";
    if (rules.length === 0) {
      this.telemetry.refused({ client, host, port, reason: "no_rule", method: "CONNECT" }, this.audit());
      this.logDecision({ client, method: "CONNECT", host, port, decision: this.audit() ? "audit" : "denied", reason: "no_rule" });
      if (!this.audit()) throw new Refused(403, "ERR_EGRESS_DENIED", "no_rule", `no allow rule of client ${client} covers ${host}:${port}`);
      kind = "audit";
    }
    if (this.active >= this.settings.maxTunnels) throw new Refused(503, "ERR_EGRESS_BUSY", "busy", `the proxy has ${this.settings.maxTunnels} tunnels open, its most`);
    const ip = await this.upstreamAddress(client, host, port, rules, "CONNECT");
    // A splice connects before answering, so an unreachable upstream is a 502, not a closed tunnel.
    const upstream = kind === "inspect" ? undefined : await dialUpstream(ip, port, host);
    const tunnel: Tunnel = { client, host, port, kind, sockets: upstream ? [socket, upstream] : [socket] };
    this.track(tunnel);
    if (upstream) {
      upstream.on("error", () => this.destroyTunnel(tunnel));
      upstream.on("close", () => this.destroyTunnel(tunnel));
    }
    socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    const first = await readFirstRecord(socket, head);
    if (first === undefined) {
      this.destroyTunnel(tunnel);
      return;
    }
    const hello = parseClientHello(first);
    if (hello.kind === "hello" && hello.serverName !== undefined && hello.serverName !== host) {
      this.telemetry.refused({ client, host, port, reason: "sni_mismatch", method: "CONNECT" }, this.audit());
      this.logDecision({ client, method: "CONNECT", host, port, decision: this.audit() ? "audit" : "denied", reason: "sni_mismatch" });
      if (!this.audit()) {
        this.destroyTunnel(tunnel);
        return;
      }
    }
    if (!this.tunnels.has(tunnel)) return; // revoked while the hello was read
    const rule = rules[0]?.host ?? "-";
    this.telemetry.allowed(client, rule);
    this.logDecision({ client, method: "CONNECT", host, port, decision: kind === "audit" ? "audit" : "allowed", rule });
    if (kind === "inspect") {
      this.intercept(tunnel, prefixed(socket, first), hello.kind === "hello" ? hello.serverName ?? host : undefined, ip);
      return;
    }
    this.splice(tunnel, socket, first, upstream as net.Socket, rule);
  }

  /** Bytes both ways, unseen, between the client and its connected upstream. */
  private splice(tunnel: Tunnel, socket: Duplex, first: Buffer, upstream: net.Socket, rule: string): void {
    socket.on("error", () => this.destroyTunnel(tunnel));
    socket.on("close", () => this.destroyTunnel(tunnel));
    upstream.setTimeout(this.idleMs(), () => this.destroyTunnel(tunnel));
    if (first.length > 0) upstream.write(first);
    this.telemetry.moved(tunnel.client, rule, "up", first.length);
    socket.on("data", (c: Buffer) => this.telemetry.moved(tunnel.client, rule, "up", c.length));
    upstream.on("data", (c: Buffer) => this.telemetry.moved(tunnel.client, rule, "down", c.length));
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.resume();
  }

  /** Terminate TLS (or read plain HTTP) inside the tunnel and hand it to the inner server. */
  private intercept(tunnel: Tunnel, socket: Duplex, serverName: string | undefined, ip: string): void {
    tunnel.sockets.push(socket);
    const start = (stream: Duplex): void => {
      this.tunnelOf.set(stream, tunnel);
      this.upstreamIp.set(tunnel, { ip, tls: serverName !== undefined });
      if (stream !== socket) tunnel.sockets.push(stream);
      stream.on("close", () => this.destroyTunnel(tunnel));
      this.inner.emit("connection", stream);
    };
    if (serverName === undefined) {
      start(socket);
      return;
    }
    this.ca.leafFor(tunnel.host).then(
      (leaf) => {
        if (!this.tunnels.has(tunnel)) return;
        const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: tls.createSecureContext(leaf), ALPNProtocols: ["http/1.1"] });
        secure.on("error", () => this.destroyTunnel(tunnel));
        start(secure);
      },
      (err: unknown) => {
        this.deps.log.error("egress leaf certificate failed", { err });
        this.destroyTunnel(tunnel);
      },
    );
  }

  private readonly upstreamIp = new WeakMap<Tunnel, { ip: string; tls: boolean }>();

  // ---- tunnels ----

  private track(t: Tunnel): void {
    this.tunnels.add(t);
    this.active++;
  }

  private destroyTunnel(t: Tunnel): void {
    if (!this.tunnels.delete(t)) return;
    this.active--;
    for (const s of t.sockets) s.destroy();
  }

  /** After a rule change: destroy each tunnel no rule covers any more (or whose splice a new rule would inspect). */
  private recheckTunnels(): void {
    for (const t of [...this.tunnels]) {
      if (t.kind === "audit") continue;
      const rules = this.deps.store.rulesFor(t.client, t.host, t.port);
      const gone = rules.length === 0 || (t.kind === "splice" && rules.some(needsInspection));
      if (gone) {
        this.logDecision({ client: t.client, method: "CONNECT", host: t.host, port: t.port, decision: "revoked" });
        this.destroyTunnel(t);
      }
    }
  }

  // ---- HTTP requests (absolute-form, and inside intercepted tunnels) ----

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, tunnel: Tunnel | undefined): void {
    req.on("error", () => undefined);
    res.on("error", () => undefined);
    this.request(req, res, tunnel).catch((err: unknown) => {
      if (err instanceof Refused) this.answer(res, err);
      else {
        this.deps.log.error("egress request failed", { err });
        this.answer(res, new Refused(502, "ERR_EGRESS_UPSTREAM_FAILED", "internal", "the proxy could not forward the request"));
      }
    });
  }

  private async request(req: http.IncomingMessage, res: http.ServerResponse, tunnel: Tunnel | undefined): Promise<void> {
    const method = req.method ?? "GET";
    let client: string | undefined;
    let host: string;
    let port: number;
    let reqPath: string;
    if (tunnel === undefined) {
      // Absolute-form: http://host[:port]/path. https:// goes through CONNECT.
      const url = (req.url ?? "").startsWith("http://") ? safeUrl(req.url as string) : undefined;
      if (!url) throw new Refused(400, "ERR_BAD_REQUEST", "bad_target", "this is a proxy: send absolute-form http:// requests or CONNECT");
      const t = parseAuthority(`${url.hostname}:${url.port === "" ? "80" : url.port}`);
      if (!t) throw new Refused(400, "ERR_BAD_REQUEST", "bad_target", "bad host in the request URL");
      ({ host, port } = t);
      reqPath = (req.url as string).slice(`http://${url.host}`.length) || "/";
      client = this.clientOf(req);
      if (client === undefined) {
        this.logDecision({ method, host, port, decision: "auth_required" });
        throw new Refused(407, "ERR_EGRESS_AUTH_REQUIRED", "auth", "proxy authentication required");
      }
    } else {
      ({ client, host, port } = tunnel);
      reqPath = (req.url ?? "/").startsWith("/") ? req.url ?? "/" : "/";
      const hostHeader = req.headers.host;
      const named = typeof hostHeader === "string" ? parseAuthority(/:\d+$/.test(hostHeader) && !hostHeader.endsWith("]") ? hostHeader : `${hostHeader}:${port}`) : undefined;
      if (!named || named.host !== host) {
        this.telemetry.refused({ client, host, port, reason: "bad_host_header", method }, false);
        throw new Refused(403, "ERR_EGRESS_DENIED", "bad_host_header", `the Host header must name ${host}`);
      }
    }
    const matchPath = matchablePath(reqPath);
    const shownPath = reqPath.replace(/[?#].*$/, "");
    const rules = this.deps.store.rulesFor(client, host, port);
    // A rule that looks inside (secret, methods, paths) wins over a plain one for the same host.
    const rule = rules.find((r) => needsInspection(r) && requestMatch(r, method, matchPath)) ?? rules.find((r) => !needsInspection(r) && requestMatch(r, method, matchPath));
    if (rule === undefined) {
      const reason = rules.length === 0 ? "no_rule" : "method_path";
      this.telemetry.refused({ client, host, port, reason, method, path: this.redact(shownPath) }, this.audit());
      this.logDecision({ client, method, host, port, path: shownPath, decision: this.audit() ? "audit" : "denied", reason });
      if (!this.audit()) throw new Refused(403, "ERR_EGRESS_DENIED", reason, `no allow rule of client ${client} covers ${method} ${host}:${port}${rules.length === 0 ? "" : " with this method and path"}`);
    }
    if (this.active >= this.settings.maxTunnels) throw new Refused(503, "ERR_EGRESS_BUSY", "busy", `the proxy has ${this.settings.maxTunnels} tunnels and requests open, its most`);
    const inTunnel = tunnel === undefined ? undefined : this.upstreamIp.get(tunnel);
    const ip = inTunnel?.ip ?? await this.upstreamAddress(client, host, port, rule ? [rule] : [], method);
    const authorization = rule?.secret !== undefined ? this.deps.store.authorizationFor(rule.secret, host) : undefined;
    if (rule?.secret !== undefined && authorization === undefined) throw new Refused(403, "ERR_EGRESS_DENIED", "secret_gone", "the rule's secret is gone");
    const ruleName = rule?.host ?? "-";
    this.telemetry.allowed(client, ruleName);
    this.logDecision({ client, method, host, port, path: shownPath, decision: rule ? "allowed" : "audit", rule: ruleName });
    const target: ForwardTarget = { ip, port, host, tls: inTunnel?.tls ?? false, authorization, path: reqPath };
    this.active++;
    try {
      await this.forwarder.forward(req, res, target, (dir, n) => this.telemetry.moved(client as string, ruleName, dir, n), this.deps.store.secretValues());
    } finally {
      this.active--;
    }
  }
}
