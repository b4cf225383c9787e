/**
 * The tenant daemon's configuration: the Slicer YAML format (spec §4) plus Paddock's own
 * settings under the top-level `paddock:` key. Parsed, validated, defaulted and frozen at
 * start; every problem is reported at once with its YAML path.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "./errors.js";
import { ConfigReader, parseSizeBytes, parseYamlSafe } from "./yaml-reader.js";
import { cidrContains, cidrOverlaps, parseCidr, parseIpv4, parseIpv6Cidr, type Cidr } from "./cidr.js";
import { DEFAULT_PIDS_RESERVE, MIN_PIDS_BUDGET } from "./host-pids.js";
import { UID_RANGE_MAX_END, UID_RANGE_MIN_START, UID_RANGE_SIZE, type UidRange } from "./uid-ranges.js";

/** Host group and VM names: lowercase DNS-label characters (spec §1.3). */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
/** Tenant ids: short so socket paths stay under 108 bytes and link names under 15 (DESIGN.md §6). */
export const TENANT_ID_PATTERN = /^[a-z][a-z0-9]{0,11}$/;

/** `network:` of a bridge-mode host group (spec §4.3). */
export interface BridgeNetworkConfig {
  mode: "bridge";
  /** Bridge interface name; default `br<group>0` shortened to 15 bytes. */
  bridge: string | undefined;
  tapPrefix: string | undefined;
  /** Gateway address with prefix, e.g. `192.168.137.1/24`. */
  gateway: string | undefined;
  /** Optional `A-B` allocation range. */
  range: string | undefined;
  addresses: readonly string[];
}

/** `network:` of an isolated-mode host group (spec §4.3–§4.5). */
export interface IsolatedNetworkConfig {
  mode: "isolated";
  /** The group's range (normally a /22); undefined ⇒ derived from the group name (§4.4). */
  range: string | undefined;
  drop: readonly string[];
  allow: readonly string[];
}

/** A host group's `network:`, by mode (spec §4.3). */
export type NetworkConfig = BridgeNetworkConfig | IsolatedNetworkConfig;

/** One `config.host_groups[]` entry, defaulted (spec §4.2). */
export interface HostGroupConfig {
  name: string;
  /** VMs created and protected at start (default 1, spec §4.2). */
  count: number;
  /** Default and maximum vCPUs per VM. */
  vcpu: number;
  /** Default and maximum RAM per VM, bytes. */
  ramBytes: number;
  storage: "image";
  /** Per-VM writable disk size, bytes. */
  storageSizeBytes: number;
  persistent: boolean;
  userdata: string | undefined;
  /** Absolute path of a userdata script (resolved against the config file's directory). */
  userdataFile: string | undefined;
  /** Guest resolvers; empty ⇒ the host's own resolvers (never public ones). */
  dnsServers: readonly string[];
  gpuCount: number;
  network: NetworkConfig;
}

/** Where the API listens (spec §1.1). */
export type ApiConfig =
  | { kind: "unix"; socketPath: string; auth: { enabled: boolean; token: string | undefined } }
  | { kind: "tcp"; host: string; port: number; auth: { enabled: boolean; token: string | undefined } };

/** Per-tenant quotas enforced at VM create (issue 4 §5); undefined ⇒ unlimited. */
export interface TenantLimits {
  maxVms: number | undefined;
  maxVcpu: number | undefined;
  maxRamBytes: number | undefined;
  maxDiskBytes: number | undefined;
  /** pids.max of the tenant's parent cgroup (tenant-daemon/runtime/tenant-cgroup.ts); undefined ⇒ what pid_max leaves after the host reserve. */
  maxPids: number | undefined;
}

/** Paddock's own settings (top-level `paddock:` key). */
export interface PaddockSettings {
  /** Tenant id; names the nftables table, links, containers and cgroups. */
  tenantId: string;
  /** The tenant's state directory (`<state>/tenants/<id>` under the supervisor). */
  stateDir: string;
  /** The tenant's run directory (agent sockets, bundles, mount points). */
  runDir: string;
  /** Directory holding base images (`<images>/<name>/rootfs`). */
  imageDir: string;
  /** OCI runtime: `auto` picks crun on a pure cgroup-v2 host with crun installed, else runc. */
  runtime: "auto" | "runc" | "crun";
  /** pids.max of each VM's cgroup (never above the tenant's pids budget). */
  pidsLimit: number;
  limits: TenantLimits;
  /** Pids of the host's pid_max no tenant budget may take (`paddock.host_pids_reserve`, shared/host-pids.ts). */
  hostPidsReserve: number;
  /**
   * Operator deny list applied to every VM, a floor no tenant setting or per-VM override can
   * reopen (`paddock.deny`: IPv4 CIDR, IP or ip:port, or an IPv6 CIDR/address). Absent ⇒
   * {@link DEFAULT_DENY}; `[]` ⇒ none.
   */
  deny: readonly string[];
  /**
   * Host services a bridge group's VMs may reach (`paddock.host_ports`, e.g. `{ br: [8080] }`):
   * TCP and UDP ports on the bridge's gateway address. Every other VM → host packet from a
   * bridge is dropped (replies to connections the host opened pass). Groups not named: none.
   */
  hostPorts: Readonly<Record<string, readonly number[]>>;
  /** Every range of other tenants on this host; traffic to them is always dropped. */
  foreignRanges: readonly string[];
  /** Seconds a graceful stop waits before SIGKILL. */
  stopTimeoutSeconds: number;
  /**
   * Warm pool size per host group (`paddock.warm_pool`, e.g. `{ sbox: 1 }`): that many VMs of
   * the group are booted ahead, agent ready, and handed out by the next plain create (see
   * tenant-daemon/vm/vm-service.ts). Groups not named have none.
   */
  warmPool: Readonly<Record<string, number>>;
  /**
   * Seccomp opt-out per host group (`paddock.seccomp`, e.g. `{ sbox: unconfined }`): VMs of an
   * `unconfined` group run without tenant-daemon/runtime/seccomp/default.json. Groups not named: `default`.
   */
  seccomp: Readonly<Record<string, "default" | "unconfined">>;
  /**
   * Fixed host uid/gid range of the tenant's user-namespaced VMs (`paddock.userns: { uid_start,
   * size }`, size default 65536); undefined ⇒ one is allocated and kept (shared/uid-ranges.ts).
   */
  userns: UidRange | undefined;
  /**
   * Most bytes of console log kept per VM (`paddock.console_log_bytes`, default 4 MiB): the log
   * rotates to `<hostname>.log.1` at half of it (tenant-daemon/runtime/oci-driver.ts).
   */
  consoleLogBytes: number;
  /**
   * How much of the disks file system's free space VM disks may be promised
   * (`paddock.disk_commit_ratio`, default 1.0): a VM disk is refused with 507
   * ERR_STORAGE_OVERCOMMIT when the unwritten part of every disk of this daemon plus the new one
   * would exceed ratio × free space (tenant-daemon/storage/disk-ledger.ts). Below 1 leaves room
   * for other tenants sharing the file system; above 1 overcommits.
   */
  diskCommitRatio: number;
  /** Most secrets the tenant may hold (`paddock.max_secrets`, default 256). */
  maxSecrets: number;
  /** Most bytes of secret content, all secrets together (`paddock.max_secret_bytes`, default 16 MiB). */
  maxSecretBytes: number;
}

/** The whole validated, frozen tenant daemon config. */
export interface TenantConfig {
  /** Absolute path of the file it came from (or `<inline>`). */
  source: string;
  hostGroups: readonly HostGroupConfig[];
  /** Image name in the image store. */
  image: string;
  hypervisor: "oci" | "firecracker";
  gracefulShutdown: boolean;
  api: ApiConfig;
  paddock: PaddockSettings;
  /** Unknown keys and other non-fatal findings, with their YAML paths. */
  warnings: readonly string[];
}

/**
 * Whether this release has a Firecracker driver (DESIGN.md §3). It has not: `hypervisor:
 * firecracker` is refused at daemon start, and `paddock new` writes `oci` even on a KVM host.
 */
export const FIRECRACKER_DRIVER = false;

/**
 * The default operator deny list (`paddock.deny` and the supervisor's `deny` when absent): the
 * cloud metadata services (169.254.169.254 of AWS, GCP, Azure and OpenStack, its IPv6 twin
 * fd00:ec2::254 on AWS Nitro, 100.100.100.200 of Alibaba Cloud) and the private networks of
 * RFC 1918 (https://www.rfc-editor.org/rfc/rfc1918#section-3). Paddock's own ranges are not
 * affected (they come from 169.254.0.0/16 and the deny rules skip the tenant's own ranges).
 */
export const DEFAULT_DENY: readonly string[] = Object.freeze([
  "169.254.169.254/32",
  "fd00:ec2::254/128",
  "100.100.100.200/32",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
]);

/**
 * Check one deny-list entry: an IPv4 CIDR or IP, optionally `:port` (1-65535), or an IPv6
 * CIDR or address (no port: an IPv6 address has colons of its own).
 * @returns undefined when valid, else what is wrong (for the config's problem list).
 */
export function denyEntryProblem(entry: string): string | undefined {
  if (parseIpv6Cidr(entry) !== undefined) return undefined;
  const [addr, port, extra] = entry.split(":");
  try {
    parseCidr(addr ?? "");
    if (extra !== undefined || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))) throw new Error();
    return undefined;
  } catch {
    return `expected an IPv4 CIDR, IP or ip:port, or an IPv6 CIDR, got ${JSON.stringify(entry)}`;
  }
}

/** Upper bound of `paddock.warm_pool.<group>`: warm VMs hold memory and an address each. */
export const MAX_WARM_POOL = 16;

const HOSTGROUP_KEYS = [
  "name", "count", "vcpu", "ram_gb", "ram_mb", "ram_bytes", "storage", "storage_size", "persistent", "userdata",
  "userdata_file", "dns_servers", "gpu_count", "network", "network_name", "ca", "share_home", "rosetta", "sleep_action",
] as const;
const CONFIG_KEYS = [
  "host_groups", "image", "kernel_image", "kernel_file", "hypervisor", "graceful_shutdown", "github_user", "ssh_keys",
  "api", "ssh", "pci", "insecure_registry",
] as const;
const PADDOCK_KEYS = ["tenant_id", "state_dir", "run_dir", "image_dir", "runtime", "pids_limit", "limits", "deny", "host_ports", "foreign_ranges", "stop_timeout_seconds", "warm_pool", "seccomp", "userns",
  "console_log_bytes", "disk_commit_ratio", "max_secrets", "max_secret_bytes", "host_pids_reserve"] as const;

/** Defaults for standalone daemons (DESIGN.md §6); env overrides applied in {@link loadTenantConfig}. */
export const DEFAULT_STATE_DIR = "/var/lib/paddock";
export const DEFAULT_RUN_DIR = "/run/paddock";

/** Context for resolving relative paths and defaults. */
export interface TenantConfigContext {
  /** Directory relative paths resolve against. */
  baseDir: string;
  /** Environment (for PADDOCK_STATE_DIR / PADDOCK_RUN_DIR). */
  env?: NodeJS.ProcessEnv;
}

function checkAddressList(r: ConfigReader, list: readonly string[] | undefined, p: string): void {
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
  if (tapPrefix !== undefined && tapPrefix.length > 14) r.problem(`${p}.tap_prefix`, "must be at most 14 characters (spec §3.1)");
  if (gateway === undefined && raw !== undefined) r.problem(`${p}.gateway`, `bridge mode needs a gateway CIDR such as 192.168.137.1/24 (host group ${groupName})`);
  return { mode: "bridge", bridge, tapPrefix, gateway, range, addresses };
}

function readHostGroup(r: ConfigReader, raw: unknown, p: string, ctx: TenantConfigContext): HostGroupConfig | undefined {
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
  if (name === undefined) return undefined;
  return {
    name, count, vcpu, ramBytes, storage: "image", storageSizeBytes, persistent, userdata,
    userdataFile: userdataFileRaw === undefined ? undefined : path.resolve(ctx.baseDir, userdataFileRaw),
    dnsServers, gpuCount, network,
  };
}

function readApi(r: ConfigReader, raw: unknown, ctx: TenantConfigContext): ApiConfig {
  const api = r.object(raw, "config.api");
  r.unknownKeys(api, "config.api", ["bind_address", "port", "auth", "socket"]);
  const auth = r.object(api.auth, "config.api.auth");
  r.unknownKeys(auth, "config.api.auth", ["enabled", "token"]);
  const token = r.string(auth.token, "config.api.auth.token");
  const bind = r.string(api.socket, "config.api.socket") ?? r.string(api.bind_address, "config.api.bind_address") ?? "127.0.0.1";
  const isSocket = bind.startsWith("/") || bind.startsWith("./") || bind.startsWith("../") || bind.endsWith(".sock");
  if (isSocket) {
    const socketPath = path.resolve(ctx.baseDir, bind);
    if (Buffer.byteLength(socketPath) > 107) r.problem("config.api.bind_address", `socket path ${socketPath} is longer than the 107-byte limit of a Unix socket path`);
    return { kind: "unix", socketPath, auth: { enabled: r.bool(auth.enabled, "config.api.auth.enabled") ?? false, token } };
  }
  const port = r.int(api.port, "config.api.port", { min: 0, max: 65535 }) ?? 8080;
  return { kind: "tcp", host: bind, port, auth: { enabled: r.bool(auth.enabled, "config.api.auth.enabled") ?? true, token } };
}

function readPaddock(r: ConfigReader, raw: unknown, ctx: TenantConfigContext, api: ApiConfig, groupNames: readonly string[]): PaddockSettings {
  const pd = r.object(raw, "paddock");
  r.unknownKeys(pd, "paddock", PADDOCK_KEYS);
  const env = ctx.env ?? process.env;
  const socketBase = api.kind === "unix" ? path.basename(api.socketPath).replace(/\.sock$/, "").toLowerCase() : "";
  const derivedId = TENANT_ID_PATTERN.test(socketBase) ? socketBase : "default";
  const tenantId = r.string(pd.tenant_id, "paddock.tenant_id", { pattern: TENANT_ID_PATTERN, patternText: "1-12 characters of [a-z0-9] starting with a letter" }) ?? derivedId;
  const stateRoot = env.PADDOCK_STATE_DIR ?? DEFAULT_STATE_DIR;
  const runRoot = env.PADDOCK_RUN_DIR ?? DEFAULT_RUN_DIR;
  const stateDir = path.resolve(ctx.baseDir, r.string(pd.state_dir, "paddock.state_dir") ?? path.join(stateRoot, "tenants", tenantId));
  const runDir = path.resolve(ctx.baseDir, r.string(pd.run_dir, "paddock.run_dir") ?? path.join(runRoot, "tenants", tenantId));
  const imageDir = path.resolve(ctx.baseDir, r.string(pd.image_dir, "paddock.image_dir") ?? env.PADDOCK_IMAGE_DIR ?? path.join(stateRoot, "images"));
  const runtime = r.string(pd.runtime, "paddock.runtime") ?? "auto";
  if (runtime !== "auto" && runtime !== "runc" && runtime !== "crun") r.problem("paddock.runtime", `expected auto, runc or crun, got ${JSON.stringify(runtime)}`);
  const limits = r.object(pd.limits, "paddock.limits");
  r.unknownKeys(limits, "paddock.limits", ["max_vms", "max_vcpu", "max_ram_bytes", "max_disk_bytes", "max_pids"]);
  const deny = r.stringList(pd.deny, "paddock.deny") ?? [...DEFAULT_DENY];
  deny.forEach((d, i) => {
    const problem = denyEntryProblem(d);
    if (problem !== undefined) r.problem(`paddock.deny[${i}]`, problem);
  });
  const hostPorts: Record<string, number[]> = {};
  for (const [group, ports] of Object.entries(r.object(pd.host_ports, "paddock.host_ports"))) {
    const p = `paddock.host_ports.${group}`;
    if (!groupNames.includes(group)) r.problem(p, `no host group named ${JSON.stringify(group)} (host groups: ${groupNames.join(", ") || "none"})`);
    if (!Array.isArray(ports)) r.problem(p, "expected a list of ports (1-65535)");
    else hostPorts[group] = ports.flatMap((n: unknown, i) => r.int(n ?? "null", `${p}[${i}]`, { min: 1, max: 65535 }) ?? []);
  }
  const foreignRanges = r.stringList(pd.foreign_ranges, "paddock.foreign_ranges") ?? [];
  checkAddressList(r, foreignRanges, "paddock.foreign_ranges");
  const warmRaw = r.object(pd.warm_pool, "paddock.warm_pool");
  const warmPool: Record<string, number> = {};
  for (const [group, n] of Object.entries(warmRaw)) {
    const p = `paddock.warm_pool.${group}`;
    if (!groupNames.includes(group)) r.problem(p, `no host group named ${JSON.stringify(group)} (host groups: ${groupNames.join(", ") || "none"})`);
    const size = r.int(n, p, { min: 0, max: MAX_WARM_POOL });
    if (size !== undefined && size > 0) warmPool[group] = size;
  }
  const seccomp: Record<string, "default" | "unconfined"> = {};
  for (const [group, mode] of Object.entries(r.object(pd.seccomp, "paddock.seccomp"))) {
    const p = `paddock.seccomp.${group}`;
    if (!groupNames.includes(group)) r.problem(p, `no host group named ${JSON.stringify(group)} (host groups: ${groupNames.join(", ") || "none"})`);
    const m = r.string(mode, p);
    if (m === "default" || m === "unconfined") seccomp[group] = m;
    else if (m !== undefined) r.problem(p, `expected default or unconfined, got ${JSON.stringify(m)}`);
  }
  const userns = readUserns(r, pd.userns);
  return {
    tenantId,
    stateDir,
    runDir,
    imageDir,
    runtime: runtime === "runc" || runtime === "crun" ? runtime : "auto",
    pidsLimit: r.int(pd.pids_limit, "paddock.pids_limit", { min: 16, max: 4_194_304 }) ?? 4096,
    limits: {
      maxVms: r.int(limits.max_vms, "paddock.limits.max_vms", { min: 0 }),
      maxVcpu: r.int(limits.max_vcpu, "paddock.limits.max_vcpu", { min: 0 }),
      maxRamBytes: r.int(limits.max_ram_bytes, "paddock.limits.max_ram_bytes", { min: 0 }),
      maxDiskBytes: r.int(limits.max_disk_bytes, "paddock.limits.max_disk_bytes", { min: 0 }),
      maxPids: r.int(limits.max_pids, "paddock.limits.max_pids", { min: MIN_PIDS_BUDGET, max: 4_194_304 }),
    },
    hostPidsReserve: r.int(pd.host_pids_reserve, "paddock.host_pids_reserve", { min: 0, max: 4_194_304 }) ?? DEFAULT_PIDS_RESERVE,
    deny,
    hostPorts,
    foreignRanges,
    stopTimeoutSeconds: r.int(pd.stop_timeout_seconds, "paddock.stop_timeout_seconds", { min: 0, max: 600 }) ?? 10,
    warmPool,
    seccomp,
    userns,
    consoleLogBytes: r.int(pd.console_log_bytes, "paddock.console_log_bytes", { min: 64 * 1024, max: 2 ** 32 }) ?? 4 * 2 ** 20,
    diskCommitRatio: readRatio(r, pd.disk_commit_ratio, "paddock.disk_commit_ratio") ?? 1,
    maxSecrets: r.int(pd.max_secrets, "paddock.max_secrets", { min: 0, max: 100_000 }) ?? 256,
    maxSecretBytes: r.int(pd.max_secret_bytes, "paddock.max_secret_bytes", { min: 0, max: 2 ** 32 }) ?? 16 * 2 ** 20,
  };
}

/** A positive ratio such as `1`, `0.8` or `1.5` (at most 100). */
function readRatio(r: ConfigReader, raw: unknown, p: string): number | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== "number" || !Number.isFinite(raw) || raw <= 0 || raw > 100) {
    r.problem(p, `expected a number greater than 0 and at most 100 such as 1 or 0.8, got ${JSON.stringify(raw)}`);
    return undefined;
  }
  return raw;
}

/** `paddock.userns: { uid_start, size }` (size default 65536; shared/uid-ranges.ts checks overlaps at start). */
function readUserns(r: ConfigReader, raw: unknown): UidRange | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    r.problem("paddock.userns", "expected a mapping such as { uid_start: 2000000000, size: 65536 }");
    return undefined;
  }
  const u = raw as Record<string, unknown>;
  r.unknownKeys(u, "paddock.userns", ["uid_start", "size"]);
  const uidStart = r.int(u.uid_start, "paddock.userns.uid_start", { min: UID_RANGE_MIN_START, max: UID_RANGE_MAX_END - UID_RANGE_SIZE });
  if (u.uid_start === undefined || u.uid_start === null) r.problem("paddock.userns.uid_start", "is required (the host uid of guest uid 0)");
  const size = r.int(u.size, "paddock.userns.size", { min: UID_RANGE_SIZE, max: UID_RANGE_MAX_END - UID_RANGE_MIN_START }) ?? UID_RANGE_SIZE;
  if (uidStart === undefined) return undefined;
  if (uidStart + size > UID_RANGE_MAX_END) {
    r.problem("paddock.userns", `uid_start + size must be at most ${UID_RANGE_MAX_END}, got ${uidStart + size}`);
    return undefined;
  }
  return { uidStart, size };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Validate a parsed YAML tree (spec §4 + `paddock:`) into a frozen {@link TenantConfig}.
 * @throws PaddockError `ERR_CONFIG_INVALID` listing every problem with its YAML path.
 */
export function parseTenantConfig(tree: unknown, source: string, ctx: TenantConfigContext): TenantConfig {
  const r = new ConfigReader();
  const root = r.object(tree, "(root)", true);
  r.unknownKeys(root, "(root)", ["config", "paddock"]);
  const cfg = r.object(root.config, "config", true);
  r.unknownKeys(cfg, "config", CONFIG_KEYS);
  const groupsRaw = cfg.host_groups;
  const hostGroups: HostGroupConfig[] = [];
  if (groupsRaw === undefined || groupsRaw === null) r.problem("config.host_groups", "is required (a list of host groups)");
  else if (!Array.isArray(groupsRaw)) r.problem("config.host_groups", "expected a list of host groups");
  else if (groupsRaw.length === 0) r.problem("config.host_groups", "needs at least one host group");
  else groupsRaw.forEach((g, i) => {
    const hg = readHostGroup(r, g, `config.host_groups[${i}]`, ctx);
    if (hg) hostGroups.push(hg);
  });
  const seen = new Map<string, number>();
  hostGroups.forEach((g, i) => {
    const prev = seen.get(g.name);
    if (prev !== undefined) r.problem(`config.host_groups[${i}].name`, `duplicate host group name ${JSON.stringify(g.name)} (also config.host_groups[${prev}])`);
    else seen.set(g.name, i);
  });
  // Explicit ranges of two host groups must not overlap (spec §4.4).
  const ranges = hostGroups.map((g, i) => ({ i, g, text: g.network.mode === "isolated" ? g.network.range : g.network.gateway }));
  for (let a = 0; a < ranges.length; a++) for (let b = a + 1; b < ranges.length; b++) {
    const ra = ranges[a]!, rb = ranges[b]!;
    if (!ra.text || !rb.text) continue;
    try {
      if (cidrOverlaps(parseCidr(ra.text), parseCidr(rb.text))) {
        r.problem(`config.host_groups[${rb.i}].network`, `range ${rb.text} of host group ${rb.g.name} overlaps ${ra.text} of host group ${ra.g.name} (config.host_groups[${ra.i}].network)`);
      }
    } catch {}
  }
  const image = r.string(cfg.image, "config.image") ?? "debian-12";
  const hypervisor = r.string(cfg.hypervisor, "config.hypervisor") ?? "firecracker";
  if (hypervisor !== "oci" && hypervisor !== "firecracker") {
    r.problem("config.hypervisor", `hypervisor ${JSON.stringify(hypervisor)} is not supported by Paddock (supported: oci, firecracker)`);
  }
  const gracefulShutdown = r.bool(cfg.graceful_shutdown, "config.graceful_shutdown") ?? true;
  const api = readApi(r, cfg.api, ctx);
  const paddock = readPaddock(r, root.paddock, ctx, api, hostGroups.map((g) => g.name));
  for (const group of Object.keys(paddock.hostPorts)) {
    const g = hostGroups.find((h) => h.name === group);
    if (g !== undefined && g.network.mode !== "bridge") r.problem(`paddock.host_ports.${group}`, `host group ${group} is in ${g.network.mode} mode; its VMs never reach the host (host_ports is for bridge groups)`);
  }
  r.throwIfProblems(source);
  return deepFreeze({
    source,
    hostGroups,
    image,
    hypervisor: hypervisor === "oci" ? "oci" : "firecracker",
    gracefulShutdown,
    api,
    paddock,
    warnings: r.warnings.map((w) => `${w.path}: ${w.message}`),
  });
}

/**
 * Read, parse and validate a tenant config file.
 * @throws PaddockError `ERR_CONFIG_INVALID` (unreadable file, YAML syntax, or any problem).
 */
export async function loadTenantConfig(file: string, env: NodeJS.ProcessEnv = process.env): Promise<TenantConfig> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await fs.readFile(abs, "utf8");
  } catch (err) {
    throw new PaddockError("ERR_CONFIG_INVALID", `cannot read config ${abs}: ${(err as Error).message}`, { cause: err });
  }
  return parseTenantConfig(parseYamlSafe(text, abs), abs, { baseDir: path.dirname(abs), env });
}
