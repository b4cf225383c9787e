/**
 * Time helpers for the Slicer wire format (docs/slicer-api.md#request-and-response-conventions):
 * RFC3339 timestamps and Go durations.
 */
import { PaddockError } from "./errors.js";

/** RFC3339 with millisecond precision and `Z`, e.g. `2026-04-11T08:48:41.302Z`. */
export function rfc3339(date: Date | number = new Date()): string {
  return (typeof date === "number" ? new Date(date) : date).toISOString();
}

/** The zero time Go's `time.Time` decodes without error (for a timestamp genuinely unknown). */
export const ZERO_TIME = "0001-01-01T00:00:00Z";

const UNIT_NS: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, "μs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/**
 * Parse Go `time.ParseDuration` syntax (`45s`, `2m0s`, `1.5s`, `500ms`, `2h45m`, `0`) into
 * milliseconds. Source: https://pkg.go.dev/time#ParseDuration.
 * @throws PaddockError `ERR_QUERY_INVALID` for anything else (negative values included).
 */
export function parseGoDurationMs(text: string, what = "duration"): number {
  const s = text.trim();
  if (s === "0") return 0;
  // µs and μs escaped: the tenant daemon's bundle must stay ASCII (scripts/build-daemon-bundle.ts).
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += parseFloat(m[1] as string) * (UNIT_NS[m[2] as string] as number);
    consumed = re.lastIndex;
  }
  if (s.length === 0 || consumed !== s.length) {
    throw new PaddockError("ERR_QUERY_INVALID", `invalid ${what} ${JSON.stringify(text)}: expected a Go duration such as 30s, 2m0s or 500ms`);
  }
  return total / 1e6;
}

/** Sleep for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Nanoseconds of each unit Go's `time.ParseDuration` knows (µ as U+00B5 and U+03BC). */
const GO_UNIT_NS: Record<string, bigint> = { ns: 1n, us: 1_000n, "µs": 1_000n, "μs": 1_000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n };
const INT64_LIMIT = 1n << 63n;

/**
 * Parse a duration with exactly the grammar and limits of Go's `time.ParseDuration`
 * (https://pkg.go.dev/time#ParseDuration; the algorithm of
 * https://github.com/golang/go/blob/master/src/time/format.go `ParseDuration`): an optional
 * sign, then one or more decimal numbers, each with an optional fraction and a unit of `ns`,
 * `us`, `µs`, `ms`, `s`, `m` or `h` (`1h30m`, `1.5s`, `.5m`, `-2m`, `+3s`); the bare `0` is the
 * only number without a unit. No spaces; the result must fit in an int64 of nanoseconds, and a
 * fraction is truncated to whole nanoseconds as Go does.
 * @returns the duration in nanoseconds (negative for a `-` sign).
 * @throws PaddockError with `code` (default ERR_QUERY_INVALID) naming `what` and the problem.
 */
export function parseGoDurationNs(text: string, what = "duration", code: "ERR_QUERY_INVALID" | "ERR_TTL_INVALID" | "ERR_CONFIG_INVALID" = "ERR_QUERY_INVALID"): bigint {
  const fail = (why: string): PaddockError => new PaddockError(code, `invalid ${what} ${JSON.stringify(text)}: ${why} (expected a Go duration such as 90s, 1h30m or 1.5h)`);
  let s = text;
  let neg = false;
  if (s !== "" && (s[0] === "-" || s[0] === "+")) {
    neg = s[0] === "-";
    s = s.slice(1);
  }
  if (s === "0") return 0n;
  if (s === "") throw fail("empty");
  const isDigit = (c: string | undefined): boolean => c !== undefined && c >= "0" && c <= "9";
  let total = 0n;
  while (s !== "") {
    if (!(s[0] === "." || isDigit(s[0]))) throw fail("a number must come before each unit");
    // The integer part: overflow is an error.
    let i = 0;
    let v = 0n;
    while (isDigit(s[i])) {
      v = v * 10n + BigInt(s.charCodeAt(i) - 48);
      if (v > INT64_LIMIT) throw fail("out of range");
      i++;
    }
    const pre = i > 0;
    s = s.slice(i);
    // The fraction: digits past int64 precision are consumed and ignored.
    let f = 0n;
    let scale = 1;
    let post = false;
    if (s[0] === ".") {
      s = s.slice(1);
      let j = 0;
      let overflow = false;
      while (isDigit(s[j])) {
        if (!overflow) {
          const y = f * 10n + BigInt(s.charCodeAt(j) - 48);
          if (y > INT64_LIMIT) overflow = true;
          else {
            f = y;
            scale *= 10;
          }
        }
        j++;
      }
      post = j > 0;
      s = s.slice(j);
    }
    if (!pre && !post) throw fail("a number has no digits");
    let u = 0;
    while (u < s.length && s[u] !== "." && !isDigit(s[u])) u++;
    if (u === 0) throw fail("missing unit");
    const unit = GO_UNIT_NS[s.slice(0, u)];
    if (unit === undefined) throw fail(`unknown unit ${JSON.stringify(s.slice(0, u))}`);
    s = s.slice(u);
    if (v > INT64_LIMIT / unit) throw fail("out of range");
    v *= unit;
    // Go computes the fraction in float64 (exact to the nanosecond for fractions of an hour).
    if (f > 0n) v += BigInt(Math.trunc(Number(f) * (Number(unit) / scale)));
    if (v > INT64_LIMIT) throw fail("out of range");
    total += v;
    if (total > INT64_LIMIT) throw fail("out of range");
  }
  if (neg) return -total;
  if (total > INT64_LIMIT - 1n) throw fail("out of range");
  return total;
}

/**
 * Parse an RFC 3339 date-time (https://www.rfc-editor.org/rfc/rfc3339#section-5.6):
 * `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` and `Z` in either case, every field in range
 * (day within its month; second 60 refused, as Go's time.Parse does).
 * @returns milliseconds since the epoch (a fraction below 1 ms is truncated).
 * @throws PaddockError `code` naming `what`.
 */
export function parseRfc3339Ms(text: string, what: string, code: "ERR_EXPIRES_AT_INVALID" | "ERR_QUERY_INVALID"): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/.exec(text);
  const fail = (): PaddockError => new PaddockError(code, `invalid ${what} ${JSON.stringify(text)}: expected an RFC 3339 time such as 2026-12-06T09:30:00Z`);
  if (!m) throw fail();
  const [y, mo, d, h, mi, sec] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i]));
  const daysInMonth = new Date(Date.UTC(y as number, mo as number, 0)).getUTCDate();
  if ((mo as number) < 1 || (mo as number) > 12 || (d as number) < 1 || (d as number) > daysInMonth || (h as number) > 23 || (mi as number) > 59 || (sec as number) > 59) throw fail();
  let offsetMin = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]), om = Number(m[11]);
    if (oh > 23 || om > 59) throw fail();
    offsetMin = (m[9] === "-" ? -1 : 1) * (oh * 60 + om);
  }
  const ms = Number(((m[7] ?? "") + "000").slice(0, 3));
  const utc = new Date(0);
  utc.setUTCFullYear(y as number, (mo as number) - 1, d as number);
  utc.setUTCHours(h as number, mi as number, sec as number, ms);
  return utc.getTime() - offsetMin * 60_000;
}

/**
 * Shortest VM `ttl` a create takes, ms. The deadline counts from the create request, and a
 * VM whose deadline passes before it runs is acted on as it starts (tenant-daemon/vm/vm-expiry.ts):
 * a sub-second ttl could only delete a cold-booted VM on arrival, so it is refused.
 */
export const MIN_VM_TTL_MS = 1000;

/**
 * A VM create's `ttl` (Go duration text) in ms: at least {@link MIN_VM_TTL_MS}. The daemon's
 * create (tenant-daemon/vm/vm-expiry.ts parseTtl) and `paddock vm launch --ttl` both check it here.
 * @param what - how to name the value in messages (`ttl`, `--ttl`).
 * @throws PaddockError ERR_TTL_INVALID (400) for a bad duration or one below the minimum, naming it.
 */
export function parseVmTtlMs(text: string, what = "ttl"): number {
  const ns = parseGoDurationNs(text, what, "ERR_TTL_INVALID");
  if (ns < BigInt(MIN_VM_TTL_MS) * 1_000_000n) {
    throw new PaddockError("ERR_TTL_INVALID", `${what} must be at least ${MIN_VM_TTL_MS / 1000}s, got ${JSON.stringify(text)}: the deadline counts from the create, and a VM whose deadline passes before it has booted is deleted as it starts`);
  }
  return Number(ns) / 1e6;
}
