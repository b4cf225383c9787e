/**
 * Validation of VM-related request bodies and queries of the Slicer REST API
 * (https://docs.slicervm.com): create bodies and their sizing, `wait`/`timeout`, tags. Pure.
 */
import { parseIpv4 } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { parseGoDurationMs } from "../../shared/time.js";
import type { VmNetworkOverride } from "../network/network.js";
import { deadlineOf, parseTtl } from "./vm-expiry.js";

/** A validated create request. `cpus`/`ramBytes` already defaulted from the host group. */
export interface CreateVmRequest {
  cpus: number;
  ramBytes: number;
  persistent: boolean;
  tags: string[];
  userdata: string | undefined;
  secrets: string[] | undefined;
  network: VmNetworkOverride | undefined;
  /** Requested static IPv4 (the create body's `ip`), bare; the network checks it is a free VM address of the group. */
  ip: string | undefined;
  /** The create body's `ttl` (a Go duration), ms; it becomes an `expires_at=` tag (vm-expiry.ts). */
  ttlMs?: number;
}

/** Largest accepted tag, bytes; a larger one is a 400 (a 1 MB tag gets a clear 4xx). */
export const MAX_TAG_BYTES = 4096;
/** Most tags on one VM. */
export const MAX_TAGS = 128;

function bad(message: string): PaddockError {
  return new PaddockError("ERR_VM_INVALID_REQUEST", message);
}

function optionalInt(body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw bad(`${key} must be a non-negative integer`);
  return v;
}

/** @throws PaddockError `code` (default ERR_VM_INVALID_REQUEST) when `value` is not a list of strings. */
function stringList(value: unknown, key: string, code: "ERR_VM_INVALID_REQUEST" | "ERR_TAGS_INVALID" = "ERR_VM_INVALID_REQUEST"): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.some((t) => typeof t !== "string")) throw new PaddockError(code, `${key} must be a list of strings`);
  return value as string[];
}

/**
 * Check a tag list: strings, at most {@link MAX_TAGS}, each ≤ {@link MAX_TAG_BYTES} bytes, no
 * control characters.
 * @throws PaddockError ERR_TAGS_INVALID
 */
export function validateTags(tags: readonly string[], key = "tags"): void {
  if (tags.length > MAX_TAGS) throw new PaddockError("ERR_TAGS_INVALID", `${key}: at most ${MAX_TAGS} tags`);
  for (const t of tags) {
    if (Buffer.byteLength(t) > MAX_TAG_BYTES) throw new PaddockError("ERR_TAGS_INVALID", `${key}: a tag is longer than ${MAX_TAG_BYTES} bytes`);
    if (t.length === 0) throw new PaddockError("ERR_TAGS_INVALID", `${key}: empty tag`);
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(t)) throw new PaddockError("ERR_TAGS_INVALID", `${key}: tags may not contain control characters`);
  }
}

/** The tag prefix of a VM's friendly name (`name=<label>`), as Slicer's CLI and SDKs use it. */
export const NAME_TAG_PREFIX = "name=";

/** A friendly name: one DNS label (RFC 1123), lower case: 1–63 of [a-z0-9-], no leading or trailing `-`. */
const NAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The friendly name in a tag list (the value of its one `name=` tag), checked to be a DNS
 * label; undefined when there is none.
 * @throws PaddockError ERR_VM_NAME_INVALID for more than one `name=` tag or a value that is not a DNS label.
 */
export function friendlyNameOf(tags: readonly string[]): string | undefined {
  const names = [...new Set(tags.filter((t) => t.startsWith(NAME_TAG_PREFIX)))];
  if (names.length > 1) throw new PaddockError("ERR_VM_NAME_INVALID", `a VM has at most one name= tag (got ${names.length})`);
  if (names.length === 0) return undefined;
  const value = (names[0] as string).slice(NAME_TAG_PREFIX.length);
  if (!NAME_PATTERN.test(value)) {
    throw new PaddockError("ERR_VM_NAME_INVALID", `name ${JSON.stringify(value)} is not a DNS label: 1-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit`);
  }
  return value;
}

/**
 * Create fields of Slicer's API (https://github.com/slicervm/sdk types.go
 * SlicerCreateNodeRequest) that an OCI sandbox cannot honour today: a per-VM disk image, and
 * SSH keys for the VM's user (the images run no sshd; exec and shell go through the agent).
 * `github_user` is the config file's spelling of `import_user`.
 */
const UNSUPPORTED_CREATE_FIELDS: ReadonlyArray<readonly [string, string]> = [
  ["disk_image", "a per-VM disk image is not supported: every VM boots the tenant's image"],
  ["ssh_keys", "SSH keys are not supported: the VM runs no sshd (use exec or shell)"],
  ["import_user", "importing a user's SSH keys is not supported: the VM runs no sshd (use exec or shell)"],
  ["github_user", "importing a GitHub user's SSH keys is not supported: the VM runs no sshd (use exec or shell)"],
];

/**
 * Refuse a create field Paddock cannot honour rather than drop it. Absent, null, "" and [] are
 * accepted (they ask for nothing; the SDKs omit empty fields, but a client may send them).
 * @throws PaddockError ERR_FIELD_UNSUPPORTED (501), its message starting with the field's name.
 */
function refuseUnsupported(b: Record<string, unknown>): void {
  for (const [field, why] of UNSUPPORTED_CREATE_FIELDS) {
    const v = b[field];
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && v.length === 0)) continue;
    throw new PaddockError("ERR_FIELD_UNSUPPORTED", `${field}: ${why}`);
  }
}

/**
 * Validate a create body against its host group (sizing as in Slicer: `cpus`/`ram_bytes`
 * omitted or 0 ⇒ the group's default, ≤ ⇒ honoured, > ⇒ 400). Unknown fields are ignored, as
 * Slicer does; Slicer's fields Paddock cannot honour (`disk_image`, `ssh_keys`, `import_user`
 * and its alias `github_user`) are refused unless empty.
 * A `name=` tag is checked to be one DNS label (its uniqueness is the VM table's:
 * VmTable.claimName).
 * `ttl` (a Go duration) and an `expires_at=` tag (RFC 3339) are checked here; the deadline they
 * and the group's `default_ttl`/`max_ttl` give is vm-expiry.ts tagsWithDeadline's.
 * @throws PaddockError ERR_VM_INVALID_REQUEST, ERR_VM_SIZE_EXCEEDED, ERR_TAGS_INVALID, ERR_VM_NAME_INVALID,
 *   ERR_FIELD_UNSUPPORTED, ERR_TTL_INVALID, ERR_EXPIRES_AT_INVALID
 */
export function parseCreateVmRequest(body: unknown, group: HostGroupConfig): CreateVmRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("request body must be a JSON object");
  const b = body as Record<string, unknown>;
  refuseUnsupported(b);
  const cpus = optionalInt(b, "cpus") || group.vcpu;
  const ramBytes = optionalInt(b, "ram_bytes") || group.ramBytes;
  if (cpus > group.vcpu) {
    throw new PaddockError("ERR_VM_SIZE_EXCEEDED", `cpus ${cpus} exceeds host group ${group.name}'s maximum of ${group.vcpu}`);
  }
  if (ramBytes > group.ramBytes) {
    throw new PaddockError("ERR_VM_SIZE_EXCEEDED", `ram_bytes ${ramBytes} exceeds host group ${group.name}'s maximum of ${group.ramBytes}`);
  }
  if (ramBytes < 16 * 2 ** 20) throw bad("ram_bytes must be at least 16 MiB");
  const gpu = optionalInt(b, "gpu_count");
  if (gpu) throw new PaddockError("ERR_VM_UNSUPPORTED", "gpu_count is not supported by the OCI driver");
  // Omitted ⇒ the host group's `persistent` (default false): a group can make its API VMs persistent.
  const persistent = b.persistent === undefined || b.persistent === null ? group.persistent : b.persistent;
  if (typeof persistent !== "boolean") throw bad("persistent must be true or false");
  const tags = dedupe(stringList(b.tags, "tags", "ERR_TAGS_INVALID") ?? []);
  validateTags(tags);
  friendlyNameOf(tags);
  deadlineOf(tags);
  const ttlMs = parseTtl(b.ttl);
  const userdata = b.userdata === undefined || b.userdata === null || b.userdata === "" ? undefined : b.userdata;
  if (userdata !== undefined && typeof userdata !== "string") throw bad("userdata must be a string");
  if (typeof userdata === "string" && Buffer.byteLength(userdata) > 1024 * 1024) throw bad("userdata is larger than 1 MiB");
  const secrets = stringList(b.secrets, "secrets");
  let network: VmNetworkOverride | undefined;
  if (b.network !== undefined && b.network !== null) {
    if (typeof b.network !== "object" || Array.isArray(b.network)) throw bad("network must be an object {allow?, drop?}");
    if (group.network.mode !== "isolated") throw bad(`network overrides apply only to isolated host groups (${group.name} is ${group.network.mode})`);
    const n = b.network as Record<string, unknown>;
    network = {};
    const allow = stringList(n.allow, "network.allow");
    const drop = stringList(n.drop, "network.drop");
    if (allow !== undefined) network.allow = allow;
    if (drop !== undefined) network.drop = drop;
  }
  let ip: string | undefined;
  if (b.ip !== undefined && b.ip !== null && b.ip !== "") {
    // Both forms are accepted: bare, or CIDR as in create responses.
    const m = typeof b.ip === "string" ? /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(b.ip) : null;
    if (!m || parseIpv4(m[1] as string) === undefined || (m[2] !== undefined && Number(m[2]) > 32)) throw bad("ip must be an IPv4 address (a.b.c.d or a.b.c.d/prefix)");
    ip = m[1];
  }
  return { cpus, ramBytes, persistent, tags, userdata, secrets, network, ip, ...(ttlMs !== undefined ? { ttlMs } : {}) };
}

/** `wait` and `timeout` query values of a create (`?wait=agent&timeout=30s`). */
export interface WaitOptions {
  wait: "agent" | "userdata" | undefined;
  timeoutMs: number;
}

/**
 * Parse `wait`/`timeout` query values (default timeout 5m).
 * @throws PaddockError ERR_QUERY_INVALID for other `wait` values or bad durations.
 */
export function parseWaitQuery(wait: unknown, timeout: unknown): WaitOptions {
  if (wait !== undefined && wait !== "" && wait !== "agent" && wait !== "userdata") {
    throw new PaddockError("ERR_QUERY_INVALID", `invalid wait ${JSON.stringify(wait)}: expected agent or userdata`);
  }
  const timeoutMs = typeof timeout === "string" && timeout !== "" ? parseGoDurationMs(timeout, "timeout") : 5 * 60_000;
  return { wait: wait === "agent" || wait === "userdata" ? wait : undefined, timeoutMs };
}

/** A tags PATCH (`PATCH /vm/{h}/tags`): `add`+`remove` together, or `replace` alone. */
export interface TagPatch {
  add: string[];
  remove: string[];
  replace: string[] | undefined;
}

/**
 * Parse a tags PATCH body. A `name=` tag in `add` or `replace` is checked to be one DNS label
 * (whether the VM may take it is {@link applyTagPatch}'s and the VM table's); one in `remove`
 * is refused: a friendly name is immutable once set.
 * An `expires_at=` tag in `add` or `replace` must be one RFC 3339 time (vm-expiry.ts deadlineOf).
 * @throws PaddockError ERR_TAGS_INVALID, ERR_VM_NAME_INVALID, ERR_EXPIRES_AT_INVALID
 */
export function parseTagPatch(body: unknown): TagPatch {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new PaddockError("ERR_TAGS_INVALID", "body must be a JSON object with add, remove or replace");
  const b = body as Record<string, unknown>;
  const list = (k: string): string[] | undefined => {
    if (b[k] === undefined || b[k] === null) return undefined;
    if (!Array.isArray(b[k]) || (b[k] as unknown[]).some((t) => typeof t !== "string")) throw new PaddockError("ERR_TAGS_INVALID", `${k} must be a list of strings`);
    return b[k] as string[];
  };
  const add = list("add");
  const remove = list("remove");
  const replace = list("replace");
  if (replace !== undefined && (add !== undefined || remove !== undefined)) throw new PaddockError("ERR_TAGS_INVALID", "replace cannot be combined with add or remove");
  if (replace === undefined && add === undefined && remove === undefined) throw new PaddockError("ERR_TAGS_INVALID", "expected one of add, remove or replace");
  for (const l of [add, remove, replace]) if (l) validateTags(l);
  if (remove?.some((t) => t.startsWith(NAME_TAG_PREFIX))) throw new PaddockError("ERR_TAGS_INVALID", "the name= tag is immutable once set: it cannot be removed");
  for (const l of [add, replace]) if (l) friendlyNameOf(l);
  for (const l of [add, replace]) if (l) deadlineOf(l);
  return { add: add ?? [], remove: remove ?? [], replace };
}

/**
 * Apply a validated tag patch to `current` (pure). The `name=` tag is immutable once set: it
 * survives `replace` and `remove`, and a patch may only add one to a VM that has none (or
 * repeat the one it has). Whether the new name is free in the tenant is the caller's check.
 * @returns the new tag list, duplicates dropped.
 * @throws PaddockError ERR_TAGS_INVALID when the patch would change an existing name.
 */
export function applyTagPatch(current: readonly string[], patch: TagPatch): string[] {
  const names = current.filter((t) => t.startsWith(NAME_TAG_PREFIX));
  const asked = (patch.replace ?? patch.add).filter((t) => t.startsWith(NAME_TAG_PREFIX));
  if (names.length > 0 && asked.some((t) => !names.includes(t))) {
    throw new PaddockError("ERR_TAGS_INVALID", `the name= tag is immutable once set (this VM is ${names[0] as string})`);
  }
  if (patch.replace !== undefined) return dedupe([...names, ...patch.replace]);
  const removed = current.filter((t) => !patch.remove.includes(t));
  return dedupe([...removed, ...patch.add]);
}

function dedupe(list: readonly string[]): string[] {
  return [...new Set(list)];
}

/** Tag filter of list endpoints: exact `tag` or `tag_prefix`, both ⇒ 400. */
export type TagFilter = { kind: "none" } | { kind: "exact"; value: string } | { kind: "prefix"; value: string };

/**
 * Parse `tag` / `tag_prefix` query values.
 * @throws PaddockError ERR_QUERY_INVALID when both are set or a value is repeated.
 */
export function parseTagFilter(tag: unknown, tagPrefix: unknown): TagFilter {
  if (Array.isArray(tag) || Array.isArray(tagPrefix)) throw new PaddockError("ERR_QUERY_INVALID", "tag and tag_prefix may be given once");
  const t = typeof tag === "string" ? tag : undefined;
  const p = typeof tagPrefix === "string" ? tagPrefix : undefined;
  if (t !== undefined && p !== undefined) throw new PaddockError("ERR_QUERY_INVALID", "set either tag or tag_prefix, not both");
  if (t !== undefined) return { kind: "exact", value: t };
  if (p !== undefined) return { kind: "prefix", value: p };
  return { kind: "none" };
}

/** True when a VM's tags pass the filter. */
export function matchesTagFilter(tags: readonly string[], f: TagFilter): boolean {
  if (f.kind === "none") return true;
  if (f.kind === "exact") return tags.includes(f.value);
  return tags.some((t) => t.startsWith(f.value));
}
