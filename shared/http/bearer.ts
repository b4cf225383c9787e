/**
 * Bearer tokens on HTTP (RFC 6750 §2.1, https://www.rfc-editor.org/rfc/rfc6750#section-2.1):
 * the one parser both apps use for an `Authorization` header, the one way clients (the CLI,
 * tests) write it, and a constant-time comparison of a presented token with the expected one.
 */
import { createHash, timingSafeEqual } from "node:crypto";

/**
 * The token of an `Authorization: Bearer <token>` header value: scheme case-insensitive,
 * one or more spaces or tabs after it, the token one run of non-space characters, trailing
 * blanks allowed.
 * @returns the token, or undefined for a missing header, another scheme, an empty token or
 *   a token with spaces in it.
 */
export function parseBearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m ? m[1] : undefined;
}

/** The `Authorization` header value presenting `token`. */
export function bearerHeader(token: string): string {
  return `Bearer ${token}`;
}

/**
 * Whether `presented` equals `expected`, compared as SHA-256 digests with
 * `crypto.timingSafeEqual`, so the time taken says nothing about how much of it matched
 * (or its length). An undefined `presented` never matches.
 */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  const a = sha256(presented ?? "");
  const b = sha256(expected);
  return timingSafeEqual(a, b) && presented !== undefined;
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
