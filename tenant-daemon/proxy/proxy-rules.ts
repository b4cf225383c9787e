/**
 * The egress proxy's allow rules as pure values: validation of what `/proxy/v1/allows` accepts
 * and the matching the engine does (host patterns, ports, methods, paths). Semantics follow
 * Slicer's Go SDK (https://github.com/slicervm/sdk, proxy.go `ProxyAllowRule`):
 *
 * - host: exact (`api.example.com`, case-insensitive, trailing dot ignored), `*.suffix` (any name
 *   strictly below `suffix`, never `suffix` itself), `*` (any NAME), or an IP literal. An IP
 *   literal target is matched only by a rule naming that IP: `*` does not cover addresses.
 * - ports: empty ⇒ 80 and 443.
 * - methods, paths: empty ⇒ any; else the request must match one entry of each. A path entry is
 *   exact, `*` (any), or `<prefix>/*` (anything strictly under `<prefix>/`).
 * - passthrough excludes secret, methods and paths.
 */
import net from "node:net";
import { PaddockError } from "../../shared/errors.js";
import { normaliseHostName } from "../../shared/tenant-config-proxy.js";

/** A stored allow rule. `id` is internal (never on the wire); `expires` is RFC 3339 or absent. */
export interface AllowRule {
  id: string;
  host: string;
  secret?: string;
  methods?: string[];
  paths?: string[];
  ports?: number[];
  expires?: string;
  passthrough?: boolean;
}

/** The identity of a rule for `POST /proxy/v1/allows/revoke` and duplicate checks: everything but TTL. */
export type RuleTuple = Omit<AllowRule, "id" | "expires">;

/** Ports a rule without `ports` covers. */
export const DEFAULT_PORTS: readonly number[] = [80, 443];

/** Most entries of a rule's methods, paths or ports lists. */
const MAX_LIST = 64;
const METHOD = /^[A-Z]{1,16}$/;
const PATH_ENTRY = /^(\*|\/[\x21-\x7e]{0,2047})$/;

function fail(message: string): never {
  throw new PaddockError("ERR_PROXY_INVALID", message);
}

/**
 * A rule's host as stored: a DNS name lower-cased without a trailing dot, `*.name`, `*`, or an IP
 * literal in Node's canonical form (IPv6 compressed, lower-case).
 * @throws PaddockError ERR_PROXY_INVALID
 */
export function normaliseRuleHost(raw: unknown): string {
  if (typeof raw !== "string" || raw === "") fail("host is required");
  if (raw === "*") return "*";
  const bare = raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw;
  if (net.isIP(bare) !== 0) return canonicalIp(bare);
  if (raw.startsWith("*.")) {
    const suffix = normaliseHostName(raw.slice(2));
    if (suffix === undefined) fail(`invalid host ${JSON.stringify(raw)}: expected a name, *.suffix, * or an IP address`);
    return `*.${suffix}`;
  }
  const name = normaliseHostName(raw);
  if (name === undefined) fail(`invalid host ${JSON.stringify(raw)}: expected a name, *.suffix, * or an IP address`);
  return name;
}

/** An IP address in one canonical text form (IPv4-mapped IPv6 becomes IPv4). */
export function canonicalIp(ip: string): string {
  const sock = new net.SocketAddress({ address: ip, family: net.isIP(ip) === 6 ? "ipv6" : "ipv4" });
  const a = sock.address.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  return mapped ? (mapped[1] as string) : a;
}

/**
 * The tuple of a create or revoke body, validated and normalised (methods upper-case, lists
 * deduplicated and sorted so the tuple compares by value).
 * @throws PaddockError ERR_PROXY_INVALID (bad field, passthrough with secret/methods/paths)
 */
export function parseRuleTuple(body: Record<string, unknown>): RuleTuple {
  const host = normaliseRuleHost(body.host);
  const secret = body.secret === undefined || body.secret === null || body.secret === "" ? undefined : body.secret;
  if (secret !== undefined && typeof secret !== "string") fail("secret must be a string");
  const methods = stringList(body.methods, "methods").map((m) => m.toUpperCase());
  for (const m of methods) if (!METHOD.test(m)) fail(`invalid method ${JSON.stringify(m)}`);
  const paths = stringList(body.paths, "paths");
  for (const p of paths) if (!PATH_ENTRY.test(p) || (p.includes("*") && p !== "*" && !/^\/[^*]*\/\*$/.test(p) && p !== "/*")) fail(`invalid path ${JSON.stringify(p)}: expected an exact path, "*" or "<prefix>/*"`);
  const portsRaw = body.ports === undefined || body.ports === null ? [] : body.ports;
  if (!Array.isArray(portsRaw) || portsRaw.length > MAX_LIST) fail(`ports must be a list of at most ${MAX_LIST} ports`);
  const ports = (portsRaw as unknown[]).map((p) => {
    if (typeof p !== "number" || !Number.isInteger(p) || p < 1 || p > 65535) fail(`invalid port ${JSON.stringify(p)}: expected 1-65535`);
    return p;
  });
  const passthrough = body.passthrough === undefined || body.passthrough === null ? false : body.passthrough;
  if (typeof passthrough !== "boolean") fail("passthrough must be a boolean");
  if (passthrough && (secret !== undefined || methods.length > 0 || paths.length > 0)) fail("passthrough excludes secret, methods and paths: the proxy does not see inside a passthrough tunnel");
  const sorted = <T>(xs: T[]): T[] => [...new Set(xs)].sort();
  return {
    host,
    ...(secret !== undefined ? { secret: secret as string } : {}),
    ...(methods.length > 0 ? { methods: sorted(methods) } : {}),
    ...(paths.length > 0 ? { paths: sorted(paths) } : {}),
    ...(ports.length > 0 ? { ports: [...new Set(ports)].sort((a, b) => a - b) } : {}),
    ...(passthrough ? { passthrough: true } : {}),
  };
}

function stringList(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.length > MAX_LIST || v.some((x) => typeof x !== "string")) fail(`${what} must be a list of at most ${MAX_LIST} strings`);
  return v as string[];
}

/** Two tuples are the same rule. */
export function sameTuple(a: RuleTuple, b: RuleTuple): boolean {
  const key = (t: RuleTuple): string => JSON.stringify([t.host, t.secret ?? "", t.methods ?? [], t.paths ?? [], t.ports ?? [], t.passthrough === true]);
  return key(a) === key(b);
}

/**
 * How specifically `pattern` covers `target` (a normalised name or canonical IP): 3 exact,
 * 2 `*.suffix`, 1 `*`, 0 not at all. IP targets are covered only by the same IP.
 */
export function hostMatch(pattern: string, target: string): number {
  if (pattern === target) return 3;
  if (net.isIP(target) !== 0) return 0;
  if (pattern === "*") return 1;
  if (pattern.startsWith("*.") && target.endsWith(pattern.slice(1)) && target.length > pattern.length - 1) return 2;
  return 0;
}

/** The rule covers `port`. */
export function portMatch(rule: RuleTuple, port: number): boolean {
  return (rule.ports ?? DEFAULT_PORTS).includes(port);
}

/** The rule looks inside the traffic (and so needs the TLS interception): secret, methods or paths, not passthrough. */
export function needsInspection(rule: RuleTuple): boolean {
  return rule.passthrough !== true && (rule.secret !== undefined || (rule.methods?.length ?? 0) > 0 || (rule.paths?.length ?? 0) > 0);
}

/**
 * The request path a rule's `paths` are matched against: the path of the request target
 * without query, or undefined when it is ambiguous between the proxy and an upstream (dot
 * segments, encoded `/`, `.` or `\`, backslashes), which no path rule then matches.
 */
export function matchablePath(target: string): string | undefined {
  const q = target.search(/[?#]/);
  const p = q === -1 ? target : target.slice(0, q);
  if (!p.startsWith("/") || /\\|%2f|%2e|%5c|%00/i.test(p)) return undefined;
  if (p.split("/").some((seg) => seg === "." || seg === "..")) return undefined;
  return p;
}

/** The rule's methods and paths cover the request (`path` from {@link matchablePath}). */
export function requestMatch(rule: RuleTuple, method: string, path: string | undefined): boolean {
  if (rule.methods !== undefined && rule.methods.length > 0 && !rule.methods.includes(method.toUpperCase())) return false;
  if (rule.paths === undefined || rule.paths.length === 0) return true;
  if (path === undefined) return false;
  return rule.paths.some((p) => p === "*" || p === path || (p.endsWith("/*") && path.startsWith(p.slice(0, -1)) && path.length > p.length - 1));
}
