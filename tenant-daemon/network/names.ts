/**
 * Deterministic names of everything the tenant network creates: derived from
 * the tenant id and the VM hostname / host group name only, so a start-up sweep after a
 * `kill -9` finds leftovers without any state file.
 *
 * Linux interface names are at most 15 bytes (IFNAMSIZ − 1, see netdevice(7)); host group
 * names may be up to 40 characters, so link names are hashed. Network namespace names are
 * file names under /var/run/netns and may be long, so they stay readable.
 */
import { createHash } from "node:crypto";

/** Maximum bytes of a Linux interface name (IFNAMSIZ − 1). */
export const MAX_IFNAME_BYTES = 15;

function shortHash(text: string, hexChars: number): string {
  return createHash("sha256").update(text).digest("hex").slice(0, hexChars);
}

/** Network namespace of one VM: `pdk-<tenant>-<hostname>` (same as the runtime's sandbox id). */
export function vmNetnsName(tenantId: string, hostname: string): string {
  return `${netnsPrefix(tenantId)}${hostname}`;
}

/** Prefix of every netns of a tenant; tenant ids contain no `-`, so prefixes of two tenants never nest. */
export function netnsPrefix(tenantId: string): string {
  return `pdk-${tenantId}-`;
}

/** Host-side veth of one VM: `pk` + 12 hex of sha256(`<tenant>/<hostname>`) = 14 bytes. */
export function vmVethName(tenantId: string, hostname: string): string {
  return `pk${shortHash(`${tenantId}/${hostname}`, 12)}`;
}

/** Default bridge of a bridge-mode host group: `pb` + 12 hex of sha256(`<tenant>/group/<group>`) = 14 bytes. */
export function defaultBridgeName(tenantId: string, group: string): string {
  return `pb${shortHash(`${tenantId}/group/${group}`, 12)}`;
}

/** The interface alias (`ip link set … alias`) marking a link as this tenant's: `paddock/<tenant>/<what>`. */
export function linkAlias(tenantId: string, what: string): string {
  return `${aliasPrefix(tenantId)}${what}`;
}

/** Prefix of every alias of a tenant's links. */
export function aliasPrefix(tenantId: string): string {
  return `paddock/${tenantId}/`;
}

/** The tenant's nftables table (family `inet`): `paddock-<tenant>`. */
export function tableName(tenantId: string): string {
  return `paddock-${tenantId}`;
}

/**
 * The tenant's connection-bounds table (family `inet`): `paddock-<tenant>-ct` (conn-limits.ts).
 * No tenant id holds a `-`, so it is never another tenant's {@link tableName}; it has no
 * `own_ranges` set, so other daemons' range discovery (shared/nft-cli.ts `listOwnRanges`,
 * which reads only tables with that set) never sees it.
 */
export function connLimitTableName(tenantId: string): string {
  return `${tableName(tenantId)}-ct`;
}

/** Prefix shared by every Paddock table, used to find other daemons' ranges. */
export const TABLE_PREFIX = "paddock-";

/** Name of the per-VM firewall chain (nft chain names are not length-limited like links). */
export function vmChainName(vethName: string): string {
  return `vm_${vethName}`;
}

/**
 * Name of a host group's floor chain: `floor_<group>` (group names are [a-z0-9-], which nft
 * identifiers accept after a letter, see nft(8) "LEXICAL CONVENTIONS").
 */
export function floorChainName(group: string): string {
  return `floor_${group}`;
}

/**
 * Index 0..(modulo−1) from a stable hash of `text` (first 4 bytes of sha256, big-endian), used to
 * derive an isolated group's /22 (any stable hash does; docs/slicer-api.md#isolated-addressing).
 */
export function stableIndex(text: string, modulo: number): number {
  return createHash("sha256").update(text).digest().readUInt32BE(0) % modulo;
}
