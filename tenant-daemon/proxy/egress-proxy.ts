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
 * 8. Bounded: at most `maxTunnels` tunnels and in-flight requests (egress-tunnels.ts), and
 *    twice that many client connections (egress-listeners.ts: more are closed on accept, each
 *    is a descriptor of the daemon); a connection silent for {@link HELLO_TIMEOUT_MS} after
 *    accept is closed, idle sockets after `idleTimeoutMs`; the TLS ClientHello must come within
 *    {@link HELLO_TIMEOUT_MS}.
 *
 * The pieces: the listeners and the connection bound (egress-listeners.ts), the open tunnels
 * with splice and interception (egress-tunnels.ts), forwarding (egress-forward.ts); this file
 * holds identity and the decisions, for CONNECT and for plain HTTP.
 *
 * Secret values are never logged nor put in an answer of the proxy's own: logs carry method,
 * host, port and the path without its query, with any secret value replaced by `[redacted]`.
 */
import http from "node:http";
import net from "node:net";
import path from "node:path";
import type { Duplex } from "node:stream";
import type { Registry } from "prom-client";
import { PaddockError, errorResponse } from "../../shared/errors.js";
import { httpJsonAnswer } from "../../shared/http-input.js";
import type { Logger } from "../../shared/logger.js";
import { DEFAULT_PROXY_SETTINGS, type ProxySettings } from "../../shared/tenant-config-proxy.js";
import type { EgressEventInput } from "../events/event-log.js";
import { EgressTelemetry } from "./egress-telemetry.js";
import { HttpForwarder, type ForwardTarget } from "./egress-forward.js";
import { EgressListeners } from "./egress-listeners.js";
import { EgressTunnels, type Tunnel } from "./egress-tunnels.js";
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
  /**
   * PEM file of CA certificates trusted for upstream TLS besides node's bundled roots: the
   * daemon's PADDOCK_EXTRA_CA_CERTS (shared/daemon-env.ts). Read on the first HTTPS upstream
   * request (proxy/upstream-cas.ts); unreadable or empty = a warning and the roots alone.
   */
  upstreamCaFile?: string | undefined;
  /** More CA certificates (PEM) trusted for upstream TLS (tests). */
  upstreamCaPems?: readonly string[];
}

/** An inner request's tunnel and where its requests go (EgressTunnels.inner). */
type InTunnel = NonNullable<ReturnType<EgressTunnels["inner"]>>;

/** The egress proxy of one tenant. */
export class EgressProxy {
  private readonly deps: EgressProxyDeps;
  private readonly settings: ProxySettings;
  private readonly server: http.Server;
  private readonly inner: http.Server;
  private readonly listeners: EgressListeners;
  private readonly tunnels: EgressTunnels;
  private readonly ca: ProxyCa;
  private readonly guard: UpstreamGuard;
  private readonly telemetry: EgressTelemetry;
  private readonly forwarder: HttpForwarder;
  private readonly unsubscribe: () => void;
  private closed = false;

  constructor(deps: EgressProxyDeps) {
    this.deps = deps;
    this.settings = deps.settings ?? DEFAULT_PROXY_SETTINGS;
    this.ca = new ProxyCa(path.join(deps.stateDir, "proxy"), deps.tenantId);
    this.guard = new UpstreamGuard({ extraRefused: deps.refusedRanges ?? [], unsafeAllow: this.settings.unsafeAllowUpstreams });
    this.telemetry = new EgressTelemetry(deps.metrics, deps.events);
    this.forwarder = new HttpForwarder({ upstreamCaFile: deps.upstreamCaFile, upstreamCaPems: deps.upstreamCaPems ?? [], idleTimeoutMs: this.idleMs(), log: deps.log });
    const opts = { maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000 };
    this.server = http.createServer(opts, (req, res) => this.onRequest(req, res, undefined));
    this.server.on("connect", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onConnect(req, socket, head));
    this.server.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => this.answerRaw(socket, new Refused(400, "ERR_BAD_REQUEST", "upgrade", "upgrades through the proxy go inside a CONNECT tunnel")));
    this.server.on("clientError", (_err, socket) => socket.destroy());
    // Requests inside intercepted tunnels (TLS terminated, or plain HTTP in a CONNECT to port 80).
    this.inner = http.createServer(opts, (req, res) => this.onRequest(req, res, this.tunnels.inner(req.socket)));
    this.inner.on("upgrade", (_req: http.IncomingMessage, socket: Duplex) => this.answerRaw(socket, new Refused(400, "ERR_BAD_REQUEST", "upgrade", "upgrades are not supported on intercepted tunnels")));
    this.inner.on("clientError", (_err, socket) => socket.destroy());
    this.listeners = new EgressListeners({ server: this.server, ca: this.ca, maxConnections: this.settings.maxTunnels * 2, idleMs: this.idleMs(), log: deps.log });
    this.tunnels = new EgressTunnels({ inner: this.inner, ca: this.ca, telemetry: this.telemetry, idleMs: this.idleMs(), log: deps.log });
    this.unsubscribe = deps.store.onChange(() => this.recheckTunnels());
  }

  private idleMs(): number {
    return this.settings.idleTimeoutSeconds * 1000;
  }

  /**
   * Accept proxy connections on `host:port` (one call per address; 0 ⇒ a free port, see {@link address}).
   * @throws PaddockError ERR_NETWORK_ADDRESS_IN_USE when the address is taken, ERR_NETWORK_SETUP_FAILED
   *   when the host has no such address, ERR_INTERNAL after close.
   */
  listen(host: string, port: number): Promise<void> {
    return this.listeners.listen(host, port);
  }

  /** The port `listen(host, 0)` got (undefined when not listening there). */
  address(host: string, port = 0): number | undefined {
    return this.listeners.address(host, port);
  }

  /** Stop accepting on `host:port`; tunnels already open stay until they end. */
  unlisten(host: string, port: number): Promise<void> {
    return this.listeners.unlisten(host, port);
  }

  /** Stop every listener and destroy every connection and tunnel. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    this.tunnels.destroyAll();
    const listenersClosed = this.listeners.close();
    this.forwarder.close();
    await listenersClosed;
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
    const addr = this.listeners.peer(req.socket) ?? req.socket.remoteAddress;
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
    if (this.tunnels.load >= this.settings.maxTunnels) throw new Refused(503, "ERR_EGRESS_BUSY", "busy", `the proxy has ${this.settings.maxTunnels} tunnels open, its most`);
    const ip = await this.upstreamAddress(client, host, port, rules, "CONNECT");
    // A splice connects before answering, so an unreachable upstream is a 502, not a closed tunnel.
    const upstream = kind === "inspect" ? undefined : await dialUpstream(ip, port, host);
    const tunnel: Tunnel = { client, host, port, kind, sockets: upstream ? [socket, upstream] : [socket] };
    this.tunnels.open(tunnel);
    if (upstream) {
      upstream.on("error", () => this.tunnels.destroy(tunnel));
      upstream.on("close", () => this.tunnels.destroy(tunnel));
    }
    socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    const first = await readFirstRecord(socket, head);
    if (first === undefined) {
      this.tunnels.destroy(tunnel);
      return;
    }
    const hello = parseClientHello(first);
    if (hello.kind === "hello" && hello.serverName !== undefined && hello.serverName !== host) {
      this.telemetry.refused({ client, host, port, reason: "sni_mismatch", method: "CONNECT" }, this.audit());
      this.logDecision({ client, method: "CONNECT", host, port, decision: this.audit() ? "audit" : "denied", reason: "sni_mismatch" });
      if (!this.audit()) {
        this.tunnels.destroy(tunnel);
        return;
      }
    }
    if (!this.tunnels.isOpen(tunnel)) return; // revoked while the hello was read
    const rule = rules[0]?.host ?? "-";
    this.telemetry.allowed(client, rule);
    this.logDecision({ client, method: "CONNECT", host, port, decision: kind === "audit" ? "audit" : "allowed", rule });
    if (kind === "inspect") {
      this.tunnels.intercept(tunnel, prefixed(socket, first), hello.kind === "hello" ? hello.serverName ?? host : undefined, ip);
      return;
    }
    this.tunnels.splice(tunnel, socket, first, upstream as net.Socket, rule);
  }

  /** After a rule change: destroy each tunnel no rule covers any more (or whose splice a new rule would inspect). */
  private recheckTunnels(): void {
    for (const t of this.tunnels.all()) {
      if (t.kind === "audit") continue;
      const rules = this.deps.store.rulesFor(t.client, t.host, t.port);
      const gone = rules.length === 0 || (t.kind === "splice" && rules.some(needsInspection));
      if (gone) {
        this.logDecision({ client: t.client, method: "CONNECT", host: t.host, port: t.port, decision: "revoked" });
        this.tunnels.destroy(t);
      }
    }
  }

  // ---- HTTP requests (absolute-form, and inside intercepted tunnels) ----

  /** `inTunnel`: the tunnel an inner request came through and where its requests go; undefined for absolute-form. */
  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, inTunnel: InTunnel | undefined): void {
    req.on("error", () => undefined);
    res.on("error", () => undefined);
    this.request(req, res, inTunnel).catch((err: unknown) => {
      if (err instanceof Refused) this.answer(res, err);
      else {
        this.deps.log.error("egress request failed", { err });
        this.answer(res, new Refused(502, "ERR_EGRESS_UPSTREAM_FAILED", "internal", "the proxy could not forward the request"));
      }
    });
  }

  private async request(req: http.IncomingMessage, res: http.ServerResponse, inTunnel: InTunnel | undefined): Promise<void> {
    const tunnel = inTunnel?.tunnel;
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
    if (this.tunnels.load >= this.settings.maxTunnels) throw new Refused(503, "ERR_EGRESS_BUSY", "busy", `the proxy has ${this.settings.maxTunnels} tunnels and requests open, its most`);
    const upstream = inTunnel?.upstream;
    const ip = upstream?.ip ?? await this.upstreamAddress(client, host, port, rule ? [rule] : [], method);
    const authorization = rule?.secret !== undefined ? this.deps.store.authorizationFor(rule.secret, host) : undefined;
    if (rule?.secret !== undefined && authorization === undefined) throw new Refused(403, "ERR_EGRESS_DENIED", "secret_gone", "the rule's secret is gone");
    const ruleName = rule?.host ?? "-";
    this.telemetry.allowed(client, ruleName);
    this.logDecision({ client, method, host, port, path: shownPath, decision: rule ? "allowed" : "audit", rule: ruleName });
    const target: ForwardTarget = { ip, port, host, tls: upstream?.tls ?? false, authorization, path: reqPath };
    const done = this.tunnels.beginRequest();
    try {
      await this.forwarder.forward(req, res, target, (dir, n) => this.telemetry.moved(client as string, ruleName, dir, n), this.deps.store.secretValues());
    } finally {
      done();
    }
  }
}
