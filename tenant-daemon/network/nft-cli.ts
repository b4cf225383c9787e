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

/**
 * glibc malloc tunable given to every nft process: allocations up to 4 MiB come from the heap
 * instead of their own mmap. nft 1.0.6 builds its cache from every table on the host and, per
 * set, makes allocations above glibc's default (dynamic, from 128 KiB) mmap threshold, each
 * mmap'd and munmap'd again: with 812 sets `strace -c` counted ~800 munmap calls, 76% of nft's
 * syscall time, and its kernel time fell by two thirds with the tunable. Measured on a scratch
 * netns holding 200 copies of a tenant's table (4 sets each): `nft -j list sets inet`
 * 0.25+0.74 s → 0.24+0.25 s user+sys, `nft -f` of one tenant's table 0.25+0.68 s → 0.24+0.23 s,
 * same peak RSS (113 MiB) (docs/performance.md, "Daemon start, fourth look"). The tunable:
 * https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html (glibc caps
 * it at 32 MiB on 64-bit).
 */
export const NFT_MALLOC_TUNABLE = "glibc.malloc.mmap_threshold=4194304";

/**
 * The extra environment of an nft process: `GLIBC_TUNABLES` with {@link NFT_MALLOC_TUNABLE}
 * appended to the daemon's own tunables, if any, whose mmap threshold it replaces (pure).
 * @param inherited - the daemon's `GLIBC_TUNABLES` (default: from its environment).
 */
export function nftEnv(inherited: string | undefined = process.env.GLIBC_TUNABLES): Record<string, string> {
  const own = (inherited ?? "").split(":").filter((t) => t !== "" && !t.startsWith("glibc.malloc.mmap_threshold="));
  return { GLIBC_TUNABLES: [...own, NFT_MALLOC_TUNABLE].join(":") };
}

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
  const opts = { timeoutMs: NFT_READ_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" as const, env: nftEnv() };
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
