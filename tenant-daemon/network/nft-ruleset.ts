/**
 * The tenant's nftables table, rendered by a pure function (golden tests in test/unit/golden) and
 * applied by the caller as one transaction. The text contains only this tenant's table
 * (`inet paddock-<tenant>`): it is created if absent, deleted and re-added in the same
 * `nft -f` transaction, so the kernel swaps it atomically and nothing else is touched.
 * See nft(8) and https://wiki.nftables.org/wiki-nftables/index.php/Atomic_rule_replacement.
 *
 * Chains (all base chains `policy accept`, so traffic that is not ours is never affected;
 * a drop in any table is final, so our drops hold whatever other tables accept):
 * - `forward`: no IPv6 to or from a VM link → isolated VMs' anti-spoofing (`isolated_sources`)
 *   → cross-tenant drop (both directions, every mode) → bridge anti-spoofing → operator deny list (`deny`) → replies accepted → no new ingress
 *   into isolated VMs → per-VM chain of each isolated VM (anti-spoofing, no VM↔VM, the host
 *   group's floor when the VM has an override, then the VM's allow/drop policy).
 * - `input`: no IPv6 from a VM link; isolated VMs' anti-spoofing; our VMs never reach other tenants' addresses on the host,
 *   nor denied ones; a VM reaches the host only with replies to connections the host opened,
 *   plus, from a bridge, the `paddock.host_ports` of its group on the bridge's gateway address.
 * - `deny`: the operator deny list, a floor for every VM in every mode. It skips the tenant's
 *   own ranges, whose traffic the rules above already decide (the default list holds RFC 1918
 *   and a bridge group may sit in it).
 * - `floor_<group>`: the host group's own drops, jumped to by VMs with a per-VM override, so
 *   an override's allow (even a more specific one) never reopens what the group drops.
 * - `postrouting` (nat): egress masquerade of our ranges.
 * - `own_ranges_index` and one `own_range_<cidr>` per own range: empty chains (no hook, never
 *   jumped to) that repeat `own_ranges` in their names for other daemons' starts, which read
 *   them with `nft -t list sets; list chains` (shared/nft-cli.ts `listOwnRanges`).
 * - Proxy mode (host groups with `egress_proxy`, egress-proxy-wiring.ts): every packet a proxy-mode
 *   link would forward is dropped (`proxy_ifaces`, ahead of the resolver accept and the replies),
 *   so such a VM reaches nothing past the host; `prerouting` (nat) DNATs the fixed in-VM proxy
 *   address (TCP proxy port, TCP/UDP 53) to the link's host-side gateway, and `input` lets a
 *   proxy-mode link reach only those two ports there (an isolated VM only from its own address,
 *   which is how the proxy tells VMs apart), while nothing else reaches them on those addresses.
 *
 * Anti-spoofing comes first in `forward` and `input`, ahead of every accept (the resolver's port
 * 53 included): the connection bounds (conn-limits.ts) count new connections by source address
 * in the tenant's ranges, so a packet from a source outside them that got through would make a
 * conntrack entry no bound counts (and one from a neighbour VM's address would spend that
 * VM's bound).
 *
 * IPv6 (https://wiki.nftables.org/wiki-nftables/index.php/Matching_packet_metainformation,
 * `meta nfproto`): VMs have none (vm-links.ts disables it on both ends of each VM link)
 * and every IPv6 packet from or to a VM link is dropped, so a guest root that turns it back
 * on inside its own netns reaches nothing.
 */
import { cidrContains, formatCidr, parseCidr, parseIpv6Cidr, type Cidr } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import { OWN_RANGE_CHAIN_PREFIX, OWN_RANGES_INDEX_CHAIN } from "../../shared/nft-cli.js";
import type { CompiledFirewall, FirewallRule } from "./firewall-policy.js";
import { connLimitTableName, floorChainName, tableName, vmChainName } from "./names.js";

/**
 * Order two strings by UTF-16 code units (`<`), for the ruleset's sorted lists. Not
 * `localeCompare`: its first call in a process sets up ICU's collator, 8–27 ms of CPU measured on
 * node 20 (docs/performance.md, "Daemon start, sixth look"), and every daemon start renders a
 * ruleset. For CIDRs (digits, `.` and `/`) both orders are the same; for link names they differ
 * only with upper-case letters or `_` (Paddock's own names are lower-case hex and `-`, names.ts),
 * and then only in the order of rules and elements for distinct interfaces, which nft does not
 * depend on; the other lists here were already sorted by code unit (`.sort()`).
 */
function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A bridge-mode host group as the firewall sees it. */
export interface RulesetBridge {
  group: string;
  bridge: string;
  /** The gateway's network (`a.b.c.d/n`): the only sources allowed from the bridge. */
  range: string;
  /** The gateway address on the bridge (bare `a.b.c.d`). */
  gateway: string;
  /** TCP/UDP ports of host services on `gateway` the group's VMs may reach (`paddock.host_ports`). */
  hostPorts: readonly number[];
}

/** A host group's floor: its drop decisions, which a per-VM override cannot reopen. */
export interface RulesetFloor {
  group: string;
  /** First-match rules (firewall-policy.ts compileFloor): `drop` drops, `accept` leaves the decision to the VM's policy. */
  rules: readonly FirewallRule[];
}

/** An attached isolated VM. */
export interface RulesetIsolatedVm {
  hostname: string;
  group: string;
  /** Host-side veth. */
  veth: string;
  /** VM address (bare). */
  ip: string;
  firewall: CompiledFirewall;
  /** Jump to the group's floor chain first (a VM with a per-VM override, whose group floor is not empty). */
  useFloor: boolean;
}

/** One link of a proxy-mode host group: an isolated VM's veth or a proxy-mode group's bridge. */
export interface RulesetProxyLink {
  /** Host-side veth or bridge name. */
  iface: string;
  /** The link's host-side address (bare): the proxy and the resolver listen there. */
  gateway: string;
  /** Isolated VM: its address, the only source accepted from `iface` (bare). Bridge: undefined. */
  vmIp: string | undefined;
}

/** Proxy mode (egress-proxy-wiring.ts): where proxy-mode links may go. */
export interface RulesetProxy {
  /** The fixed address the guests use for the proxy and resolver (bare). */
  guestAddress: string;
  /** TCP port of the proxy, inside the VM and on the gateways. */
  proxyPort: number;
  /** TCP/UDP port of the resolver on the gateways (53 inside the VM). */
  dnsPort: number;
  links: readonly RulesetProxyLink[];
}

/** Everything {@link renderRuleset} needs. Lists may come in any order; output is sorted. */
export interface RulesetInput {
  tenantId: string;
  /** This tenant's ranges: isolated ranges and bridge networks. */
  ownRanges: readonly string[];
  /** Other tenants' ranges (config + ranges read from other `paddock-*` tables); always dropped. */
  foreignRanges: readonly string[];
  /** Operator deny list: IPv4 CIDR, IP or `ip:port`, or IPv6 CIDR; dropped for every VM (paddock.deny). */
  deny: readonly string[];
  bridges: readonly RulesetBridge[];
  isolatedVms: readonly RulesetIsolatedVm[];
  /** Floors of the groups whose VMs have `useFloor` (others are ignored). */
  floors: readonly RulesetFloor[];
  /**
   * The DNS servers written into the VMs' resolv.conf (a host group's `dns_servers`, else the
   * host's resolvers; IPv4 addresses, loopback ones left out): port 53 to them is accepted from
   * every VM ahead of the deny list and the groups' lists, which would otherwise drop a resolver
   * in RFC 1918 space (a cloud VPC's, or the host LAN's) and leave VMs without names. Optional;
   * empty or absent ⇒ no such rule.
   */
  dnsServers?: readonly string[];
  /** Proxy-mode links; absent or no links ⇒ no proxy rules (the golden rulesets are unchanged). */
  proxy?: RulesetProxy;
}

/**
 * Sort CIDRs and drop those contained in another (nft interval sets refuse overlapping
 * elements). Entries with a `:port` suffix contribute their address part.
 */
export function normaliseCidrs(list: readonly string[]): string[] {
  const parsed: Cidr[] = list.map((t) => parseCidr(t.split(":")[0] ?? ""));
  parsed.sort((a, b) => a.prefix - b.prefix || a.base - b.base);
  const kept: Cidr[] = [];
  for (const c of parsed) if (!kept.some((k) => k.prefix <= c.prefix && cidrContains(k, c.base))) kept.push(c);
  kept.sort((a, b) => a.base - b.base || a.prefix - b.prefix);
  return kept.map(formatCidr);
}

function q(name: string): string {
  return JSON.stringify(name);
}

function elements(list: readonly string[]): string {
  return list.length === 0 ? "" : `\t\telements = { ${list.join(", ")} }\n`;
}

/** `ip daddr X` (+ port match), in nft syntax; a /32 prints as the bare address. */
function daddrMatch(entry: { cidr: string; port: number | undefined }): string {
  const c = parseCidr(entry.cidr);
  const addr = c.prefix === 32 ? formatCidr(c).replace(/\/32$/, "") : formatCidr(c);
  const ip = c.prefix === 0 ? "meta nfproto ipv4" : `ip daddr ${addr}`;
  return entry.port === undefined ? ip : `${ip} meta l4proto { tcp, udp } th dport ${entry.port}`;
}

/** `ip6 daddr X` of an IPv6 deny entry; a /128 prints as the bare address. */
function daddr6Match(address: string, prefix: number): string {
  return `ip6 daddr ${prefix === 128 ? address : `${address}/${prefix}`}`;
}

function denyEntries(deny: readonly string[]): { cidr: string; port: number | undefined }[] {
  return deny
    .filter((t) => parseIpv6Cidr(t) === undefined)
    .map((t) => {
      const [a, p] = t.split(":");
      return { cidr: formatCidr(parseCidr(a ?? "")), port: p === undefined ? undefined : Number(p) };
    })
    .sort((x, y) => byCodeUnit(x.cidr, y.cidr) || (x.port ?? 0) - (y.port ?? 0));
}

/**
 * Render the whole transaction text for `nft -f` (pure; same input ⇒ same bytes).
 * The first two lines make the replacement atomic and idempotent: `table …` creates the
 * table if it is missing, `delete table …` then removes it (with all chains and sets)
 * before it is re-added below, all in one transaction.
 */
export function renderRuleset(input: RulesetInput): string {
  const t = tableName(input.tenantId);
  const own = normaliseCidrs(input.ownRanges);
  const foreign = normaliseCidrs(input.foreignRanges);
  const bridges = [...input.bridges].sort((a, b) => byCodeUnit(a.bridge, b.bridge));
  const vms = [...input.isolatedVms].sort((a, b) => byCodeUnit(a.veth, b.veth));
  const allIfaces = [...bridges.map((b) => b.bridge), ...vms.map((v) => v.veth)].sort();
  const isoIfaces = vms.map((v) => v.veth);
  const deny = denyEntries(input.deny);
  const deny6 = input.deny.flatMap((t) => {
    const c = parseIpv6Cidr(t);
    return c === undefined ? [] : [daddr6Match(c.address, c.prefix)];
  }).sort();
  const floors = [...new Set(vms.filter((v) => v.useFloor).map((v) => v.group))].sort().map((g) => {
    const f = input.floors.find((x) => x.group === g);
    if (f === undefined) throw new PaddockError("ERR_INTERNAL", `no floor given for host group ${g}, whose VM has useFloor`);
    return f;
  });
  const hasDeny = deny.length + deny6.length > 0;
  const proxy = input.proxy !== undefined && input.proxy.links.length > 0 ? input.proxy : undefined;
  const proxyLinks = [...(proxy?.links ?? [])].sort((a, b) => byCodeUnit(a.iface, b.iface));
  const L: string[] = [];
  L.push(`# Paddock tenant ${input.tenantId}: generated by renderRuleset, replaced as a whole; do not edit.`);
  L.push(`table inet ${t}`);
  L.push(`delete table inet ${t}`);
  L.push(`table inet ${t} {`);
  L.push(`\tcomment ${q(`paddock tenant ${input.tenantId}`)}`);
  L.push("");
  L.push("\t# This tenant's ranges; other Paddock daemons read this set to refuse overlaps.");
  L.push(`\tset own_ranges {\n\t\ttype ipv4_addr\n\t\tflags interval\n${elements(own)}\t}`);
  L.push("\t# Other tenants' ranges: traffic to or from them is dropped in every mode.");
  L.push(`\tset foreign_ranges {\n\t\ttype ipv4_addr\n\t\tflags interval\n${elements(foreign)}\t}`);
  L.push("\t# Every interface that carries this tenant's VMs (bridges and isolated veths).");
  L.push(`\tset vm_ifaces {\n\t\ttype ifname\n${elements(allIfaces.map(q))}\t}`);
  L.push("\t# Host-side veths of isolated VMs.");
  L.push(`\tset isolated_ifaces {\n\t\ttype ifname\n${elements(isoIfaces.map(q))}\t}`);
  L.push("\t# Each isolated VM's veth with the one source address accepted from it.");
  L.push(`\tset isolated_sources {\n\t\ttype ifname . ipv4_addr\n${elements(vms.map((v) => `${q(v.veth)} . ${v.ip}`))}\t}`);
  if (proxy) {
    L.push("\t# Links of proxy-mode host groups: out only through the egress proxy and its resolver.");
    L.push(`\tset proxy_ifaces {\n\t\ttype ifname\n${elements(proxyLinks.map((l) => q(l.iface)))}\t}`);
    L.push("\t# Host-side addresses the proxy and the resolver listen on.");
    L.push(`\tset proxy_gateways {\n\t\ttype ipv4_addr\n${elements([...new Set(proxyLinks.map((l) => l.gateway))].sort())}\t}`);
  }
  L.push("\t# The same ranges as empty chains' names: other daemons' starts read them with `nft list chains`,");
  L.push("\t# which costs nft a fraction of `list sets` (shared/nft-cli.ts listOwnRanges).");
  L.push(`\tchain ${OWN_RANGES_INDEX_CHAIN} {\n\t}`);
  for (const c of own) L.push(`\tchain ${OWN_RANGE_CHAIN_PREFIX}${c} {\n\t}`);
  L.push("");
  L.push("\tchain forward {");
  L.push("\t\ttype filter hook forward priority filter - 10; policy accept;");
  L.push("\t\tiifname @vm_ifaces meta nfproto ipv6 drop");
  L.push("\t\toifname @vm_ifaces meta nfproto ipv6 drop");
  L.push("\t\tiifname @isolated_ifaces iifname . ip saddr != @isolated_sources drop");
  L.push("\t\tip saddr @own_ranges ip daddr @foreign_ranges drop");
  L.push("\t\tip saddr @foreign_ranges ip daddr @own_ranges drop");
  L.push("\t\tiifname @vm_ifaces ip daddr @foreign_ranges drop");
  for (const b of bridges) L.push(`\t\tiifname ${q(b.bridge)} ip saddr != ${b.range} drop`);
  if (proxy) L.push("\t\tiifname @proxy_ifaces drop");
  const dns = [...new Set(input.dnsServers ?? [])].filter((a) => !a.startsWith("127.")).sort();
  if (dns.length > 0) L.push(`\t\tiifname @vm_ifaces ip daddr { ${dns.join(", ")} } meta l4proto { tcp, udp } th dport 53 accept`);
  if (hasDeny) L.push("\t\tiifname @vm_ifaces jump deny");
  L.push("\t\tct state established,related accept");
  L.push("\t\toifname @isolated_ifaces drop");
  if (vms.length > 0) {
    L.push(`\t\tiifname vmap { ${vms.map((v) => `${q(v.veth)} : jump ${vmChainName(v.veth)}`).join(", ")} }`);
  }
  L.push("\t}");
  L.push("");
  L.push("\tchain input {");
  L.push("\t\ttype filter hook input priority filter - 10; policy accept;");
  L.push("\t\tiifname @vm_ifaces meta nfproto ipv6 drop");
  L.push("\t\tiifname @isolated_ifaces iifname . ip saddr != @isolated_sources drop");
  L.push("\t\tiifname @vm_ifaces ip daddr @foreign_ranges drop");
  for (const b of bridges) L.push(`\t\tiifname ${q(b.bridge)} ip saddr != ${b.range} drop`);
  if (proxy) {
    for (const l of proxyLinks) if (l.vmIp !== undefined) L.push(`\t\tiifname ${q(l.iface)} ip saddr != ${l.vmIp} drop`);
    L.push(`\t\tiifname @proxy_ifaces ip daddr @proxy_gateways tcp dport ${proxy.proxyPort} accept`);
    L.push(`\t\tiifname @proxy_ifaces ip daddr @proxy_gateways meta l4proto { tcp, udp } th dport ${proxy.dnsPort} accept`);
    L.push("\t\tiifname @proxy_ifaces ct state established,related accept");
    L.push("\t\tiifname @proxy_ifaces drop");
    L.push(`\t\tip daddr @proxy_gateways meta l4proto { tcp, udp } th dport { ${[...new Set([proxy.proxyPort, proxy.dnsPort])].sort((a, b) => a - b).join(", ")} } drop`);
  }
  if (dns.length > 0) L.push(`\t\tiifname @vm_ifaces ip daddr { ${dns.join(", ")} } meta l4proto { tcp, udp } th dport 53 accept`);
  if (hasDeny) L.push("\t\tiifname @vm_ifaces jump deny");
  L.push("\t\tiifname @vm_ifaces ct state established,related accept");
  for (const b of bridges) {
    const ports = [...new Set(b.hostPorts)].sort((x, y) => x - y);
    if (ports.length > 0) L.push(`\t\tiifname ${q(b.bridge)} ip daddr ${b.gateway} meta l4proto { tcp, udp } th dport { ${ports.join(", ")} } accept`);
  }
  L.push("\t\tiifname @vm_ifaces drop");
  L.push("\t}");
  if (hasDeny) {
    L.push("");
    L.push("\t# Operator deny list (paddock.deny): a floor for every VM; the tenant's own ranges are decided above.");
    L.push("\tchain deny {");
    L.push("\t\tip daddr @own_ranges return");
    for (const d of deny) L.push(`\t\t${daddrMatch(d)} drop`);
    for (const d of deny6) L.push(`\t\t${d} drop`);
    L.push("\t}");
  }
  for (const f of floors) {
    L.push("");
    L.push(`\t# Host group ${f.group}'s drops: no per-VM override reopens them ("accept" here returns to the VM's own policy).`);
    L.push(`\tchain ${floorChainName(f.group)} {`);
    for (const r of f.rules) L.push(`\t\t${daddrMatch(r)} ${r.verdict === "drop" ? "drop" : "return"}`);
    L.push("\t}");
  }
  for (const v of vms) {
    L.push("");
    L.push(`\t# ${v.group}/${v.hostname}`);
    L.push(`\tchain ${vmChainName(v.veth)} {`);
    L.push("\t\tmeta nfproto ipv6 drop");
    L.push(`\t\tip saddr != ${v.ip} drop`);
    L.push("\t\tip daddr @own_ranges drop");
    if (v.useFloor) L.push(`\t\tjump ${floorChainName(v.group)}`);
    for (const r of v.firewall.rules) L.push(`\t\t${daddrMatch(r)} ${r.verdict}`);
    L.push(`\t\t${v.firewall.defaultVerdict}`);
    L.push("\t}");
  }
  if (proxy) {
    L.push("");
    L.push(`\t# The guests' fixed proxy address ${proxy.guestAddress} is the proxy-mode link's own gateway.`);
    L.push("\tchain prerouting {");
    L.push("\t\ttype nat hook prerouting priority dstnat; policy accept;");
    for (const l of proxyLinks) {
      L.push(`\t\tiifname ${q(l.iface)} ip daddr ${proxy.guestAddress} tcp dport ${proxy.proxyPort} dnat ip to ${l.gateway}:${proxy.proxyPort}`);
      L.push(`\t\tiifname ${q(l.iface)} ip daddr ${proxy.guestAddress} meta l4proto { tcp, udp } th dport 53 dnat ip to ${l.gateway}:${proxy.dnsPort}`);
    }
    L.push("\t}");
  }
  L.push("");
  L.push("\tchain postrouting {");
  L.push("\t\ttype nat hook postrouting priority srcnat; policy accept;");
  if (own.length > 0) L.push("\t\tip saddr @own_ranges ip daddr != @own_ranges masquerade");
  L.push("\t}");
  L.push("}");
  return L.join("\n") + "\n";
}

/**
 * The transaction that removes the tenant's tables, the main one and the connection bounds
 * (conn-limits.ts), each created first so its delete cannot fail.
 */
export function renderTableDeletion(tenantId: string): string {
  return [tableName(tenantId), connLimitTableName(tenantId)].map((t) => `table inet ${t}\ndelete table inet ${t}\n`).join("");
}
