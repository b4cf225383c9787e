/**
 * The tenant daemon's configuration: the Slicer YAML format (`config:`) plus Paddock's own
 * settings under the top-level `paddock:` key. Parsed, validated, defaulted and frozen at
 * start; every problem is reported at once with its YAML path.
 *
 * The shapes are in tenant-config-schema.ts, the constants and defaults in
 * tenant-config-defaults.ts, the readers of host groups and of `paddock:` in
 * tenant-config-groups.ts and tenant-config-paddock.ts; this file reads the rest and exports
 * all of it.
 */
import { constants as fsConstants, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "./errors.js";
import { ConfigReader, parseYamlSafe } from "./yaml-reader.js";
import { cidrOverlaps, parseCidr } from "./cidr.js";
import { readHostGroup } from "./tenant-config-groups.js";
import { readPaddock } from "./tenant-config-paddock.js";
import { DEFAULT_IMAGE_NAME } from "./tenant-config-defaults.js";
import type { ApiConfig, HostGroupConfig, TenantConfig, TenantConfigContext } from "./tenant-config-schema.js";

export {
  DEFAULT_DENY, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, FIRECRACKER_DRIVER, MAX_WARM_POOL, NAME_PATTERN, TENANT_ID_PATTERN, denyEntryProblem,
} from "./tenant-config-defaults.js";
export type {
  ApiConfig, BridgeNetworkConfig, GroupExpiryConfig, GroupIdleConfig, HostGroupConfig, IsolatedNetworkConfig, NetworkConfig, PaddockSettings, TenantConfig, TenantConfigContext,
  TenantExpiryConfig, TenantLimits,
} from "./tenant-config-schema.js";

const CONFIG_KEYS = [
  "host_groups", "image", "kernel_image", "kernel_file", "hypervisor", "graceful_shutdown", "github_user", "ssh_keys",
  "api", "ssh", "pci", "insecure_registry",
] as const;

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

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * Validate a parsed YAML tree (`config:` + `paddock:`) into a frozen {@link TenantConfig}.
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
  // Explicit ranges of two host groups must not overlap.
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
  const image = r.string(cfg.image, "config.image") ?? DEFAULT_IMAGE_NAME;
  const hypervisor = r.string(cfg.hypervisor, "config.hypervisor") ?? "firecracker";
  if (hypervisor !== "oci" && hypervisor !== "gvisor" && hypervisor !== "firecracker") {
    r.problem("config.hypervisor", `hypervisor ${JSON.stringify(hypervisor)} is not supported by Paddock (supported: oci, gvisor, firecracker)`);
  }
  const gracefulShutdown = r.bool(cfg.graceful_shutdown, "config.graceful_shutdown") ?? true;
  const api = readApi(r, cfg.api, ctx);
  const paddock = readPaddock(r, root.paddock, ctx, api, hostGroups.map((g) => g.name));
  for (const group of Object.keys(paddock.hostPorts)) {
    const g = hostGroups.find((h) => h.name === group);
    if (g !== undefined && g.network.mode !== "bridge") r.problem(`paddock.host_ports.${group}`, `host group ${group} is in ${g.network.mode} mode; its VMs never reach the host (host_ports is for bridge groups)`);
    else if (g?.egressProxy !== undefined) r.problem(`paddock.host_ports.${group}`, `host group ${group} has egress_proxy; its VMs reach only the egress proxy and its resolver on the host`);
  }
  // A group default must fit under the tenant's maximum too (the smaller maximum wins).
  hostGroups.forEach((g, i) => {
    const max = paddock.expiry.maxTtlMs;
    if (max !== undefined && g.expiry.defaultTtlMs !== undefined && g.expiry.defaultTtlMs > max) r.problem(`config.host_groups[${i}].default_ttl`, "default_ttl is longer than paddock.expiry.max_ttl");
  });
  // Suspend needs a memory checkpoint: only runsc has one (tenant-daemon/vm/vm-suspend.ts).
  hostGroups.forEach((g, i) => {
    if (g.idle?.action === "suspend" && hypervisor !== "gvisor") r.problem(`config.host_groups[${i}].idle_action`, `idle_action: suspend needs hypervisor: gvisor (runsc checkpoint/restore); the ${hypervisor} runtime cannot snapshot a VM's memory: use idle_action: pause`);
  });
  r.throwIfProblems(source);
  return deepFreeze({
    source,
    hostGroups,
    image,
    hypervisor: hypervisor === "oci" || hypervisor === "gvisor" ? hypervisor : "firecracker",
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

/**
 * Check that every host group's `userdata_file` can be read now (it is read again at each VM
 * create, tenant-daemon/vm/vm-boot.ts): a daemon must not start and then fail every create of
 * the group. Each problem is listed with its YAML path.
 * @throws PaddockError ERR_CONFIG_INVALID naming each group's file and why it cannot be read.
 */
export async function assertUserdataFilesReadable(config: TenantConfig): Promise<void> {
  const problems: string[] = [];
  for (const [i, g] of config.hostGroups.entries()) {
    if (g.userdataFile === undefined) continue;
    const file = g.userdataFile;
    const why = await fs.stat(file).then(
      (st) => (st.isFile() ? fs.access(file, fsConstants.R_OK).then(() => undefined, (err: unknown) => errnoCode(err) ?? String(err)) : "not a regular file"),
      (err: unknown) => errnoCode(err) ?? String(err),
    );
    if (why !== undefined) problems.push(`config.host_groups[${i}].userdata_file (group ${g.name}): cannot read ${file}: ${why}`);
  }
  if (problems.length > 0) throw new PaddockError("ERR_CONFIG_INVALID", `${config.source}: ${problems.join("; ")}`);
}

