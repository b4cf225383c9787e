/**
 * Where the CLI sends its requests, resolved from flags and the environment (pure functions).
 *
 * Tenant/Slicer API (vm commands), first match wins:
 *   URL   `--url`, `PADDOCK_URL`, `SLICER_URL`, default `http://127.0.0.1:8080` (the supervisor gateway)
 *   token `--token`, `--token-file`, `PADDOCK_TOKEN`, `PADDOCK_TOKEN_FILE`, `SLICER_TOKEN`,
 *         `SLICER_TOKEN_FILE` (the Go SDK reads SLICER_TOKEN, then SLICER_TOKEN_FILE:
 *         https://github.com/slicervm/sdk/blob/master/client.go)
 * Admin API (tenant commands):
 *   URL   `--admin-url`, `PADDOCK_ADMIN_URL`, default `http://127.0.0.1:8081`
 *   token `--admin-token`, `PADDOCK_ADMIN_TOKEN`, else the file
 *         `${PADDOCK_STATE_DIR:-/var/lib/paddock}/supervisor/admin-token` (missing: refused when
 *         PADDOCK_STATE_DIR is set, no token at the default path)
 *
 * Socket vs URL (as the Go and TS SDKs decide): after stripping an optional
 * `unix://`, an address starting with `/`, `./`, `../`, `~/` (expanded to $HOME) or ending in
 * `.sock` is a Unix socket; anything else is `http(s)://host[:port]` (`http://` assumed when
 * no scheme is given).
 */
import path from "node:path";
import { PaddockError } from "../shared/errors.js";
import { UsageError } from "./cli-errors.js";
import { fileReadError } from "./local-file.js";
import { envValue } from "../shared/env.js";

/** A resolved API endpoint plus its bearer token (undefined ⇒ no Authorization header). */
export type Target = (
  | { kind: "unix"; socketPath: string; token: string | undefined; display: string }
  | { kind: "http"; url: URL; token: string | undefined; display: string }
) & {
  /** The flag and variable that set this target's address, named in connection hints. */
  addressHint?: string;
};

/** Default tenant API address: the supervisor's gateway (also Slicer's default bind). */
export const DEFAULT_API_URL = "http://127.0.0.1:8080";
/** Default admin API address of the supervisor. */
export const DEFAULT_ADMIN_URL = "http://127.0.0.1:8081";

/** Reads a token file; returns undefined when it does not exist. */
export type ReadTokenFile = (file: string) => string | undefined;

function expandHome(p: string, env: NodeJS.ProcessEnv): string {
  if (p === "~" || p.startsWith("~/")) return path.join(env.HOME ?? "/root", p.slice(1));
  return p;
}

/** True when an address names a Unix socket by the SDKs' rule (see the file comment). */
export function isSocketAddress(address: string): boolean {
  const a = address.startsWith("unix://") ? address.slice("unix://".length) : address;
  return a.startsWith("/") || a.startsWith("./") || a.startsWith("../") || a.startsWith("~/") || a.endsWith(".sock");
}

/**
 * Parse an API address into a socket path or an http(s) URL.
 * @throws UsageError for an unparsable URL or a scheme other than http/https.
 */
export function parseApiAddress(address: string, env: NodeJS.ProcessEnv): { kind: "unix"; socketPath: string } | { kind: "http"; url: URL } {
  if (isSocketAddress(address)) {
    const raw = address.startsWith("unix://") ? address.slice("unix://".length) : address;
    return { kind: "unix", socketPath: path.resolve(expandHome(raw, env)) };
  }
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`invalid API address ${JSON.stringify(address)}: expected http(s)://host:port or a Unix socket path`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`invalid API address ${JSON.stringify(address)}: only http, https and Unix sockets are supported`);
  }
  return { kind: "http", url };
}

/** `read(file)`, with a failure other than "does not exist" named (local-file.ts). @throws PaddockError ERR_FILE_UNREADABLE */
function readNamed(read: ReadTokenFile, file: string, origin: string): string | undefined {
  try {
    return read(file);
  } catch (err) {
    throw fileReadError(file, origin, err);
  }
}

function readTokenFrom(file: string, env: NodeJS.ProcessEnv, read: ReadTokenFile, origin: string): string {
  const p = expandHome(file, env);
  const text = readNamed(read, p, origin);
  if (text === undefined) throw new UsageError(`token file ${p} (from ${origin}) does not exist`);
  return text.trim();
}

function makeTarget(address: string, token: string | undefined, env: NodeJS.ProcessEnv): Target {
  const a = parseApiAddress(address, env);
  return a.kind === "unix"
    ? { kind: "unix", socketPath: a.socketPath, token, display: a.socketPath }
    : { kind: "http", url: a.url, token, display: a.url.origin };
}

/** Flags that pick the tenant API target. */
export interface TargetFlags {
  url?: string | undefined;
  token?: string | undefined;
  tokenFile?: string | undefined;
}

/**
 * A place a token may come from: its name for messages and its value (undefined ⇒ not given).
 * `fallback`: a default the user did not name (the admin-token file); where empty sources are
 * refused, it is consulted only when no source before it was given, not even empty.
 */
type TokenSource = [name: string, value: () => string | undefined, fallback?: "fallback"];

/**
 * The first non-blank token of `sources`, read in order (files only when reached).
 * @param refuseEmpty - refuse when sources were given but every one is empty or blank: true for
 *   http(s) targets, which always want a token (the gateway; a TCP daemon has auth on by
 *   default), so the request would only get the server's generic 401. On a Unix socket (auth
 *   off by default) an empty source counts as unset, as `PADDOCK_TOKEN= paddock …` means.
 *   For http(s) targets an empty source given by name is also not replaced by a `fallback`
 *   source (the admin-token file): it is refused.
 * @returns undefined when no source gave a token.
 * @throws PaddockError ERR_AUTH_REQUIRED (exit 1) naming the first empty source; nothing is sent.
 */
function firstToken(sources: readonly TokenSource[], refuseEmpty: boolean, hint: string): string | undefined {
  let empty: string | undefined;
  for (const [name, value, fallback] of sources) {
    if (refuseEmpty && fallback !== undefined && empty !== undefined) break;
    const v = value();
    if (v === undefined) continue;
    if (v.trim() !== "") return v.trim();
    empty ??= name;
  }
  if (empty !== undefined && refuseEmpty) throw new PaddockError("ERR_AUTH_REQUIRED", `the API token is empty: ${empty} is set but empty; ${hint}`);
  return undefined;
}

/**
 * Resolve the tenant/Slicer API target (precedence in the file comment). An empty or blank
 * source counts as unset; when only such sources are given for an http(s) target, nothing is
 * sent (see firstToken).
 * @throws UsageError for a bad address or a named token file that does not exist;
 *   PaddockError ERR_FILE_UNREADABLE for a token file that cannot be read (a directory,
 *   permission denied: cli/local-file.ts); ERR_AUTH_REQUIRED when every token source given for
 *   an http(s) target is empty (e.g. `PADDOCK_TOKEN=`).
 */
export function resolveTarget(flags: TargetFlags, env: NodeJS.ProcessEnv, read: ReadTokenFile): Target {
  const address = envValue(flags.url) ?? envValue(env.PADDOCK_URL) ?? envValue(env.SLICER_URL) ?? DEFAULT_API_URL;
  const fromFile = (file: string | undefined, origin: string): TokenSource => [
    file ? `the token file ${expandHome(file, env)} (from ${origin})` : origin,
    () => (file ? readTokenFrom(file, env, read, origin) : file),
  ];
  const token = firstToken([
    ["--token", () => flags.token],
    fromFile(flags.tokenFile, "--token-file"),
    ["PADDOCK_TOKEN", () => env.PADDOCK_TOKEN],
    fromFile(env.PADDOCK_TOKEN_FILE, "PADDOCK_TOKEN_FILE"),
    ["SLICER_TOKEN", () => env.SLICER_TOKEN],
    fromFile(env.SLICER_TOKEN_FILE, "SLICER_TOKEN_FILE"),
  ], !isSocketAddress(address), "pass the tenant's token (paddock tenant token ID issues one), or unset it for a daemon without auth");
  return makeTarget(address, token, env);
}

/** Flags that pick the admin API target. */
export interface AdminTargetFlags {
  adminUrl?: string | undefined;
  adminToken?: string | undefined;
}

/** Path of the supervisor's admin token file for an environment: `<state>/supervisor/admin-token`. */
export function adminTokenPath(env: NodeJS.ProcessEnv): string {
  return path.join(envValue(env.PADDOCK_STATE_DIR) ?? "/var/lib/paddock", "supervisor", "admin-token");
}

/**
 * Read the admin-token file `file`. Where its name came from decides what its absence means:
 * under a `PADDOCK_STATE_DIR` the operator set, the file was asked for, so a missing one is
 * refused before anything is sent; at the default path (no variable) it is no token (the server
 * answers 401 and tenant-commands.ts names the file it looked for).
 * @returns the file's text; undefined when it does not exist at the default path.
 * @throws PaddockError ERR_FILE_UNREADABLE (local-file.ts) when it cannot be read, or does not
 *   exist under a `PADDOCK_STATE_DIR` that was set.
 */
function readAdminTokenFile(read: ReadTokenFile, file: string, env: NodeJS.ProcessEnv): string | undefined {
  const named = envValue(env.PADDOCK_STATE_DIR) !== undefined;
  const origin = named ? "the admin-token file under PADDOCK_STATE_DIR" : "the admin-token file";
  const text = readNamed(read, file, origin);
  if (text === undefined && named) throw fileReadError(file, origin, Object.assign(new Error(`ENOENT: no such file or directory, open '${file}'`), { code: "ENOENT" }));
  return text;
}

/**
 * Resolve the supervisor admin API target. A missing admin-token file at the default path is
 * not an error here (the server answers 401, and the CLI then names the file it looked for);
 * under a `PADDOCK_STATE_DIR` that was set it is refused (see readAdminTokenFile). An empty
 * `--admin-token ''` or `PADDOCK_ADMIN_TOKEN=` for an http(s) target is refused, not replaced by
 * the admin-token file, as the tenant side refuses `--token ''` (see firstToken); on a Unix
 * socket an empty source counts as unset there as here (the file is then read).
 * @throws UsageError for a bad address; PaddockError ERR_FILE_UNREADABLE for an admin-token file
 *   that exists but cannot be read, or is missing under a `PADDOCK_STATE_DIR` that was set (only
 *   when no token came before it); ERR_AUTH_REQUIRED for an http(s) target when
 *   the token given is empty (`--admin-token ''`, `PADDOCK_ADMIN_TOKEN=`), or none is given and
 *   the admin-token file is empty.
 */
export function resolveAdminTarget(flags: AdminTargetFlags, env: NodeJS.ProcessEnv, read: ReadTokenFile): Target {
  const address = envValue(flags.adminUrl) ?? envValue(env.PADDOCK_ADMIN_URL) ?? DEFAULT_ADMIN_URL;
  const file = adminTokenPath(env);
  const token = firstToken([
    ["--admin-token", () => flags.adminToken],
    ["PADDOCK_ADMIN_TOKEN", () => env.PADDOCK_ADMIN_TOKEN],
    [`the admin-token file ${file}`, () => readAdminTokenFile(read, file, env), "fallback"],
  ], !isSocketAddress(address), `pass the supervisor's admin token (in ${file}), or unset it`);
  return { ...makeTarget(address, token, env), addressHint: "--admin-url / PADDOCK_ADMIN_URL" };
}
