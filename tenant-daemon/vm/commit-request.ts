/**
 * Validation of the cold-fork requests of the Slicer REST API (commit, list filters, fork), in
 * the shapes of Slicer's Go SDK (https://github.com/slicervm/sdk types.go
 * SlicerCommitVMOptions, SlicerCommitListOptions, slicerForkVMOptions; client.go ForkCommittedVM).
 * Pure. Every field the SDK sends is either honoured or refused with a code naming it.
 */
import { PaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { parseGoDurationMs } from "../../shared/time.js";
import type { VmNetworkOverride } from "../network/network.js";
import type { CommitRecord } from "../storage/commit-store.js";
import { NAME_TAG_PREFIX, friendlyNameOf, validateTags } from "./vm-request.js";

/** A validated `POST /vm/{h}/commit` body. */
export interface CommitRequest {
  tags: string[];
  labels: Record<string, string>;
  /** "" when none. */
  cacheKey: string;
}

/** Filters of `GET /vm/commits`; undefined ⇒ not filtered. */
export interface CommitListFilter {
  /** Every one must be among the commit's tags (exact match). */
  tags: string[];
  cacheKey: string | undefined;
  /** Source hostname. */
  source: string | undefined;
  mode: string | undefined;
}

/** The guest fix-ups a fork may ask for. */
export const FORK_FIXUPS = ["hostname", "machine-id", "ssh-host-keys"] as const;
/** One guest fix-up. */
export type ForkFixup = (typeof FORK_FIXUPS)[number];

/** A validated fork: query and body, defaults from the commit and its host group applied. */
export interface ForkRequest {
  wait: "agent" | "none";
  timeoutMs: number;
  cpus: number;
  ramBytes: number;
  persistent: boolean;
  tags: string[];
  secrets: string[] | undefined;
  network: VmNetworkOverride | undefined;
  fixups: ForkFixup[];
}

const MAX_LABELS = 64;
const MAX_LABEL_KEY_BYTES = 256;
const MAX_LABEL_VALUE_BYTES = 4096;
const MAX_CACHE_KEY_BYTES = 256;

function bad(message: string): PaddockError {
  return new PaddockError("ERR_COMMIT_INVALID_REQUEST", message);
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

function objectBody(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body)) throw bad("request body must be a JSON object");
  return body as Record<string, unknown>;
}

function stringList(value: unknown, key: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((t) => typeof t !== "string")) throw bad(`${key} must be a list of strings`);
  return value as string[];
}

/**
 * Parse a commit body `{tags?, labels?, cache_key?}` (no body ⇒ all empty). `cache_key` is
 * trimmed as the SDK trims it.
 * @throws PaddockError ERR_COMMIT_INVALID_REQUEST, ERR_TAGS_INVALID
 */
export function parseCommitRequest(body: unknown): CommitRequest {
  const b = objectBody(body);
  const tags = [...new Set(stringList(b.tags, "tags") ?? [])];
  validateTags(tags);
  const labels: Record<string, string> = {};
  if (b.labels !== undefined && b.labels !== null) {
    if (typeof b.labels !== "object" || Array.isArray(b.labels)) throw bad("labels must be an object of strings");
    const entries = Object.entries(b.labels as Record<string, unknown>);
    if (entries.length > MAX_LABELS) throw bad(`labels: at most ${MAX_LABELS}`);
    for (const [k, v] of entries) {
      if (typeof v !== "string") throw bad(`labels.${k} must be a string`);
      if (k === "" || Buffer.byteLength(k) > MAX_LABEL_KEY_BYTES || CONTROL.test(k)) throw bad(`labels: invalid key ${JSON.stringify(k.slice(0, 64))}`);
      if (Buffer.byteLength(v) > MAX_LABEL_VALUE_BYTES || CONTROL.test(v)) throw bad(`labels.${k}: longer than ${MAX_LABEL_VALUE_BYTES} bytes or has control characters`);
      labels[k] = v;
    }
  }
  let cacheKey = "";
  if (b.cache_key !== undefined && b.cache_key !== null) {
    if (typeof b.cache_key !== "string") throw bad("cache_key must be a string");
    cacheKey = b.cache_key.trim();
    if (Buffer.byteLength(cacheKey) > MAX_CACHE_KEY_BYTES || CONTROL.test(cacheKey)) throw bad(`cache_key: longer than ${MAX_CACHE_KEY_BYTES} bytes or has control characters`);
  }
  return { tags, labels, cacheKey };
}

/**
 * Parse the `GET /vm/commits` query: `tag` (repeatable), `cache_key`, `source`, `mode` (each
 * of the last three at most once).
 * @throws PaddockError ERR_QUERY_INVALID
 */
export function parseCommitListQuery(q: Record<string, unknown>): CommitListFilter {
  const one = (key: string): string | undefined => {
    const v = q[key];
    if (v === undefined || v === "") return undefined;
    if (typeof v !== "string") throw new PaddockError("ERR_QUERY_INVALID", `${key} may be given once`);
    return v;
  };
  const rawTags = q.tag === undefined ? [] : Array.isArray(q.tag) ? q.tag : [q.tag];
  if (rawTags.some((t) => typeof t !== "string")) throw new PaddockError("ERR_QUERY_INVALID", "tag must be a string");
  return { tags: (rawTags as string[]).filter((t) => t !== ""), cacheKey: one("cache_key"), source: one("source"), mode: one("mode") };
}

/** True when `c` passes `f`. */
export function matchesCommitFilter(c: CommitRecord, f: CommitListFilter): boolean {
  if (f.cacheKey !== undefined && c.cacheKey !== f.cacheKey) return false;
  if (f.source !== undefined && c.sourceHostname !== f.source) return false;
  if (f.mode !== undefined && c.mode !== f.mode) return false;
  return f.tags.every((t) => c.tags.includes(t));
}

/**
 * Parse a fork: query `wait` (`agent` default, or `none`) and `timeout` (Go duration, default
 * 5m), body keys `network`, `tags`, `tag_mode`, `secrets`, `persistent`, `fixups`, `vcpu`,
 * `ram_bytes`. Defaults: the source VM's size, tags (appended to; its `name=` tag is not
 * inherited: friendly names are unique), secret grants and network override; persistent; every
 * fix-up. `hostname` is refused: the daemon names every VM.
 * @throws PaddockError ERR_QUERY_INVALID, ERR_COMMIT_INVALID_REQUEST, ERR_VM_SIZE_EXCEEDED,
 *   ERR_TAGS_INVALID, ERR_VM_NAME_INVALID, ERR_FIELD_UNSUPPORTED (a fix-up list without `hostname`)
 */
export function parseForkRequest(query: { wait: unknown; timeout: unknown }, body: unknown, group: HostGroupConfig, commit: CommitRecord): ForkRequest {
  const { wait: w, timeout } = query;
  if (w !== undefined && w !== "" && w !== "agent" && w !== "none") throw new PaddockError("ERR_QUERY_INVALID", `invalid wait ${JSON.stringify(w)}: expected agent or none`);
  const wait = w === "none" ? "none" : "agent";
  const timeoutMs = typeof timeout === "string" && timeout !== "" ? parseGoDurationMs(timeout, "timeout") : 5 * 60_000;
  const b = objectBody(body);
  if (b.hostname !== undefined) throw bad("hostname: a fork's hostname is allocated by the daemon (<group>-N)");

  const size = (key: "vcpu" | "ram_bytes", inherited: number, max: number): number => {
    const v = b[key];
    if (v !== undefined && v !== null && (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)) throw bad(`${key} must be a non-negative integer`);
    const n = typeof v === "number" && v > 0 ? v : Math.min(inherited, max);
    if (n > max) throw new PaddockError("ERR_VM_SIZE_EXCEEDED", `${key} ${n} exceeds host group ${group.name}'s maximum of ${max}`);
    return n;
  };
  const cpus = size("vcpu", commit.source.cpus, group.vcpu);
  const ramBytes = size("ram_bytes", commit.source.ramBytes, group.ramBytes);
  if (ramBytes < 16 * 2 ** 20) throw bad("ram_bytes must be at least 16 MiB");

  const persistent = b.persistent === undefined || b.persistent === null ? true : b.persistent;
  if (typeof persistent !== "boolean") throw bad("persistent must be true or false");

  const tagMode = b.tag_mode === undefined || b.tag_mode === null || b.tag_mode === "" ? "append" : b.tag_mode;
  if (tagMode !== "append" && tagMode !== "replace") throw bad(`tag_mode must be append or replace, got ${JSON.stringify(tagMode)}`);
  const given = stringList(b.tags, "tags") ?? [];
  const inherited = tagMode === "replace" ? [] : commit.source.tags.filter((t) => !t.startsWith(NAME_TAG_PREFIX));
  const tags = [...new Set([...inherited, ...given])];
  validateTags(tags);
  friendlyNameOf(tags);

  const secrets = b.secrets === undefined || b.secrets === null ? commit.source.secrets : stringList(b.secrets, "secrets");

  let network = commit.source.network;
  if (b.network !== undefined && b.network !== null) {
    if (typeof b.network !== "object" || Array.isArray(b.network)) throw bad("network must be an object {allow?, drop?}");
    if (group.network.mode !== "isolated") throw bad(`network: overrides apply only to isolated host groups (${group.name} is ${group.network.mode})`);
    const n = b.network as Record<string, unknown>;
    const next: VmNetworkOverride = { ...(network ?? {}) };
    const allow = stringList(n.allow, "network.allow");
    const drop = stringList(n.drop, "network.drop");
    if (allow !== undefined) next.allow = allow;
    if (drop !== undefined) next.drop = drop;
    network = next;
  }

  let fixups: ForkFixup[] = [...FORK_FIXUPS];
  if (b.fixups !== undefined && b.fixups !== null) {
    const list = stringList(b.fixups, "fixups") ?? [];
    for (const f of list) if (!(FORK_FIXUPS as readonly string[]).includes(f)) throw bad(`fixups: unknown fix-up ${JSON.stringify(f)} (known: ${FORK_FIXUPS.join(", ")})`);
    if (!list.includes("hostname")) {
      throw new PaddockError("ERR_FIELD_UNSUPPORTED", "fixups: the hostname fix-up cannot be left out: every VM's hostname is its own <group>-N, set at each boot");
    }
    fixups = [...new Set(list)] as ForkFixup[];
  }
  return { wait, timeoutMs, cpus, ramBytes, persistent, tags, secrets, network, fixups };
}
