/**
 * Tenant limits as the supervisor handles them: one set of keys (`max_vms`, `max_vcpu`,
 * `max_ram_bytes`, `max_disk_bytes`, `max_pids`, `max_conns`, `max_conns_per_vm`) read from the
 * supervisor config's `default_limits`, a template's `paddock_template.limits` and admin
 * requests, and layered request > template > supervisor default, so every tenant has all seven.
 * The daemon enforces the counts at VM create (tenant-daemon/vm/vm-table.ts), the budget in the
 * kernel (tenant-daemon/runtime/tenant-cgroup.ts) and the conntrack bounds in nftables
 * (tenant-daemon/network/conn-limits.ts).
 */
import { MIN_PIDS_BUDGET } from "../shared/host-pids.js";
import { CONNS_BOUNDS, DEFAULT_MAX_CONNS, DEFAULT_MAX_CONNS_PER_VM } from "../shared/tenant-config-paddock.js";
import type { ConfigReader } from "../shared/yaml-reader.js";
import type { LimitsRecord } from "./tenant-registry.js";

/** Wire key ↔ record field of every limit. */
export const LIMIT_KEYS: ReadonlyArray<readonly [string, keyof LimitsRecord]> = [
  ["max_vms", "maxVms"], ["max_vcpu", "maxVcpu"], ["max_ram_bytes", "maxRamBytes"], ["max_disk_bytes", "maxDiskBytes"], ["max_pids", "maxPids"],
  ["max_conns", "maxConns"], ["max_conns_per_vm", "maxConnsPerVm"],
];

/**
 * Defaults when neither the supervisor config nor the template sets a limit: sized so that a
 * 2-core, 24 GiB host carries a few tenants each at its limits (4 × 4 GiB RAM, 4 × 2048 pids of
 * the 24 576 a default pid_max of 32 768 leaves after the host reserve); the conntrack bounds are the
 * daemon's own defaults (shared/tenant-config-paddock.ts: 63 tenants × 3072 entries fit the
 * default nf_conntrack_max of 262 144 with a quarter left).
 */
export const DEFAULT_TENANT_LIMITS: Readonly<Required<LimitsRecord>> = Object.freeze({
  maxVms: 4,
  maxVcpu: 8,
  maxRamBytes: 4 * 2 ** 30,
  maxDiskBytes: 16 * 2 ** 30,
  maxPids: 2048,
  maxConns: DEFAULT_MAX_CONNS,
  maxConnsPerVm: DEFAULT_MAX_CONNS_PER_VM,
});

/** Bounds of one limit value (max_pids needs a few processes for the runtime and the agent; a VM a few connections for DNS). */
function bounds(field: keyof LimitsRecord): { min: number; max?: number } {
  if (field === "maxConns" || field === "maxConnsPerVm") return CONNS_BOUNDS;
  return field === "maxPids" ? { min: MIN_PIDS_BUDGET, max: 4_194_304 } : { min: 0 };
}

/** Limits as read from a request: a value, or `null` (reset to the default) where allowed. */
export type LimitsPatch = { [K in keyof LimitsRecord]?: number | null };

/**
 * Read a limits mapping at YAML/JSON path `p` into a partial record, reporting unknown keys
 * (problems with `unknownIsProblem`, else warnings) and bad values to `r`. With `allowNull`, a
 * `null` value is kept as `null` (the caller resets that limit to its default).
 */
export function readLimitsSection(r: ConfigReader, raw: unknown, p: string, opts?: { allowNull?: false; unknownIsProblem?: boolean }): LimitsRecord;
export function readLimitsSection(r: ConfigReader, raw: unknown, p: string, opts: { allowNull: true; unknownIsProblem?: boolean }): LimitsPatch;
export function readLimitsSection(r: ConfigReader, raw: unknown, p: string, opts: { allowNull?: boolean; unknownIsProblem?: boolean } = {}): LimitsPatch {
  const obj = r.object(raw, p);
  const known = LIMIT_KEYS.map(([k]) => k);
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      if (opts.unknownIsProblem) r.problem(`${p}.${k}`, `unknown limit (known: ${known.join(", ")})`);
      else r.warn(`${p}.${k}`, `unknown limit (known: ${known.join(", ")})`);
    }
  }
  const out: LimitsPatch = {};
  for (const [wire, field] of LIMIT_KEYS) {
    if (!(wire in obj)) continue;
    if (obj[wire] === null && opts.allowNull) out[field] = null;
    else {
      const v = r.int(obj[wire], `${p}.${wire}`, bounds(field));
      if (v !== undefined) out[field] = v;
    }
  }
  return out;
}

/**
 * Layer limits (pure): the first layer that sets a limit wins.
 * @returns a record with all seven limits.
 */
export function layerLimits(...layers: ReadonlyArray<LimitsRecord | undefined>): Required<LimitsRecord> {
  const out = { ...DEFAULT_TENANT_LIMITS };
  for (const [, field] of LIMIT_KEYS) {
    const v = layers.find((l) => l?.[field] !== undefined)?.[field];
    if (v !== undefined) out[field] = v;
  }
  return out;
}

/** The wire form (`{max_vms, …}`) of the limits that are set. */
export function limitsView(l: LimitsRecord): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [wire, field] of LIMIT_KEYS) if (l[field] !== undefined) out[wire] = l[field];
  return out;
}
