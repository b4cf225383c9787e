/**
 * Reader of the top-level `paddock:` key (Paddock's own settings), defaulted; every problem is
 * recorded on the {@link ConfigReader} with its YAML path.
 */
import path from "node:path";
import { DEFAULT_PIDS_RESERVE, MIN_PIDS_BUDGET } from "./host-pids.js";
import { defaultImageDir } from "./image-store.js";
import { checkAddressList, readTtlPair } from "./tenant-config-groups.js";
import { DEFAULT_DENY, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, MAX_WARM_POOL, TENANT_ID_PATTERN, denyEntryProblem } from "./tenant-config-defaults.js";
import type { ApiConfig, PaddockSettings, TenantConfigContext } from "./tenant-config-schema.js";
import { readProxySettings } from "./tenant-config-proxy.js";
import { UID_RANGE_MAX_END, UID_RANGE_MIN_START, UID_RANGE_SIZE, type UidRange } from "./uid-ranges.js";
import type { ConfigReader } from "./yaml-reader.js";
import { envValue } from "./env.js";

const PADDOCK_KEYS = ["tenant_id", "state_dir", "run_dir", "image_dir", "runtime", "pids_limit", "limits", "deny", "host_ports", "foreign_ranges", "stop_timeout_seconds", "warm_pool", "expiry", "seccomp", "userns",
  "console_log_bytes", "disk_commit_ratio", "max_secrets", "max_secret_bytes", "host_pids_reserve", "gvisor", "proxy"] as const;

/**
 * `paddock.pids_limit` when the config sets none: pids.max of each VM. Above the supervisor's
 * default `max_pids` (2048) on purpose: the tenant's budget clamps it (computeTenantBudget in
 * tenant-daemon/runtime/tenant-cgroup.ts), silently, since nobody asked for more.
 */
export const DEFAULT_VM_PIDS_LIMIT = 4096;

/**
 * `paddock.limits.max_conns` when the config sets none: new connections the tenant's VMs may hold
 * in the host's one conntrack table (tenant-daemon/network/conn-limits.ts). Sized against the
 * kernel's default `net.netfilter.nf_conntrack_max` of 262 144 and the supervisor's default pool
 * of 63 tenants: 63 × 3072 = 193 536 entries, 74 % of the table, so every tenant of a full
 * default host at its bound still leaves 68 608 entries to the host's own traffic.
 */
export const DEFAULT_MAX_CONNS = 3072;

/**
 * `paddock.limits.max_conns_per_vm` when the config sets none: one VM's share of
 * {@link DEFAULT_MAX_CONNS}, so one busy VM leaves the tenant's other VMs room.
 */
export const DEFAULT_MAX_CONNS_PER_VM = 2048;

/**
 * Bounds of `max_conns` and `max_conns_per_vm` (here and in the supervisor's limits,
 * supervisor/tenant-limits.ts): a VM needs a few for DNS; the top is 64 × the default
 * nf_conntrack_max, past any table a host sets.
 */
export const CONNS_BOUNDS: Readonly<{ min: number; max: number }> = Object.freeze({ min: 16, max: 16_777_216 });

/**
 * The `paddock:` key, defaulted. The tenant id defaults to the API socket's base name when that
 * is a valid id, else `default`; state, run and image dirs default under `PADDOCK_STATE_DIR` /
 * `PADDOCK_RUN_DIR` (an empty one counts as unset, shared/env.ts; else {@link DEFAULT_STATE_DIR} /
 * {@link DEFAULT_RUN_DIR}) and resolve against `ctx.baseDir`. Per-group maps (`host_ports`, `warm_pool`, `seccomp`) must name groups in
 * `groupNames`. Problems are recorded on `r` with their YAML paths.
 */
export function readPaddock(r: ConfigReader, raw: unknown, ctx: TenantConfigContext, api: ApiConfig, groupNames: readonly string[]): PaddockSettings {
  const pd = r.object(raw, "paddock");
  r.unknownKeys(pd, "paddock", PADDOCK_KEYS);
  const env = ctx.env ?? process.env;
  const socketBase = api.kind === "unix" ? path.basename(api.socketPath).replace(/\.sock$/, "").toLowerCase() : "";
  const derivedId = TENANT_ID_PATTERN.test(socketBase) ? socketBase : "default";
  const tenantId = r.string(pd.tenant_id, "paddock.tenant_id", { pattern: TENANT_ID_PATTERN, patternText: "1-12 characters of [a-z0-9] starting with a letter" }) ?? derivedId;
  const stateRoot = envValue(env.PADDOCK_STATE_DIR) ?? DEFAULT_STATE_DIR;
  const runRoot = envValue(env.PADDOCK_RUN_DIR) ?? DEFAULT_RUN_DIR;
  const stateDir = path.resolve(ctx.baseDir, r.string(pd.state_dir, "paddock.state_dir") ?? path.join(stateRoot, "tenants", tenantId));
  const runDir = path.resolve(ctx.baseDir, r.string(pd.run_dir, "paddock.run_dir") ?? path.join(runRoot, "tenants", tenantId));
  const imageDir = path.resolve(ctx.baseDir, r.string(pd.image_dir, "paddock.image_dir") ?? defaultImageDir(env));
  const runtime = r.string(pd.runtime, "paddock.runtime") ?? "auto";
  if (runtime !== "auto" && runtime !== "runc" && runtime !== "crun") r.problem("paddock.runtime", `expected auto, runc or crun, got ${JSON.stringify(runtime)}`);
  const gvisorRaw = r.object(pd.gvisor, "paddock.gvisor");
  r.unknownKeys(gvisorRaw, "paddock.gvisor", ["platform"]);
  const gvisorPlatform = r.string(gvisorRaw.platform, "paddock.gvisor.platform") ?? "auto";
  if (gvisorPlatform !== "auto" && gvisorPlatform !== "kvm" && gvisorPlatform !== "ptrace") r.problem("paddock.gvisor.platform", `expected auto, kvm or ptrace, got ${JSON.stringify(gvisorPlatform)}`);
  const limits = r.object(pd.limits, "paddock.limits");
  r.unknownKeys(limits, "paddock.limits", ["max_vms", "max_vcpu", "max_ram_bytes", "max_disk_bytes", "max_pids", "max_conns", "max_conns_per_vm"]);
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
  const expiryRaw = r.object(pd.expiry, "paddock.expiry");
  r.unknownKeys(expiryRaw, "paddock.expiry", ["default_ttl", "max_ttl"]);
  const expiry = readTtlPair(r, expiryRaw, "paddock.expiry");
  return {
    tenantId,
    stateDir,
    runDir,
    imageDir,
    runtime: runtime === "runc" || runtime === "crun" ? runtime : "auto",
    gvisor: { platform: gvisorPlatform === "kvm" || gvisorPlatform === "ptrace" ? gvisorPlatform : "auto" },
    pidsLimit: r.int(pd.pids_limit, "paddock.pids_limit", { min: 16, max: 4_194_304 }) ?? DEFAULT_VM_PIDS_LIMIT,
    limits: {
      maxVms: r.int(limits.max_vms, "paddock.limits.max_vms", { min: 0 }),
      maxVcpu: r.int(limits.max_vcpu, "paddock.limits.max_vcpu", { min: 0 }),
      maxRamBytes: r.int(limits.max_ram_bytes, "paddock.limits.max_ram_bytes", { min: 0 }),
      maxDiskBytes: r.int(limits.max_disk_bytes, "paddock.limits.max_disk_bytes", { min: 0 }),
      maxPids: r.int(limits.max_pids, "paddock.limits.max_pids", { min: MIN_PIDS_BUDGET, max: 4_194_304 }),
    },
    conntrack: {
      maxConns: r.int(limits.max_conns, "paddock.limits.max_conns", CONNS_BOUNDS) ?? DEFAULT_MAX_CONNS,
      maxConnsPerVm: r.int(limits.max_conns_per_vm, "paddock.limits.max_conns_per_vm", CONNS_BOUNDS) ?? DEFAULT_MAX_CONNS_PER_VM,
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
    expiry,
    maxSecrets: r.int(pd.max_secrets, "paddock.max_secrets", { min: 0, max: 100_000 }) ?? 256,
    maxSecretBytes: r.int(pd.max_secret_bytes, "paddock.max_secret_bytes", { min: 0, max: 2 ** 32 }) ?? 16 * 2 ** 20,
    proxy: readProxySettings(r, pd.proxy),
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
