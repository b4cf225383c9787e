/**
 * The tenant-level links on the host: the host groups' bridges, the leftovers of an earlier run
 * found at start (dead VM netns and links removed, live ones kept for adoption), and the
 * removal of everything this tenant owns at stop. Everything is found by deterministic names
 * (names.ts) and the link alias `paddock/<tenant>/…`, so a restart after `kill -9` removes
 * exactly this tenant's leftovers.
 */
import { formatIpv4, parseIpv4 } from "../../shared/cidr.js";
import type { Logger } from "../../shared/logger.js";
import * as host from "./host-net.js";
import { aliasPrefix, linkAlias, netnsPrefix, vmVethName } from "./names.js";
import { groupOfHostname, type GroupRuntime, type TenantNetState } from "./tenant-network-state.js";

/**
 * Sort this tenant's VM netns found at start: one still used by a live process, with its
 * address on eth0 and its veth present, goes to `state.adoptable` (the sandbox survived a
 * daemon crash); every other one is removed with its veth. Then every aliased link of the
 * tenant that is neither a group bridge nor an adoptable VM's veth is removed.
 * @param links - every host link; `ours` the names carrying this tenant's alias.
 * @param recorded - the address the daemon recorded per VM (hostname → `a.b.c.d/n`), used when
 *   eth0 has none: gVisor's netstack moves the netns's addresses and routes into the sandbox
 *   when it starts (docs/gvisor-findings.md §3.3), so a live gVisor VM's netns shows none.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip`.
 */
export async function reconcileLeftovers(state: TenantNetState, log: Logger, links: host.HostLink[], netnsList: string[], ours: Set<string>, recorded: ReadonlyMap<string, string> = new Map()): Promise<void> {
  const prefix = netnsPrefix(state.tenant);
  for (const ns of netnsList.filter((n) => n.startsWith(prefix))) {
    const hostname = ns.slice(prefix.length);
    const g = groupOfHostname(state, hostname);
    const veth = vmVethName(state.tenant, hostname);
    // One after the other: `ip -n <ns> addr` runs inside the netns, and an `ip netns pids` scan
    // at the same time counted it as a process using a dead VM's netns, which was then kept.
    const pids = await host.netnsPids(ns);
    const ip = await host.netnsAddress(ns, "eth0");
    const ipNum = parseIpv4(ip ?? recorded.get(hostname)?.split("/")[0] ?? "");
    if (g && pids.length > 0 && ipNum !== undefined && links.some((l) => l.ifname === veth)) {
      const gw = g.addr.mode === "isolated" ? (ipNum - 1) >>> 0 : (g.addr.gateway as number);
      state.adoptable.set(hostname, { hostname, group: g.cfg.name, mode: g.addr.mode, veth, netns: ns, ip: ipNum, prefix: g.addr.mode === "isolated" ? 30 : g.addr.range.prefix, gateway: gw });
      continue;
    }
    log.info("removing leftover VM network", { hostname, netns: ns });
    await host.deleteLink(veth);
    await host.deleteNetns(ns);
  }
  const keepBridges = new Set([...state.groups.values()].flatMap((g) => (g.bridge ? [g.bridge] : [])));
  const keepVeths = new Set([...state.adoptable.values()].map((a) => a.veth));
  for (const name of ours) {
    if (keepBridges.has(name) || keepVeths.has(name)) continue;
    log.info("removing leftover link", { link: name });
    await host.deleteLink(name);
  }
}

/**
 * Create the bridge of a bridge-mode group if missing, then set its alias, the gateway
 * address and up (idempotent); IPv6 is switched off on it while `state.ipv6`.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip`.
 */
export async function ensureBridge(state: TenantNetState, g: GroupRuntime): Promise<void> {
  const br = g.bridge as string;
  const gw = `${formatIpv4(g.addr.gateway as number)}/${g.addr.range.prefix}`;
  const exists = (await host.listLinks()).some((l) => l.ifname === br);
  const lines = [
    ...(exists ? [] : [`link add name ${br} type bridge`]),
    `link set dev ${br} alias ${linkAlias(state.tenant, `bridge/${g.cfg.name}`)}`,
    `addr replace ${gw} dev ${br}`,
    `link set dev ${br} up`,
  ];
  await host.ipBatch(lines);
  if (state.ipv6) await host.disableHostIpv6(br);
}

/**
 * Remove every link and netns of the tenant in one batch: VM links (aliased `…/vm/…` and the
 * veths of known VMs), then the other aliased links (group bridges), then the VM netns. Works
 * without a start (purge): everything is found by name prefix and alias.
 * @returns how many aliased links there were.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip`.
 */
export async function removeTenantLinks(state: TenantNetState): Promise<number> {
  const [links, netnsList] = await Promise.all([host.listLinks(), host.listNetns()]);
  const aliased = links.filter((l) => l.ifalias?.startsWith(aliasPrefix(state.tenant)));
  const vmLinks = new Set([...aliased.filter((l) => l.ifalias?.includes("/vm/")).map((l) => l.ifname), ...[...state.attached.values(), ...state.adoptable.values()].map((v) => v.veth)]);
  await host.deleteLinksAndNetns(
    [...vmLinks, ...aliased.map((l) => l.ifname).filter((n) => !vmLinks.has(n))],
    netnsList.filter((n) => n.startsWith(netnsPrefix(state.tenant))),
  );
  return aliased.length;
}
