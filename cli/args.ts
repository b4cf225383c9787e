/**
 * Argument parsing helpers over node's `util.parseArgs` (no CLI framework).
 *
 * Boolean flags accept the Go/pflag spellings the `slicer` CLI documents: `--flag`,
 * `--flag=true`, `--flag=false` (e.g. `--graceful-shutdown=false`, `--api-auth=false`), plus
 * `--no-flag`. Everything else is `parseArgs` strict mode: unknown flags are usage errors.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { parseGoDurationMs } from "../shared/time.js";
import { UsageError } from "./cli-errors.js";

/** The `options` object of a parseArgs config. */
export type FlagSpec = NonNullable<ParseArgsConfig["options"]>;

const TRUE_WORDS = new Set(["true", "1", "t", "yes"]);
const FALSE_WORDS = new Set(["false", "0", "f", "no"]);

/**
 * Rewrite `--flag=true|false` of boolean flags into `--flag` / `--no-flag` (parseArgs only knows
 * the latter). Tokens after `--` are left alone.
 * @throws UsageError for `--flag=<not a boolean>`.
 */
export function normalizeBoolFlags(argv: readonly string[], options: FlagSpec): string[] {
  const out: string[] = [];
  let rest = false;
  for (const arg of argv) {
    if (rest || arg === "--") {
      rest = true;
      out.push(arg);
      continue;
    }
    const m = /^--([^=]+)=(.*)$/.exec(arg);
    const spec = m ? options[m[1] as string] : undefined;
    if (m && spec?.type === "boolean") {
      const word = (m[2] as string).toLowerCase();
      if (TRUE_WORDS.has(word)) out.push(`--${m[1]}`);
      else if (FALSE_WORDS.has(word)) out.push(`--no-${m[1]}`);
      else throw new UsageError(`--${m[1]} takes true or false, got ${JSON.stringify(m[2])}`);
      continue;
    }
    out.push(arg);
  }
  return out;
}

/** How a command takes arguments besides its flags, for the words of its usage errors. */
export interface ParseFlagsOptions {
  /**
   * The command takes no arguments (`paddock events`, `vm list`): an unknown flag is said to be
   * unknown, without the advice to put an argument starting with - after `--`. Default false.
   */
  noArguments?: boolean;
}

/**
 * parseArgs in strict mode with positionals and `--no-` negation; parse failures become
 * {@link UsageError}s (exit 2), worded by {@link parseArgsMessage}.
 */
export function parseFlags<const O extends FlagSpec>(argv: readonly string[], options: O, how: ParseFlagsOptions = {}) {
  try {
    return parseArgs({ args: normalizeBoolFlags(argv, options), options, strict: true, allowPositionals: true, allowNegative: true });
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(parseArgsMessage(err as Error, how));
  }
}

/**
 * Node's parseArgs errors (https://nodejs.org/api/util.html#utilparseargsconfig) in the CLI's
 * words: an unknown flag is named as such (parseArgs's own text suggests quoting it after `--`,
 * with an unbalanced quote), and for a command that takes arguments an argument starting with -
 * is said to go after `--`; a flag without its value says which. Other errors keep their
 * message. Pure.
 */
export function parseArgsMessage(err: Error, how: ParseFlagsOptions = {}): string {
  const code = (err as { code?: unknown }).code;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const m = /^Unknown option '([^']*)'/.exec(err.message);
    if (m) return how.noArguments === true ? `unknown flag ${m[1] as string} (see --help)` : `unknown flag ${m[1] as string} (see --help; an argument starting with - goes after --)`;
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    const m = /^Option '(-[^ ']*)[^']*' argument missing/.exec(err.message);
    if (m) return `${m[1] as string} needs a value`;
    // `--lines -1`: parseArgs takes the value for a flag and says so on three lines.
    const a = /^Option '(-[^ ']*)' argument is ambiguous/.exec(err.message);
    if (a) return `${a[1] as string} is followed by a value starting with -; write it as ${a[1] as string}=VALUE`;
  }
  return err.message;
}

/** Split argv at the first `--`: `[before, after]` (after is undefined without `--`). */
export function splitAtDoubleDash(argv: readonly string[]): [string[], string[] | undefined] {
  const i = argv.indexOf("--");
  return i < 0 ? [[...argv], undefined] : [argv.slice(0, i), argv.slice(i + 1)];
}

/**
 * Parse an integer flag value.
 * @throws UsageError when not a base-10 integer within [min, max].
 */
export function parseIntFlag(value: string | undefined, flag: string, range: { min?: number; max?: number } = {}): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value.trim())) throw new UsageError(`${flag} takes an integer, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || (range.min !== undefined && n < range.min) || (range.max !== undefined && n > range.max)) {
    const bounds = range.max === undefined ? `≥ ${range.min ?? 0}` : `between ${range.min ?? 0} and ${range.max}`;
    throw new UsageError(`${flag} must be ${bounds}, got ${value}`);
  }
  return n;
}

/**
 * Bytes of a size text: `1024`, `512M`, `1G`, `2Gi`, `1.5G` (binary multiples, K = 1024).
 * The same rule as shared/yaml-reader.ts `parseSizeBytes` (a unit test keeps them in step),
 * repeated here so `paddock vm …` does not load the YAML library (~250 ms per invocation).
 */
export function sizeBytes(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]i?[bB]?|[bB])?\s*$/.exec(text);
  if (!m) return undefined;
  const unit = (m[2] ?? "").toUpperCase().charAt(0);
  const mult = unit === "K" ? 2 ** 10 : unit === "M" ? 2 ** 20 : unit === "G" ? 2 ** 30 : unit === "T" ? 2 ** 40 : 1;
  const bytes = Math.floor(parseFloat(m[1] as string) * mult);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/**
 * Parse a byte size: plain bytes (`1073741824`) or a suffixed size (`512M`, `1G`, `2Gi`, binary multiples).
 * @throws UsageError when invalid.
 */
export function parseSizeFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = sizeBytes(value);
  if (n === undefined) throw new UsageError(`${flag} takes a size such as 1073741824, 512M or 1G, got ${JSON.stringify(value)}`);
  return n;
}

/**
 * Parse a Go duration flag (`30s`, `2m`, `1h30m`) into milliseconds.
 * @throws UsageError when invalid.
 */
export function parseDurationFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseGoDurationMs(value, flag);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/**
 * Parse repeated `k=v` flags (`--label team=a --label env=prod`) into an object.
 * @throws UsageError for an entry without `=` or with an empty key.
 */
export function parseKeyValues(values: readonly string[] | undefined, flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const i = v.indexOf("=");
    if (i <= 0) throw new UsageError(`${flag} takes key=value, got ${JSON.stringify(v)}`);
    out[v.slice(0, i)] = v.slice(i + 1);
  }
  return out;
}

/**
 * Check the number of positionals of a command.
 * @throws UsageError naming the expected form.
 */
export function expectPositionals(positionals: readonly string[], min: number, max: number, usage: string): void {
  if (positionals.length < min) throw new UsageError(`missing argument; usage: ${usage}`);
  if (positionals.length > max) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[max])}; usage: ${usage}`);
}

/** Target flags that may also come before the command (`paddock --url X vm list`), each taking a value. */
const LEADING_TARGET_FLAGS: Readonly<Record<string, readonly string[]>> = {
  vm: ["url", "token", "token-file"],
  events: ["url", "token", "token-file"],
  tenant: ["admin-url", "admin-token"],
};

/**
 * Move target flags given before the command to just after it (and after its subcommand for
 * `vm` and `tenant`), where the command's own parser reads them: `paddock --url X vm list` ⇒
 * `vm list --url X`. Unambiguous: no command name starts with `-`, and the moved flags land
 * before any `--`. argv without leading flags is returned unchanged.
 * @throws UsageError for a leading flag that is not a target flag, lacks its value, or does not
 *   apply to the command (naming where it goes).
 */
export function hoistLeadingTargetFlags(argv: readonly string[]): string[] {
  const leading: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith("--") || arg === "--" || arg === "--help" || arg === "--version") break;
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (!Object.values(LEADING_TARGET_FLAGS).some((names) => names.includes(name))) {
      throw new UsageError(`unknown flag ${arg.slice(0, eq < 0 ? undefined : eq)} before the command; flags go after it (paddock vm list --json); only target flags (--url, --token, --token-file, --admin-url, --admin-token) may come first`);
    }
    if (eq >= 0) leading.push(arg);
    else {
      const value = argv[i + 1];
      if (value === undefined) throw new UsageError(`${arg} needs a value`);
      leading.push(arg, value);
      i++;
    }
  }
  if (leading.length === 0) return [...argv];
  const rest = argv.slice(i);
  const cmd = rest[0];
  const allowed = cmd === undefined ? undefined : LEADING_TARGET_FLAGS[cmd];
  for (const flag of leading.filter((a) => a.startsWith("--"))) {
    const name = flag.slice(2).split("=")[0] as string;
    if (allowed === undefined || !allowed.includes(name)) {
      const where = name.startsWith("admin-") ? "tenant commands (paddock tenant list --admin-url …)" : "vm and events commands (paddock vm list --url …)";
      throw new UsageError(`--${name} applies to ${where}${cmd === undefined ? "; no command given" : `, not to ${JSON.stringify(cmd)}`}`);
    }
  }
  // `vm` and `tenant` take a subcommand first; `events` takes its flags directly.
  const at = cmd === "events" ? 1 : Math.min(2, rest.length);
  return [...rest.slice(0, at), ...leading, ...rest.slice(at)];
}
