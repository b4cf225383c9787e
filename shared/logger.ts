/**
 * Structured NDJSON logger: one JSON object per line on stderr (or a given stream).
 * Fields: `time` (RFC3339), `level`, `msg`, plus bound context (`tenant`, `req`, …).
 */
import type { Writable } from "node:stream";

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger bound to some context fields. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): Logger;
}

function serialiseError(err: unknown): unknown {
  if (err instanceof Error) {
    const out: Record<string, unknown> = { name: err.name, message: err.message, stack: err.stack };
    if ("code" in err) out.code = (err as { code: unknown }).code;
    if (err.cause !== undefined) out.cause = serialiseError(err.cause);
    return out;
  }
  return err;
}

/**
 * Create a logger writing NDJSON to `stream` (default `process.stderr`).
 * `level` below which lines are dropped defaults to `PADDOCK_LOG_LEVEL` or `info`.
 */
export function createLogger(options: { stream?: Writable; level?: LogLevel; fields?: Record<string, unknown> } = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const envLevel = process.env.PADDOCK_LOG_LEVEL as LogLevel | undefined;
  const min = LEVELS[options.level ?? (envLevel && envLevel in LEVELS ? envLevel : "info")];
  const make = (bound: Record<string, unknown>): Logger => {
    const write = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
      if (LEVELS[level] < min) return;
      const line: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...bound };
      for (const [k, v] of Object.entries(fields ?? {})) line[k] = k === "err" || v instanceof Error ? serialiseError(v) : v;
      stream.write(JSON.stringify(line) + "\n");
    };
    return {
      debug: (m, f) => write("debug", m, f),
      info: (m, f) => write("info", m, f),
      warn: (m, f) => write("warn", m, f),
      error: (m, f) => write("error", m, f),
      child: (fields) => make({ ...bound, ...fields }),
    };
  };
  return make(options.fields ?? {});
}

/** A logger that drops everything (tests of pure code). */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
};
