/**
 * The tenant network service: address plan, bridges, per-VM netns + veth, the tenant's
 * nftables table, resolv.conf content, and cleanup.
 *
 * The pieces share one {@link TenantNetState} (tenant-network-state.ts): ranges at start
 * (tenant-ranges.ts), bridges and leftovers (tenant-host-links.ts), one VM's links
 * (vm-links.ts), the table (tenant-firewall.ts). Everything on the host is found again by
 * deterministic names (names.ts) and the link alias `paddock/<tenant>/…`, so a restart after
 * `kill -9` removes exactly this tenant's leftovers. Only the tables `inet paddock-<tenant>` and
 * `inet paddock-<tenant>-ct` (connection bounds, conn-limits.ts) are ever written; the ruleset is
 * never flushed.
 */
import { formatCidr, formatIpv4, parseIpv4 } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { AddressPlan, type Reservation } from "./address-plan.js";
import type { EgressListenerPort } from "./egress-proxy-wiring.js";
import { effectiveLists, validateOverride } from "./firewall-policy.js";
import * as host from "./host-net.js";
import { vmNetnsName, vmVethName } from "./names.js";
import type { TenantNetwork, VmNetworkAttachment, VmNetworkDescription, VmNetworkOverride, VmNetworkRequest } from "./network.js";
import { TenantFirewall, proxyLinks } from "./tenant-firewall.js";
import { ensureBridge, reconcileLeftovers, removeTenantLinks } from "./tenant-host-links.js";
import { newTenantNetState, type GroupRuntime, type TenantNetState, type VmLinks } from "./tenant-network-state.js";
import { checkBridgeOwnership, openRangeStore, planRanges, scanHost, type HostScan, type RangeStore } from "./tenant-ranges.js";
import { createVmLinks, removeVmLinks, vmAttachment, type MakeNetns } from "./vm-links.js";

export { renderResolvConf } from "./vm-links.js";

/** Dependencies of {@link createTenantNetwork}. */
export interface TenantNetworkOptions {
  config: TenantConfig;
  logger: Logger;
  /** Tenant state directory; `network.json` there keeps derived ranges stable across restarts. */
  stateDir: string;
  /**
   * Makes a VM's network namespace at `/var/run/netns/<netnsName>` (the file must not exist);
   * default `ip netns add`. The VM runtime passes one that makes the netns inside the VM's own
   * user namespace (tenant-daemon/runtime/vm-namespaces.ts), so guest root owns its netns.
   * It must leave `net.ipv6.conf.default.disable_ipv6=1` in the netns where the kernel has IPv6
   * (vm-links.ts then skips the per-VM sysctl).
   */
  makeNetns?: (hostname: string, netnsName: string) => Promise<void>;
  /**
   * The address the daemon recorded for each VM (hostname → `a.b.c.d/n`), read at start: a live
   * VM's netns whose eth0 shows no address is still adopted with it (gVisor's netstack takes the
   * addresses into the sandbox; tenant-host-links.ts `reconcileLeftovers`). Default: none.
   */
  recordedAddresses?: () => Promise<ReadonlyMap<string, string>>;
  /**
   * Proxy mode (host groups with `egress_proxy`): told, after every change, where the proxy and
   * its resolver must listen and which VM address is which proxy client
   * (egress-proxy-wiring.ts). Absent ⇒ proxy-mode VMs still reach nothing but the proxy address,
   * where nothing listens.
   */
  egress?: EgressListenerPort;
  /**
   * The host scan (tenant-ranges.ts `scanHost`: links, addresses, netns, other tenants' ranges)
   * begun by the caller before `start`, so that its `ip`/`nft` reads (read-only) run side by side
   * with the caller's other start-up work (tenant-daemon/main.ts). `start` uses it once and throws
   * its rejection (ERR_NETWORK_SETUP_FAILED) as it would its own scan's; the caller must attach a
   * handler to it at once (an unhandled rejection ends the process). Default: `start` scans.
   */
  hostScan?: Promise<HostScan>;
}

/** The describe/firewall view extends the interface with introspection used by tests and tools. */
export interface TenantNetworkService extends TenantNetwork {
  /** Resolved range per host group (`a.b.c.d/n`), available after start. */
  ranges(): Record<string, string>;
  /** The ruleset text as last applied (undefined before start). */
  lastRuleset(): string | undefined;
}

/** Build the tenant network (nothing touches the host until `start`). */
export function createTenantNetwork(options: TenantNetworkOptions): TenantNetworkService {
  return new TenantNetworkImpl(options);
}

class TenantNetworkImpl implements TenantNetworkService {
  private readonly state: TenantNetState;
  private readonly log: Logger;
  private readonly store: RangeStore;
  private readonly firewall: TenantFirewall;
  private readonly makeNetns: MakeNetns | undefined;
  private readonly recordedAddresses: () => Promise<ReadonlyMap<string, string>>;
  private readonly egress: EgressListenerPort | undefined;
  /** The scan begun by the caller, until the first `start` takes it. */
  private hostScan: Promise<HostScan> | undefined;
  private plan: AddressPlan | undefined;
  /** Addresses on host interfaces that are not ours (skipped by the address plan). */
  private hostAddrs = new Set<number>();
  /** Set by {@link deferDetachRules}: detach leaves the table alone until {@link flushDetaches}. */
  private detachRulesDeferred = false;
  /** A detach removed an isolated VM while deferred: the table still names it. */
  private detachRulesStale = false;

  constructor(o: TenantNetworkOptions) {
    this.makeNetns = o.makeNetns;
    this.recordedAddresses = o.recordedAddresses ?? (() => Promise.resolve(new Map()));
    this.egress = o.egress;
    this.hostScan = o.hostScan;
    this.state = newTenantNetState(o.config);
    this.log = o.logger.child({ component: "network" });
    this.store = openRangeStore(o.stateDir);
    this.firewall = new TenantFirewall(this.state, this.log);
  }

  // ---- start -------------------------------------------------------------------------------

  async start(): Promise<void> {
    const early = this.hostScan;
    this.hostScan = undefined;
    const scan = await (early ?? scanHost(this.state.tenant));
    // 1.–2. Ranges: explicit ones checked, derived ones resolved and persisted.
    const ranges = await planRanges(this.state.cfg, this.store, scan);
    this.state.groups = ranges.groups;
    this.plan = new AddressPlan(ranges.addressing);
    this.state.foreignRanges = ranges.foreignRanges;

    // 3. Bridges named in config must be ours or absent.
    checkBridgeOwnership(this.state.tenant, this.state.groups, scan);

    // 4. Leftovers: keep VM netns still used by a live process (adopted on reserve), remove the rest.
    await reconcileLeftovers(this.state, this.log, scan.links, scan.netnsList, scan.ours, await this.recordedAddresses());

    // 5. Host-wide forwarding, bridges, resolvers, table.
    if (await host.ensureIpForward()) this.log.warn("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for VM traffic; it is left on at stop");
    for (const g of this.state.groups.values()) if (g.bridge) await ensureBridge(this.state, g);
    this.state.ipv6 = await host.hostHasIpv6();
    this.state.resolvers = await host.readHostResolvers();
    const bridgeNames = new Set([...this.state.groups.values()].flatMap((g) => (g.bridge ? [g.bridge] : [])));
    this.hostAddrs = new Set(scan.addrs.filter((a) => !scan.ours.has(a.ifname) && !bridgeNames.has(a.ifname)).map((a) => parseIpv4(a.local) as number));
    this.firewall.keepBoundsIfSame(scan.boundsChains);
    await this.firewall.sync();
    await this.syncEgress();
    this.log.info("network started", { ranges: this.ranges(), adoptable: [...this.state.adoptable.keys()] });
  }

  // ---- reserve / attach / detach / release -----------------------------------------------------

  private requirePlan(): AddressPlan {
    if (!this.plan) throw new PaddockError("ERR_INTERNAL", "tenant network used before start()");
    return this.plan;
  }

  check(req: Omit<VmNetworkRequest, "hostname" | "previousIp">): void {
    this.checkedRequest(req);
    if (req.requestedIp !== undefined) this.requirePlan().checkVmAddress(req.hostGroup, req.requestedIp);
  }

  /** The group and validated override of `req`. @throws as {@link check} (not the address). */
  private checkedRequest(req: Omit<VmNetworkRequest, "hostname" | "previousIp">): { g: GroupRuntime; override: VmNetworkOverride | undefined } {
    const g = this.state.groups.get(req.hostGroup);
    if (!g) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${req.hostGroup} not found`);
    const override = validateOverride(req.override, g.addr.mode, g.cfg.name);
    if (override !== undefined && g.cfg.egressProxy !== undefined) {
      throw new PaddockError("ERR_VM_INVALID_REQUEST", `host group ${g.cfg.name} leaves only through the egress proxy: a network override does not apply (the proxy's allow rules decide)`);
    }
    return { g, override };
  }

  reserve(req: VmNetworkRequest): string {
    const plan = this.requirePlan();
    const { g, override } = this.checkedRequest(req);
    const existing = plan.lookup(req.hostname);
    if (existing) return cidrText(existing);
    const adopt = this.state.adoptable.get(req.hostname);
    const wanted = adopt ? { ip: formatIpv4(adopt.ip), strict: false }
      : req.requestedIp !== undefined ? { ip: req.requestedIp, strict: true }
      : req.previousIp !== undefined ? { ip: req.previousIp, strict: false }
      : undefined;
    const r = plan.reserve(req.hostname, g.cfg.name, this.hostAddrs, wanted);
    this.state.overrides.set(req.hostname, override);
    if (adopt) {
      if (adopt.ip === r.ip && adopt.group === r.group) {
        this.state.adoptable.delete(req.hostname);
        this.state.attached.set(req.hostname, adopt);
        this.log.info("adopted live VM network", { hostname: req.hostname, ip: formatIpv4(r.ip) });
      } else {
        this.log.warn("live VM network does not match its reservation; it will be rebuilt on attach", { hostname: req.hostname });
      }
      if (adopt.mode === "isolated") this.firewall.syncInBackground();
      this.syncEgressInBackground();
    }
    return cidrText(r);
  }

  async attach(req: VmNetworkRequest): Promise<VmNetworkAttachment> {
    const done = this.state.attached.get(req.hostname);
    if (done) return vmAttachment(this.state, done);
    const plan = this.requirePlan();
    if (!plan.lookup(req.hostname)) this.reserve(req);
    const r = plan.lookup(req.hostname);
    if (!r) throw new PaddockError("ERR_INTERNAL", `no reservation for ${req.hostname}`);
    const g = this.state.groups.get(r.group) as GroupRuntime;
    if (this.state.adoptable.delete(req.hostname)) await removeVmLinks(this.state.tenant, req.hostname);
    const vm: VmLinks = {
      hostname: r.hostname, group: r.group, mode: g.addr.mode, veth: vmVethName(this.state.tenant, r.hostname), netns: vmNetnsName(this.state.tenant, r.hostname),
      ip: r.ip, prefix: r.prefix, gateway: r.gateway,
    };
    // The VM's rules are in place before its link exists (nft matches interface names, not indexes).
    this.state.attached.set(vm.hostname, vm);
    // Rules and links are built in parallel: nothing runs in the netns before attach resolves.
    // Until its links exist the VM's gateway address may not either: proxy mode does not listen on it yet.
    this.state.linking.add(vm.hostname);
    const links = async (): Promise<void> => {
      try {
        await createVmLinks(this.state, this.makeNetns, vm, g);
      } catch (err) {
        // One retry after removing whatever a crashed earlier attempt left under the same names.
        this.log.warn("VM network setup failed; retrying after cleanup", { hostname: vm.hostname, err });
        await removeVmLinks(this.state.tenant, vm.hostname);
        await createVmLinks(this.state, this.makeNetns, vm, g);
      } finally {
        this.state.linking.delete(vm.hostname);
      }
    };
    try {
      const results = await Promise.allSettled([vm.mode === "isolated" ? this.firewall.sync() : Promise.resolve(), links()]);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
      // The gateway address exists now: the proxy and its resolver can listen on it.
      if (g.cfg.egressProxy !== undefined) await this.syncEgress();
    } catch (err) {
      this.state.attached.delete(vm.hostname);
      await removeVmLinks(this.state.tenant, vm.hostname);
      if (vm.mode === "isolated") await this.firewall.sync().catch((e: unknown) => this.log.error("firewall rollback failed", { err: e }));
      if (g.cfg.egressProxy !== undefined) await this.syncEgress().catch((e: unknown) => this.log.error("egress proxy rollback failed", { err: e }));
      throw new PaddockError("ERR_NETWORK_SETUP_FAILED", `network setup of VM ${vm.hostname} failed: ${(err as Error).message}`, { cause: err });
    }
    this.log.debug("VM network attached", { hostname: vm.hostname, ip: formatIpv4(vm.ip), veth: vm.veth });
    return vmAttachment(this.state, vm);
  }

  async detach(hostname: string): Promise<void> {
    const vm = this.state.attached.get(hostname) ?? this.state.adoptable.get(hostname);
    this.state.attached.delete(hostname);
    this.state.adoptable.delete(hostname);
    const isolated = vm?.mode === "isolated";
    if (isolated && this.detachRulesDeferred) this.detachRulesStale = true;
    // The sandbox is gone before detach: links and rules can go at the same time.
    await Promise.all([
      removeVmLinks(this.state.tenant, hostname),
      isolated && !this.detachRulesDeferred ? this.firewall.sync() : undefined,
      vm !== undefined && this.state.groups.get(vm.group)?.cfg.egressProxy !== undefined ? this.syncEgress() : undefined,
    ]);
  }

  deferDetachRules(): void {
    this.detachRulesDeferred = true;
  }

  async flushDetaches(): Promise<void> {
    const stale = this.detachRulesStale;
    this.detachRulesDeferred = false;
    this.detachRulesStale = false;
    // After `stop` began the firewall is halted and this sync is a no-op.
    if (stale) await this.firewall.sync();
  }

  release(hostname: string): void {
    this.plan?.release(hostname);
    this.state.overrides.delete(hostname);
  }

  describe(hostname: string): VmNetworkDescription | undefined {
    const r = this.plan?.lookup(hostname);
    const g = r ? this.state.groups.get(r.group) : undefined;
    if (!r || !g) return undefined;
    const deny = [...this.state.cfg.paddock.deny];
    const proxy = g.cfg.egressProxy === undefined ? {} : { egress_proxy: { client: g.cfg.egressProxy.client } };
    if (g.cfg.network.mode !== "isolated") {
      return { mode: "bridge", policy_source: "host_group", host_group: { allow: [], drop: [] }, effective: { allow: [], drop: [] }, floor: { drop: [], deny }, ...proxy };
    }
    const hg = { allow: [...g.cfg.network.allow], drop: [...g.cfg.network.drop] };
    const ov = this.state.overrides.get(hostname);
    const out: VmNetworkDescription = { mode: "isolated", policy_source: ov ? "vm" : "host_group", host_group: hg, effective: effectiveLists(hg, ov), floor: { drop: [...hg.drop], deny }, ...proxy };
    if (ov) out.override = { ...ov };
    return out;
  }

  async sweep(): Promise<void> {
    const left = [...this.state.adoptable.values()];
    this.state.adoptable.clear();
    for (const vm of left) {
      this.log.info("removing unadopted VM network", { hostname: vm.hostname });
      await removeVmLinks(this.state.tenant, vm.hostname);
    }
    if (left.some((v) => v.mode === "isolated")) await this.firewall.sync();
    await this.syncEgress();
  }

  async stop(): Promise<void> {
    // No firewall update may start from now on: one that ran after the table's deletion would
    // create the table again (a stop racing start-up work left it behind).
    this.firewall.halt();
    // Works without start (purge): everything is found by name prefix and alias.
    await this.egress?.serve(new Set(), new Map()).catch((err: unknown) => this.log.error("egress proxy stop failed", { err }));
    const aliased = await removeTenantLinks(this.state);
    await this.firewall.removeTable();
    this.state.attached.clear();
    this.state.adoptable.clear();
    this.state.overrides.clear();
    this.plan = undefined;
    this.log.info("network stopped", { links: aliased });
  }

  // ---- proxy mode --------------------------------------------------------------------------------

  /**
   * Tell proxy mode where to listen (every proxy-mode link's gateway whose address exists: the
   * attached isolated VMs' whose links are built, and the proxy-mode bridges') and which VM
   * address is which client.
   * @throws Error from a listen that failed.
   */
  private async syncEgress(): Promise<void> {
    if (this.egress === undefined) return;
    // A VM whose links are still being built has no gateway address yet (a listen there fails
    // EADDRNOTAVAIL): its own attach syncs again once they exist.
    const attached = new Set([...this.state.attached.values()].filter((v) => !this.state.linking.has(v.hostname)).map((v) => v.veth));
    const bridges = new Set([...this.state.groups.values()].flatMap((g) => (g.bridge !== undefined ? [g.bridge] : [])));
    const gateways = new Set(proxyLinks(this.state).filter((l) => attached.has(l.iface) || bridges.has(l.iface)).map((l) => l.gateway));
    const clients = new Map<string, string>();
    for (const v of this.state.attached.values()) {
      const client = this.state.groups.get(v.group)?.cfg.egressProxy?.client;
      if (client !== undefined) clients.set(formatIpv4(v.ip), client);
    }
    await this.egress.serve(gateways, clients);
  }

  private syncEgressInBackground(): void {
    this.syncEgress().catch((err: unknown) => this.log.error("egress proxy update failed", { err }));
  }

  // ---- introspection ---------------------------------------------------------------------------

  ranges(): Record<string, string> {
    return Object.fromEntries([...this.state.groups.values()].map((g) => [g.cfg.name, formatCidr(g.addr.range)]));
  }

  lastRuleset(): string | undefined {
    return this.firewall.lastRuleset();
  }
}

function cidrText(r: Reservation): string {
  return `${formatIpv4(r.ip)}/${r.prefix}`;
}
