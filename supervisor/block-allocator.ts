/**
 * Network block allocation for tenants: a pool (default 169.254.0.0/16) cut into equal blocks
 * (default /22, the Slicer isolated range size, docs/slicer-api.md#isolated-addressing). Pure
 * functions over the set of blocks in use; the registry holds that set.
 */
import { PaddockError } from "../shared/errors.js";
import { cidrContains, cidrLast, cidrOverlaps, cidrSize, formatCidr, parseCidr, parseIpv4, type Cidr } from "../shared/cidr.js";

/**
 * Addresses whose block is never handed out: 169.254.169.254 is the cloud metadata
 * service (AWS/GCP/Azure/OpenStack), so a tenant range holding it would shadow or reach it.
 */
export const RESERVED_ADDRESSES: readonly string[] = ["169.254.169.254"];

/** Input of {@link allocateBlocks}. */
export interface AllocationRequest {
  pool: Cidr;
  /** Prefix length of each block (≥ the pool's prefix). */
  blockPrefix: number;
  /** Blocks already in use (any tenant); overlapping candidates are skipped. */
  used: readonly string[];
  /** How many blocks are wanted. */
  count: number;
  /** Addresses whose block is skipped (default {@link RESERVED_ADDRESSES}). */
  reserved?: readonly string[];
}

/**
 * First-fit allocation of `count` blocks of the pool, lowest address first, so a freed
 * block is the first to be reused.
 * @returns the blocks as CIDR strings, e.g. `["169.254.0.0/22"]`.
 * @throws PaddockError `ERR_NETWORK_EXHAUSTED` when the pool has fewer free blocks.
 */
export function allocateBlocks(req: AllocationRequest): string[] {
  if (req.blockPrefix < req.pool.prefix || req.blockPrefix > 30) {
    throw new PaddockError("ERR_CONFIG_INVALID", `block prefix /${req.blockPrefix} does not fit pool ${formatCidr(req.pool)}`);
  }
  const used = req.used.map((u) => parseCidr(u));
  const reserved = (req.reserved ?? RESERVED_ADDRESSES).map((a) => parseIpv4(a)).filter((a): a is number => a !== undefined);
  const step = 2 ** (32 - req.blockPrefix);
  const total = cidrSize(req.pool) / step;
  const out: Cidr[] = [];
  for (let i = 0; i < total && out.length < req.count; i++) {
    const cand: Cidr = { base: (req.pool.base + i * step) >>> 0, prefix: req.blockPrefix };
    if (reserved.some((a) => cidrContains(cand, a))) continue;
    if (used.some((u) => cidrOverlaps(u, cand)) || out.some((u) => cidrOverlaps(u, cand))) continue;
    out.push(cand);
  }
  if (out.length < req.count) {
    throw new PaddockError("ERR_NETWORK_EXHAUSTED", `network pool ${formatCidr(req.pool)} has no ${req.count} free /${req.blockPrefix} block(s) left`);
  }
  return out.map(formatCidr);
}

/**
 * The pool minus `own`, as the fewest CIDRs covering exactly the rest (used as the
 * tenant's `foreign_ranges`: every other tenant's block, present or future, lies in it, so
 * a daemon's config does not need re-rendering when another tenant is added).
 */
export function poolComplement(pool: Cidr, own: readonly string[]): string[] {
  const owned = own.map((o) => parseCidr(o));
  const out: string[] = [];
  const walk = (c: Cidr): void => {
    if (!owned.some((o) => cidrOverlaps(o, c))) {
      out.push(formatCidr(c));
      return;
    }
    if (owned.some((o) => o.prefix <= c.prefix && cidrContains(o, c.base) && cidrContains(o, cidrLast(c)))) return;
    const half = 2 ** (32 - c.prefix - 1);
    walk({ base: c.base, prefix: c.prefix + 1 });
    walk({ base: (c.base + half) >>> 0, prefix: c.prefix + 1 });
  };
  walk(pool);
  return out;
}
