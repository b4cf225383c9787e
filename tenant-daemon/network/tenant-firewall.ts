/**
 * The tenant's nftables table kept in step with its VMs: the ruleset is rendered from the
 * shared {@link TenantNetState} (nft-ruleset.ts) and applied as one `nft -f` transaction.
 * Only the tables `inet paddock-<tenant>` and, once per daemon life, `inet paddock-<tenant>-ct`
 * (conn-limits.ts) are ever written; the host's ruleset is never flushed.
 */
import { formatCidr, formatIpv4 } from "../../shared/cidr.js";
import type { Logger } from "../../shared/logger.js";
import { EGRESS_DNS_PORT, EGRESS_PROXY_GUEST_ADDRESS, EGRESS_PROXY_PORT } from "./egress-proxy-wiring.js";
import { compileFirewall, compileFloor, effectiveLists, type FirewallLists } from "./firewall-policy.js";
import * as host from "./host-net.js";
import { connLimitsTag, renderConnLimits, type ConnLimitsInput } from "./conn-limits.js";
import { connLimitTableName, tableName } from "./names.js";
import { renderRuleset, renderTableDeletion, type RulesetFloor, type RulesetInput, type RulesetProxyLink } from "./nft-ruleset.js";
import type { TenantNetState } from "./tenant-network-state.js";

/** How a ruleset text reaches the kernel: one all-or-nothing `nft -f` (host-net.ts `applyNft`). */
export type ApplyNft = (text: string) => Promise<void>;

/**
 * Applies the tenant's table; concurrent updates share applies, and an update whose rendered
 * text is the one this process last applied runs no nft at all.
 */
export class TenantFirewall {
  private ruleset: string | undefined;
  private wanted = 0;
  private applied = 0;
  private running: Promise<void> | undefined;
  /** Set by {@link halt}: no update starts any more. */
  private stopping = false;
  /**
   * This process applied the connection-bounds table (conn-limits.ts): with the first apply that
   * succeeded, and never again, so a VM create or delete never resets its counts.
   */
  private boundsApplied = false;
  /** The chain names of the bounds table the host had at start ({@link keepBoundsIfSame}). */
  private foundBounds: readonly string[] | undefined;

  /**
   * @param state - read at each apply (groups, attached and adoptable VMs, overrides, resolvers).
   * @param log - where background failures are logged.
   * @param apply - how a transaction is applied (default host-net.ts `applyNft`; tests count calls).
   */
  constructor(
    private readonly state: TenantNetState,
    private readonly log: Logger,
    private readonly apply: ApplyNft = host.applyNft,
  ) {}

  /**
   * The chain names of the connection-bounds table the daemon's start found on the host
   * (tenant-ranges.ts `HostScan.boundsChains`): when they hold the tag of the table this daemon
   * would make (conn-limits.ts `connLimitsTag`: same ranges, same bounds), the first apply keeps
   * that table, so the connections its VMs hold stay counted across a daemon restart; else it
   * is made anew (the counts start from zero: new bounds, new ranges, or no table).
   */
  keepBoundsIfSame(chains: readonly string[] | undefined): void {
    this.foundBounds = chains;
  }

  /** The ruleset text as last applied (undefined before the first apply, after a failure and after {@link removeTable}). */
  lastRuleset(): string | undefined {
    return this.ruleset;
  }

  /**
   * Bring the kernel's table up to date with the current state. Concurrent callers share
   * applies: each waits until an apply rendered after its call has finished. No-op once halted.
   * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `nft` (the table keeps its previous rules).
   */
  async sync(): Promise<void> {
    if (this.stopping) return;
    const gen = ++this.wanted;
    while (this.applied < gen && !this.stopping) {
      this.running ??= this.applyOnce().finally(() => {
        this.running = undefined;
      });
      await this.running;
    }
  }

  /** {@link sync} without waiting; a failure is logged ("firewall update failed"). */
  syncInBackground(): void {
    this.sync().catch((err: unknown) => this.log.error("firewall update failed", { err }));
  }

  /**
   * From now on no update starts: one that ran after the table's deletion would create the
   * table again (a stop racing start-up work left it behind).
   */
  halt(): void {
    this.stopping = true;
  }

  /**
   * Wait for a running apply, then delete the tenant's tables, the main one and the connection
   * bounds (absent is fine). Call after
   * {@link halt}. When this process never applied the table (a purge after the daemon's own
   * stop deleted it, or a start that failed before its first apply), one cheap read checks that
   * it exists before the deletion, which reads every table on the host (host-net.ts `nftTableExists`).
   * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `nft`.
   */
  async removeTable(): Promise<void> {
    while (this.running !== undefined) await this.running.catch(() => undefined);
    const t = this.state.tenant;
    const present = this.ruleset !== undefined || this.boundsApplied || (await host.nftTableExists(tableName(t))) || (await host.nftTableExists(connLimitTableName(t)));
    if (present) await this.apply(renderTableDeletion(t));
    this.ruleset = undefined;
    this.boundsApplied = false;
  }

  private async applyOnce(): Promise<void> {
    const target = this.wanted;
    const text = renderRuleset(rulesetInput(this.state));
    // The kernel holds these bytes already: this process applied them last, and every apply
    // replaces the whole table, so a second one would change nothing. It is worth skipping:
    // nft 1.0.6 reads every table on the host before any write, ~0.1-0.5 s of CPU at 200
    // tenants (docs/performance.md, "nftables at density"), and a daemon restart renders the
    // same text once per adopted VM (TenantNetwork.reserve). After a failed apply `ruleset` is
    // undefined and the next update applies.
    if (text === this.ruleset) {
      this.applied = target;
      return;
    }
    // One `nft -f`: an all-or-nothing transaction (host-net.ts applyNft). The first one of this
    // process also (re)creates the connection-bounds table: one nft run instead of two.
    const boundsInput = connLimitsInput(this.state);
    const keep = !this.boundsApplied && this.foundBounds?.includes(connLimitsTag(boundsInput)) === true;
    if (keep) this.log.info("keeping the connection-bounds table of an earlier start (same ranges and bounds): its counts carry over", { table: connLimitTableName(this.state.tenant) });
    const bounds = this.boundsApplied || keep ? "" : renderConnLimits(boundsInput);
    try {
      await this.apply(bounds + text);
    } catch (err) {
      this.ruleset = undefined;
      throw err;
    }
    this.boundsApplied = true;
    this.foundBounds = undefined;
    this.ruleset = text;
    this.applied = target;
  }
}

/** What conn-limits.ts renders: the tenant's ranges (fixed once the network started) and its bounds. */
function connLimitsInput(state: TenantNetState): ConnLimitsInput {
  const { maxConns, maxConnsPerVm } = state.cfg.paddock.conntrack;
  return { tenantId: state.tenant, ownRanges: [...state.groups.values()].map((g) => formatCidr(g.addr.range)), maxConns, maxConnsPerVm };
}

/** The host group's lists as the operator's config wrote them (empty for bridge groups). */
function groupLists(state: TenantNetState, group: string): FirewallLists {
  const net = state.groups.get(group)?.cfg.network;
  return net?.mode === "isolated" ? { allow: [...net.allow], drop: [...net.drop] } : { allow: [], drop: [] };
}

/** What nft-ruleset.ts renders for the current state: ranges, deny list, bridges and every isolated VM's firewall. */
function rulesetInput(state: TenantNetState): RulesetInput {
  const vms = [...state.attached.values(), ...state.adoptable.values()].filter((v) => v.mode === "isolated");
  const floors = new Map<string, RulesetFloor>(
    [...new Set(vms.map((v) => v.group))].map((group) => [group, { group, rules: compileFloor(groupLists(state, group)) }]),
  );
  return {
    tenantId: state.tenant,
    ownRanges: [...state.groups.values()].map((g) => formatCidr(g.addr.range)),
    foreignRanges: state.foreignRanges,
    deny: state.cfg.paddock.deny,
    dnsServers: [...state.groups.values()].flatMap((g) => (g.cfg.dnsServers.length > 0 ? [...g.cfg.dnsServers] : state.resolvers)).filter((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)),
    bridges: [...state.groups.values()].flatMap((g) => (g.bridge ? [{
      group: g.cfg.name, bridge: g.bridge, range: formatCidr(g.addr.range), gateway: formatIpv4(g.addr.gateway as number), hostPorts: state.cfg.paddock.hostPorts[g.cfg.name] ?? [],
    }] : [])),
    isolatedVms: vms.map((v) => {
      const ov = state.overrides.get(v.hostname);
      const proxied = isProxyGroup(state, v.group);
      return {
        hostname: v.hostname, group: v.group, veth: v.veth, ip: formatIpv4(v.ip),
        // A proxy-mode VM's forwarded packets are dropped before its chain; drop there too.
        firewall: proxied ? { rules: [], defaultVerdict: "drop" } : compileFirewall(effectiveLists(groupLists(state, v.group), ov)),
        // Without an override the VM's policy is the group's own, floor included.
        useFloor: ov !== undefined && (floors.get(v.group)?.rules.length ?? 0) > 0,
      };
    }),
    floors: [...floors.values()],
    proxy: { guestAddress: EGRESS_PROXY_GUEST_ADDRESS, proxyPort: EGRESS_PROXY_PORT, dnsPort: EGRESS_DNS_PORT, links: proxyLinks(state) },
  };
}

/** Whether `group` is in proxy mode (`egress_proxy`). */
function isProxyGroup(state: TenantNetState, group: string): boolean {
  return state.groups.get(group)?.cfg.egressProxy !== undefined;
}

/**
 * The links of proxy-mode groups: every isolated VM's veth (attached or adoptable) with its
 * gateway and address, and every proxy-mode bridge with its gateway.
 */
export function proxyLinks(state: TenantNetState): RulesetProxyLink[] {
  const vms = [...state.attached.values(), ...state.adoptable.values()].filter((v) => v.mode === "isolated" && isProxyGroup(state, v.group));
  const bridges = [...state.groups.values()].filter((g) => g.bridge !== undefined && g.cfg.egressProxy !== undefined);
  return [
    ...vms.map((v) => ({ iface: v.veth, gateway: formatIpv4(v.gateway), vmIp: formatIpv4(v.ip) })),
    ...bridges.map((g) => ({ iface: g.bridge as string, gateway: formatIpv4(g.addr.gateway as number), vmIp: undefined })),
  ];
}
