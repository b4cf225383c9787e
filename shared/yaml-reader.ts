/**
 * A small typed reader over parsed YAML that records every problem with its YAML path
 * (`config.host_groups[1].ram_gb: expected a positive integer`) instead of stopping at the
 * first one, and warns about unknown keys: a typo must never pass silently, and a Slicer key
 * Paddock does not use must not stop a start (docs/slicer-api.md#the-daemons-yaml-file).
 */
import { parseDocument } from "yaml";
import { PaddockError } from "./errors.js";

/** One problem found in a config file. */
export interface ConfigProblem {
  path: string;
  message: string;
}

/** Collects problems and warnings while reading a config tree. */
export class ConfigReader {
  readonly problems: ConfigProblem[] = [];
  readonly warnings: ConfigProblem[] = [];

  problem(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  warn(path: string, message: string): void {
    this.warnings.push({ path, message });
  }

  /** Read a mapping; a missing value gives `{}`, a non-mapping a problem. */
  object(value: unknown, path: string, required = false): Record<string, unknown> {
    if (value === undefined || value === null) {
      if (required) this.problem(path, "is required");
      return {};
    }
    if (typeof value !== "object" || Array.isArray(value)) {
      this.problem(path, "expected a mapping");
      return {};
    }
    return value as Record<string, unknown>;
  }

  /** Warn about keys of `obj` that are not in `known`. */
  unknownKeys(obj: Record<string, unknown>, path: string, known: readonly string[]): void {
    for (const key of Object.keys(obj)) {
      if (!known.includes(key)) this.warn(`${path}.${key}`, "unknown key (ignored)");
    }
  }

  string(value: unknown, path: string, opts: { required?: boolean; pattern?: RegExp; patternText?: string } = {}): string | undefined {
    if (value === undefined || value === null) {
      if (opts.required) this.problem(path, "is required");
      return undefined;
    }
    if (typeof value !== "string") {
      this.problem(path, `expected a string, got ${describe(value)}`);
      return undefined;
    }
    if (opts.pattern && !opts.pattern.test(value)) {
      this.problem(path, `expected ${opts.patternText ?? `to match ${opts.pattern}`}, got ${JSON.stringify(value)}`);
      return undefined;
    }
    return value;
  }

  /** An integer within [min, max]. */
  int(value: unknown, path: string, opts: { min?: number; max?: number; what?: string } = {}): number | undefined {
    if (value === undefined || value === null) return undefined;
    const min = opts.min ?? 0;
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      const bounded = max < Number.MAX_SAFE_INTEGER;
      const what = opts.what ?? (min === 1 ? "a positive integer" : min === 0 ? "a non-negative integer" : bounded ? `an integer from ${min} to ${max}` : `an integer ≥ ${min}`);
      this.problem(path, `expected ${what}${bounded && (opts.what !== undefined || min <= 1) ? ` ≤ ${max}` : ""}, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  bool(value: unknown, path: string): boolean | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== "boolean") {
      this.problem(path, `expected true or false, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  stringList(value: unknown, path: string): string[] | undefined {
    if (value === undefined || value === null) return undefined;
    if (!Array.isArray(value)) {
      this.problem(path, `expected a list of strings, got ${describe(value)}`);
      return undefined;
    }
    const out: string[] = [];
    value.forEach((v, i) => {
      if (typeof v === "string") out.push(v);
      else this.problem(`${path}[${i}]`, `expected a string, got ${describe(v)}`);
    });
    return out;
  }

  /** Throw one `ERR_CONFIG_INVALID` listing every problem, if there are any. */
  throwIfProblems(source: string): void {
    if (this.problems.length === 0) return;
    const lines = this.problems.map((p) => `${p.path}: ${p.message}`);
    throw new PaddockError("ERR_CONFIG_INVALID", `${source} is invalid:\n  ${lines.join("\n  ")}`, { details: { problems: this.problems } });
  }
}

/** Human description of a YAML value for messages (`the number 644`, `a list`). */
export function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return `the string ${JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value)}`;
  return `the ${typeof value} ${String(value)}`;
}

/**
 * Parse YAML text safely: YAML 1.2 core schema (so `no` stays a string and `0644` is not
 * octal), duplicate keys rejected, merge keys off, aliases capped (alias bombs).
 * @throws PaddockError `ERR_CONFIG_INVALID` with line/column of each syntax problem.
 */
export function parseYamlSafe(text: string, source: string): unknown {
  const doc = parseDocument(text, { version: "1.2", uniqueKeys: true, merge: false, prettyErrors: true, strict: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => ({ path: `${source}:${e.linePos?.[0]?.line ?? "?"}:${e.linePos?.[0]?.col ?? "?"}`, message: e.message.split("\n")[0] ?? e.message }));
    throw new PaddockError("ERR_CONFIG_INVALID", `${source} is not valid YAML:\n  ${problems.map((p) => `${p.path}: ${p.message}`).join("\n  ")}`, { details: { problems } });
  }
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new PaddockError("ERR_CONFIG_INVALID", `${source}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Parse a size such as `25G`, `512M`, `1Gi`, `1024` (bytes) into bytes; binary multiples
 * (K = 1024), as truncate(1) and Slicer's `storage_size` use. Returns undefined if invalid.
 */
export function parseSizeBytes(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]i?[bB]?|[bB])?\s*$/.exec(text);
  if (!m) return undefined;
  const n = parseFloat(m[1] as string);
  const unit = (m[2] ?? "").toUpperCase().charAt(0);
  const mult = unit === "K" ? 2 ** 10 : unit === "M" ? 2 ** 20 : unit === "G" ? 2 ** 30 : unit === "T" ? 2 ** 40 : 1;
  const bytes = Math.floor(n * mult);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}
