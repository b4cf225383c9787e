/**
 * Where the egress proxy may connect: host-side name resolution (the tenant's static names
 * `paddock.proxy.hosts`, then the host's resolver through `dns.lookup`) and the address guard
 * that keeps a VM from reaching the host's own services through the proxy (SSRF: a rule for a
 * name that resolves to 127.0.0.1 must not open the daemon's neighbours).
 *
 * Two tiers. Only the operator's `paddock.proxy.unsafe_allow_upstreams` opens the first:
 * loopback, link-local (cloud metadata), "this network", multicast, reserved and broadcast
 * ranges, NAT64, every address on a host interface, and the extra ranges given (the tenant's
 * own and other tenants' ranges). Allow rules are the TENANT's (its token writes them), so a
 * rule naming an IP literal opens only the second tier: private (RFC 1918, ULA), shared
 * (100.64/10), IETF protocol assignments and documentation ranges. 198.18.0.0/15 (RFC 2544
 * benchmarking) is not refused: it is the tests' "internet". Node's `net.BlockList` does the
 * range checks.
 */
import dns from "node:dns/promises";
import net from "node:net";
import os from "node:os";
import { PaddockError } from "../../shared/errors.js";
import { canonicalIp } from "./proxy-rules.js";

/** Never connected to unless the operator exempts them: the host's own and link-local services. */
const NEVER_V4 = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"];
const NEVER_V6 = ["::/127", "fe80::/10", "ff00::/8", "64:ff9b::/96"];
/** Refused unless a rule names the address itself (a tenant's explicit choice of a private service). */
const PRIVATE_V4 = ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16"];
const PRIVATE_V6 = ["fc00::/7", "100::/64", "2001:db8::/32"];

function addSubnet(list: net.BlockList, cidr: string): void {
  const [addr, len] = cidr.split("/");
  if (addr === undefined) return;
  const type = net.isIP(addr) === 6 ? "ipv6" : "ipv4";
  list.addSubnet(addr, len === undefined ? (type === "ipv6" ? 128 : 32) : Number(len), type);
}

/** Decides whether an upstream address may be connected to. */
export class UpstreamGuard {
  private readonly never = new net.BlockList();
  private readonly refused = new net.BlockList();
  private readonly exempt = new net.BlockList();
  private hostAddrs: { at: number; set: Set<string> } | undefined;

  /**
   * @param opts.extraRefused more CIDRs to refuse (the tenant's ranges, `paddock.foreign_ranges`).
   * @param opts.unsafeAllow CIDRs exempt from every check (`paddock.proxy.unsafe_allow_upstreams`).
   */
  constructor(opts: { extraRefused?: readonly string[]; unsafeAllow?: readonly string[] } = {}) {
    for (const c of [...NEVER_V4, ...NEVER_V6, ...(opts.extraRefused ?? [])]) addSubnet(this.never, c);
    for (const c of [...PRIVATE_V4, ...PRIVATE_V6]) addSubnet(this.refused, c);
    for (const c of opts.unsafeAllow ?? []) addSubnet(this.exempt, c);
  }

  /** Addresses on the host's interfaces now (cached 10 s). */
  private hostAddresses(): Set<string> {
    if (!this.hostAddrs || Date.now() - this.hostAddrs.at > 10_000) {
      const set = new Set<string>();
      for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) set.add(canonicalIp(a.address.replace(/%.*$/, "")));
      this.hostAddrs = { at: Date.now(), set };
    }
    return this.hostAddrs.set;
  }

  /**
   * Why `ip` may not be connected to, or undefined when it may. `namedByRule`: a rule names
   * this very address as its host (the tenant's choice: it opens private ranges only, never
   * loopback, link-local, reserved, host or tenant addresses).
   */
  refusal(ip: string, namedByRule: boolean): string | undefined {
    const a = canonicalIp(ip);
    const type = net.isIP(a) === 6 ? "ipv6" : "ipv4";
    if (this.exempt.check(a, type)) return undefined;
    if (this.never.check(a, type)) return `${a} is in a range the proxy does not connect to (loopback, link-local, reserved or a tenant range)`;
    if (this.hostAddresses().has(a)) return `${a} is an address of this host`;
    if (!namedByRule && this.refused.check(a, type)) return `${a} is in a private range the proxy connects to only when a rule names that address`;
    return undefined;
  }
}

/**
 * The resolver of upstream names: the static map first (keys lower-case, no trailing dot), then
 * `dns.lookup` (the host's resolver, /etc/hosts included). Returns the first address.
 * @throws PaddockError ERR_EGRESS_UPSTREAM_UNRESOLVED (502) when the name does not resolve.
 */
export function createHostResolver(staticHosts: Readonly<Record<string, string>>): (host: string) => Promise<string> {
  return async (host: string) => {
    if (net.isIP(host) !== 0) return canonicalIp(host);
    const fixed = Object.hasOwn(staticHosts, host) ? staticHosts[host] : undefined;
    if (fixed !== undefined) return canonicalIp(fixed);
    try {
      const found = await dns.lookup(host, { all: true, verbatim: true });
      const first = found[0];
      if (!first) throw new Error("no address");
      return canonicalIp(first.address);
    } catch (err) {
      throw new PaddockError("ERR_EGRESS_UPSTREAM_UNRESOLVED", `cannot resolve ${host}`, { cause: err });
    }
  };
}
