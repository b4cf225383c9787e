/**
 * The shapes of a validated tenant daemon config (shared/tenant-config.ts parses and checks it):
 * the Slicer YAML format (`config:`, host groups, API) plus Paddock's own settings under the
 * top-level `paddock:` key. Every value is defaulted and the whole object frozen.
 */
import type { ProxySettings } from "./tenant-config-proxy.js";
import type { UidRange } from "./uid-ranges.js";

/** `network:` of a bridge-mode host group (the default mode): VMs share a bridge with a gateway address. */
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

/** `network:` of an isolated-mode host group: each VM gets a /30 of the range on its own veth, behind the group's firewall lists. */
export interface IsolatedNetworkConfig {
  mode: "isolated";
  /** The group's range (normally a /22); undefined ⇒ derived from the tenant and group names (tenant-daemon/network/address-plan.ts). */
  range: string | undefined;
  drop: readonly string[];
  allow: readonly string[];
}

/** A host group's `network:`, by mode. */
export type NetworkConfig = BridgeNetworkConfig | IsolatedNetworkConfig;

/** One `config.host_groups[]` entry, defaulted. */
export interface HostGroupConfig {
  name: string;
  /** VMs created and protected at start (default 1). */
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
  /** Expiry of the group's VMs (`expiry_action`, `default_ttl`, `max_ttl`; tenant-daemon/vm/vm-expiry.ts). */
  expiry: GroupExpiryConfig;
  /**
   * `egress_proxy:`: the group's VMs reach the outside only through the tenant's egress proxy, as
   * proxy client `client` (tenant-daemon/network/egress-proxy-wiring.ts); undefined ⇒ the group's
   * CIDR policy (`network.allow`/`drop`) as before.
   */
  egressProxy: { client: string } | undefined;
  /** Idle pause or suspend of the group's VMs (`idle_pause_after`, …; tenant-daemon/vm/vm-idle.ts); undefined ⇒ never. */
  idle?: GroupIdleConfig;
}

/**
 * A host group's idle settings. `afterMs` (`idle_pause_after`): a running VM with no API
 * activity for this long is idled out; `cpuMilli` (`idle_cpu_threshold`, milli-CPUs): when set,
 * only if its cgroup's average CPU use over that window also stayed below it; `action`
 * (`idle_action`): `pause` (cgroup freezer) or `suspend` (memory checkpoint to disk, gVisor only).
 */
export interface GroupIdleConfig {
  afterMs: number;
  cpuMilli: number | undefined;
  action: "pause" | "suspend";
}

/**
 * A host group's expiry settings. `action`: what happens to a persistent VM at its deadline
 * (`expiry_action`: `shutdown`, the default, keeps its disk; `delete` removes it); an ephemeral
 * VM is always deleted. `defaultTtlMs` (`default_ttl`): the deadline a create without `ttl` or
 * `expires_at=` tag gets; `maxTtlMs` (`max_ttl`): the longest lifetime from creation a VM may be
 * given. Undefined: no default / no maximum at this level.
 */
export interface GroupExpiryConfig {
  action: "shutdown" | "delete";
  defaultTtlMs: number | undefined;
  maxTtlMs: number | undefined;
}

/** The tenant-wide expiry settings (`paddock.expiry: { default_ttl, max_ttl }`), under every group's own. */
export interface TenantExpiryConfig {
  defaultTtlMs: number | undefined;
  maxTtlMs: number | undefined;
}

/** Where the API listens: a Unix socket, or a TCP host and port. */
export type ApiConfig =
  | { kind: "unix"; socketPath: string; auth: { enabled: boolean; token: string | undefined } }
  | { kind: "tcp"; host: string; port: number; auth: { enabled: boolean; token: string | undefined } };

/** Per-tenant quotas enforced at VM create (tenant-daemon/vm/vm-service.ts); undefined ⇒ unlimited. */
export interface TenantLimits {
  maxVms: number | undefined;
  maxVcpu: number | undefined;
  maxRamBytes: number | undefined;
  maxDiskBytes: number | undefined;
  /** pids.max of the tenant's parent cgroup (tenant-daemon/runtime/tenant-cgroup.ts); undefined ⇒ what pid_max leaves after the host reserve. */
  maxPids: number | undefined;
}

/** A tenant's share of the host's conntrack table, in connections (entries). */
export interface ConntrackLimits {
  /** Entries all of the tenant's VMs together may hold (`paddock.limits.max_conns`, 16…16 777 216). */
  maxConns: number;
  /** Entries one VM (one source address) may hold (`paddock.limits.max_conns_per_vm`, 16…16 777 216). */
  maxConnsPerVm: number;
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
  /**
   * gVisor settings (`paddock.gvisor`), used when `hypervisor: gvisor`. `platform`: runsc's
   * `--platform`; `auto` ⇒ `kvm` when /dev/kvm can be opened read-write and the CPU has
   * hardware virtualisation (x86: vmx/svm), else `ptrace` (tenant-daemon/runtime/runsc-host.ts).
   */
  gvisor: { platform: "auto" | "kvm" | "ptrace" };
  /** pids.max of each VM's cgroup (never above the tenant's pids budget). */
  pidsLimit: number;
  limits: TenantLimits;
  /**
   * Bounds on the tenant's share of the host's conntrack table (`paddock.limits.max_conns` and
   * `max_conns_per_vm`, defaulted; tenant-daemon/network/conn-limits.ts): new connections from
   * the tenant's VMs beyond them are dropped.
   */
  conntrack: ConntrackLimits;
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
   * rotates to `<hostname>.log.1` at half of it (tenant-daemon/runtime/oci-bundle.ts).
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
  /** Tenant-wide default and maximum VM lifetime (`paddock.expiry`); a group's own values take precedence for the default, the smaller maximum wins. */
  expiry: TenantExpiryConfig;
  /** Most secrets the tenant may hold (`paddock.max_secrets`, default 256). */
  maxSecrets: number;
  /** Most bytes of secret content, all secrets together (`paddock.max_secret_bytes`, default 16 MiB). */
  maxSecretBytes: number;
  /** The tenant's egress proxy (`paddock.proxy`, shared/tenant-config-proxy.ts). */
  proxy: ProxySettings;
}

/** The whole validated, frozen tenant daemon config. */
export interface TenantConfig {
  /** Absolute path of the file it came from (or `<inline>`). */
  source: string;
  hostGroups: readonly HostGroupConfig[];
  /** Image name in the image store. */
  image: string;
  /** `oci` (runc/crun), `gvisor` (runsc, tenant-daemon/runtime/runsc-driver.ts) or `firecracker` (refused: not in this release). */
  hypervisor: "oci" | "gvisor" | "firecracker";
  gracefulShutdown: boolean;
  api: ApiConfig;
  paddock: PaddockSettings;
  /** Unknown keys and other non-fatal findings, with their YAML paths. */
  warnings: readonly string[];
}

/** Context for resolving relative paths and defaults. */
export interface TenantConfigContext {
  /** Directory relative paths resolve against. */
  baseDir: string;
  /** Environment (for PADDOCK_STATE_DIR / PADDOCK_RUN_DIR). */
  env?: NodeJS.ProcessEnv;
}
