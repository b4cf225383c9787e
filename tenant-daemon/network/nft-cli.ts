/**
 * Reads of the host's nftables state whose cost does not grow with the rules of other tables.
 *
 * nft 1.0.x fetches its cache per command: `nft list tables` (and `list ruleset`) fetch and
 * decode every rule of every table, so with 200 tenant tables (about 60 rules each) one
 * `nft list tables inet` costs ~10 s of CPU, while `nft list sets inet` fetches tables, sets and
 * set elements only (~1 s; measured in the figure-13 work, see scripts/bench/figures/density.ts).
 * Each daemon start read every other tenant's `own_ranges` set: one `list tables` plus one
 * `list set` per table, O(tenants) processes per start and O(tenants²) over a host's start.
 * {@link listSetCidrs} reads every table's set of that name in one call.
 * nft cache rules: https://git.netfilter.org/nftables/tree/src/cache.c (evaluate_cache_list).
 */
import { run } from "../../shared/exec.js";
import { parseCidr, type Cidr } from "../../shared/cidr.js";

/** Timeout of one read; a read is retried once after a timeout (the host may be loaded). */
const NFT_READ_TIMEOUT_MS = 60_000;

/**
 * The elements of every `inet` table's `ipv4_addr` interval set named `set`, by table name,
 * from one `nft -j list sets inet`. Tables without such a set are absent. A range element
 * `a-b` contributes its two ends as /32s (our own tables only ever hold prefixes); elements
 * that do not parse are skipped.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED when nft fails twice, or ERR_EXEC_TIMEOUT when
 *   it times out twice.
 */
export async function listSetCidrs(set: string): Promise<Map<string, Cidr[]>> {
  const argv = ["-j", "list", "sets", "inet"];
  const opts = { timeoutMs: NFT_READ_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" as const };
  const r = await run("nft", argv, opts).catch(() => run("nft", argv, opts));
  return parseSetCidrs(r.stdout, set);
}

/** {@link listSetCidrs} on the JSON text of `nft -j list sets` (pure). */
export function parseSetCidrs(json: string, set: string): Map<string, Cidr[]> {
  const doc = JSON.parse(json.trim() || "{}") as { nftables?: Record<string, unknown>[] };
  const out = new Map<string, Cidr[]>();
  for (const e of doc.nftables ?? []) {
    const s = e.set as { family?: unknown; name?: unknown; table?: unknown; elem?: unknown[] } | undefined;
    if (s?.family !== "inet" || s.name !== set || typeof s.table !== "string") continue;
    const cidrs: Cidr[] = [];
    for (const el of s.elem ?? []) {
      try {
        if (typeof el === "string") cidrs.push(parseCidr(el));
        else if (typeof el === "object" && el !== null && "prefix" in el) {
          const p = (el as { prefix: { addr: string; len: number } }).prefix;
          cidrs.push(parseCidr(`${p.addr}/${p.len}`));
        } else if (typeof el === "object" && el !== null && "range" in el) {
          const [a, b] = (el as { range: [string, string] }).range;
          cidrs.push(parseCidr(a), parseCidr(b));
        }
      } catch {
        // an element we cannot read is not a range of ours to compare against
      }
    }
    out.set(s.table, cidrs);
  }
  return out;
}
