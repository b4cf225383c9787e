/**
 * Webhook signatures, Stripe-style (https://docs.stripe.com/webhooks#verify-manually):
 *
 *     Paddock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
 *
 * The HMAC key is the secret string exactly as shown at creation (UTF-8 bytes, `whsec_` prefix
 * included); `<body>` is the raw request body bytes. Every attempt is signed again with its own
 * `t`, so a receiver can refuse old replays by bounding `now - t` (README "Webhooks" has the
 * verification snippet receivers copy).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** The header carrying the signature. */
export const SIGNATURE_HEADER = "Paddock-Signature";

/** A new signing secret: `whsec_` + 32 random bytes, base64url. */
export function newWebhookSecret(): string {
  return "whsec_" + randomBytes(32).toString("base64url");
}

/** The hex HMAC-SHA256 of `"<t>.<body>"` under `secret`. */
function mac(secret: string, tSeconds: number, body: string | Buffer): string {
  return createHmac("sha256", secret).update(`${tSeconds}.`).update(body).digest("hex");
}

/**
 * The `Paddock-Signature` value of `body` signed at `tSeconds` (unix seconds, default now).
 */
export function signWebhook(secret: string, body: string | Buffer, tSeconds = Math.floor(Date.now() / 1000)): string {
  return `t=${tSeconds},v1=${mac(secret, tSeconds, body)}`;
}

/**
 * Check a `Paddock-Signature` header against `body` and `secret`: one of its `v1` values must
 * match (constant-time compare) and its `t` must be within `toleranceSeconds` (default 300) of
 * `nowSeconds`. @returns false for a missing, malformed, stale or wrong signature.
 */
export function verifyWebhook(secret: string, body: string | Buffer, header: string | undefined, opts: { toleranceSeconds?: number; nowSeconds?: number } = {}): boolean {
  if (header === undefined) return false;
  let t: number | undefined;
  const sigs: string[] = [];
  for (const part of header.split(",")) {
    const i = part.indexOf("=");
    const k = part.slice(0, i).trim();
    const v = part.slice(i + 1).trim();
    if (k === "t" && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === "v1" && /^[0-9a-f]{64}$/.test(v)) sigs.push(v);
  }
  if (t === undefined || sigs.length === 0) return false;
  const now = opts.nowSeconds ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - t) > (opts.toleranceSeconds ?? 300)) return false;
  const expected = Buffer.from(mac(secret, t, body), "hex");
  return sigs.some((s) => timingSafeEqual(Buffer.from(s, "hex"), expected));
}
