/**
 * The links of one VM: its network namespace, the veth pair (host side named by names.ts, VM
 * side `eth0`), addresses and default route, and what the guest is told about them (the netns
 * path and resolv.conf). Built and removed with `ip -batch` (host-net.ts).
 */
import path from "node:path";
import { formatIpv4 } from "../../shared/cidr.js";
import { runCommand } from "../vm/spawn-server.js";
import { egressResolvConf } from "./egress-proxy-wiring.js";
import * as host from "./host-net.js";
import { linkAlias, vmNetnsName, vmVethName } from "./names.js";
import type { VmNetworkAttachment } from "./network.js";
import type { GroupRuntime, TenantNetState, VmLinks } from "./tenant-network-state.js";

const NETNS_DIR = "/var/run/netns";
const IP_TIMEOUT_MS = 15_000;

/**
 * host-net.ts `ipBatch` through the daemon's command helper (tenant-daemon/vm/spawn-server.ts):
 * `ip [-n netns] -batch -`, stopping at the first failing line.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED with ip's stderr.
 */
async function ipBatch(lines: readonly string[], netns?: string): Promise<void> {
  const args = netns === undefined ? ["-batch", "-"] : ["-n", netns, "-batch", "-"];
  await runCommand("ip", args, { input: lines.join("\n") + "\n", timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
}

/**
 * Makes a VM's network namespace at `/var/run/netns/<netnsName>` (the file must not exist),
 * with `net.ipv6.conf.default.disable_ipv6=1` in it where the kernel has IPv6 (the VM's `eth0`,
 * made afterwards, inherits it); see tenant-network.ts `TenantNetworkOptions.makeNetns` and
 * tenant-daemon/runtime/vm-namespaces.ts.
 */
export type MakeNetns = (hostname: string, netnsName: string) => Promise<void>;

/**
 * Build `vm`'s links. Two `ip -batch` runs per VM: the host side (netns, veth with its peer
 * moved into the netns, alias, address or bridge port), then the VM side with `ip -n <netns>
 * -batch`. Two spawns from Node beat one batch with `netns exec … ip` lines, which forks and
 * execs `ip` once per line (measured: about half the time).
 * @param makeNetns - undefined ⇒ the netns is made by `ip netns add` in the first batch.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip` (partial links are left; see {@link removeVmLinks})
 */
export async function createVmLinks(state: TenantNetState, makeNetns: MakeNetns | undefined, vm: VmLinks, g: GroupRuntime): Promise<void> {
  if (makeNetns !== undefined) await makeNetns(vm.hostname, vm.netns);
  await ipBatch([
    ...(makeNetns === undefined ? [`netns add ${vm.netns}`] : []),
    `link add ${vm.veth} type veth peer name eth0 netns ${vm.netns}`,
    `link set dev ${vm.veth} alias ${linkAlias(state.tenant, `vm/${vm.hostname}`)}`,
    ...(vm.mode === "isolated" ? [`addr add ${formatIpv4(vm.gateway)}/30 dev ${vm.veth}`] : [`link set dev ${vm.veth} master ${g.bridge as string}`]),
    `link set dev ${vm.veth} up`,
  ]);
  // No IPv6 on either end of the link (nft-ruleset.ts drops it too). In parallel with the
  // VM side: nothing runs in the netns before attach resolves, and disabling IPv6 on a link
  // that is already up removes its addresses. A netns from `makeNetns` has IPv6 off by default,
  // which `eth0` inherited when the first batch made it there: no `nsenter … sysctl` spawn.
  await Promise.all([
    ipBatch([
      "link set dev lo up",
      `addr add ${formatIpv4(vm.ip)}/${vm.prefix} dev eth0`,
      "link set dev eth0 up",
      `route add default via ${formatIpv4(vm.gateway)} dev eth0`,
    ], vm.netns),
    state.ipv6 ? host.disableHostIpv6(vm.veth) : undefined,
    state.ipv6 && makeNetns === undefined ? host.disableNetnsIpv6(vm.netns, "eth0") : undefined,
  ]);
}

/** Remove the host-side veth and the netns of `hostname` (missing ones are fine). */
export async function removeVmLinks(tenant: string, hostname: string): Promise<void> {
  // Delete the veth explicitly: `ip netns del` only unmounts, the kernel frees the
  // namespace (and the veth in it) asynchronously, or never while a process holds it.
  // One spawn for both; the link goes first.
  await host.deleteLinksAndNetns([vmVethName(tenant, hostname)], [vmNetnsName(tenant, hostname)]);
}

/**
 * What the VM service gets for `vm`: its address as `a.b.c.d/prefix`, its netns path, and a
 * resolv.conf naming the group's `dns_servers`, else the host's resolvers (none ⇒ undefined,
 * the image's own file stays); in proxy mode the proxy's resolver and the proxy client.
 */
export function vmAttachment(state: TenantNetState, vm: VmLinks): VmNetworkAttachment {
  const g = state.groups.get(vm.group);
  const proxy = g?.cfg.egressProxy;
  if (proxy !== undefined) {
    return { ipCidr: `${formatIpv4(vm.ip)}/${vm.prefix}`, netnsPath: path.join(NETNS_DIR, vm.netns), resolvConf: egressResolvConf(), egressProxy: { client: proxy.client } };
  }
  const servers = g && g.cfg.dnsServers.length > 0 ? [...g.cfg.dnsServers] : state.resolvers;
  return {
    egressProxy: undefined,
    ipCidr: `${formatIpv4(vm.ip)}/${vm.prefix}`,
    netnsPath: path.join(NETNS_DIR, vm.netns),
    resolvConf: servers.length === 0 ? undefined : renderResolvConf(servers, g && g.cfg.dnsServers.length > 0 ? `host group ${vm.group}` : "host resolvers"),
  };
}

/** resolv.conf for a guest (resolv.conf(5)); `source` is a comment naming where the servers came from. */
export function renderResolvConf(servers: readonly string[], source: string): string {
  return `# Written by Paddock (${source})\n${servers.map((s) => `nameserver ${s}`).join("\n")}\n`;
}
