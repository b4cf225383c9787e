/**
 * Tenant config templates: `templates/<name>.yaml` is a Slicer daemon config
 * (docs/slicer-api.md#the-daemons-yaml-file) plus a `paddock_template:` key describing which host
 * group values a tenant may override and within which bounds. Rendering fills values structurally
 * into the parsed tree (never string substitution), strips `paddock_template`, and checks the
 * result with the daemon's own parser so a bad template fails at tenant create, not at daemon
 * start.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { stringify } from "yaml";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { parseYamlSafe, parseSizeBytes, ConfigReader } from "../shared/yaml-reader.js";
import { MAX_WARM_POOL, parseTenantConfig, type TenantConfig } from "../shared/tenant-config.js";
import { formatIpv4, parseCidr } from "../shared/cidr.js";
import { TENANT_HYPERVISORS, type HostGroupOverrides, type LimitsRecord, type TenantHypervisor } from "./tenant-registry.js";
import type { UidRange } from "../shared/uid-ranges.js";
import { IMAGE_NAME_PATTERN } from "../shared/image-store.js";
import { limitsView, readLimitsSection } from "./tenant-limits.js";
import { readdirOrEmpty } from "../shared/read-dir.js";

/** Upper bounds of what a tenant may override per host group. */
export interface OverrideBounds {
  maxVcpu?: number;
  maxRamBytes?: number;
  maxStorageSizeBytes?: number;
}

/** A loaded template. */
export interface TenantTemplate {
  name: string;
  description: string;
  /** The parsed tree without `paddock_template`. */
  tree: Record<string, unknown>;
  /** Host group names, in order; each gets one network block. */
  hostGroups: string[];
  overridable: Record<string, OverrideBounds>;
  /** `paddock_template.warm_pool`: warm VMs per host group, rendered into `paddock.warm_pool`. */
  warmPool: Record<string, number>;
  /** `paddock_template.limits`: a tenant's limits where its create sets none (over the supervisor's `default_limits`). */
  limits: LimitsRecord;
}

const TEMPLATE_NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;

/**
 * The template names in the operator's templates dir: the `<name>.yaml` files whose name is a
 * valid template name (so `supervisor.example.yaml` is not one), sorted. A missing dir has none.
 * @throws Node's errno error when the dir cannot be read (EACCES, ENOTDIR, …).
 */
export async function listTemplateNames(dir: string): Promise<string[]> {
  return (await readdirOrEmpty(dir))
    .filter((f) => f.endsWith(".yaml") && TEMPLATE_NAME.test(f.slice(0, -".yaml".length)))
    .map((f) => f.slice(0, -".yaml".length))
    .sort();
}

/** ERR_TEMPLATE_NOT_FOUND for `name`, naming the templates `dir` has (what a create may ask for). */
async function templateNotFound(dir: string, name: string, why: string): Promise<PaddockError> {
  const names = await listTemplateNames(dir).catch(() => undefined);
  const have = names === undefined ? "" : names.length === 0 ? "; it holds no templates" : `; templates there: ${names.join(", ")}`;
  return new PaddockError("ERR_TEMPLATE_NOT_FOUND", `template ${JSON.stringify(name)} ${why} ${dir}${have}`);
}

/**
 * Load and check `<dir>/<name>.yaml`.
 * @throws PaddockError `ERR_TEMPLATE_NOT_FOUND` (bad name, missing file; the message lists the
 *   templates `dir` has) or `ERR_CONFIG_INVALID` (bad YAML or `paddock_template` section).
 */
export async function loadTemplate(dir: string, name: string): Promise<TenantTemplate> {
  if (!TEMPLATE_NAME.test(name)) throw await templateNotFound(dir, name, "is not a valid template name in");
  const file = path.join(dir, `${name}.yaml`);
  let text: string;
  try {
    text = await fs.readFile(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") throw await templateNotFound(dir, name, "not found in");
    throw err;
  }
  return parseTemplate(parseYamlSafe(text, file), name, file);
}

/** `paddock:` keys the supervisor renders for each tenant; a template's `paddock:` may set any other. */
export const SUPERVISOR_PADDOCK_KEYS = ["tenant_id", "state_dir", "run_dir", "image_dir", "limits", "deny", "foreign_ranges", "warm_pool", "userns", "host_pids_reserve"] as const;

/** Check a parsed template tree (pure). A `paddock:` section holding a key of {@link SUPERVISOR_PADDOCK_KEYS} is refused. */
export function parseTemplate(tree: unknown, name: string, source: string): TenantTemplate {
  const r = new ConfigReader();
  const root = { ...r.object(tree, "(root)", true) };
  const meta = r.object(root.paddock_template, "paddock_template");
  delete root.paddock_template;
  r.unknownKeys(meta, "paddock_template", ["description", "overridable", "warm_pool", "limits"]);
  const description = r.string(meta.description, "paddock_template.description") ?? "";
  const cfg = r.object(root.config, "config", true);
  const groups = Array.isArray(cfg.host_groups) ? cfg.host_groups : [];
  if (groups.length === 0) r.problem("config.host_groups", "a template needs at least one host group");
  const hostGroups = groups.map((g, i) => r.string(r.object(g, `config.host_groups[${i}]`).name, `config.host_groups[${i}].name`, { required: true }) ?? `?${i}`);
  const overridable: Record<string, OverrideBounds> = {};
  const ov = r.object(meta.overridable, "paddock_template.overridable");
  for (const [group, raw] of Object.entries(ov)) {
    const p = `paddock_template.overridable.${group}`;
    if (!hostGroups.includes(group)) r.problem(p, `no host group ${JSON.stringify(group)} in this template`);
    const b = r.object(raw, p);
    r.unknownKeys(b, p, ["max_vcpu", "max_ram_mb", "max_storage_size"]);
    const maxStorage = r.string(b.max_storage_size, `${p}.max_storage_size`);
    const maxStorageSizeBytes = maxStorage === undefined ? undefined : parseSizeBytes(maxStorage);
    if (maxStorage !== undefined && maxStorageSizeBytes === undefined) r.problem(`${p}.max_storage_size`, `expected a size such as 20G, got ${JSON.stringify(maxStorage)}`);
    const maxRamMb = r.int(b.max_ram_mb, `${p}.max_ram_mb`, { min: 16 });
    overridable[group] = { maxVcpu: r.int(b.max_vcpu, `${p}.max_vcpu`, { min: 1 }), maxRamBytes: maxRamMb === undefined ? undefined : maxRamMb * 2 ** 20, maxStorageSizeBytes };
  }
  const warmPool: Record<string, number> = {};
  for (const [group, n] of Object.entries(r.object(meta.warm_pool, "paddock_template.warm_pool"))) {
    const p = `paddock_template.warm_pool.${group}`;
    if (!hostGroups.includes(group)) r.problem(p, `no host group ${JSON.stringify(group)} in this template`);
    const size = r.int(n, p, { min: 0, max: MAX_WARM_POOL });
    if (size !== undefined) warmPool[group] = size;
  }
  const limits = readLimitsSection(r, meta.limits, "paddock_template.limits", { unknownIsProblem: true });
  // A template may set the tenant's own `paddock:` settings (proxy, expiry, gvisor, …: checked
  // with the rendered config), never what the supervisor renders for each tenant.
  if (root.paddock !== undefined && root.paddock !== null) {
    const own = r.object(root.paddock, "paddock");
    for (const k of Object.keys(own)) if ((SUPERVISOR_PADDOCK_KEYS as readonly string[]).includes(k)) r.problem(`paddock.${k}`, `set by the supervisor for each tenant, not by a template (${k === "warm_pool" ? "use paddock_template.warm_pool" : k === "limits" ? "use paddock_template.limits" : "remove it"})`);
  }
  r.throwIfProblems(source);
  return { name, description, tree: root, hostGroups, overridable, warmPool, limits };
}

/**
 * Validate host group overrides from an admin request against the template's bounds.
 * Accepted input per group: `vcpu` (int), `ram_mb` (int), `storage_size` (e.g. `4G`), and
 * `warm_pool` (int 0–{@link MAX_WARM_POOL}, replacing the template's `warm_pool` of the group;
 * the operator's choice, so not bounded by the template).
 * @throws PaddockError `ERR_TENANT_INVALID` naming each problem.
 */
export function readOverrides(template: TenantTemplate, raw: unknown): HostGroupOverrides {
  const r = new ConfigReader();
  const out: HostGroupOverrides = {};
  for (const [group, v] of Object.entries(r.object(raw, "host_groups"))) {
    const p = `host_groups.${group}`;
    if (!template.hostGroups.includes(group)) {
      r.problem(p, `template ${template.name} has no host group ${JSON.stringify(group)}`);
      continue;
    }
    // A group the template lists under no `overridable` still takes `warm_pool`.
    const bounds = template.overridable[group] ?? {};
    const o = r.object(v, p);
    for (const k of Object.keys(o)) if (!["vcpu", "ram_mb", "storage_size", "warm_pool"].includes(k)) r.problem(`${p}.${k}`, "cannot be overridden (allowed: vcpu, ram_mb, storage_size, warm_pool)");
    const entry: HostGroupOverrides[string] = {};
    if (o.vcpu !== undefined) {
      if (bounds.maxVcpu === undefined) r.problem(`${p}.vcpu`, "not overridable in this template");
      else entry.vcpu = r.int(o.vcpu, `${p}.vcpu`, { min: 1, max: bounds.maxVcpu });
    }
    if (o.ram_mb !== undefined) {
      if (bounds.maxRamBytes === undefined) r.problem(`${p}.ram_mb`, "not overridable in this template");
      else {
        const mb = r.int(o.ram_mb, `${p}.ram_mb`, { min: 64, max: bounds.maxRamBytes / 2 ** 20 });
        if (mb !== undefined) entry.ramBytes = mb * 2 ** 20;
      }
    }
    if (o.storage_size !== undefined) {
      const s = typeof o.storage_size === "string" ? parseSizeBytes(o.storage_size) : undefined;
      if (bounds.maxStorageSizeBytes === undefined) r.problem(`${p}.storage_size`, "not overridable in this template");
      else if (s === undefined || s < 64 * 2 ** 20 || s > bounds.maxStorageSizeBytes) r.problem(`${p}.storage_size`, `expected a size between 64M and ${bounds.maxStorageSizeBytes / 2 ** 20}M such as "4G"`);
      else entry.storageSizeBytes = s;
    }
    if (o.warm_pool !== undefined) entry.warmPool = r.int(o.warm_pool, `${p}.warm_pool`, { min: 0, max: MAX_WARM_POOL });
    for (const k of Object.keys(entry) as Array<keyof typeof entry>) if (entry[k] === undefined) delete entry[k];
    out[group] = entry;
  }
  if (r.problems.length > 0) {
    throw new PaddockError("ERR_TENANT_INVALID", r.problems.map((p) => `${p.path}: ${p.message}`).join("; "), { details: { problems: r.problems } });
  }
  return out;
}


/**
 * Validate the optional `image` of a tenant create request: a name in the image store that
 * replaces the template's `config.image` (e.g. an image built with
 * `paddock image build debian-12-dev --packages gcc,python3`). Pure: existence is checked by
 * the caller.
 * @returns the name, or undefined when absent.
 * @throws PaddockError `ERR_TENANT_INVALID` for a non-string or a name outside `[a-z0-9][a-z0-9._-]{0,62}`.
 */
export function readImageOverride(raw: unknown): string | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || !IMAGE_NAME_PATTERN.test(raw)) {
    throw new PaddockError("ERR_TENANT_INVALID", `image: expected the name of a local image ([a-z0-9][a-z0-9._-]*, see paddock image list), got ${JSON.stringify(raw)}`);
  }
  return raw;
}

/**
 * The runtime a template's VMs run on (`config.hypervisor`, checked by {@link parseTemplate}
 * through the daemon's parser at render), when it is one a tenant can be created on.
 * @returns `oci` or `gvisor`; undefined for anything else (e.g. `firecracker`, refused at render).
 */
export function templateHypervisor(template: TenantTemplate): TenantHypervisor | undefined {
  const cfg = template.tree.config as Record<string, unknown> | undefined;
  return TENANT_HYPERVISORS.find((h) => h === cfg?.hypervisor);
}

/** Everything a rendering needs. */
export interface RenderInput {
  tenantId: string;
  socketPath: string;
  stateDir: string;
  runDir: string;
  imageDir: string;
  /** One block per host group, by name. */
  blocks: Record<string, string>;
  limits: LimitsRecord;
  overrides: HostGroupOverrides;
  /** Replaces the template's `config.image` when set (see readImageOverride). */
  image?: string;
  /** Replaces the template's `config.hypervisor` when set (the tenant's runtime, fixed at create). */
  hypervisor?: TenantHypervisor;
  deny: readonly string[];
  foreignRanges: readonly string[];
  /** The tenant's host uid/gid range, rendered as `paddock.userns` (absent: the daemon claims one). */
  userns?: UidRange;
  /** The supervisor's `host_pids_reserve`, rendered as `paddock.host_pids_reserve`. */
  hostPidsReserve?: number;
}

/**
 * Render a template into the tenant's config text (pure) and check it with the daemon's
 * parser.
 * @returns `{ text, config }` — the YAML to write and its parsed form.
 * @throws PaddockError `ERR_CONFIG_INVALID` when the result is not a valid tenant config.
 */
export function renderTenantConfig(template: TenantTemplate, input: RenderInput): { text: string; config: TenantConfig } {
  const tree = structuredClone(template.tree);
  const cfg = tree.config as Record<string, unknown>;
  const groups = cfg.host_groups as Array<Record<string, unknown>>;
  for (const g of groups) {
    const name = g.name as string;
    const block = input.blocks[name];
    if (block === undefined) throw new PaddockError("ERR_INTERNAL", `no network block for host group ${name}`);
    const net = (typeof g.network === "object" && g.network !== null ? g.network : {}) as Record<string, unknown>;
    if (net.mode === "isolated") net.range = block;
    else {
      // Bridge mode: the block's first host address is the bridge's gateway.
      const c = parseCidr(block);
      net.gateway = `${formatIpv4(c.base + 1)}/${c.prefix}`;
      delete net.range;
      delete net.addresses;
    }
    g.network = net;
    const o = input.overrides[name];
    if (o?.vcpu !== undefined) g.vcpu = o.vcpu;
    if (o?.ramBytes !== undefined) {
      delete g.ram_gb;
      delete g.ram_mb;
      g.ram_bytes = o.ramBytes;
    }
    if (o?.storageSizeBytes !== undefined) g.storage_size = `${Math.floor(o.storageSizeBytes / 2 ** 20)}M`;
  }
  if (input.image !== undefined) cfg.image = input.image;
  if (input.hypervisor !== undefined) cfg.hypervisor = input.hypervisor;
  cfg.api = { bind_address: input.socketPath, auth: { enabled: false } };
  const limits = limitsView(input.limits);
  const warmPool: Record<string, number> = { ...template.warmPool };
  for (const [group, o] of Object.entries(input.overrides)) if (o.warmPool !== undefined) warmPool[group] = o.warmPool;
  const own = typeof tree.paddock === "object" && tree.paddock !== null ? (tree.paddock as Record<string, unknown>) : {};
  tree.paddock = {
    ...own,
    tenant_id: input.tenantId,
    state_dir: input.stateDir,
    run_dir: input.runDir,
    image_dir: input.imageDir,
    limits,
    deny: [...input.deny],
    foreign_ranges: [...input.foreignRanges],
    ...(Object.keys(warmPool).length > 0 ? { warm_pool: warmPool } : {}),
    ...(input.userns !== undefined ? { userns: { uid_start: input.userns.uidStart, size: input.userns.size } } : {}),
    ...(input.hostPidsReserve !== undefined ? { host_pids_reserve: input.hostPidsReserve } : {}),
  };
  const text = `# Rendered by the Paddock supervisor from template "${template.name}" for tenant ${input.tenantId}.\n# Do not edit: it is re-rendered on tenant changes.\n` + stringify(tree, { lineWidth: 0 });
  const config = parseTenantConfig(parseYamlSafe(text, `tenant ${input.tenantId} config`), `tenant ${input.tenantId} config`, { baseDir: input.stateDir, env: {} });
  return { text, config };
}
