/**
 * The tenant's address ranges as decided at start: explicit ranges checked against the host
 * (other running Paddock tenants' tables, `paddock.foreign_ranges`, host interfaces), isolated
 * groups without a `range` given a derived /22 in 169.254.0.0/16 (the one persisted in
 * `<state>/network.json` while it is still free, else a hashed one, address-plan.ts), and the
 * bridges the config names checked to be this tenant's or absent.
 */
import path from "node:path";
import { cidrOverlaps, formatCidr, parseCidr, type Cidr } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import { JsonStateStore } from "../../shared/state-store.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import { deriveIsolatedRange, groupAddressing, type GroupAddressing } from "./address-plan.js";
import * as host from "./host-net.js";
import { listOwnRangesAndChains } from "../../shared/nft-cli.js";
import { aliasPrefix, connLimitTableName, defaultBridgeName, TABLE_PREFIX, tableName } from "./names.js";
import type { GroupRuntime } from "./tenant-network-state.js";

/** `<state>/network.json`: keeps derived ranges stable across restarts. */
interface NetworkStateFile {
  schemaVersion: 1;
  /** Derived isolated ranges by host group. */
  derivedRanges: Record<string, string>;
}

/** The store of `<state>/network.json`. */
export type RangeStore = JsonStateStore<NetworkStateFile>;

/** The store of `<stateDir>/network.json` (created empty on first use). */
export function openRangeStore(stateDir: string): RangeStore {
  return new JsonStateStore<NetworkStateFile>({
    file: path.join(stateDir, "network.json"),
    schemaVersion: 1,
    initial: () => ({ schemaVersion: 1, derivedRanges: {} }),
    validate: (v) => (typeof (v as NetworkStateFile).derivedRanges === "object" ? undefined : "missing derivedRanges"),
  });
}

/** What start reads from the host before deciding anything. */
export interface HostScan {
  links: host.HostLink[];
  /** Every IPv4 address on a host interface. */
  addrs: host.HostAddress[];
  /** Every named netns (`ip netns list`). */
  netnsList: string[];
  /** Names of the links carrying this tenant's alias (names.ts `aliasPrefix`). */
  ours: Set<string>;
  /** Other running Paddock tenants' tables and the ranges in their `own_ranges` set. */
  others: { table: string; cidrs: Cidr[] }[];
  /**
   * The chain names of this tenant's connection-bounds table (names.ts `connLimitTableName`)
   * when the host has it (an earlier daemon's, kept for the VMs that outlived it), else
   * undefined: tenant-firewall.ts keeps the table, and its counts, when it is the one it would make.
   */
  boundsChains: string[] | undefined;
}

/**
 * Read links, addresses, netns and the other Paddock tables from the host.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip` or `nft`.
 */
export async function scanHost(tenant: string): Promise<HostScan> {
  // One `nft list chains` for every table's own ranges (nft-cli.ts: `list sets` prints every
  // set's elements, `list tables` decodes every rule).
  const [{ links, addrs, netnsList }, { ranges, chains }] = await Promise.all([host.scanIp(), listOwnRangesAndChains(TABLE_PREFIX)]);
  const ours = new Set(links.filter((l) => l.ifalias?.startsWith(aliasPrefix(tenant))).map((l) => l.ifname));
  const others = [...ranges].filter(([t]) => t.startsWith(TABLE_PREFIX) && t !== tableName(tenant)).map(([table, cidrs]) => ({ table, cidrs }));
  return { links, addrs, netnsList, ours, others, boundsChains: chains.get(connLimitTableName(tenant)) };
}

/** The tenant's resolved ranges. */
export interface RangePlan {
  /** Every host group with its addressing and bridge name, by name. */
  groups: Map<string, GroupRuntime>;
  /** The addressing of every group, in config order (for the address plan). */
  addressing: GroupAddressing[];
  /** Other tenants' ranges (`paddock.foreign_ranges`, then the running daemons' tables), `a.b.c.d/n`. */
  foreignRanges: string[];
}

/**
 * Resolve every group's range against the host and persist the derived ones (only when they
 * changed).
 * @throws PaddockError ERR_NETWORK_OVERLAP naming every conflict (both sides), or when no /22
 *   is left to derive from.
 */
export async function planRanges(cfg: TenantConfig, store: RangeStore, scan: HostScan): Promise<RangePlan> {
  const tenant = cfg.paddock.tenantId;
  const { others } = scan;
  const configForeign = cfg.paddock.foreignRanges.map((t) => ({ text: t, cidr: parseCidr(t.split(":")[0] ?? "") }));
  const hostNets = scan.addrs
    .filter((a) => !scan.ours.has(a.ifname))
    .map((a) => ({ a, cidr: parseCidr(`${a.local}/${a.prefixlen}`) }));

  // 1. Explicit ranges must not overlap other daemons, configured foreign ranges or host interfaces.
  const problems: string[] = [];
  const explicit: { group: string; cidr: Cidr }[] = [];
  for (const g of cfg.hostGroups) {
    const text = g.network.mode === "isolated" ? g.network.range : g.network.gateway;
    if (text === undefined) continue;
    const cidr = parseCidr(text);
    explicit.push({ group: g.name, cidr });
    const what = `range ${formatCidr(cidr)} of host group ${g.name} (tenant ${tenant})`;
    for (const o of others) for (const c of o.cidrs) if (cidrOverlaps(c, cidr)) problems.push(`${what} overlaps ${formatCidr(c)} of running Paddock tenant ${o.table.slice(TABLE_PREFIX.length)} (nft table inet ${o.table})`);
    for (const f of configForeign) if (cidrOverlaps(f.cidr, cidr)) problems.push(`${what} overlaps ${f.text} in paddock.foreign_ranges (another tenant's range)`);
    for (const h of hostNets) if (cidrOverlaps(h.cidr, cidr)) problems.push(`${what} overlaps address ${h.a.local}/${h.a.prefixlen} on host interface ${h.a.ifname}`);
  }

  // 2. Derived isolated ranges: the persisted one while still free, else hashed (address-plan.ts).
  const state = await store.init();
  const avoid: Cidr[] = [...others.flatMap((o) => o.cidrs), ...configForeign.map((f) => f.cidr), ...hostNets.map((h) => h.cidr), ...explicit.map((e) => e.cidr)];
  const derived: Record<string, string> = {};
  const addressing: GroupAddressing[] = [];
  for (const g of cfg.hostGroups) {
    let range: Cidr | undefined;
    if (g.network.mode === "isolated" && g.network.range === undefined) {
      const prev = state.derivedRanges[g.name];
      const prevCidr = prev === undefined ? undefined : parseCidr(prev);
      range = prevCidr && !avoid.some((a) => cidrOverlaps(a, prevCidr)) ? prevCidr : deriveIsolatedRange(tenant, g.name, avoid);
      if (!range) problems.push(`host group ${g.name}: no free /22 left in 169.254.0.0/16 to derive an isolated range from; set network.range`);
      else {
        avoid.push(range);
        derived[g.name] = formatCidr(range);
      }
    }
    if (g.network.mode === "bridge" || range !== undefined || g.network.range !== undefined) addressing.push(groupAddressing(g, range));
  }
  if (problems.length > 0) {
    throw new PaddockError("ERR_NETWORK_OVERLAP", `tenant ${tenant}: network ranges conflict: ${problems.join("; ")}`, { details: { problems } });
  }
  if (JSON.stringify(state.derivedRanges) !== JSON.stringify(derived)) {
    await store.update((s) => {
      s.derivedRanges = derived;
    });
  }
  const groups = new Map(addressing.map((a): [string, GroupRuntime] => {
    const g = cfg.hostGroups.find((h) => h.name === a.group) as HostGroupConfig;
    const bridge = g.network.mode === "bridge" ? (g.network.bridge ?? defaultBridgeName(tenant, g.name)) : undefined;
    return [a.group, { cfg: g, addr: a, bridge }];
  }));
  const foreignRanges = [...configForeign.map((f) => formatCidr(f.cidr)), ...others.flatMap((o) => o.cidrs.map(formatCidr))];
  return { groups, addressing, foreignRanges };
}

/**
 * 3. Bridges named in config must be this tenant's (by alias) or absent.
 * @throws PaddockError ERR_NETWORK_OVERLAP naming each foreign bridge and its alias.
 */
export function checkBridgeOwnership(tenant: string, groups: ReadonlyMap<string, GroupRuntime>, scan: HostScan): void {
  const problems: string[] = [];
  for (const g of groups.values()) {
    if (!g.bridge) continue;
    const l = scan.links.find((x) => x.ifname === g.bridge);
    if (l && !scan.ours.has(l.ifname)) problems.push(`bridge ${g.bridge} of host group ${g.cfg.name} already exists on the host and is not tenant ${tenant}'s (alias ${JSON.stringify(l.ifalias ?? "")})`);
  }
  if (problems.length > 0) throw new PaddockError("ERR_NETWORK_OVERLAP", `tenant ${tenant}: ${problems.join("; ")}`, { details: { problems } });
}
