/**
 * The in-memory state of one tenant's network that its pieces share: the resolved host groups,
 * the VMs whose links exist (attached, or found alive at start and waiting to be adopted), their
 * firewall overrides, and the host facts the firewall and the guests' resolv.conf need.
 * tenant-network.ts owns one {@link TenantNetState} and hands it to vm-links.ts,
 * tenant-host-links.ts and tenant-firewall.ts.
 */
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import type { GroupAddressing } from "./address-plan.js";
import type { VmNetworkOverride } from "./network.js";

/** The links of one VM on the host: its veth (host side), netns and addresses. */
export interface VmLinks {
  hostname: string;
  group: string;
  mode: "bridge" | "isolated";
  /** Host-side veth name (names.ts `vmVethName`). */
  veth: string;
  /** Network namespace name under /var/run/netns (names.ts `vmNetnsName`). */
  netns: string;
  /** The VM's address (eth0 in its netns), IPv4 as a number. */
  ip: number;
  /** Prefix length of `ip` (isolated: 30; bridge: the gateway's). */
  prefix: number;
  /** The VM's default route, IPv4 as a number (isolated: the veth's address; bridge: the bridge's). */
  gateway: number;
}

/** One host group as resolved at start. */
export interface GroupRuntime {
  cfg: HostGroupConfig;
  addr: GroupAddressing;
  /** Bridge mode: the bridge's name. */
  bridge: string | undefined;
}

/** The mutable state the tenant network's pieces share (one per daemon). */
export interface TenantNetState {
  readonly tenant: string;
  readonly cfg: TenantConfig;
  /** Host groups by name; filled at start. */
  groups: Map<string, GroupRuntime>;
  /** Per-VM firewall overrides by hostname (undefined value: reserved without one). */
  readonly overrides: Map<string, VmNetworkOverride | undefined>;
  /**
   * VMs whose links this daemon built, is building or adopted, by hostname. A VM enters before
   * its links are built (its firewall rules go in beside them), so its gateway address may not
   * exist yet: see {@link TenantNetState.linking}.
   */
  readonly attached: Map<string, VmLinks>;
  /** Hostnames of attached VMs whose links are still being built (their gateway address may not exist yet). */
  readonly linking: Set<string>;
  /** Live VM netns found at start, waiting for `reserve` to adopt them (or `sweep`). */
  readonly adoptable: Map<string, VmLinks>;
  /** Other tenants' ranges (config and running daemons' tables), `a.b.c.d/n`. */
  foreignRanges: string[];
  /** The host's own resolvers (guests' default DNS servers). */
  resolvers: string[];
  /** The host kernel has IPv6 (then it is switched off on every VM link: nft-ruleset.ts module doc). */
  ipv6: boolean;
}

/** A fresh state for `cfg`'s tenant: no groups, no VMs, IPv6 assumed until probed. */
export function newTenantNetState(cfg: TenantConfig): TenantNetState {
  return {
    tenant: cfg.paddock.tenantId,
    cfg,
    groups: new Map(),
    overrides: new Map(),
    attached: new Map(),
    linking: new Set(),
    adoptable: new Map(),
    foreignRanges: [],
    resolvers: [],
    ipv6: true,
  };
}

/** The host group of a VM hostname `<group>-<n>`, or undefined when no such group is resolved. */
export function groupOfHostname(state: TenantNetState, hostname: string): GroupRuntime | undefined {
  const m = /^(.*)-\d+$/.exec(hostname);
  return m?.[1] === undefined ? undefined : state.groups.get(m[1]);
}
