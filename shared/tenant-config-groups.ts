/**
 * Readers of `config.host_groups[]` and each group's `network:` (bridge or isolated), defaulted;
 * every problem is recorded on the {@link ConfigReader} with its YAML path.
 */
import path from "node:path";
import { cidrContains, parseCidr, parseIpv4, type Cidr } from "./cidr.js";
import { EGRESS_PROXY_GUEST_ADDRESS, NAME_PATTERN } from "./tenant-config-defaults.js";
import type { GroupIdleConfig, HostGroupConfig, NetworkConfig, TenantConfigContext } from "./tenant-config-schema.js";
import { parseGoDurationNs } from "./time.js";
import { ConfigReader, parseSizeBytes } from "./yaml-reader.js";

const HOSTGROUP_KEYS = [
  "name", "count", "vcpu", "ram_gb", "ram_mb", "ram_bytes", "storage", "storage_size", "persistent", "userdata",
  "userdata_file", "dns_servers", "gpu_count", "network", "network_name", "ca", "share_home", "rosetta", "sleep_action",
  "expiry_action", "default_ttl", "max_ttl", "idle_pause_after", "idle_cpu_threshold", "idle_action", "egress_proxy",
] as const;

/** Shortest `idle_pause_after`, ms: a shorter one would freeze a VM between two calls of one client. */
export const MIN_IDLE_PAUSE_AFTER_MS = 1000;

/**
 * Check a firewall-style address list: each entry an IPv4 CIDR or IP, optionally `:port`
 * (1-65535). A bad entry is recorded as a problem at `<p>[i]`.
 */
export function checkAddressList(r: ConfigReader, list: readonly string[] | undefined, p: string): void {
  list?.forEach((entry, i) => {
    const [addr, port, extra] = entry.split(":");
    try {
      parseCidr(addr ?? "");
      if (extra !== undefined || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))) throw new Error();
    } catch {
      r.problem(`${p}[${i}]`, `expected a CIDR, an IP or ip:port, got ${JSON.stringify(entry)}`);
    }
  });
}

/**
 * A host group's `network:` at YAML path `p`: `mode: isolated` (range of at least a /30,
 * drop/allow lists) or `mode: bridge` (the default; gateway CIDR required when the key is
 * present, an `A-B` range inside the gateway's network and not holding the gateway, addresses
 * inside it, a bridge name of at most 15 bytes). Problems are recorded on `r`.
 */
function readNetwork(r: ConfigReader, raw: unknown, p: string, groupName: string): NetworkConfig {
  const net = r.object(raw, p);
  const mode = r.string(net.mode, `${p}.mode`) ?? "bridge";
  if (mode === "isolated") {
    r.unknownKeys(net, p, ["mode", "range", "drop", "allow"]);
    const range = r.string(net.range, `${p}.range`);
    if (range !== undefined) {
      try {
        const c = parseCidr(range, { strict: true });
        if (c.prefix > 30) r.problem(`${p}.range`, `range ${range} is too small for one VM (an isolated VM needs a /30)`);
      } catch (err) {
        r.problem(`${p}.range`, (err as Error).message);
      }
    }
    const drop = r.stringList(net.drop, `${p}.drop`) ?? [];
    const allow = r.stringList(net.allow, `${p}.allow`) ?? [];
    checkAddressList(r, drop, `${p}.drop`);
    checkAddressList(r, allow, `${p}.allow`);
    return { mode: "isolated", range, drop, allow };
  }
  if (mode !== "bridge") {
    r.problem(`${p}.mode`, `network mode ${JSON.stringify(mode)} is not supported by Paddock (supported: bridge, isolated)`);
  }
  r.unknownKeys(net, p, ["mode", "bridge", "tap_prefix", "gateway", "range", "addresses"]);
  const gateway = r.string(net.gateway, `${p}.gateway`);
  let gw: Cidr | undefined;
  let gwIp: number | undefined;
  if (gateway !== undefined) {
    try {
      gw = parseCidr(gateway);
      gwIp = parseIpv4(gateway.split("/")[0] ?? "");
      if (gw.prefix > 30) r.problem(`${p}.gateway`, `gateway ${gateway} leaves no room for VMs (prefix must be /30 or shorter)`);
    } catch (err) {
      r.problem(`${p}.gateway`, (err as Error).message);
    }
  }
  const range = r.string(net.range, `${p}.range`);
  if (range !== undefined) {
    const [a, b, extra] = range.split("-");
    const ia = parseIpv4(a ?? "");
    const ib = parseIpv4(b ?? "");
    if (ia === undefined || ib === undefined || extra !== undefined || ia > ib) r.problem(`${p}.range`, `expected A-B with A ≤ B, got ${JSON.stringify(range)}`);
    else if (gw && (!cidrContains(gw, ia) || !cidrContains(gw, ib))) r.problem(`${p}.range`, `range ${range} is outside the gateway's network ${gateway}`);
    else if (gwIp !== undefined && ia <= gwIp && gwIp <= ib) r.problem(`${p}.range`, `range ${range} contains the gateway address`);
  }
  const addresses = r.stringList(net.addresses, `${p}.addresses`) ?? [];
  addresses.forEach((a, i) => {
    const ip = parseIpv4(a.split("/")[0] ?? "");
    if (ip === undefined) r.problem(`${p}.addresses[${i}]`, `expected an IPv4 address, got ${JSON.stringify(a)}`);
    else if (gw && !cidrContains(gw, ip)) r.problem(`${p}.addresses[${i}]`, `${a} is outside the gateway's network ${gateway}`);
  });
  const bridge = r.string(net.bridge, `${p}.bridge`);
  if (bridge !== undefined && (Buffer.byteLength(bridge) > 15 || !/^[A-Za-z0-9_.-]+$/.test(bridge))) r.problem(`${p}.bridge`, `bridge name must be 1-15 bytes of [A-Za-z0-9_.-], got ${JSON.stringify(bridge)}`);
  const tapPrefix = r.string(net.tap_prefix, `${p}.tap_prefix`);
  if (tapPrefix !== undefined && tapPrefix.length > 14) r.problem(`${p}.tap_prefix`, "must be at most 14 characters (a Linux interface name is at most 15)");
  if (gateway === undefined && raw !== undefined) r.problem(`${p}.gateway`, `bridge mode needs a gateway CIDR such as 192.168.137.1/24 (host group ${groupName})`);
  return { mode: "bridge", bridge, tapPrefix, gateway, range, addresses };
}

/**
 * One `config.host_groups[i]` entry at YAML path `p`, defaulted (count 1, 2 vCPUs, 4 GiB RAM,
 * 25 GiB disk, not persistent); `userdata_file` resolves against `ctx.baseDir`. Problems are
 * recorded on `r`.
 * @returns the group, or undefined when its name is missing or invalid.
 */
export function readHostGroup(r: ConfigReader, raw: unknown, p: string, ctx: TenantConfigContext): HostGroupConfig | undefined {
  const g = r.object(raw, p, true);
  r.unknownKeys(g, p, HOSTGROUP_KEYS);
  const name = r.string(g.name, `${p}.name`, { required: true, pattern: NAME_PATTERN, patternText: "a name of [a-z0-9-] starting and ending with a letter or digit" });
  if (name !== undefined && name.length > 40) r.problem(`${p}.name`, "must be at most 40 characters");
  const count = r.int(g.count, `${p}.count`, { min: 0, max: 1000 }) ?? 1;
  const vcpu = r.int(g.vcpu, `${p}.vcpu`, { min: 1, max: 1024 }) ?? 2;
  const ramKeys = (["ram_gb", "ram_mb", "ram_bytes"] as const).filter((k) => g[k] !== undefined && g[k] !== null);
  let ramBytes = 4 * 2 ** 30;
  if (ramKeys.length > 1) r.problem(p, `set only one of ram_gb, ram_mb, ram_bytes (found ${ramKeys.join(", ")})`);
  else if (ramKeys[0] === "ram_gb") ramBytes = (r.int(g.ram_gb, `${p}.ram_gb`, { min: 1, max: 65536 }) ?? 4) * 2 ** 30;
  else if (ramKeys[0] === "ram_mb") ramBytes = (r.int(g.ram_mb, `${p}.ram_mb`, { min: 16, max: 64 * 2 ** 20 }) ?? 4096) * 2 ** 20;
  else if (ramKeys[0] === "ram_bytes") ramBytes = r.int(g.ram_bytes, `${p}.ram_bytes`, { min: 16 * 2 ** 20, max: 2 ** 46 }) ?? ramBytes;
  const storage = r.string(g.storage, `${p}.storage`) ?? "image";
  if (storage !== "image") r.problem(`${p}.storage`, `storage ${JSON.stringify(storage)} is not supported by Paddock (supported: image)`);
  let storageSizeBytes = 25 * 2 ** 30;
  const sizeText = g.storage_size === undefined || g.storage_size === null ? undefined : typeof g.storage_size === "number" ? String(g.storage_size) : r.string(g.storage_size, `${p}.storage_size`);
  if (sizeText !== undefined) {
    const b = parseSizeBytes(sizeText);
    if (b === undefined || b < 64 * 2 ** 20) r.problem(`${p}.storage_size`, `expected a size of at least 64M such as 512M or 25G, got ${JSON.stringify(sizeText)}`);
    else storageSizeBytes = b;
  }
  const persistent = r.bool(g.persistent, `${p}.persistent`) ?? false;
  const userdata = r.string(g.userdata, `${p}.userdata`);
  const userdataFileRaw = r.string(g.userdata_file, `${p}.userdata_file`);
  const dnsServers = r.stringList(g.dns_servers, `${p}.dns_servers`) ?? [];
  dnsServers.forEach((d, i) => {
    if (parseIpv4(d) === undefined) r.problem(`${p}.dns_servers[${i}]`, `expected an IPv4 address, got ${JSON.stringify(d)}`);
  });
  const gpuCount = r.int(g.gpu_count, `${p}.gpu_count`, { min: 0, max: 0, what: "0 (no GPUs with the OCI driver)" }) ?? 0;
  const network = readNetwork(r, g.network, `${p}.network`, name ?? "?");
  const expiryAction = r.string(g.expiry_action, `${p}.expiry_action`) ?? "shutdown";
  if (expiryAction !== "shutdown" && expiryAction !== "delete") r.problem(`${p}.expiry_action`, `expected shutdown or delete, got ${JSON.stringify(expiryAction)}`);
  const expiry = readTtlPair(r, g, p);
  const idle = readIdle(r, g, p);
  const egressProxy = readEgressProxy(r, g.egress_proxy, `${p}.egress_proxy`, name ?? "", network, dnsServers);
  if (name === undefined) return undefined;
  return {
    name, count, vcpu, ramBytes, storage: "image", storageSizeBytes, persistent, userdata,
    userdataFile: userdataFileRaw === undefined ? undefined : path.resolve(ctx.baseDir, userdataFileRaw),
    dnsServers, gpuCount, network, expiry: { action: expiryAction === "delete" ? "delete" : "shutdown", ...expiry }, idle, egressProxy,
  };
}

/**
 * A host group's idle settings at YAML path `p` (tenant-daemon/vm/vm-idle.ts):
 * - `idle_pause_after`: a Go duration of at least 1s; absent ⇒ the group's VMs never idle out;
 * - `idle_cpu_threshold`: milli-CPUs as a string `<N>m` (`"50m"` = 5% of one CPU), the average
 *   CPU use of the VM's cgroup over the window that it must also stay under; absent ⇒ API
 *   activity alone decides;
 * - `idle_action`: `pause` (default; the cgroup freezer) or `suspend` (memory to disk; gVisor
 *   only, checked against `config.hypervisor` by tenant-config.ts).
 * The last two without the first are a problem (they would do nothing). Problems are recorded on `r`.
 * @returns undefined when `idle_pause_after` is absent or invalid.
 */
export function readIdle(r: ConfigReader, o: Record<string, unknown>, p: string): GroupIdleConfig | undefined {
  const afterText = r.string(o.idle_pause_after, `${p}.idle_pause_after`);
  let afterMs: number | undefined;
  if (afterText !== undefined) {
    try {
      const ns = parseGoDurationNs(afterText, "idle_pause_after", "ERR_CONFIG_INVALID");
      if (Number(ns) / 1e6 < MIN_IDLE_PAUSE_AFTER_MS) throw new Error(`idle_pause_after must be at least 1s, got ${JSON.stringify(afterText)}`);
      afterMs = Number(ns) / 1e6;
    } catch (err) {
      r.problem(`${p}.idle_pause_after`, (err as Error).message);
    }
  }
  let cpuMilli: number | undefined;
  const cpu = o.idle_cpu_threshold;
  if (cpu !== undefined && cpu !== null) {
    const m = typeof cpu === "string" ? /^(\d{1,6})m$/.exec(cpu) : null;
    if (m === null || Number(m[1]) < 1) r.problem(`${p}.idle_cpu_threshold`, `expected milli-CPUs such as "50m" (5% of one CPU, at least 1m), got ${JSON.stringify(cpu)}`);
    else cpuMilli = Number(m[1]);
  }
  const actionText = r.string(o.idle_action, `${p}.idle_action`);
  if (actionText !== undefined && actionText !== "pause" && actionText !== "suspend") r.problem(`${p}.idle_action`, `expected pause or suspend, got ${JSON.stringify(actionText)}`);
  if (o.idle_pause_after === undefined || o.idle_pause_after === null) {
    for (const k of ["idle_cpu_threshold", "idle_action"] as const) {
      if (o[k] !== undefined && o[k] !== null) r.problem(`${p}.${k}`, `${k} needs idle_pause_after (without it the group's VMs never idle out)`);
    }
  }
  if (afterMs === undefined) return undefined;
  return { afterMs, cpuMilli, action: actionText === "suspend" ? "suspend" : "pause" };
}

/**
 * A host group's `egress_proxy: {client: <name>}` at YAML path `p` (Paddock's key; Slicer's own
 * proxy is a separate process a guest reaches with a per-exec `HTTPS_PROXY` token): the group's
 * VMs leave only through the tenant's egress proxy, as proxy client `client` (default: the group's
 * name). `{}` turns it on with the default client. An isolated group's `allow`/`drop` lists would
 * be ignored in proxy mode, so they are a problem here, as is `dns_servers` (the guests' resolver
 * is the proxy's own). Problems are recorded on `r`.
 * @returns undefined when the key is absent (the group keeps its CIDR policy).
 */
function readEgressProxy(r: ConfigReader, raw: unknown, p: string, groupName: string, network: NetworkConfig, dnsServers: readonly string[]): HostGroupConfig["egressProxy"] {
  if (raw === undefined || raw === null) return undefined;
  const o = r.object(raw, p);
  r.unknownKeys(o, p, ["client"]);
  const client = r.string(o.client, `${p}.client`, { pattern: NAME_PATTERN, patternText: "a proxy client name of [a-z0-9-] starting and ending with a letter or digit" }) ?? groupName;
  if (network.mode === "isolated" && (network.allow.length > 0 || network.drop.length > 0)) {
    r.problem(p, "an egress_proxy group leaves only through the proxy: remove network.allow and network.drop (the proxy's allow rules decide)");
  }
  if (dnsServers.length > 0) r.problem(p, "an egress_proxy group's guests resolve through the proxy's resolver: remove dns_servers");
  // The guests' fixed proxy address (tenant-daemon/network/egress-proxy-wiring.ts) must not be on their own network.
  const span = network.mode === "isolated" ? network.range : network.gateway;
  try {
    if (span !== undefined && cidrContains(parseCidr(span), parseIpv4(EGRESS_PROXY_GUEST_ADDRESS) as number)) {
      r.problem(p, `the group's network ${span} holds ${EGRESS_PROXY_GUEST_ADDRESS}, the egress proxy's address inside VMs: pick another range`);
    }
  } catch {
    // A bad range is reported by the network reader.
  }
  return { client };
}

/**
 * `default_ttl` and `max_ttl` of the object `o` at YAML path `p`: Go durations (shared/time.ts
 * parseGoDurationNs) greater than zero, the default not above the maximum. Problems are
 * recorded on `r`; a bad value reads as undefined.
 */
export function readTtlPair(r: ConfigReader, o: Record<string, unknown>, p: string): { defaultTtlMs: number | undefined; maxTtlMs: number | undefined } {
  const read = (key: "default_ttl" | "max_ttl"): number | undefined => {
    const text = r.string(o[key], `${p}.${key}`);
    if (text === undefined) return undefined;
    try {
      const ns = parseGoDurationNs(text, key, "ERR_CONFIG_INVALID");
      if (ns <= 0n) throw new Error(`${key} must be greater than zero, got ${JSON.stringify(text)}`);
      return Number(ns) / 1e6;
    } catch (err) {
      r.problem(`${p}.${key}`, (err as Error).message);
      return undefined;
    }
  };
  const defaultTtlMs = read("default_ttl");
  const maxTtlMs = read("max_ttl");
  if (defaultTtlMs !== undefined && maxTtlMs !== undefined && defaultTtlMs > maxTtlMs) r.problem(`${p}.default_ttl`, `default_ttl is longer than max_ttl`);
  return { defaultTtlMs, maxTtlMs };
}
