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
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
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
