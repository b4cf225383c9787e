/**
 * The egress proxy's state (Slicer's `/proxy/v1` model, https://github.com/slicervm/sdk
 * proxy.go): clients (name + SHA-256 of their token), secrets (an upstream credential the proxy
 * injects; the value never leaves the host except towards the upstream it is bound to) and each
 * client's allow rules, some with an expiry.
 *
 * One JSON file `<stateDir>/proxy/proxy.json` (dir 0700, file 0600, written atomically under a
 * lock: shared/state-store.ts) holds it all; the daemon keeps a copy in memory that the engine
 * matches against synchronously. One timer fires at the next expiry and removes the rules
 * whose time has come; every change is announced to {@link ProxyStore.onChange} listeners (the
 * engine re-checks its open tunnels then).
 */
import crypto from "node:crypto";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { JsonStateStore } from "../../shared/state-store.js";
import { rfc3339 } from "../../shared/time.js";
import { hostMatch, parseRuleTuple, portMatch, sameTuple, type AllowRule, type RuleTuple } from "./proxy-rules.js";

/** A client as listed (`GET /proxy/v1/clients`). */
export interface ProxyClientInfo {
  name: string;
  created_at: string;
}

/** A secret as listed (`GET /proxy/v1/secrets`): never its value. */
export interface ProxySecretInfo {
  name: string;
  host: string;
  type: "bearer" | "basic";
  created_at: string;
  updated_at: string;
}

/** The rule object of `GET /proxy/v1/clients/{name}` (the SDK's `ProxyAllowRule`). */
export type WireRule = Omit<AllowRule, "id">;

interface StoredClient {
  name: string;
  tokenSha256: string;
  created_at: string;
  rules: AllowRule[];
}

interface StoredSecret extends ProxySecretInfo {
  value: string;
}

interface ProxyState {
  schemaVersion: 1;
  clients: Record<string, StoredClient>;
  secrets: Record<string, StoredSecret>;
}

/** Caps of the store. */
export interface ProxyStoreLimits {
  maxClients: number;
  maxRulesPerClient: number;
  maxSecrets: number;
  /** Most bytes of one secret value. */
  maxSecretBytes: number;
  /** Longest TTL of a rule, seconds. */
  maxTtlSeconds: number;
}

/** Default caps: 256 clients, 1024 rules each, 256 secrets of at most 64 KiB, TTL up to 30 days. */
export const DEFAULT_PROXY_LIMITS: ProxyStoreLimits = { maxClients: 256, maxRulesPerClient: 1024, maxSecrets: 256, maxSecretBytes: 64 * 1024, maxTtlSeconds: 30 * 86_400 };

/** A rule together with the client that owns it, as the engine matches it. */
export interface ClientRule {
  client: string;
  rule: AllowRule;
}

/** Secret types Slicer knows whose refresh flows Paddock does not run: refused with ERR_PROXY_UNSUPPORTED. */
const UNSUPPORTED_SECRET_TYPES = new Set(["oauth-codex", "oauth-claude", "oauth-github-copilot", "oauth-xai", "oauth-client-creds", "github-app-user", "github-app"]);
const NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const TOKEN = /^[A-Za-z0-9._~+\-/=]{16,256}$/;

/** SHA-256 hex of a client token. */
export function hashToken(token: string): string {
  return crypto.createHash("sha256").update(token, "utf8").digest("hex");
}

function validName(raw: unknown, what: string): string {
  if (typeof raw !== "string" || !NAME.test(raw)) throw new PaddockError("ERR_PROXY_INVALID", `invalid ${what} name ${JSON.stringify(raw)}: 1-63 characters of [a-z0-9._-] starting with a letter or digit`);
  return raw;
}

/** The egress proxy's store. Call {@link init} before anything else and {@link close} at stop. */
export class ProxyStore {
  private readonly file: JsonStateStore<ProxyState>;
  private state: ProxyState = { schemaVersion: 1, clients: {}, secrets: {} };
  private byTokenHash = new Map<string, string>();
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | undefined;
  private readonly limits: ProxyStoreLimits;
  private readonly now: () => number;

  /**
   * @param stateDir the daemon's state dir (`<stateDir>/proxy/proxy.json` is created 0600).
   * @param opts.limits caps (default {@link DEFAULT_PROXY_LIMITS}); opts.now: the clock, ms.
   */
  constructor(stateDir: string, opts: { limits?: Partial<ProxyStoreLimits>; now?: () => number } = {}) {
    this.limits = { ...DEFAULT_PROXY_LIMITS, ...(opts.limits ?? {}) };
    this.now = opts.now ?? Date.now;
    this.file = new JsonStateStore<ProxyState>({
      file: path.join(stateDir, "proxy", "proxy.json"),
      schemaVersion: 1,
      initial: () => ({ schemaVersion: 1, clients: {}, secrets: {} }),
      validate: (v) => (typeof (v as ProxyState).clients === "object" && typeof (v as ProxyState).secrets === "object" ? undefined : "missing clients or secrets"),
    });
  }

  /**
   * Load the file (created when absent), drop rules that expired while the daemon was down, arm the timer.
   * @throws PaddockError ERR_STATE_CORRUPT
   */
  async init(): Promise<void> {
    this.adopt(await this.file.init());
    await this.expireNow();
  }

  /** Stop the expiry timer. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.listeners.clear();
  }

  /** Call `listener` after every change of clients, rules or secrets; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private adopt(state: ProxyState): void {
    this.state = state;
    this.byTokenHash = new Map(Object.values(state.clients).map((c) => [c.tokenSha256, c.name]));
    this.armTimer();
  }

  /** Read-modify-write the file, then adopt the result and tell the listeners. */
  private async change<R>(mutate: (s: ProxyState) => R): Promise<R> {
    let next: ProxyState | undefined;
    const result = await this.file.update((s) => {
      const r = mutate(s);
      next = s;
      return r;
    });
    if (next) this.adopt(next);
    for (const l of [...this.listeners]) l();
    return result;
  }

  // ---- clients ----

  /**
   * Create a client (`POST /proxy/v1/clients`); `token` undefined ⇒ one is minted (`spt_` + 32
   * random bytes, base64url). The token is returned here only; the store keeps its SHA-256.
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_EXISTS, ERR_PROXY_LIMIT
   */
  async createClient(nameRaw: unknown, tokenRaw?: unknown): Promise<ProxyClientInfo & { token: string }> {
    const name = validName(nameRaw, "client");
    if (tokenRaw !== undefined && tokenRaw !== null && tokenRaw !== "" && (typeof tokenRaw !== "string" || !TOKEN.test(tokenRaw))) {
      throw new PaddockError("ERR_PROXY_INVALID", "token must be 16-256 characters of [A-Za-z0-9._~+-/=]");
    }
    const token = typeof tokenRaw === "string" && tokenRaw !== "" ? tokenRaw : `spt_${crypto.randomBytes(32).toString("base64url")}`;
    const tokenSha256 = hashToken(token);
    const created_at = rfc3339(new Date(this.now()));
    await this.change((s) => {
      if (s.clients[name]) throw new PaddockError("ERR_PROXY_CLIENT_EXISTS", `client ${name} already exists`);
      if (Object.keys(s.clients).length >= this.limits.maxClients) throw new PaddockError("ERR_PROXY_LIMIT", `the proxy already has ${this.limits.maxClients} clients, the most it may hold`);
      if (Object.values(s.clients).some((c) => c.tokenSha256 === tokenSha256)) throw new PaddockError("ERR_PROXY_INVALID", "token is already in use by another client");
      s.clients[name] = { name, tokenSha256, created_at, rules: [] };
    });
    return { name, token, created_at };
  }

  /** Every client, sorted by name (no tokens). */
  listClients(): ProxyClientInfo[] {
    return Object.values(this.state.clients).sort((a, b) => a.name.localeCompare(b.name)).map((c) => ({ name: c.name, created_at: c.created_at }));
  }

  /**
   * Delete a client and every rule it owns (`DELETE /proxy/v1/clients/{name}`).
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_NOT_FOUND
   */
  async deleteClient(nameRaw: string): Promise<void> {
    const name = validName(nameRaw, "client");
    await this.change((s) => {
      if (!s.clients[name]) throw new PaddockError("ERR_PROXY_CLIENT_NOT_FOUND", `client ${name} not found`);
      delete s.clients[name];
    });
  }

  /** The client a proxy token belongs to, if any (the token is compared by its SHA-256). */
  clientByToken(token: string): string | undefined {
    return this.byTokenHash.get(hashToken(token));
  }

  /** The client exists. */
  hasClient(name: string): boolean {
    return Object.hasOwn(this.state.clients, name);
  }

  // ---- secrets ----

  /**
   * Create (or with `force`, replace) a secret (`POST /proxy/v1/secrets`). Types: `bearer`
   * (default; the value is the token) and `basic` (the value is `user:pass`). Slicer's OAuth
   * and GitHub App types and `source_file` (a host path) are refused.
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_UNSUPPORTED, ERR_PROXY_SECRET_EXISTS, ERR_PROXY_LIMIT
   */
  async createSecret(body: Record<string, unknown>): Promise<ProxySecretInfo> {
    const name = validName(body.name, "secret");
    const host = normaliseSecretHost(body.host);
    const typeRaw = body.type === undefined || body.type === null || body.type === "" ? "bearer" : body.type;
    if (typeof typeRaw !== "string") throw new PaddockError("ERR_PROXY_INVALID", "type must be a string");
    if (UNSUPPORTED_SECRET_TYPES.has(typeRaw)) throw new PaddockError("ERR_PROXY_UNSUPPORTED", `secret type ${typeRaw} is not supported by Paddock's proxy (supported: bearer, basic)`);
    if (typeRaw !== "bearer" && typeRaw !== "basic") throw new PaddockError("ERR_PROXY_INVALID", `unknown secret type ${JSON.stringify(typeRaw)} (supported: bearer, basic)`);
    if (body.source_file !== undefined && body.source_file !== null && body.source_file !== "") {
      throw new PaddockError("ERR_PROXY_UNSUPPORTED", "source_file is not supported: the daemon never reads a host path named by an API client; send the value");
    }
    const value = body.value;
    if (typeof value !== "string" || value === "") throw new PaddockError("ERR_PROXY_INVALID", "value is required");
    if (Buffer.byteLength(value) > this.limits.maxSecretBytes) throw new PaddockError("ERR_PROXY_INVALID", `value is larger than ${this.limits.maxSecretBytes} bytes`);
    if (/[\r\n\0]/.test(value)) throw new PaddockError("ERR_PROXY_INVALID", "value must not contain CR, LF or NUL (it becomes a header)");
    if (typeRaw === "basic" && !value.includes(":")) throw new PaddockError("ERR_PROXY_INVALID", "a basic secret's value is user:pass");
    const force = body.force === true;
    const at = rfc3339(new Date(this.now()));
    return this.change((s) => {
      const old = s.secrets[name];
      if (old && !force) throw new PaddockError("ERR_PROXY_SECRET_EXISTS", `secret ${name} already exists (force: true replaces it)`);
      if (!old && Object.keys(s.secrets).length >= this.limits.maxSecrets) throw new PaddockError("ERR_PROXY_LIMIT", `the proxy already has ${this.limits.maxSecrets} secrets, the most it may hold`);
      const rec: StoredSecret = { name, host, type: typeRaw, value, created_at: old?.created_at ?? at, updated_at: at };
      s.secrets[name] = rec;
      return secretInfo(rec);
    });
  }

  /** Every secret's metadata, sorted by name. */
  listSecrets(): ProxySecretInfo[] {
    return Object.values(this.state.secrets).sort((a, b) => a.name.localeCompare(b.name)).map(secretInfo);
  }

  /**
   * Delete a secret; rules naming it stop matching until it exists again.
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_SECRET_NOT_FOUND
   */
  async deleteSecret(nameRaw: string): Promise<void> {
    const name = validName(nameRaw, "secret");
    await this.change((s) => {
      if (!s.secrets[name]) throw new PaddockError("ERR_PROXY_SECRET_NOT_FOUND", `secret ${name} not found`);
      delete s.secrets[name];
    });
  }

  /**
   * The `Authorization` header value of a secret for a request to `host`, or undefined when the
   * secret is gone or bound to another host (then the rule does not match).
   */
  authorizationFor(secretName: string, host: string): string | undefined {
    const s = Object.hasOwn(this.state.secrets, secretName) ? this.state.secrets[secretName] : undefined;
    if (!s || hostMatch(s.host, host) === 0) return undefined;
    return s.type === "basic" ? `Basic ${Buffer.from(s.value, "utf8").toString("base64")}` : `Bearer ${s.value}`;
  }

  /** Every secret value (the engine keeps them out of what it logs and answers). */
  secretValues(): string[] {
    return Object.values(this.state.secrets).map((s) => s.value);
  }

  // ---- allows ----

  /**
   * Add a rule (`POST /proxy/v1/allows`), with `ttl_seconds` > 0 ⇒ an expiry.
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_NOT_FOUND, ERR_PROXY_SECRET_NOT_FOUND, ERR_PROXY_RULE_EXISTS, ERR_PROXY_LIMIT
   */
  async addAllow(body: Record<string, unknown>): Promise<WireRule> {
    const client = validName(body.client, "client");
    const tuple = parseRuleTuple(body);
    const ttl = body.ttl_seconds;
    if (ttl !== undefined && ttl !== null && (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 0 || ttl > this.limits.maxTtlSeconds)) {
      throw new PaddockError("ERR_PROXY_INVALID", `ttl_seconds must be an integer from 0 to ${this.limits.maxTtlSeconds}`);
    }
    const expires = typeof ttl === "number" && ttl > 0 ? rfc3339(new Date(this.now() + ttl * 1000)) : undefined;
    const rule: AllowRule = { id: crypto.randomUUID(), ...tuple, ...(expires !== undefined ? { expires } : {}) };
    await this.change((s) => {
      const c = s.clients[client];
      if (!c) throw new PaddockError("ERR_PROXY_CLIENT_NOT_FOUND", `client ${client} not found`);
      if (tuple.secret !== undefined && !s.secrets[tuple.secret]) throw new PaddockError("ERR_PROXY_SECRET_NOT_FOUND", `secret ${tuple.secret} not found`);
      if (c.rules.some((r) => sameTuple(r, tuple) && !this.expired(r))) throw new PaddockError("ERR_PROXY_RULE_EXISTS", `client ${client} already has this rule for ${tuple.host}`);
      if (c.rules.length >= this.limits.maxRulesPerClient) throw new PaddockError("ERR_PROXY_LIMIT", `client ${client} already has ${this.limits.maxRulesPerClient} rules, the most it may hold`);
      c.rules = c.rules.filter((r) => !this.expired(r));
      c.rules.push(rule);
    });
    return wireRule(rule);
  }

  /**
   * Remove every rule of `client` whose host is `host` (`DELETE /proxy/v1/allows/{client}/{host}`).
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_NOT_FOUND, ERR_PROXY_RULE_NOT_FOUND
   */
  async removeAllowsByHost(clientRaw: string, hostRaw: string): Promise<number> {
    const client = validName(clientRaw, "client");
    const host = normaliseRuleHostSafe(hostRaw);
    return this.removeWhere(client, (r) => r.host === host, `no rule of client ${client} for host ${hostRaw}`);
  }

  /**
   * Remove the one rule whose tuple (host, secret, methods, paths, ports, passthrough) equals the body's (`POST /proxy/v1/allows/revoke`).
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_NOT_FOUND, ERR_PROXY_RULE_NOT_FOUND
   */
  async revokeByTuple(body: Record<string, unknown>): Promise<void> {
    const client = validName(body.client, "client");
    const tuple = parseRuleTuple(body);
    await this.removeWhere(client, (r) => sameTuple(r, tuple), `no rule of client ${client} matches this tuple`);
  }

  private async removeWhere(client: string, pred: (r: AllowRule) => boolean, notFound: string): Promise<number> {
    return this.change((s) => {
      const c = s.clients[client];
      if (!c) throw new PaddockError("ERR_PROXY_CLIENT_NOT_FOUND", `client ${client} not found`);
      const live = c.rules.filter((r) => !this.expired(r));
      const keep = live.filter((r) => !pred(r));
      if (keep.length === live.length) throw new PaddockError("ERR_PROXY_RULE_NOT_FOUND", notFound);
      c.rules = keep;
      return live.length - keep.length;
    });
  }

  /**
   * A client's live rules in declaration order (`GET /proxy/v1/clients/{name}`).
   * @throws PaddockError ERR_PROXY_INVALID, ERR_PROXY_CLIENT_NOT_FOUND
   */
  listRules(clientRaw: string): WireRule[] {
    const client = validName(clientRaw, "client");
    const c = Object.hasOwn(this.state.clients, client) ? this.state.clients[client] : undefined;
    if (!c) throw new PaddockError("ERR_PROXY_CLIENT_NOT_FOUND", `client ${client} not found`);
    return c.rules.filter((r) => !this.expired(r)).map(wireRule);
  }

  /**
   * The live rules of `client` that cover `host` (normalised name or canonical IP) on `port`,
   * most specific host match first, then in declaration order. A rule whose secret is gone or
   * bound to another host is left out.
   */
  rulesFor(client: string, host: string, port: number): AllowRule[] {
    const c = Object.hasOwn(this.state.clients, client) ? this.state.clients[client] : undefined;
    if (!c) return [];
    return c.rules
      .map((rule, i) => ({ rule, i, score: hostMatch(rule.host, host) }))
      .filter(({ rule, score }) => score > 0 && !this.expired(rule) && portMatch(rule, port) && (rule.secret === undefined || this.authorizationFor(rule.secret, host) !== undefined))
      .sort((a, b) => b.score - a.score || a.i - b.i)
      .map(({ rule }) => rule);
  }

  /** `client` has a live rule covering `host` on any port (the DNS answerer's question). */
  hasRuleForHost(client: string, host: string): boolean {
    const c = Object.hasOwn(this.state.clients, client) ? this.state.clients[client] : undefined;
    return c !== undefined && c.rules.some((r) => !this.expired(r) && hostMatch(r.host, host) > 0);
  }

  /** The rule with this id is still live. */
  ruleLive(client: string, id: string): boolean {
    const c = Object.hasOwn(this.state.clients, client) ? this.state.clients[client] : undefined;
    return c !== undefined && c.rules.some((r) => r.id === id && !this.expired(r));
  }

  // ---- expiry ----

  private expired(r: AllowRule): boolean {
    return r.expires !== undefined && Date.parse(r.expires) <= this.now();
  }

  /** Arm the one timer at the earliest expiry (capped at 2^31-1 ms; it re-arms when it fires early). */
  private armTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let next = Infinity;
    for (const c of Object.values(this.state.clients)) for (const r of c.rules) if (r.expires !== undefined) next = Math.min(next, Date.parse(r.expires));
    if (next === Infinity) return;
    const delay = Math.min(Math.max(0, next - this.now()), 2 ** 31 - 1);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.expireNow().catch(() => this.armTimer());
    }, delay);
    this.timer.unref();
  }

  /** Remove expired rules from the file (and so from every answer); listeners are told. */
  private async expireNow(): Promise<void> {
    const any = Object.values(this.state.clients).some((c) => c.rules.some((r) => this.expired(r)));
    if (!any) {
      this.armTimer();
      return;
    }
    await this.change((s) => {
      for (const c of Object.values(s.clients)) c.rules = c.rules.filter((r) => !this.expired(r));
    });
  }
}

function secretInfo(s: StoredSecret): ProxySecretInfo {
  return { name: s.name, host: s.host, type: s.type, created_at: s.created_at, updated_at: s.updated_at };
}

function wireRule(r: AllowRule): WireRule {
  const { id: _id, ...rest } = r;
  return rest;
}

function normaliseSecretHost(raw: unknown): string {
  try {
    return parseRuleTuple({ host: raw }).host;
  } catch (err) {
    throw new PaddockError("ERR_PROXY_INVALID", `secret ${(err as Error).message}`);
  }
}

function normaliseRuleHostSafe(raw: string): string {
  return parseRuleTuple({ host: raw }).host;
}

/** Re-exported for the routes and the engine. */
export type { AllowRule, RuleTuple };
