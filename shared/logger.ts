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
  /** Whether a line at `level` would be written (lets a hot path skip building its fields). */
  enabled(level: LogLevel): boolean;
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

/** Batched sinks with lines still queued; written synchronously when the process exits. */
const pendingSinks = new Set<() => void>();
let exitHookInstalled = false;

/** Longest time a batched debug/info line waits before it is written, ms. */
export const LOG_BATCH_MS = 25;

/**
 * A line sink for `stream`. Unbatched: one `stream.write` per line. Batched: debug and info
 * lines are queued and written together by one `stream.write` at most {@link LOG_BATCH_MS}
 * later (an unref'd timer), at once when 64 KiB are queued, and at process exit (`exit`
 * listeners run synchronously; stderr on a pipe, file or TTY is written synchronously by Node
 * on Linux); a warn or error line is written at once with what is queued before it. Order is
 * kept either way. Why: the supervisor writes an access line per request, and on a pipe each
 * write(2) costs a syscall and wakes the reader (journald, the bench) — one write per line was
 * ~6 % of the gateway's CPU profile under load (scripts/bench/profile-gateway.ts).
 */
function makeSink(stream: Writable, batch: boolean): (line: string, urgent: boolean) => void {
  if (!batch) return (line) => void stream.write(line);
  let queued = "";
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    pendingSinks.delete(flush);
    if (queued === "") return;
    const text = queued;
    queued = "";
    stream.write(text);
  };
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const f of [...pendingSinks]) f();
    });
  }
  return (line, urgent) => {
    queued += line;
    if (urgent || queued.length >= 65_536) {
      flush();
      return;
    }
    if (timer === undefined) {
      pendingSinks.add(flush);
      timer = setTimeout(flush, LOG_BATCH_MS);
      timer.unref();
    }
  };
}

/**
 * Create a logger writing NDJSON to `stream` (default `process.stderr`).
 * `level` below which lines are dropped defaults to `PADDOCK_LOG_LEVEL` or `info`.
 * `batch`: write debug/info lines in batches, at most {@link LOG_BATCH_MS} late (warn and error
 * at once; see {@link makeSink}); for a process that logs a line per request (the
 * supervisor's gateway access log).
 */
export function createLogger(options: { stream?: Writable; level?: LogLevel; fields?: Record<string, unknown>; batch?: boolean } = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const envLevel = process.env.PADDOCK_LOG_LEVEL as LogLevel | undefined;
  const min = LEVELS[options.level ?? (envLevel && envLevel in LEVELS ? envLevel : "info")];
  const sink = makeSink(stream, options.batch ?? false);
  const make = (bound: Record<string, unknown>): Logger => {
    // The bound fields' JSON, once per logger. A bound key that needs JSON.stringify's own
    // placement (see plainKey), or a bound object (it could change between lines), sends every
    // line of this logger through formatObject.
    const boundKeys = new Set(Object.keys(bound));
    const boundPlain = [...boundKeys].every((k) => plainKey(k) && (bound[k] === null || typeof bound[k] !== "object"));
    const boundJson = (boundPlain ? formatFields("", bound, undefined) : undefined) ?? "";
    const write = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
      if (LEVELS[level] < min) return;
      const tail = boundPlain && fields ? formatFields(boundJson, fields, boundKeys) : boundPlain ? boundJson : undefined;
      const text = tail !== undefined ? `{"time":"${isoNow()}","level":"${level}","msg":${JSON.stringify(msg)}${tail}}\n` : formatObject(level, msg, bound, fields);
      sink(text, level === "warn" || level === "error");
    };
    return {
      debug: (m, f) => write("debug", m, f),
      info: (m, f) => write("info", m, f),
      warn: (m, f) => write("warn", m, f),
      error: (m, f) => write("error", m, f),
      child: (fields) => make({ ...bound, ...fields }),
      enabled: (level) => LEVELS[level] >= min,
    };
  };
  return make(options.fields ?? {});
}

let isoMs = -1;
let isoText = "";

/** `new Date().toISOString()`, formatted once per millisecond (the access line is per request). */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/**
 * Whether `JSON.stringify` of the line object would place key `k` where it was added: not one
 * of the line's own keys (a field of that name replaces it in place) and not an array index
 * (those come first in an object's key order, https://tc39.es/ecma262/#sec-ordinaryownpropertykeys).
 * Conservative: any key starting with a digit counts as an index.
 */
function plainKey(k: string): boolean {
  const c = k.charCodeAt(0);
  return !(c >= 48 && c <= 57) && k !== "time" && k !== "level" && k !== "msg";
}

/**
 * `head` followed by `,"key":value` for each field (errors serialised, undefined/function
 * values left out, as `JSON.stringify` does in an object), or undefined when a key is not
 * {@link plainKey} or is one of `bound` (a bound field replaced in place): those lines take
 * {@link formatObject}. Same text as `JSON.stringify` of the line object otherwise.
 */
function formatFields(head: string, fields: Record<string, unknown>, bound: ReadonlySet<string> | undefined): string | undefined {
  let out = head;
  for (const k in fields) {
    if (!plainKey(k) || bound?.has(k)) return undefined;
    const v = fields[k];
    const j = JSON.stringify(k === "err" || v instanceof Error ? serialiseError(v) : v) as string | undefined;
    if (j !== undefined) out += `,${JSON.stringify(k)}:${j}`;
  }
  return out;
}

/** A line built as an object and `JSON.stringify`'d (the general case of {@link formatFields}). */
function formatObject(level: LogLevel, msg: string, bound: Record<string, unknown>, fields?: Record<string, unknown>): string {
  const line: Record<string, unknown> = { time: isoNow(), level, msg, ...bound };
  if (fields) for (const k in fields) {
    const v = fields[k];
    line[k] = k === "err" || v instanceof Error ? serialiseError(v) : v;
  }
  return JSON.stringify(line) + "\n";
}

/** A logger that drops everything (tests of pure code). */
export const silentLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => silentLogger,
  enabled: () => false,
};
