/**
 * The tenant network service (DESIGN.md §4, spec §3.9, §4.3–§4.5): address plan, bridges,
 * per-VM netns + veth, the tenant's nftables table, resolv.conf content, and cleanup.
 *
 * Everything on the host is found again by deterministic names (names.ts) and the link alias
 * `paddock/<tenant>/…`, so a restart after `kill -9` removes exactly this tenant's leftovers.
 * Only the table `inet paddock-<tenant>` is ever written; the ruleset is never flushed.
 */
import path from "node:path";
import { cidrOverlaps, formatCidr, formatIpv4, parseCidr, parseIpv4, type Cidr } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { JsonStateStore } from "../../shared/state-store.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import { AddressPlan, deriveIsolatedRange, groupAddressing, type GroupAddressing, type Reservation } from "./address-plan.js";
import { compileFirewall, compileFloor, effectiveLists, validateOverride, type FirewallLists } from "./firewall-policy.js";
import * as host from "./host-net.js";
import { aliasPrefix, defaultBridgeName, linkAlias, netnsPrefix, TABLE_PREFIX, tableName, vmNetnsName, vmVethName } from "./names.js";
import type { TenantNetwork, VmNetworkAttachment, VmNetworkDescription, VmNetworkOverride, VmNetworkRequest } from "./network.js";
import { renderRuleset, renderTableDeletion, type RulesetFloor, type RulesetInput } from "./nft-ruleset.js";

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
   */
  makeNetns?: (hostname: string, netnsName: string) => Promise<void>;
}

/** The describe/firewall view extends the interface with introspection used by tests and tools. */
export interface TenantNetworkService extends TenantNetwork {
  /** Resolved range per host group (`a.b.c.d/n`), available after start. */
  ranges(): Record<string, string>;
  /** The ruleset text as last applied (undefined before start). */
  lastRuleset(): string | undefined;
}

interface NetworkState {
  schemaVersion: 1;
  /** Derived isolated ranges by host group. */
  derivedRanges: Record<string, string>;
}

interface VmLinks {
  hostname: string;
  group: string;
  mode: "bridge" | "isolated";
  veth: string;
  netns: string;
  ip: number;
  prefix: number;
  gateway: number;
}

interface GroupRuntime {
  cfg: HostGroupConfig;
  addr: GroupAddressing;
  /** Bridge mode: the bridge's name. */
  bridge: string | undefined;
}

const NETNS_DIR = "/var/run/netns";

/** Build the tenant network (nothing touches the host until `start`). */
export function createTenantNetwork(options: TenantNetworkOptions): TenantNetworkService {
  return new TenantNetworkImpl(options);
}

class TenantNetworkImpl implements TenantNetworkService {
  private readonly cfg: TenantConfig;
  private readonly log: Logger;
  private readonly tenant: string;
  private readonly store: JsonStateStore<NetworkState>;
  private plan: AddressPlan | undefined;
  private groups = new Map<string, GroupRuntime>();
  private readonly overrides = new Map<string, VmNetworkOverride | undefined>();
  private readonly attached = new Map<string, VmLinks>();
  /** Live VM netns found at start, waiting for `reserve` to adopt them (or `sweep`). */
  private readonly adoptable = new Map<string, VmLinks>();
  /** Addresses on host interfaces that are not ours (skipped by the address plan). */
  private hostAddrs = new Set<number>();
  private foreignRanges: string[] = [];
  private resolvers: string[] = [];
  /** The host kernel has IPv6 (then it is switched off on every VM link: nft-ruleset.ts module doc). */
  private ipv6 = true;
  private ruleset: string | undefined;
  private fwWanted = 0;
  private fwApplied = 0;
  private fwRunning: Promise<void> | undefined;
  /** Set by {@link stop}: no firewall update starts any more. */
  private stopping = false;

  private readonly makeNetns: ((hostname: string, netnsName: string) => Promise<void>) | undefined;

  constructor(o: TenantNetworkOptions) {
    this.makeNetns = o.makeNetns;
    this.cfg = o.config;
    this.tenant = o.config.paddock.tenantId;
    this.log = o.logger.child({ component: "network" });
    this.store = new JsonStateStore<NetworkState>({
      file: path.join(o.stateDir, "network.json"),
      schemaVersion: 1,
      initial: () => ({ schemaVersion: 1, derivedRanges: {} }),
      validate: (v) => (typeof (v as NetworkState).derivedRanges === "object" ? undefined : "missing derivedRanges"),
    });
  }

  // ---- start -------------------------------------------------------------------------------

  async start(): Promise<void> {
    const [links, addrs, netnsList, tables] = await Promise.all([host.listLinks(), host.listAddresses(), host.listNetns(), host.listInetTables()]);
    const ours = new Set(links.filter((l) => l.ifalias?.startsWith(aliasPrefix(this.tenant))).map((l) => l.ifname));
    const otherTables = tables.filter((t) => t.startsWith(TABLE_PREFIX) && t !== tableName(this.tenant));
    const others = await Promise.all(otherTables.map(async (t) => ({ table: t, cidrs: await host.readSetCidrs(t, "own_ranges") })));
    const configForeign = this.cfg.paddock.foreignRanges.map((t) => ({ text: t, cidr: parseCidr(t.split(":")[0] ?? "") }));
    const hostNets = addrs
      .filter((a) => !ours.has(a.ifname))
      .map((a) => ({ a, cidr: parseCidr(`${a.local}/${a.prefixlen}`) }));

    // 1. Explicit ranges must not overlap other daemons, configured foreign ranges or host interfaces.
    const problems: string[] = [];
    const explicit: { group: string; cidr: Cidr }[] = [];
    for (const g of this.cfg.hostGroups) {
      const text = g.network.mode === "isolated" ? g.network.range : g.network.gateway;
      if (text === undefined) continue;
      const cidr = parseCidr(text);
      explicit.push({ group: g.name, cidr });
      const what = `range ${formatCidr(cidr)} of host group ${g.name} (tenant ${this.tenant})`;
      for (const o of others) for (const c of o.cidrs) if (cidrOverlaps(c, cidr)) problems.push(`${what} overlaps ${formatCidr(c)} of running Paddock tenant ${o.table.slice(TABLE_PREFIX.length)} (nft table inet ${o.table})`);
      for (const f of configForeign) if (cidrOverlaps(f.cidr, cidr)) problems.push(`${what} overlaps ${f.text} in paddock.foreign_ranges (another tenant's range)`);
      for (const h of hostNets) if (cidrOverlaps(h.cidr, cidr)) problems.push(`${what} overlaps address ${h.a.local}/${h.a.prefixlen} on host interface ${h.a.ifname}`);
    }

    // 2. Derived isolated ranges (spec §4.4): the persisted one while still free, else hashed.
    const state = await this.store.init();
    const avoid: Cidr[] = [...others.flatMap((o) => o.cidrs), ...configForeign.map((f) => f.cidr), ...hostNets.map((h) => h.cidr), ...explicit.map((e) => e.cidr)];
    const derived: Record<string, string> = {};
    const addressing: GroupAddressing[] = [];
    for (const g of this.cfg.hostGroups) {
      let range: Cidr | undefined;
      if (g.network.mode === "isolated" && g.network.range === undefined) {
        const prev = state.derivedRanges[g.name];
        const prevCidr = prev === undefined ? undefined : parseCidr(prev);
        range = prevCidr && !avoid.some((a) => cidrOverlaps(a, prevCidr)) ? prevCidr : deriveIsolatedRange(this.tenant, g.name, avoid);
        if (!range) problems.push(`host group ${g.name}: no free /22 left in 169.254.0.0/16 to derive an isolated range from; set network.range`);
        else {
          avoid.push(range);
          derived[g.name] = formatCidr(range);
        }
      }
      if (g.network.mode === "bridge" || range !== undefined || g.network.range !== undefined) addressing.push(groupAddressing(g, range));
    }
    if (problems.length > 0) {
      throw new PaddockError("ERR_NETWORK_OVERLAP", `tenant ${this.tenant}: network ranges conflict: ${problems.join("; ")}`, { details: { problems } });
    }
    if (JSON.stringify(state.derivedRanges) !== JSON.stringify(derived)) {
      await this.store.update((s) => {
        s.derivedRanges = derived;
      });
    }
    this.groups = new Map(addressing.map((a) => {
      const cfg = this.cfg.hostGroups.find((g) => g.name === a.group) as HostGroupConfig;
      const bridge = cfg.network.mode === "bridge" ? (cfg.network.bridge ?? defaultBridgeName(this.tenant, cfg.name)) : undefined;
      return [a.group, { cfg, addr: a, bridge }];
    }));
    this.plan = new AddressPlan(addressing);
    this.foreignRanges = [...configForeign.map((f) => formatCidr(f.cidr)), ...others.flatMap((o) => o.cidrs.map(formatCidr))];

    // 3. Bridges named in config must be ours or absent.
    for (const g of this.groups.values()) {
      if (!g.bridge) continue;
      const l = links.find((x) => x.ifname === g.bridge);
      if (l && !ours.has(l.ifname)) problems.push(`bridge ${g.bridge} of host group ${g.cfg.name} already exists on the host and is not tenant ${this.tenant}'s (alias ${JSON.stringify(l.ifalias ?? "")})`);
    }
    if (problems.length > 0) throw new PaddockError("ERR_NETWORK_OVERLAP", `tenant ${this.tenant}: ${problems.join("; ")}`, { details: { problems } });

    // 4. Leftovers: keep VM netns still used by a live process (adopted on reserve), remove the rest.
    await this.reconcileLeftovers(links, netnsList, ours);

    // 5. Host-wide forwarding, bridges, resolvers, table.
    if (await host.ensureIpForward()) this.log.warn("enabled IPv4 forwarding (net.ipv4.ip_forward=1) for VM traffic; it is left on at stop");
    for (const g of this.groups.values()) if (g.bridge) await this.ensureBridge(g);
    this.ipv6 = await host.hostHasIpv6();
    this.resolvers = await host.readHostResolvers();
    const bridgeNames = new Set([...this.groups.values()].flatMap((g) => (g.bridge ? [g.bridge] : [])));
    this.hostAddrs = new Set(addrs.filter((a) => !ours.has(a.ifname) && !bridgeNames.has(a.ifname)).map((a) => parseIpv4(a.local) as number));
    await this.syncFirewall();
    this.log.info("network started", { ranges: this.ranges(), adoptable: [...this.adoptable.keys()] });
  }

  private groupOfHostname(hostname: string): GroupRuntime | undefined {
    const m = /^(.*)-\d+$/.exec(hostname);
    return m?.[1] === undefined ? undefined : this.groups.get(m[1]);
  }

  private async reconcileLeftovers(links: host.HostLink[], netnsList: string[], ours: Set<string>): Promise<void> {
    const prefix = netnsPrefix(this.tenant);
    for (const ns of netnsList.filter((n) => n.startsWith(prefix))) {
      const hostname = ns.slice(prefix.length);
      const g = this.groupOfHostname(hostname);
      const veth = vmVethName(this.tenant, hostname);
      const [pids, ip] = await Promise.all([host.netnsPids(ns), host.netnsAddress(ns, "eth0")]);
      const ipNum = ip === undefined ? undefined : parseIpv4(ip);
      if (g && pids.length > 0 && ipNum !== undefined && links.some((l) => l.ifname === veth)) {
        const gw = g.addr.mode === "isolated" ? (ipNum - 1) >>> 0 : (g.addr.gateway as number);
        this.adoptable.set(hostname, { hostname, group: g.cfg.name, mode: g.addr.mode, veth, netns: ns, ip: ipNum, prefix: g.addr.mode === "isolated" ? 30 : g.addr.range.prefix, gateway: gw });
        continue;
      }
      this.log.info("removing leftover VM network", { hostname, netns: ns });
      await host.deleteLink(veth);
      await host.deleteNetns(ns);
    }
    const keepBridges = new Set([...this.groups.values()].flatMap((g) => (g.bridge ? [g.bridge] : [])));
    const keepVeths = new Set([...this.adoptable.values()].map((a) => a.veth));
    for (const name of ours) {
      if (keepBridges.has(name) || keepVeths.has(name)) continue;
      this.log.info("removing leftover link", { link: name });
      await host.deleteLink(name);
    }
  }

  private async ensureBridge(g: GroupRuntime): Promise<void> {
    const br = g.bridge as string;
    const gw = `${formatIpv4(g.addr.gateway as number)}/${g.addr.range.prefix}`;
    const exists = (await host.listLinks()).some((l) => l.ifname === br);
    const lines = [
      ...(exists ? [] : [`link add name ${br} type bridge`]),
      `link set dev ${br} alias ${linkAlias(this.tenant, `bridge/${g.cfg.name}`)}`,
      `addr replace ${gw} dev ${br}`,
      `link set dev ${br} up`,
    ];
    await host.ipBatch(lines);
    if (this.ipv6) await host.disableHostIpv6(br);
  }

  // ---- reserve / attach / detach / release -----------------------------------------------------

  private requirePlan(): AddressPlan {
    if (!this.plan) throw new PaddockError("ERR_INTERNAL", "tenant network used before start()");
    return this.plan;
  }

  reserve(req: VmNetworkRequest): string {
    const plan = this.requirePlan();
    const g = this.groups.get(req.hostGroup);
    if (!g) throw new PaddockError("ERR_HOSTGROUP_NOT_FOUND", `host group ${req.hostGroup} not found`);
    const override = validateOverride(req.override, g.addr.mode, g.cfg.name);
    const existing = plan.lookup(req.hostname);
    if (existing) return cidrText(existing);
    const adopt = this.adoptable.get(req.hostname);
    const wanted = adopt ? { ip: formatIpv4(adopt.ip), strict: false }
      : req.requestedIp !== undefined ? { ip: req.requestedIp, strict: true }
      : req.previousIp !== undefined ? { ip: req.previousIp, strict: false }
      : undefined;
    const r = plan.reserve(req.hostname, g.cfg.name, this.hostAddrs, wanted);
    this.overrides.set(req.hostname, override);
    if (adopt) {
      if (adopt.ip === r.ip && adopt.group === r.group) {
        this.adoptable.delete(req.hostname);
        this.attached.set(req.hostname, adopt);
        this.log.info("adopted live VM network", { hostname: req.hostname, ip: formatIpv4(r.ip) });
      } else {
        this.log.warn("live VM network does not match its reservation; it will be rebuilt on attach", { hostname: req.hostname });
      }
      if (adopt.mode === "isolated") this.syncFirewallInBackground();
    }
    return cidrText(r);
  }

  async attach(req: VmNetworkRequest): Promise<VmNetworkAttachment> {
    const done = this.attached.get(req.hostname);
    if (done) return this.attachment(done);
    const plan = this.requirePlan();
    if (!plan.lookup(req.hostname)) this.reserve(req);
    const r = plan.lookup(req.hostname);
    if (!r) throw new PaddockError("ERR_INTERNAL", `no reservation for ${req.hostname}`);
    const g = this.groups.get(r.group) as GroupRuntime;
    if (this.adoptable.delete(req.hostname)) await this.removeVmLinks(req.hostname);
    const vm: VmLinks = {
      hostname: r.hostname, group: r.group, mode: g.addr.mode, veth: vmVethName(this.tenant, r.hostname), netns: vmNetnsName(this.tenant, r.hostname),
      ip: r.ip, prefix: r.prefix, gateway: r.gateway,
    };
    // The VM's rules are in place before its link exists (nft matches interface names, not indexes).
    this.attached.set(vm.hostname, vm);
    // Rules and links are built in parallel: nothing runs in the netns before attach resolves.
    const links = async (): Promise<void> => {
      try {
        await this.createVmLinks(vm, g);
      } catch (err) {
        // One retry after removing whatever a crashed earlier attempt left under the same names.
        this.log.warn("VM network setup failed; retrying after cleanup", { hostname: vm.hostname, err });
        await this.removeVmLinks(vm.hostname);
        await this.createVmLinks(vm, g);
      }
    };
    try {
      const results = await Promise.allSettled([vm.mode === "isolated" ? this.syncFirewall() : Promise.resolve(), links()]);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    } catch (err) {
      this.attached.delete(vm.hostname);
      await this.removeVmLinks(vm.hostname);
      if (vm.mode === "isolated") await this.syncFirewall().catch((e: unknown) => this.log.error("firewall rollback failed", { err: e }));
      throw new PaddockError("ERR_NETWORK_SETUP_FAILED", `network setup of VM ${vm.hostname} failed: ${(err as Error).message}`, { cause: err });
    }
    this.log.debug("VM network attached", { hostname: vm.hostname, ip: formatIpv4(vm.ip), veth: vm.veth });
    return this.attachment(vm);
  }

  /**
   * Two `ip -batch` runs per VM: the host side (netns, veth with its peer moved into the
   * netns, alias, address or bridge port), then the VM side with `ip -n <netns> -batch`.
   * Two spawns from Node beat one batch with `netns exec … ip` lines, which forks and execs
   * `ip` once per line (measured: about half the time).
   */
  private async createVmLinks(vm: VmLinks, g: GroupRuntime): Promise<void> {
    const makeNetns = this.makeNetns;
    if (makeNetns !== undefined) await makeNetns(vm.hostname, vm.netns);
    await host.ipBatch([
      ...(makeNetns === undefined ? [`netns add ${vm.netns}`] : []),
      `link add ${vm.veth} type veth peer name eth0 netns ${vm.netns}`,
      `link set dev ${vm.veth} alias ${linkAlias(this.tenant, `vm/${vm.hostname}`)}`,
      ...(vm.mode === "isolated" ? [`addr add ${formatIpv4(vm.gateway)}/30 dev ${vm.veth}`] : [`link set dev ${vm.veth} master ${g.bridge as string}`]),
      `link set dev ${vm.veth} up`,
    ]);
    // No IPv6 on either end of the link (nft-ruleset.ts drops it too). In parallel with the
    // VM side: nothing runs in the netns before attach resolves, and disabling IPv6 on a link
    // that is already up removes its addresses.
    await Promise.all([
      host.ipBatch([
        "link set dev lo up",
        `addr add ${formatIpv4(vm.ip)}/${vm.prefix} dev eth0`,
        "link set dev eth0 up",
        `route add default via ${formatIpv4(vm.gateway)} dev eth0`,
      ], vm.netns),
      this.ipv6 ? host.disableHostIpv6(vm.veth) : undefined,
      this.ipv6 ? host.disableNetnsIpv6(vm.netns, "eth0") : undefined,
    ]);
  }

  private async removeVmLinks(hostname: string): Promise<void> {
    // Delete the veth explicitly: `ip netns del` only unmounts, the kernel frees the
    // namespace (and the veth in it) asynchronously, or never while a process holds it.
    // One spawn for both; the link goes first.
    await host.deleteLinksAndNetns([vmVethName(this.tenant, hostname)], [vmNetnsName(this.tenant, hostname)]);
  }

  private attachment(vm: VmLinks): VmNetworkAttachment {
    const g = this.groups.get(vm.group);
    const servers = g && g.cfg.dnsServers.length > 0 ? [...g.cfg.dnsServers] : this.resolvers;
    return {
      ipCidr: `${formatIpv4(vm.ip)}/${vm.prefix}`,
      netnsPath: path.join(NETNS_DIR, vm.netns),
      resolvConf: servers.length === 0 ? undefined : renderResolvConf(servers, g && g.cfg.dnsServers.length > 0 ? `host group ${vm.group}` : "host resolvers"),
    };
  }

  async detach(hostname: string): Promise<void> {
    const vm = this.attached.get(hostname) ?? this.adoptable.get(hostname);
    this.attached.delete(hostname);
    this.adoptable.delete(hostname);
    // The sandbox is gone before detach: links and rules can go at the same time.
    await Promise.all([this.removeVmLinks(hostname), vm?.mode === "isolated" ? this.syncFirewall() : undefined]);
  }

  release(hostname: string): void {
    this.plan?.release(hostname);
    this.overrides.delete(hostname);
  }

  describe(hostname: string): VmNetworkDescription | undefined {
    const r = this.plan?.lookup(hostname);
    const g = r ? this.groups.get(r.group) : undefined;
    if (!r || !g) return undefined;
    const deny = [...this.cfg.paddock.deny];
    if (g.cfg.network.mode !== "isolated") {
      return { mode: "bridge", policy_source: "host_group", host_group: { allow: [], drop: [] }, effective: { allow: [], drop: [] }, floor: { drop: [], deny } };
    }
    const hg = { allow: [...g.cfg.network.allow], drop: [...g.cfg.network.drop] };
    const ov = this.overrides.get(hostname);
    const out: VmNetworkDescription = { mode: "isolated", policy_source: ov ? "vm" : "host_group", host_group: hg, effective: effectiveLists(hg, ov), floor: { drop: [...hg.drop], deny } };
    if (ov) out.override = { ...ov };
    return out;
  }

  async sweep(): Promise<void> {
    const left = [...this.adoptable.values()];
    this.adoptable.clear();
    for (const vm of left) {
      this.log.info("removing unadopted VM network", { hostname: vm.hostname });
      await this.removeVmLinks(vm.hostname);
    }
    if (left.some((v) => v.mode === "isolated")) await this.syncFirewall();
  }

  async stop(): Promise<void> {
    // No firewall update may start from now on: one that ran after the table's deletion would
    // create the table again (a stop racing start-up work left it behind).
    this.stopping = true;
    // Works without start (purge): everything is found by name prefix and alias.
    const [links, netnsList] = await Promise.all([host.listLinks(), host.listNetns()]);
    const aliased = links.filter((l) => l.ifalias?.startsWith(aliasPrefix(this.tenant)));
    const vmLinks = new Set([...aliased.filter((l) => l.ifalias?.includes("/vm/")).map((l) => l.ifname), ...[...this.attached.values(), ...this.adoptable.values()].map((v) => v.veth)]);
    // One batch: VM links, then the group bridges, then the VM netns.
    await host.deleteLinksAndNetns(
      [...vmLinks, ...aliased.map((l) => l.ifname).filter((n) => !vmLinks.has(n))],
      netnsList.filter((n) => n.startsWith(netnsPrefix(this.tenant))),
    );
    while (this.fwRunning !== undefined) await this.fwRunning.catch(() => undefined);
    await host.applyNft(renderTableDeletion(this.tenant));
    this.attached.clear();
    this.adoptable.clear();
    this.overrides.clear();
    this.plan = undefined;
    this.ruleset = undefined;
    this.log.info("network stopped", { links: aliased.length });
  }

  // ---- firewall --------------------------------------------------------------------------------

  ranges(): Record<string, string> {
    return Object.fromEntries([...this.groups.values()].map((g) => [g.cfg.name, formatCidr(g.addr.range)]));
  }

  lastRuleset(): string | undefined {
    return this.ruleset;
  }

  /** The host group's lists as the operator's config wrote them (empty for bridge groups). */
  private groupLists(group: string): FirewallLists {
    const net = this.groups.get(group)?.cfg.network;
    return net?.mode === "isolated" ? { allow: [...net.allow], drop: [...net.drop] } : { allow: [], drop: [] };
  }

  private rulesetInput(): RulesetInput {
    const vms = [...this.attached.values(), ...this.adoptable.values()].filter((v) => v.mode === "isolated");
    const floors = new Map<string, RulesetFloor>(
      [...new Set(vms.map((v) => v.group))].map((group) => [group, { group, rules: compileFloor(this.groupLists(group)) }]),
    );
    return {
      tenantId: this.tenant,
      ownRanges: [...this.groups.values()].map((g) => formatCidr(g.addr.range)),
      foreignRanges: this.foreignRanges,
      deny: this.cfg.paddock.deny,
      dnsServers: [...this.groups.values()].flatMap((g) => (g.cfg.dnsServers.length > 0 ? [...g.cfg.dnsServers] : this.resolvers)).filter((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)),
      bridges: [...this.groups.values()].flatMap((g) => (g.bridge ? [{
        group: g.cfg.name, bridge: g.bridge, range: formatCidr(g.addr.range), gateway: formatIpv4(g.addr.gateway as number), hostPorts: this.cfg.paddock.hostPorts[g.cfg.name] ?? [],
      }] : [])),
      isolatedVms: vms.map((v) => {
        const ov = this.overrides.get(v.hostname);
        return {
          hostname: v.hostname, group: v.group, veth: v.veth, ip: formatIpv4(v.ip),
          firewall: compileFirewall(effectiveLists(this.groupLists(v.group), ov)),
          // Without an override the VM's policy is the group's own, floor included.
          useFloor: ov !== undefined && (floors.get(v.group)?.rules.length ?? 0) > 0,
        };
      }),
      floors: [...floors.values()],
    };
  }

  /**
   * Bring the kernel's table up to date with the current state. Concurrent callers share
   * applies: each waits until an apply rendered after its call has finished.
   */
  private async syncFirewall(): Promise<void> {
    if (this.stopping) return;
    const gen = ++this.fwWanted;
    while (this.fwApplied < gen && !this.stopping) {
      this.fwRunning ??= this.applyOnce().finally(() => {
        this.fwRunning = undefined;
      });
      await this.fwRunning;
    }
  }

  private async applyOnce(): Promise<void> {
    const target = this.fwWanted;
    const text = renderRuleset(this.rulesetInput());
    // `nft -c` runs on the first apply and after any failure; later updates rely on `nft -f`
    // being one all-or-nothing transaction (nft(8)), saving a spawn per VM create/delete.
    try {
      await host.applyNft(text, { check: this.ruleset === undefined });
    } catch (err) {
      this.ruleset = undefined;
      throw err;
    }
    this.ruleset = text;
    this.fwApplied = target;
  }

  private syncFirewallInBackground(): void {
    this.syncFirewall().catch((err: unknown) => this.log.error("firewall update failed", { err }));
  }
}

function cidrText(r: Reservation): string {
  return `${formatIpv4(r.ip)}/${r.prefix}`;
}

/** resolv.conf for a guest (resolv.conf(5)); `source` is a comment naming where the servers came from. */
export function renderResolvConf(servers: readonly string[], source: string): string {
  return `# Written by Paddock (${source})\n${servers.map((s) => `nameserver ${s}`).join("\n")}\n`;
}
