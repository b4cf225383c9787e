/**
 * Tenant and admin tokens: 32 random bytes shown once as `pdk_<base64url>`, stored only as SHA-256,
 * compared in constant time. Lookup is by hash in a Map, and the same work (hash, lookup, one
 * timingSafeEqual) is done whether or not the token exists, so a wrong token costs the same time as
 * a right one for an unknown tenant (the gateway's 401 tells nothing;
 * docs/slicer-api.md#the-gateway-in-front).
 */
import crypto, { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Prefix of tenant tokens (lets secret scanners recognise them). */
export const TOKEN_PREFIX = "pdk_";

/** A new token: the secret (shown once) and what is stored. */
export interface IssuedToken {
  /** `tok_` + 12 hex chars; public handle for revocation. */
  id: string;
  /** `pdk_` + 43 base64url chars (32 random bytes). */
  token: string;
  /** Hex SHA-256 of `token`. */
  hash: string;
}

/**
 * One-shot `crypto.hash` (Node ≥ 20.12, https://nodejs.org/api/crypto.html#cryptohashalgorithm-data-outputencoding):
 * the same digest as `createHash().update().digest()` without a Hash object per call (the
 * gateway hashes every presented token; the object was most of that cost).
 */
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: "hex") => string }).hash;

/** Hex SHA-256 of a token string (UTF-8). */
export function hashToken(token: string): string {
  return oneShotHash ? oneShotHash("sha256", token, "hex") : createHash("sha256").update(token, "utf8").digest("hex");
}

/** Create a new random token (crypto.randomBytes, 32 bytes). */
export function issueToken(): IssuedToken {
  const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
  return { id: `tok_${randomBytes(6).toString("hex")}`, token, hash: hashToken(token) };
}

/** Constant-time equality of two hex SHA-256 digests (false on malformed input, same cost). */
export function hashesEqual(a: string, b: string): boolean {
  const ba = Buffer.from(a.padEnd(64, "0").slice(0, 64), "hex");
  const bb = Buffer.from(b.padEnd(64, "0").slice(0, 64), "hex");
  if (ba.length !== 32 || bb.length !== 32) return false;
  return timingSafeEqual(ba, bb) && a.length === 64 && b.length === 64;
}

/** What a stored token maps to. */
export interface TokenEntry<T> {
  hash: string;
  /** ms since epoch; undefined ⇒ never expires. */
  expiresAtMs: number | undefined;
  revoked: boolean;
  value: T;
}

const DUMMY_HASH = hashToken("paddock-dummy-token-never-issued");
const DUMMY_BYTES = Buffer.from(DUMMY_HASH, "hex");

/** A stored entry with its digest's bytes decoded once, at index build. */
interface IndexedEntry<T> {
  entry: TokenEntry<T>;
  /**
   * The bytes of `entry.hash`. Only read on a Map hit, where `entry.hash` equals the presented
   * token's digest (64 lowercase hex), so they are its 32 bytes.
   */
  bytes: Buffer;
}

/**
 * An index of token hashes → owner, rebuilt whenever the registry changes.
 * {@link verify} does identical work for unknown, expired and revoked tokens: one SHA-256,
 * one Map lookup by hex digest, one hex decode of the presented digest and one
 * `timingSafeEqual` against the stored digest's bytes (decoded once here, not per request).
 */
export class TokenIndex<T> {
  private readonly byHash = new Map<string, IndexedEntry<T>>();

  constructor(entries: Iterable<TokenEntry<T>> = []) {
    for (const e of entries) this.byHash.set(e.hash, { entry: e, bytes: Buffer.from(e.hash, "hex") });
  }

  get size(): number {
    return this.byHash.size;
  }

  /**
   * @param presented the raw token from `Authorization: Bearer …` (undefined ⇒ missing).
   * @returns the owner for a known, unexpired, unrevoked token; otherwise undefined.
   */
  verify(presented: string | undefined, nowMs = Date.now()): T | undefined {
    const hash = hashToken(presented ?? "");
    const found = this.byHash.get(hash);
    // A Map hit means the digests are equal already; the constant-time compare keeps the
    // work of a hit and a miss the same (the digest of a miss against the dummy's).
    const equal = timingSafeEqual(Buffer.from(hash, "hex"), found?.bytes ?? DUMMY_BYTES) && found !== undefined;
    const entry = found?.entry;
    const live = entry !== undefined && !entry.revoked && (entry.expiresAtMs === undefined || entry.expiresAtMs > nowMs);
    return equal && live && presented !== undefined ? entry.value : undefined;
  }
}
