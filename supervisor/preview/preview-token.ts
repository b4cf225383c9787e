/**
 * Preview tokens: a signed, expiring grant to one port of one VM of one tenant, which the
 * gateway verifies without asking the daemon.
 *
 * Format: `pvt_<payload>.<mac>`, both base64url; `payload` is the JSON
 * `{"v":1,"t":tenant,"h":hostname,"p":port,"c":vm created_at,"e":expiry (s since epoch)}` and
 * `mac` is HMAC-SHA256 (https://www.rfc-editor.org/rfc/rfc2104) under the tenant's preview key
 * (preview-keys.ts) over `paddock-preview-v1.` + the payload text as sent. The MAC is compared
 * in constant time before the payload is parsed. `c` binds the token to one VM: a VM created
 * later under the same hostname refuses it (tenant-daemon/api/preview-routes.ts).
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Prefix of preview tokens (tells them apart from tenant tokens, `pdk_`). */
export const PREVIEW_TOKEN_PREFIX = "pvt_";
const MAC_CONTEXT = "paddock-preview-v1.";
/** Longest token accepted for verification, characters (a payload is ~150). */
const MAX_TOKEN_CHARS = 1024;
/** Stands in for a missing key so that verification does the same work. */
const NO_KEY = Buffer.alloc(32);

/** What a preview token grants. */
export interface PreviewGrant {
  tenantId: string;
  hostname: string;
  port: number;
  /** The VM's `created_at` when the token was minted. */
  vmCreatedAt: string;
  /** Expiry, seconds since the epoch. */
  expiresAtS: number;
}

function mac(key: Buffer, payload: string): Buffer {
  return createHmac("sha256", key).update(MAC_CONTEXT + payload, "utf8").digest();
}

/** Sign `grant` with the tenant's `key` (32 bytes). */
export function signPreviewToken(key: Buffer, grant: PreviewGrant): string {
  const payload = Buffer.from(JSON.stringify({ v: 1, t: grant.tenantId, h: grant.hostname, p: grant.port, c: grant.vmCreatedAt, e: grant.expiresAtS }), "utf8").toString("base64url");
  return `${PREVIEW_TOKEN_PREFIX}${payload}.${mac(key, payload).toString("base64url")}`;
}

/**
 * Verify a presented token for one destination.
 * @param keyOf the tenant's key, or undefined when the tenant has none (then nothing verifies).
 * @returns the grant when the MAC is right under the key of `want.tenantId`, the token names
 *   exactly that tenant, hostname and port, and it has not expired at `nowMs`; else undefined.
 */
export function verifyPreviewToken(token: string | undefined, want: { tenantId: string; hostname: string; port: number }, keyOf: (tenantId: string) => Buffer | undefined, nowMs = Date.now()): PreviewGrant | undefined {
  if (token === undefined || token.length > MAX_TOKEN_CHARS || !token.startsWith(PREVIEW_TOKEN_PREFIX)) return undefined;
  const dot = token.indexOf(".", PREVIEW_TOKEN_PREFIX.length);
  if (dot < 0) return undefined;
  const payload = token.slice(PREVIEW_TOKEN_PREFIX.length, dot);
  // A tenant without a key costs the same MAC as one with (its answer tells nothing by timing).
  const key = keyOf(want.tenantId);
  // Compared as text: base64url decoding ignores a last character's spare bits, so comparing
  // decoded bytes would accept several spellings of one MAC.
  const got = Buffer.from(token.slice(dot + 1), "utf8");
  const expected = Buffer.from(mac(key ?? NO_KEY, payload).toString("base64url"), "utf8");
  const equal = got.length === expected.length && timingSafeEqual(got, expected);
  if (key === undefined || !equal) return undefined;
  let p: unknown;
  try {
    p = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (p === null || typeof p !== "object") return undefined;
  const o = p as Record<string, unknown>;
  if (o.v !== 1 || o.t !== want.tenantId || o.h !== want.hostname || o.p !== want.port || typeof o.c !== "string" || typeof o.e !== "number") return undefined;
  if (o.e * 1000 <= nowMs) return undefined;
  return { tenantId: o.t, hostname: o.h, port: o.p, vmCreatedAt: o.c, expiresAtS: o.e };
}
