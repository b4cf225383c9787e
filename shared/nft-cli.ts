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
import { promises as fs } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { run, type RunOptions } from "./exec.js";
import { parseCidr, type Cidr } from "./cidr.js";

/**
 * glibc malloc tunable given to every nft process: allocations up to 4 MiB come from the heap
 * instead of their own mmap. nft 1.0.6 builds its cache from every table on the host and, per
 * table, makes four 128 KiB allocations (src/rule.c `table_alloc`: 8192-bucket hash tables), just
 * above glibc's default mmap threshold, each mmap'd and munmap'd again: with 203 tables (812 sets)
 * `strace -c` counted ~800 munmap calls, 76% of nft's
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
  return parseSetCidrs(await readStdoutViaFile(argv, opts), set);
}

/**
 * Name of the empty chain a tenant's table carries when its `own_ranges` set is also written as
 * chain names ({@link OWN_RANGE_CHAIN_PREFIX}); nft-ruleset.ts renders both in the same
 * transaction from the same list. Chain names, because nft 1.0.6 lists chains, and sets
 * without their elements (`-t`), for about the price of its table cache alone, while the set's
 * elements come only with every set's elements of every table: each tenant's `foreign_ranges`
 * holds every other tenant's range, so that is
 * quadratic in the tenants (200 tables: ~0.1 s of CPU for `-t -j list sets inet; list chains
 * inet` against ~0.47 s for `-j list sets inet`, 2 MB of JSON; docs/performance.md, "nftables
 * at density").
 */
export const OWN_RANGES_INDEX_CHAIN = "own_ranges_index";

/** Prefix of the empty chains naming a table's own ranges, one per range: `own_range_198.18.0.0/22`. */
export const OWN_RANGE_CHAIN_PREFIX = "own_range_";

/**
 * The `nft` argv of {@link listOwnRanges}: both listings in one process, so one cache fill
 * (tables, sets, chains) serves them; `-t` (terse) leaves out every set's elements.
 */
const OWN_RANGES_ARGV = ["-t", "-j", "list sets inet; list chains inet"];

/**
 * Every `inet` table's own ranges, by table name, for the tables named `tablePrefix…` that hold
 * an `own_ranges` set (the tables {@link listSetCidrs}`("own_ranges")` reports): from one
 * `nft -t -j 'list sets inet; list chains inet'` when each of them carries
 * {@link OWN_RANGES_INDEX_CHAIN} ({@link parseOwnRangeIndex}); else (a table written by an older
 * Paddock, or by hand) from {@link listSetCidrs}, which reads every table's set elements.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED when nft fails twice, or ERR_EXEC_TIMEOUT when
 *   it times out twice.
 */
export async function listOwnRanges(tablePrefix: string): Promise<Map<string, Cidr[]>> {
  return (await listOwnRangesAndChains(tablePrefix)).ranges;
}

/**
 * {@link listOwnRanges}, and from the same nft run the chain names of every `inet` table named
 * `tablePrefix…` (any table, with or without `own_ranges`), by table, in listing order.
 * @throws as {@link listOwnRanges}.
 */
export async function listOwnRangesAndChains(tablePrefix: string): Promise<{ ranges: Map<string, Cidr[]>; chains: Map<string, string[]> }> {
  const opts = { timeoutMs: NFT_READ_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" as const, env: nftEnv() };
  const entries = parseListing(await readStdoutViaFile(OWN_RANGES_ARGV, opts));
  const chains = entries === undefined ? new Map<string, string[]>() : chainNamesOf(entries, tablePrefix);
  const indexed = entries === undefined ? undefined : ownRangeIndexOf(entries, tablePrefix);
  if (indexed !== undefined) return { ranges: indexed, chains };
  const all = await listSetCidrs("own_ranges");
  return { ranges: new Map([...all].filter(([t]) => t.startsWith(tablePrefix))), chains };
}

/** An entry of an `nft -j` listing that this file reads (set or chain), with the fields used. */
type ListedEntry = { set?: { family?: unknown; table?: unknown; name?: unknown }; chain?: { family?: unknown; table?: unknown; name?: unknown } };

/**
 * The entries of an `nft -j` listing: one `{"nftables": [...]}` document per line (nft prints
 * one per command), concatenated (pure). @returns undefined when a line is not JSON.
 */
function parseListing(text: string): ListedEntry[] | undefined {
  try {
    return text.split("\n").filter((l) => l.trim() !== "").flatMap((l) => (JSON.parse(l) as { nftables?: ListedEntry[] }).nftables ?? []);
  } catch {
    return undefined;
  }
}

/** Whether a listed set or chain is of an `inet` table named `tablePrefix…`, with string names. */
function inPrefixedTable(o: ListedEntry["set"], tablePrefix: string): o is { family: "inet"; table: string; name: string } {
  return o?.family === "inet" && typeof o.table === "string" && typeof o.name === "string" && o.table.startsWith(tablePrefix);
}

/**
 * The chain names of every `inet` table named `tablePrefix…` in an `nft -j` listing (pure; read
 * as {@link parseOwnRangeIndex} reads it), by table, in listing order. Text that is not such
 * JSON gives an empty map.
 */
export function parseChainNames(text: string, tablePrefix: string): Map<string, string[]> {
  const entries = parseListing(text);
  return entries === undefined ? new Map() : chainNamesOf(entries, tablePrefix);
}

function chainNamesOf(entries: readonly ListedEntry[], tablePrefix: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const { chain: c } of entries) {
    if (!inPrefixedTable(c, tablePrefix)) continue;
    const names = out.get(c.table) ?? [];
    names.push(c.name);
    out.set(c.table, names);
  }
  return out;
}

/**
 * {@link listOwnRanges} on the output of its nft run (pure): one `{"nftables": [...]}` document
 * per line (nft prints one per command). Every `inet` table named `tablePrefix…` with a set
 * `own_ranges` maps to the CIDRs after {@link OWN_RANGE_CHAIN_PREFIX} in its chains' names, in
 * listing order (a name whose rest is not a CIDR is skipped).
 * @returns undefined when such a table has no {@link OWN_RANGES_INDEX_CHAIN} chain (its ranges
 *   are only in its set), or when the text is not JSON documents of that shape.
 */
export function parseOwnRangeIndex(text: string, tablePrefix: string): Map<string, Cidr[]> | undefined {
  const entries = parseListing(text);
  return entries === undefined ? undefined : ownRangeIndexOf(entries, tablePrefix);
}

function ownRangeIndexOf(entries: readonly ListedEntry[], tablePrefix: string): Map<string, Cidr[]> | undefined {
  const ours = (o: ListedEntry["set"]): o is { family: "inet"; table: string; name: string } => inPrefixedTable(o, tablePrefix);
  const out = new Map<string, Cidr[]>();
  for (const e of entries) if (ours(e.set) && e.set.name === "own_ranges") out.set(e.set.table, []);
  const indexed = new Set<string>();
  for (const e of entries) {
    const c = e.chain;
    if (!ours(c)) continue;
    const cidrs = out.get(c.table);
    if (cidrs === undefined) continue;
    if (c.name === OWN_RANGES_INDEX_CHAIN) indexed.add(c.table);
    else if (c.name.startsWith(OWN_RANGE_CHAIN_PREFIX)) {
      try {
        cidrs.push(parseCidr(c.name.slice(OWN_RANGE_CHAIN_PREFIX.length)));
      } catch {
        // not a range of ours to compare against
      }
    }
  }
  for (const t of out.keys()) if (!indexed.has(t)) return undefined;
  return out;
}

/**
 * The stdout of one `nft` read, retried once like a piped read, written by nft into an unlinked
 * file (made in a fresh 0700 directory under the OS temp dir, removed at once) and read back in
 * one piece. Why not a pipe: `nft -j list sets inet` prints every set of every table, and each
 * tenant's `foreign_ranges` holds every other tenant's range, so the listing grows with the
 * square of the tenants (200 tenants: ~2 MB). A pipe delivers it in 64 KiB chunks, each its own
 * allocation on the daemon's C heap that glibc may keep after it is freed; one read of the
 * file's size is one allocation above glibc's mmap threshold, unmapped when freed. With
 * {@link parseSetCidrs} reading only the entries it needs, an idle daemon on such a host held
 * 15.7 MiB private memory instead of 16.8 through a pipe and 21.0 before both (docs/performance.md,
 * "Daemon start, fifth look"). When no such file can be made, the read goes through a pipe.
 * @throws PaddockError `opts.errorCode` when nft fails twice, or ERR_EXEC_TIMEOUT.
 */
async function readStdoutViaFile(argv: readonly string[], opts: RunOptions): Promise<string> {
  let out: FileHandle;
  try {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "paddock-nft-"));
    try {
      // Append mode: after a truncate, the retry writes from the start again.
      out = await fs.open(path.join(dir, "stdout"), "ax+", 0o600);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  } catch {
    return (await run("nft", argv, opts).catch(() => run("nft", argv, opts))).stdout;
  }
  const file = out;
  const once = async (): Promise<string> => {
    await file.truncate(0);
    await run("nft", argv, { ...opts, stdout: file.fd });
    const { size } = await file.stat();
    const buf = Buffer.alloc(size);
    const { bytesRead } = await file.read(buf, 0, size, 0);
    return buf.toString("utf8", 0, bytesRead);
  };
  try {
    return await once().catch(() => once());
  } finally {
    await file.close();
  }
}

/**
 * {@link listSetCidrs} on the JSON text of `nft -j list sets` (pure). Only the entries that can
 * be the set asked for are turned into objects ({@link namedSetEntries}); the result is that of
 * parsing the whole document.
 * @throws SyntaxError when the text is not JSON (as `JSON.parse`).
 */
export function parseSetCidrs(json: string, set: string): Map<string, Cidr[]> {
  const entries = namedSetEntries(json, set) ?? ((JSON.parse(json.trim() || "{}") as { nftables?: Record<string, unknown>[] }).nftables ?? []);
  const out = new Map<string, Cidr[]>();
  for (const e of entries) {
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

/**
 * The entries of an `nft -j` listing (`{"nftables": [entry, ...]}`) that are a set object whose
 * text names `set` (`{"set": {..., "name": "<set>", ...}}`), each parsed on its own; the other
 * entries are stepped over as text and never become objects. `nft -j list sets inet` on a host
 * with 200 tenants is ~2 MB, nearly all of it the `foreign_ranges` elements of every table
 * (each tenant's holds every other tenant's range); parsed whole it left several MiB of
 * short-lived objects in the daemon's heap at start (docs/performance.md, "Daemon start, fifth
 * look"). A string in JSON escapes its quotes, so a set key or name cannot be faked by text
 * inside a string; an entry matched by mistake is parsed and dropped by the caller's checks.
 * @returns the parsed entries, or undefined when the text is not of that shape (the caller then
 *   parses it whole, with `JSON.parse`'s errors).
 */
function namedSetEntries(json: string, set: string): Record<string, unknown>[] | undefined {
  const text = json.trim();
  const head = /^\{\s*"nftables"\s*:\s*\[\s*/.exec(text);
  if (head === null) return undefined;
  const isSet = /^\{\s*"set"\s*:\s*\{/;
  const named = new RegExp(`"name"\\s*:\\s*${JSON.stringify(set).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`);
  const out: Record<string, unknown>[] = [];
  let i = head[0].length;
  if (text[i] === "]") return /^\]\s*\}$/.test(text.slice(i)) ? out : undefined;
  for (;;) {
    if (text[i] !== "{") return undefined;
    const end = objectEnd(text, i);
    if (end === -1) return undefined;
    const entry = text.slice(i, end);
    if (isSet.test(entry) && named.test(entry)) out.push(JSON.parse(entry) as Record<string, unknown>);
    const sep = /^\s*(,|\]\s*\}$)\s*/.exec(text.slice(end, end + 64));
    if (sep === null) return undefined;
    if (sep[1] !== ",") return end + sep[0].length === text.length ? out : undefined;
    i = end + sep[0].length;
  }
}

/**
 * Index just past the `}` that closes the JSON object opening at `text[start]` (`{`), skipping
 * strings (with their escapes) and nested objects and arrays; -1 when the text ends first.
 */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  for (let j = start; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x22 /* " */) {
      for (j++; j < text.length && text.charCodeAt(j) !== 0x22; j++) if (text.charCodeAt(j) === 0x5c /* \ */) j++;
      if (j >= text.length) return -1;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) depth++;
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
      if (depth === 0) return j + 1;
    }
  }
  return -1;
}
