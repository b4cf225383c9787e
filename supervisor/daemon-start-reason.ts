/**
 * The one-line reason of a tenant daemon that failed to start, from the log lines it wrote
 * (supervisor/daemon-process.ts `spawnDaemon`). The daemon logs NDJSON (shared/logger.ts: one
 * object per line with `time`, `level`, `msg`, and fields such as `code` and `err`, an
 * `{name, message, code, stack}` object) and writes its fatal error as such a line
 * (tenant-daemon/main.ts `main`); other programs it runs may add plain text to the same log
 * (e.g. a runc advisory warning). The reason is what the daemon itself said at level `error`;
 * plain text only when there is no such line. Pure.
 */

/** Longest reason returned, in UTF-16 code units (a tenant's `status_reason` and the API's `error`). */
export const START_REASON_MAX_CHARS = 500;

/** One line of text: control characters (newlines, escapes) and runs of blanks become one space. */
function oneLine(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\s]+/g, " ").trim();
}

/** `msg` of an error-level NDJSON log line with its error's message and code, or undefined for any other line. */
function errorLineText(line: string): string | undefined {
  const e = errorLine(line);
  if (e === undefined) return undefined;
  const text = e.code !== undefined && e.code !== "" && !e.text.includes(e.code) ? `${e.text} (${oneLine(e.code)})` : e.text;
  return text === "" ? undefined : text;
}

/** An error-level NDJSON log line as `msg: err.message` and its code (`code`, else `err.code`), or undefined for any other line. */
function errorLine(line: string): { text: string; code: string | undefined } | undefined {
  if (!line.trimStart().startsWith("{")) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (o.level !== "error" || typeof o.msg !== "string") return undefined;
  let text = oneLine(o.msg);
  const err = typeof o.err === "object" && o.err !== null ? (o.err as Record<string, unknown>) : undefined;
  const errMessage = typeof err?.message === "string" ? oneLine(err.message) : "";
  if (errMessage !== "" && !text.includes(errMessage)) text = text === "" ? errMessage : `${text}: ${errMessage}`;
  const code = typeof o.code === "string" ? o.code : typeof err?.code === "string" ? err.code : undefined;
  return { text, code };
}

/**
 * The error code of the daemon's fatal error: the `code` (else `err.code`) of the last
 * error-level NDJSON line of `lines`, when it looks like a Paddock code (`ERR_` and capitals,
 * at most 64 characters). Pure.
 * @returns undefined when there is no such line or it has no such code.
 */
export function daemonStartCode(lines: readonly string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    const e = errorLine(lines[i] as string);
    if (e === undefined) continue;
    return e.code !== undefined && /^ERR_[A-Z0-9_]{1,60}$/.test(e.code) ? e.code : undefined;
  }
  return undefined;
}

/** `text` cut to `max` characters, ending in `…` when cut. */
function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, Math.max(0, max - 1))}…`;
}

/**
 * The daemon's own reason for failing, on one line of at most `maxChars` characters: the
 * error-level NDJSON lines of `lines` (oldest first), each as `msg: err.message (code)`, joined
 * by `; ` (the last ones kept when they do not all fit: the fatal error comes last); without
 * such a line, the last non-empty line as it is. Lines that are not valid NDJSON (plain text,
 * cut or broken JSON, invalid UTF-8 decoded as U+FFFD) never throw: they only count as text.
 * @param lines - log lines, e.g. from daemon-process.ts `readLogTail`.
 * @returns undefined when every line is blank.
 */
export function daemonStartReason(lines: readonly string[], maxChars: number = START_REASON_MAX_CHARS): string | undefined {
  const errors: string[] = [];
  for (const line of lines) {
    const text = errorLineText(line);
    if (text !== undefined && errors[errors.length - 1] !== text) errors.push(text);
  }
  if (errors.length === 0) {
    for (let i = lines.length - 1; i >= 0; i--) {
      const text = oneLine(lines[i] as string);
      if (text !== "") return cut(text, maxChars);
    }
    return undefined;
  }
  let out = errors[errors.length - 1] as string;
  for (let i = errors.length - 2; i >= 0; i--) {
    const next = `${errors[i] as string}; ${out}`;
    if (next.length > maxChars) {
      out = `…; ${out}`;
      break;
    }
    out = next;
  }
  return cut(out, maxChars);
}
