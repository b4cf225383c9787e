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
 * How many blocks of `/blockPrefix` the pool holds for tenants: all of them minus those holding a
 * reserved address. The default pool, 169.254.0.0/16 in /22 blocks, holds 63 (one host group
 * each, so 63 tenants of the sandbox template); in /24 blocks (64 isolated VMs per host group)
 * it holds 255.
 */
export function poolCapacity(pool: Cidr, blockPrefix: number, reserved: readonly string[] = RESERVED_ADDRESSES): number {
  if (blockPrefix < pool.prefix || blockPrefix > 30) return 0;
  const step = 2 ** (32 - blockPrefix);
  return cidrSize(pool) / step - reservedBlocks(pool, step, reserved).size;
}

/** Indexes (from the pool's base, blocks of `step` addresses) of the pool's blocks holding a reserved address. Pure. */
function reservedBlocks(pool: Cidr, step: number, reserved: readonly string[]): Set<number> {
  return new Set(reserved.map((a) => parseIpv4(a)).filter((a): a is number => a !== undefined && cidrContains(pool, a)).map((a) => Math.floor((a - pool.base) / step)));
}

/** How the tenants' blocks sit in the pool ({@link poolUsage}). */
export interface PoolUsage {
  /**
   * Blocks of the pool (of `/blockPrefix`, those holding a reserved address aside) that some
   * tenant's block overlaps: {@link poolCapacity} minus this many are free for creates.
   */
  inUse: number;
  /**
   * Ids of the tenants holding a block that does not lie wholly inside the pool (the pool moved
   * since their create), in the order given.
   */
  outside: string[];
}

/**
 * Count the pool's blocks the tenants take, and name the tenants whose blocks lie (partly)
 * outside it. Pure.
 * @param tenants - each tenant's id and blocks as CIDR strings (`169.254.0.0/22`).
 * @returns {@link PoolUsage}; a block outside the pool counts in no `inUse`, a block that is no
 *   CIDR puts its tenant in `outside` (nothing thrown: the start logs this).
 */
export function poolUsage(pool: Cidr, blockPrefix: number, tenants: readonly { id: string; blocks: readonly string[] }[], reserved: readonly string[] = RESERVED_ADDRESSES): PoolUsage {
  if (blockPrefix < pool.prefix || blockPrefix > 30) return { inUse: 0, outside: tenants.filter((t) => t.blocks.length > 0).map((t) => t.id) };
  const step = 2 ** (32 - blockPrefix);
  const poolLast = cidrLast(pool);
  const skip = reservedBlocks(pool, step, reserved);
  const taken = new Set<number>();
  const outside: string[] = [];
  for (const t of tenants) {
    let out = false;
    for (const text of t.blocks) {
      let b: Cidr;
      try {
        b = parseCidr(text);
      } catch {
        out = true;
        continue;
      }
      const last = cidrLast(b);
      if (!(cidrContains(pool, b.base) && cidrContains(pool, last))) out = true;
      if (!cidrOverlaps(pool, b)) continue;
      const first = Math.floor((Math.max(b.base, pool.base) - pool.base) / step);
      const end = Math.floor((Math.min(last, poolLast) - pool.base) / step);
      for (let i = first; i <= end; i++) if (!skip.has(i)) taken.add(i);
    }
    if (out) outside.push(t.id);
  }
  return { inUse: taken.size, outside };
}

/**
 * First-fit allocation of `count` blocks of the pool, lowest address first, so a freed
 * block is the first to be reused.
 * @returns the blocks as CIDR strings, e.g. `["169.254.0.0/22"]`.
 * @throws PaddockError `ERR_NETWORK_EXHAUSTED` (409) when the pool has fewer free blocks; the
 *   message names the pool's capacity and the fix, `details` holds `capacity` and `free`.
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
    const capacity = poolCapacity(req.pool, req.blockPrefix, req.reserved);
    const wider = Math.min(30, req.blockPrefix + 2);
    throw new PaddockError(
      "ERR_NETWORK_EXHAUSTED",
      `network pool ${formatCidr(req.pool)} has ${out.length} free /${req.blockPrefix} block(s), ${req.count} wanted: it holds ${capacity} tenant blocks in all. ` +
        `Free blocks by deleting tenants, or give the supervisor's network.pool a larger range or network.block_prefix a longer prefix ` +
        `(a /${wider} holds ${2 ** (30 - wider)} isolated VMs per host group; the pool would hold ${poolCapacity(req.pool, wider, req.reserved)})`,
      { details: { capacity, free: out.length, wanted: req.count } },
    );
  }
  return out.map(formatCidr);
}

/**
 * A tenant's `foreign_ranges`: {@link poolComplement} of its own blocks, plus every other
 * tenant's block that does not lie wholly inside the pool (one handed out before
 * `network.pool` moved) and does not overlap this tenant's own. Traffic between tenants of the
 * old and of the new pool is then dropped by the table of whichever was rendered since the move,
 * whatever order their daemons start in (a daemon also adds the tables it finds running at its
 * start, tenant-daemon/network/tenant-ranges.ts, but two starting together see neither).
 * Pure; a block that is no CIDR is skipped.
 * @param others - the other tenants' blocks, `a.b.c.d/n`.
 * @returns CIDR strings, the complement first.
 */
export function tenantForeignRanges(pool: Cidr, own: readonly string[], others: readonly string[]): string[] {
  const owned = own.map((o) => parseCidr(o));
  const outside: string[] = [];
  for (const text of others) {
    let b: Cidr;
    try {
      b = parseCidr(text);
    } catch {
      continue;
    }
    if (cidrContains(pool, b.base) && cidrContains(pool, cidrLast(b))) continue;
    if (owned.some((o) => cidrOverlaps(o, b))) continue;
    outside.push(formatCidr(b));
  }
  return [...poolComplement(pool, own), ...[...new Set(outside)].sort()];
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
