/**
 * Reader of `paddock.proxy` (the tenant's egress proxy, tenant-daemon/proxy/): its mode, the
 * static names its upstream resolution knows, and its bounds. Problems are recorded on the
 * {@link ConfigReader} with their YAML paths.
 */
import net from "node:net";
import { parseCidr, parseIpv6Cidr } from "./cidr.js";
import type { ConfigReader } from "./yaml-reader.js";

/** `paddock.proxy`, defaulted. */
export interface ProxySettings {
  /**
   * `enforce` (default): a request no allow rule covers is refused. `audit`: it is logged and
   * counted as a would-be denial (`egress_audit` event) and let through; the upstream address
   * guard and client identification still apply.
   */
  mode: "enforce" | "audit";
  /** Static names (`paddock.proxy.hosts: {name: ip}`), looked up before DNS; lower-case, no trailing dot. */
  hosts: Readonly<Record<string, string>>;
  /** Most tunnels (CONNECT) and forwarded requests open at once for the tenant (default 256). */
  maxTunnels: number;
  /** A tunnel or request that moves no byte for this long is closed, seconds (default 300). */
  idleTimeoutSeconds: number;
  /**
   * UNSAFE, for tests and labs: upstream CIDRs exempt from the address guard
   * (`paddock.proxy.unsafe_allow_upstreams`, e.g. `["127.0.0.1/32"]`). Every address inside
   * them is reachable by every rule that resolves to it, loopback services of the host included.
   */
  unsafeAllowUpstreams: readonly string[];
}

/** The defaults of {@link ProxySettings}. */
export const DEFAULT_PROXY_SETTINGS: ProxySettings = Object.freeze({ mode: "enforce", hosts: Object.freeze({}), maxTunnels: 256, idleTimeoutSeconds: 300, unsafeAllowUpstreams: Object.freeze([]) });

const HOST_NAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** `name` lower-cased without a trailing dot when it is a DNS host name; undefined otherwise. */
export function normaliseHostName(name: string): string | undefined {
  const n = name.toLowerCase().replace(/\.$/, "");
  return HOST_NAME.test(n) && net.isIP(n) === 0 ? n : undefined;
}

/** Read `paddock.proxy` from `raw` (absent ⇒ the defaults). */
export function readProxySettings(r: ConfigReader, raw: unknown): ProxySettings {
  if (raw === undefined || raw === null) return DEFAULT_PROXY_SETTINGS;
  const p = r.object(raw, "paddock.proxy");
  r.unknownKeys(p, "paddock.proxy", ["mode", "hosts", "max_tunnels", "idle_timeout_seconds", "unsafe_allow_upstreams"]);
  const mode = r.string(p.mode, "paddock.proxy.mode") ?? "enforce";
  if (mode !== "enforce" && mode !== "audit") r.problem("paddock.proxy.mode", `expected enforce or audit, got ${JSON.stringify(mode)}`);
  const hosts: Record<string, string> = {};
  for (const [name, ip] of Object.entries(r.object(p.hosts, "paddock.proxy.hosts"))) {
    const key = normaliseHostName(name);
    if (key === undefined) r.problem(`paddock.proxy.hosts.${name}`, "expected a DNS host name as the key");
    if (typeof ip !== "string" || net.isIP(ip) === 0) r.problem(`paddock.proxy.hosts.${name}`, `expected an IPv4 or IPv6 address, got ${JSON.stringify(ip)}`);
    else if (key !== undefined) hosts[key] = ip;
  }
  const unsafe = r.stringList(p.unsafe_allow_upstreams, "paddock.proxy.unsafe_allow_upstreams") ?? [];
  unsafe.forEach((c, i) => {
    let ok = parseIpv6Cidr(c) !== undefined;
    try {
      parseCidr(c);
      ok = true;
    } catch {
      // not IPv4
    }
    if (!ok) r.problem(`paddock.proxy.unsafe_allow_upstreams[${i}]`, `expected a CIDR, got ${JSON.stringify(c)}`);
  });
  return {
    mode: mode === "audit" ? "audit" : "enforce",
    hosts: Object.freeze(hosts),
    maxTunnels: r.int(p.max_tunnels, "paddock.proxy.max_tunnels", { min: 1, max: 65_536 }) ?? DEFAULT_PROXY_SETTINGS.maxTunnels,
    idleTimeoutSeconds: r.int(p.idle_timeout_seconds, "paddock.proxy.idle_timeout_seconds", { min: 1, max: 86_400 }) ?? DEFAULT_PROXY_SETTINGS.idleTimeoutSeconds,
    unsafeAllowUpstreams: Object.freeze(unsafe),
  };
}
