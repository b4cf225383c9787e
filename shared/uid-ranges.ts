/**
 * Host uid/gid ranges for user-namespaced VMs: each tenant's guest ids 0…size−1 map to the
 * host ids uidStart…uidStart+size−1 (the same numbers for uids and gids), and no two tenants on
 * the host, supervisor tenants and standalone daemons alike, ever share a host id.
 *
 * Claims are host-global files, one per range, `<claimsDir>/<uidStart>.json`:
 *
 *   { "tenant_id": "ta1", "state_dir": "/var/lib/paddock/tenants/ta1",
 *     "uid_start": 2000000000, "size": 65536, "claimed_at": "2025-01-01T00:00:00.000Z" }
 *
 * A claim is owned by the pair (tenant_id, state_dir) and lives as long as that state dir
 * exists: the tenant's persistent disks under it are owned by ids of the range. A claim whose
 * state dir is gone, or whose file cannot be parsed, is stale and is removed by the next claim.
 *
 * Claims are created with O_EXCL (`fs.open(path, "wx")`), written and fsynced, and every
 * claim or release runs under a cross-process lock of the claims dir (proper-lockfile, as in
 * shared/state-store.ts), so a range that overlaps a slot without starting at it cannot race
 * with the slot's allocation either. Ranges listed in /etc/subuid or /etc/subgid (subuid(5):
 * https://man7.org/linux/man-pages/man5/subuid.5.html) are never claimed.
 *
 * Ids are chosen above systemd-nspawn's container range and below systemd's foreign-UID range
 * (https://systemd.io/UIDS-GIDS/).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { lockWithRetry } from "./state-store.js";
import { PaddockError, errnoCode } from "./errors.js";
import { readdirOrEmpty } from "./read-dir.js";

/** A host id range: host uid (= gid) of guest id 0, and the number of ids (guest ids 0…size−1). */
export interface UidRange {
  /** Host uid and gid that guest id 0 maps to. */
  uidStart: number;
  /** Number of ids in the range (guest ids 0…size−1). */
  size: number;
}

/** Ids per tenant range: a full 16-bit guest id space (guest ids 0–65535). */
export const UID_RANGE_SIZE = 65_536;
/**
 * Host uid of the first allocatable slot: above systemd-nspawn's container range
 * (524288–1879048191), see https://systemd.io/UIDS-GIDS/.
 */
export const UID_RANGE_BASE = 2_000_000_000;
/**
 * Number of slots `UID_RANGE_BASE + k * UID_RANGE_SIZE` (k < SLOTS): the last slot ends at
 * 2 147 324 927, below 0x7FFE0000, systemd's foreign-UID range (https://systemd.io/UIDS-GIDS/).
 */
export const UID_RANGE_SLOTS = 2_248;
/**
 * Default claims dir. Host-global on purpose: overlaps are a host-wide fact, whichever
 * supervisor or standalone daemon owns a tenant. The environment variable
 * `PADDOCK_UID_CLAIMS_DIR` replaces it when no `claimsDir` option is given (tests use a temp dir).
 */
export const DEFAULT_UID_CLAIMS_DIR = "/var/lib/paddock-uid-ranges";
/** Default subordinate id files (subuid(5)). */
export const DEFAULT_SUBUID_FILE = "/etc/subuid";
export const DEFAULT_SUBGID_FILE = "/etc/subgid";

/** Lowest allowed `uidStart` of a requested range: host system ids 0–65535 are never mapped. */
export const UID_RANGE_MIN_START = 65_536;
/** Upper bound of `uidStart + size` (uid 2^32−1 is the invalid id `(uid_t)-1`). */
export const UID_RANGE_MAX_END = 2 ** 32 - 2;

/** A parsed claim file. `stale` is undefined for a live claim. */
export interface ParsedUidClaim extends UidRange {
  /** Absolute path of the claim file. */
  file: string;
  tenantId: string;
  /** Absolute, resolved state dir of the owner. */
  stateDir: string;
  /** RFC 3339 time of the claim. */
  claimedAt: string;
  /** Why the claim is stale (its state dir no longer exists), or undefined when live. */
  stale: "state-dir-missing" | undefined;
}

/** A claim file that could not be parsed: always stale. */
export interface UnparsableUidClaim {
  /** Absolute path of the claim file. */
  file: string;
  stale: "unparsable";
  /** What is wrong with it. */
  detail: string;
}

/** One entry of the claims dir, as {@link listUidClaims} reports it. */
export type UidClaim = ParsedUidClaim | UnparsableUidClaim;

/** Options shared by claim and release. */
export interface UidClaimsLocation {
  /** Claims dir; default `$PADDOCK_UID_CLAIMS_DIR`, else {@link DEFAULT_UID_CLAIMS_DIR}. */
  claimsDir?: string;
}

/** Options of {@link claimUidRange}. */
export interface ClaimUidRangeOptions extends UidClaimsLocation {
  /** Owner tenant id. */
  tenantId: string;
  /** Owner state dir; resolved to an absolute path and created (0700) when missing. */
  stateDir: string;
  /** A fixed range (`paddock.userns`); absent ⇒ the owner's existing claim or the lowest free slot. */
  requested?: UidRange;
  /** subuid(5) file checked for overlaps; default {@link DEFAULT_SUBUID_FILE}. */
  subuidFile?: string;
  /** subgid(5) file checked for overlaps; default {@link DEFAULT_SUBGID_FILE}. */
  subgidFile?: string;
  /** Number of slots to try; default {@link UID_RANGE_SLOTS} (tests use a tiny count). */
  slots?: number;
}

/** Options of {@link releaseUidRange}. */
export interface ReleaseUidRangeOptions extends UidClaimsLocation {
  tenantId: string;
  stateDir: string;
}

/** The claims dir an option set designates. */
export function uidClaimsDir(claimsDir?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(claimsDir ?? (env.PADDOCK_UID_CLAIMS_DIR || DEFAULT_UID_CLAIMS_DIR));
}

/** `a-b` (inclusive) text of a range, for messages. */
export function formatUidRange(r: UidRange): string {
  return `${r.uidStart}-${r.uidStart + r.size - 1} (${r.size} ids)`;
}

/** True when the two ranges share at least one id. */
export function uidRangesOverlap(a: UidRange, b: UidRange): boolean {
  return a.uidStart < b.uidStart + b.size && b.uidStart < a.uidStart + a.size;
}

/**
 * Check a requested range: integers, `size ≥ 65536`, `uidStart ≥ 65536` (host system ids are
 * never mapped) and `uidStart + size ≤ 2^32 − 2`.
 * @returns the problem, or undefined when the range is acceptable.
 */
export function uidRangeProblem(r: UidRange): string | undefined {
  if (!Number.isSafeInteger(r.uidStart) || !Number.isSafeInteger(r.size)) return "uid_start and size must be integers";
  if (r.size < UID_RANGE_SIZE) return `size must be at least ${UID_RANGE_SIZE}, got ${r.size}`;
  if (r.uidStart < UID_RANGE_MIN_START) return `uid_start must be at least ${UID_RANGE_MIN_START} (host system ids 0-65535 are never mapped), got ${r.uidStart}`;
  if (r.uidStart + r.size > UID_RANGE_MAX_END) return `uid_start + size must be at most ${UID_RANGE_MAX_END}, got ${r.uidStart + r.size}`;
  return undefined;
}

/** One `name:start:count` entry of /etc/subuid or /etc/subgid. */
export interface SubordinateIdEntry extends UidRange {
  name: string;
  /** The file it came from. */
  file: string;
}

/**
 * Parse subuid(5)/subgid(5) text (`name:start:count` per line); comments, blank and malformed
 * lines are skipped.
 */
export function parseSubordinateIds(text: string, file: string): SubordinateIdEntry[] {
  const out: SubordinateIdEntry[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const f = t.split(":");
    if (f.length !== 3 || !f[0] || !/^\d+$/.test(f[1] ?? "") || !/^\d+$/.test(f[2] ?? "")) continue;
    const uidStart = Number(f[1]), size = Number(f[2]);
    if (!Number.isSafeInteger(uidStart) || !Number.isSafeInteger(size) || size < 1) continue;
    out.push({ name: f[0], uidStart, size, file });
  }
  return out;
}

async function readSubordinateIds(files: readonly string[]): Promise<SubordinateIdEntry[]> {
  const out: SubordinateIdEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") continue;
      throw new PaddockError("ERR_INTERNAL", `cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    out.push(...parseSubordinateIds(text, file));
  }
  return out;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT" || errnoCode(err) === "ENOTDIR") return false;
    // Unknown (EACCES, EIO…): treat as existing, so a claim is never dropped on a doubt.
    return true;
  }
}

const CLAIM_FILE = /^(\d+)\.json$/;

function parseClaim(text: string, file: string): Omit<ParsedUidClaim, "stale"> | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  const o = v as Record<string, unknown>;
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not a JSON object";
  if (typeof o.tenant_id !== "string" || o.tenant_id === "") return "tenant_id is not a string";
  if (typeof o.state_dir !== "string" || !path.isAbsolute(o.state_dir)) return "state_dir is not an absolute path";
  if (typeof o.uid_start !== "number" || typeof o.size !== "number" || !Number.isSafeInteger(o.uid_start) || !Number.isSafeInteger(o.size) || o.size < 1) return "uid_start or size is not a positive integer";
  if (`${o.uid_start}.json` !== path.basename(file)) return `uid_start ${o.uid_start} does not match the file name`;
  return { file, tenantId: o.tenant_id, stateDir: o.state_dir, uidStart: o.uid_start, size: o.size, claimedAt: typeof o.claimed_at === "string" ? o.claimed_at : "" };
}

/**
 * Every claim file of the claims dir, live or stale, ordered by `uidStart` (unparsable ones
 * last). Nothing is removed or logged. A missing claims dir has no claims.
 * @param claimsDir default `$PADDOCK_UID_CLAIMS_DIR`, else {@link DEFAULT_UID_CLAIMS_DIR}.
 * @throws Node's errno errors other than ENOENT from reading the dir.
 */
export async function listUidClaims(claimsDir?: string): Promise<UidClaim[]> {
  const dir = uidClaimsDir(claimsDir);
  const names = await readdirOrEmpty(dir);
  const out: UidClaim[] = [];
  for (const name of names) {
    if (!CLAIM_FILE.test(name)) continue;
    const file = path.join(dir, name);
    let text: string;
    try {
      text = await fs.readFile(file, "utf8");
    } catch (err) {
      if (errnoCode(err) === "ENOENT") continue; // released meanwhile
      out.push({ file, stale: "unparsable", detail: (err as Error).message });
      continue;
    }
    const parsed = parseClaim(text, file);
    if (typeof parsed === "string") out.push({ file, stale: "unparsable", detail: parsed });
    else out.push({ ...parsed, stale: (await exists(parsed.stateDir)) ? undefined : "state-dir-missing" });
  }
  const key = (c: UidClaim): number => (c.stale === "unparsable" ? Number.MAX_SAFE_INTEGER : c.uidStart);
  return out.sort((a, b) => key(a) - key(b) || a.file.localeCompare(b.file));
}

/** In-process queue per claims dir (proper-lockfile does not queue callers of one process). */
const localQueues = new Map<string, Promise<unknown>>();

/** Run `fn` holding the claims dir's lock (in this process and across processes). */
async function withClaimsLock<R>(dir: string, fn: () => Promise<R>): Promise<R> {
  const prev = localQueues.get(dir) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(async () => {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const release = await lockWithRetry(dir, { what: `the uid range claims dir ${dir}`, lockfilePath: path.join(dir, ".lock") });
    try {
      return await fn();
    } finally {
      await release().catch(() => undefined);
    }
  });
  const tail = next.catch(() => undefined);
  localQueues.set(dir, tail);
  void tail.then(() => {
    if (localQueues.get(dir) === tail) localQueues.delete(dir);
  });
  return next;
}

/** Create `<dir>/<uidStart>.json` with O_EXCL, write it, fsync it and the dir. @returns false on EEXIST. */
async function createClaimFile(dir: string, owner: { tenantId: string; stateDir: string }, range: UidRange): Promise<boolean> {
  const file = path.join(dir, `${range.uidStart}.json`);
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, "wx", 0o600);
  } catch (err) {
    if (errnoCode(err) === "EEXIST") return false;
    throw err;
  }
  try {
    const body = { tenant_id: owner.tenantId, state_dir: owner.stateDir, uid_start: range.uidStart, size: range.size, claimed_at: new Date().toISOString() };
    await fh.writeFile(JSON.stringify(body, null, 2) + "\n", "utf8");
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fs.rm(file, { force: true });
    throw err;
  }
  await fh.close();
  const dh = await fs.open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
  return true;
}

const isOwner = (c: UidClaim, o: { tenantId: string; stateDir: string }): c is ParsedUidClaim =>
  c.stale !== "unparsable" && c.tenantId === o.tenantId && c.stateDir === o.stateDir;

function takenError(range: UidRange, other: ParsedUidClaim, dir: string): PaddockError {
  return new PaddockError(
    "ERR_USERNS_RANGE_TAKEN",
    `uid range ${formatUidRange(range)} overlaps ${formatUidRange(other)} of tenant ${other.tenantId} (state dir ${other.stateDir}, claim ${path.join(dir, `${other.uidStart}.json`)}); ` +
    `choose a non-overlapping paddock.userns.uid_start (multiples of ${UID_RANGE_SIZE} from ${UID_RANGE_BASE} are Paddock's slots) or remove paddock.userns to get a free range`,
    { details: { uid_start: range.uidStart, size: range.size, taken_by: { tenant_id: other.tenantId, state_dir: other.stateDir, uid_start: other.uidStart, size: other.size } } },
  );
}

function subordinateError(range: UidRange, e: SubordinateIdEntry): PaddockError {
  return new PaddockError(
    "ERR_USERNS_RANGE_TAKEN",
    `uid range ${formatUidRange(range)} overlaps ${e.file} entry ${e.name}:${e.uidStart}:${e.size} (ids ${formatUidRange(e)}); ` +
    `choose a non-overlapping paddock.userns.uid_start or remove paddock.userns to get a free range`,
    { details: { uid_start: range.uidStart, size: range.size, subordinate: { file: e.file, name: e.name, start: e.uidStart, count: e.size } } },
  );
}

/**
 * Claim a host uid/gid range for the owner (tenantId, stateDir), or return the one it holds.
 *
 * - `requested` given: validated (see {@link uidRangeProblem}); an identical claim of the same
 *   owner is returned; a live claim of another owner, or an /etc/subuid or /etc/subgid entry,
 *   overlapping it is refused; otherwise it is claimed and any other claim of the same owner
 *   (an earlier range) is removed.
 * - `requested` absent: the owner's existing claim (lowest first) is returned, so a restart
 *   keeps its range; otherwise the lowest free slot `UID_RANGE_BASE + k·UID_RANGE_SIZE`
 *   (k < slots) that overlaps no live claim and no subordinate id entry is claimed.
 *
 * Stale claims met on the way (state dir gone, unparsable file) are removed. The owner's state
 * dir is created (0700) when missing, since a claim without it would be stale at once.
 * @returns the range, `{ uidStart, size }` in host ids.
 * @throws PaddockError `ERR_CONFIG_INVALID` (bad `requested`), `ERR_USERNS_RANGE_TAKEN` (409:
 *   overlap with another tenant's claim, naming its tenant id, state dir and range, or with a
 *   subuid/subgid entry), `ERR_USERNS_EXHAUSTED` (507: no free slot), `ERR_STATE_LOCKED` (claims
 *   dir lock not obtained within ~10 s), and Node errno errors of the filesystem.
 */
export async function claimUidRange(opts: ClaimUidRangeOptions): Promise<UidRange> {
  const dir = uidClaimsDir(opts.claimsDir);
  if (opts.requested !== undefined) {
    const problem = uidRangeProblem(opts.requested);
    if (problem) throw new PaddockError("ERR_CONFIG_INVALID", `paddock.userns: ${problem}`);
  }
  const slots = opts.slots ?? UID_RANGE_SLOTS;
  await fs.mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
  const owner = { tenantId: opts.tenantId, stateDir: await fs.realpath(path.resolve(opts.stateDir)) };
  const subIds = () => readSubordinateIds([opts.subuidFile ?? DEFAULT_SUBUID_FILE, opts.subgidFile ?? DEFAULT_SUBGID_FILE]);
  return withClaimsLock(dir, async () => {
    const all = await listUidClaims(dir);
    for (const c of all) if (c.stale !== undefined) await fs.rm(c.file, { force: true });
    const live = all.filter((c): c is ParsedUidClaim => c.stale === undefined);
    const mine = live.filter((c) => isOwner(c, owner));
    const others = live.filter((c) => !isOwner(c, owner));
    const sub = await subIds();

    if (opts.requested !== undefined) {
      const want: UidRange = { uidStart: opts.requested.uidStart, size: opts.requested.size };
      const clash = others.find((c) => uidRangesOverlap(c, want));
      if (clash) throw takenError(want, clash, dir);
      const subClash = sub.find((e) => uidRangesOverlap(e, want));
      if (subClash) throw subordinateError(want, subClash);
      const same = mine.find((c) => c.uidStart === want.uidStart && c.size === want.size);
      if (same) return { uidStart: same.uidStart, size: same.size };
      // The owner moves to another range: its earlier claims go (it holds one range at a time).
      for (const c of mine) await fs.rm(c.file, { force: true });
      if (!(await createClaimFile(dir, owner, want))) {
        throw new PaddockError("ERR_USERNS_RANGE_TAKEN", `uid range ${formatUidRange(want)}: claim file ${path.join(dir, `${want.uidStart}.json`)} was created concurrently by another process; choose another paddock.userns.uid_start`);
      }
      return want;
    }

    const held = mine[0];
    if (held) {
      const subClash = sub.find((e) => uidRangesOverlap(e, held));
      if (subClash) throw subordinateError(held, subClash);
      return { uidStart: held.uidStart, size: held.size };
    }
    for (let k = 0; k < slots; k++) {
      const slot: UidRange = { uidStart: UID_RANGE_BASE + k * UID_RANGE_SIZE, size: UID_RANGE_SIZE };
      if (live.some((c) => uidRangesOverlap(c, slot)) || sub.some((e) => uidRangesOverlap(e, slot))) continue;
      if (await createClaimFile(dir, owner, slot)) return slot;
    }
    throw new PaddockError(
      "ERR_USERNS_EXHAUSTED",
      `no free uid range for tenant ${opts.tenantId}: all ${slots} slots of ${UID_RANGE_SIZE} ids from ${UID_RANGE_BASE} are claimed in ${dir} (a claim is freed when its tenant is purged or its state dir is removed)`,
    );
  });
}

/**
 * Remove every claim of the owner (tenantId, stateDir). Idempotent: no claim, no claims dir
 * or no state dir is fine.
 * @throws PaddockError `ERR_STATE_LOCKED` (claims dir lock), Node errno errors of the filesystem.
 */
export async function releaseUidRange(opts: ReleaseUidRangeOptions): Promise<void> {
  const dir = uidClaimsDir(opts.claimsDir);
  if (!(await exists(dir))) return;
  const abs = path.resolve(opts.stateDir);
  const resolved = await fs.realpath(abs).catch(() => abs);
  await withClaimsLock(dir, async () => {
    for (const c of await listUidClaims(dir)) {
      if (c.stale === "unparsable" || c.tenantId !== opts.tenantId) continue;
      if (c.stateDir === abs || c.stateDir === resolved) await fs.rm(c.file, { force: true });
    }
  });
}
