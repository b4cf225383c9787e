/**
 * Address plan per host group (docs/slicer-api.md#isolated-addressing), pure and synchronous so
 * that concurrent creates in one process can never receive the same address.
 *
 * - Bridge: gateway `a.b.c.d/p` on the bridge; VMs from `addresses`, else the `range` A-B,
 *   else every host address of the gateway's network except network, broadcast and gateway,
 *   lowest first (`.2`, `.3`, …). Reported as `ip/p`.
 * - Isolated: slot i of the group's range is the /30 at `base + 4·i`: +1 host-side gateway
 *   (veth), +2 VM. Reported as `ip/30`. A slot holding an address already used by a host
 *   interface that is not ours is skipped.
 */
import { cidrContains, cidrLast, cidrOverlaps, cidrSize, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { stableIndex } from "./names.js";

/** The link-local /16 in which isolated ranges are derived. */
export const LINK_LOCAL = parseCidr("169.254.0.0/16");
/** The cloud metadata address; the /22 holding it is never derived. */
export const METADATA_IP = parseIpv4("169.254.169.254") as number;
/** Prefix of derived isolated ranges: a /22, so 64 blocks in 169.254.0.0/16 (Slicer's choice). */
export const DERIVED_PREFIX = 22;

/** The resolved addressing of one host group. */
export interface GroupAddressing {
  group: string;
  mode: "bridge" | "isolated";
  /** Isolated: the group's range; bridge: the gateway's network. Used for overlap checks, NAT and the cross-tenant rule. */
  range: Cidr;
  /** `config` when written in the YAML, `derived` when hashed (isolated without `range`). */
  rangeSource: "config" | "derived";
  /** Bridge only: gateway address (on the bridge). */
  gateway: number | undefined;
  /** Bridge only: explicit VM addresses, or undefined for the `first`..`last` span. */
  addresses: number[] | undefined;
  /** Bridge only: first and last candidate VM address (inclusive) when `addresses` is undefined. */
  first: number;
  last: number;
}

/** One reservation. */
export interface Reservation {
  hostname: string;
  group: string;
  /** VM address. */
  ip: number;
  /** Prefix reported with the address (bridge: gateway's; isolated: 30). */
  prefix: number;
  /** Gateway the VM routes through (bridge gateway or slot +1). */
  gateway: number;
}

/**
 * Derive an isolated group's /22 in 169.254.0.0/16 from a stable hash of `<tenant>/<group>`,
 * probing forward past the metadata block and any block overlapping `avoid`.
 * @returns undefined when all 64 blocks are unavailable.
 */
export function deriveIsolatedRange(tenantId: string, group: string, avoid: readonly Cidr[]): Cidr | undefined {
  const blocks = cidrSize(LINK_LOCAL) / 2 ** (32 - DERIVED_PREFIX);
  const start = stableIndex(`${tenantId}/${group}`, blocks);
  for (let k = 0; k < blocks; k++) {
    const c: Cidr = { base: (LINK_LOCAL.base + ((start + k) % blocks) * 2 ** (32 - DERIVED_PREFIX)) >>> 0, prefix: DERIVED_PREFIX };
    if (cidrContains(c, METADATA_IP)) continue;
    if (avoid.some((a) => cidrOverlaps(a, c))) continue;
    return c;
  }
  return undefined;
}

/**
 * Resolve a host group's addressing from config. `derivedRange` is used for isolated groups
 * without `range`.
 */
export function groupAddressing(g: HostGroupConfig, derivedRange: Cidr | undefined): GroupAddressing {
  const net = g.network;
  if (net.mode === "isolated") {
    const range = net.range !== undefined ? parseCidr(net.range) : derivedRange;
    if (!range) throw new PaddockError("ERR_INTERNAL", `no range for isolated host group ${g.name}`);
    return { group: g.name, mode: "isolated", range, rangeSource: net.range !== undefined ? "config" : "derived", gateway: undefined, addresses: undefined, first: 0, last: 0 };
  }
  if (net.gateway === undefined) {
    throw new PaddockError("ERR_CONFIG_INVALID", `host group ${g.name}: bridge mode needs network.gateway (e.g. 192.168.137.1/24)`);
  }
  const range = parseCidr(net.gateway);
  const gateway = parseIpv4(net.gateway.split("/")[0] ?? "") as number;
  let first = range.base + 1;
  let last = cidrLast(range) - 1;
  if (net.range !== undefined) {
    const [a, b] = net.range.split("-");
    first = parseIpv4(a ?? "") ?? first;
    last = parseIpv4(b ?? "") ?? last;
  }
  const addresses = net.addresses.length > 0 ? net.addresses.map((a) => parseIpv4(a.split("/")[0] ?? "") as number) : undefined;
  return { group: g.name, mode: "bridge", range, rangeSource: "config", gateway, addresses, first: first >>> 0, last: last >>> 0 };
}

/**
 * The tenant's reservations across all host groups. Not persisted here: the VM service
 * stores each VM's address and passes it back as `previousIp` after a restart.
 */
export class AddressPlan {
  private readonly groups = new Map<string, GroupAddressing>();
  private readonly byHost = new Map<string, Reservation>();
  private readonly taken = new Map<string, Set<number>>();

  constructor(groups: readonly GroupAddressing[]) {
    for (const g of groups) {
      this.groups.set(g.group, g);
      this.taken.set(g.group, new Set());
    }
  }

  group(name: string): GroupAddressing | undefined {
    return this.groups.get(name);
  }

  allGroups(): GroupAddressing[] {
    return [...this.groups.values()];
  }

  lookup(hostname: string): Reservation | undefined {
    return this.byHost.get(hostname);
  }

  all(): Reservation[] {
    return [...this.byHost.values()];
  }

  /**
   * Reserve an address for `hostname` in `group`. An existing reservation is returned as is.
   * `wanted` (a previous or requested address, bare or CIDR) is honoured when valid and free;
   * with `strict` (a client's requested `ip`) an unusable one is an error instead.
   * `hostAddrs` are addresses on host interfaces that are not ours (skipped).
   * @throws PaddockError `ERR_HOSTGROUP_NOT_FOUND`; `ERR_NETWORK_EXHAUSTED` (409) when no
   *   address is left; with `strict`: `ERR_VM_INVALID_REQUEST` (400) when the address is not
   *   a VM address of the group, `ERR_NETWORK_ADDRESS_IN_USE` (409) when taken.
   */
  reserve(hostname: string, groupName: string, hostAddrs: ReadonlySet<number>, wanted?: { ip: string; strict: boolean }): Reservation {
    const existing = this.byHost.get(hostname);
    if (existing) return existing;
    const g = this.groups.get(groupName);
    const taken = this.taken.get(groupName);
    if (!g || !taken) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${groupName} not found`);
    const usable = (ip: number): boolean => !taken.has(ip) && !this.hostConflict(g, ip, hostAddrs);
    let ip: number | undefined;
    if (wanted !== undefined) {
      const w = parseIpv4(wanted.ip.split("/")[0] ?? "");
      const valid = w !== undefined && this.isVmAddress(g, w);
      if (valid && usable(w)) ip = w;
      else if (wanted.strict && !valid) throw this.notVmAddress(g, wanted.ip);
      else if (wanted.strict) throw new PaddockError("ERR_NETWORK_ADDRESS_IN_USE", `ip ${wanted.ip} is already in use in host group ${g.group}`);
    }
    ip ??= this.firstFree(g, usable);
    if (ip === undefined) {
      throw new PaddockError("ERR_NETWORK_EXHAUSTED", `host group ${g.group} has no free address left (${this.describeRange(g)}, ${taken.size} in use)`);
    }
    taken.add(ip);
    const r: Reservation = g.mode === "isolated"
      ? { hostname, group: g.group, ip, prefix: 30, gateway: (ip - 1) >>> 0 }
      : { hostname, group: g.group, ip, prefix: g.range.prefix, gateway: g.gateway as number };
    this.byHost.set(hostname, r);
    return r;
  }

  /**
   * Refuse `ip` (bare or CIDR) when it is not a VM address of `groupName`, as a strict
   * {@link reserve} would; whether it is free is not checked.
   * @throws PaddockError `ERR_HOSTGROUP_NOT_FOUND`, `ERR_VM_INVALID_REQUEST` (400)
   */
  checkVmAddress(groupName: string, ip: string): void {
    const g = this.groups.get(groupName);
    if (!g) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${groupName} not found`);
    const w = parseIpv4(ip.split("/")[0] ?? "");
    if (w === undefined || !this.isVmAddress(g, w)) throw this.notVmAddress(g, ip);
  }

  private notVmAddress(g: GroupAddressing, ip: string): PaddockError {
    return new PaddockError("ERR_VM_INVALID_REQUEST", `ip ${ip} is not a VM address of host group ${g.group} (${this.describeRange(g)})`);
  }

  /** Free `hostname`'s address (no-op when none). */
  release(hostname: string): void {
    const r = this.byHost.get(hostname);
    if (!r) return;
    this.byHost.delete(hostname);
    this.taken.get(r.group)?.delete(r.ip);
  }

  private describeRange(g: GroupAddressing): string {
    if (g.mode === "isolated") return `range ${formatCidr(g.range)}, one /30 per VM`;
    if (g.addresses) return `addresses ${g.addresses.map(formatIpv4).join(", ")}`;
    return `${formatIpv4(g.first)}-${formatIpv4(g.last)}`;
  }

  private isVmAddress(g: GroupAddressing, ip: number): boolean {
    if (g.mode === "isolated") return cidrContains(g.range, ip) && (ip - g.range.base) % 4 === 2;
    if (g.addresses) return g.addresses.includes(ip);
    return ip >= g.first && ip <= g.last && ip !== g.gateway && cidrContains(g.range, ip) && ip !== g.range.base && ip !== cidrLast(g.range);
  }

  private hostConflict(g: GroupAddressing, ip: number, hostAddrs: ReadonlySet<number>): boolean {
    if (g.mode === "bridge") return hostAddrs.has(ip);
    const block = (ip - 2) >>> 0;
    for (let k = 0; k < 4; k++) if (hostAddrs.has((block + k) >>> 0)) return true;
    return false;
  }

  private firstFree(g: GroupAddressing, usable: (ip: number) => boolean): number | undefined {
    if (g.mode === "isolated") {
      const slots = cidrSize(g.range) / 4;
      for (let i = 0; i < slots; i++) {
        const ip = (g.range.base + 4 * i + 2) >>> 0;
        if (usable(ip)) return ip;
      }
      return undefined;
    }
    if (g.addresses) return g.addresses.find((ip) => this.isVmAddress(g, ip) && usable(ip));
    for (let ip = g.first; ip <= g.last; ip++) {
      if (this.isVmAddress(g, ip) && usable(ip)) return ip;
    }
    return undefined;
  }
}
