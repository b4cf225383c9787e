/**
 * What every `paddock vm …` command shares: the target flags, the Node shape the API returns,
 * the API client for the chosen target, and the friendly-name fallback (a VM's `name=<v>` tag
 * accepted where a hostname is expected).
 */
import { ApiClient, seg } from "./api-client.js";
import type { FlagSpec } from "./args.js";
import type { CliContext } from "./cli-context.js";
import { ApiError } from "./cli-errors.js";
import { resolveTarget } from "./target.js";

/** Flags every vm command takes. */
export const TARGET_FLAGS = {
  url: { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies FlagSpec;

/** A Node as the API returns it from list, describe and create (snake_case; unknown fields kept). */
export interface VmNode {
  hostname: string;
  hostgroup?: string;
  ip?: string;
  ram_bytes?: number;
  cpus?: number;
  created_at?: string;
  arch?: string;
  tags?: string[];
  status?: string;
  persistent?: boolean;
  [key: string]: unknown;
}

/** Parsed flag values of a command (cli/args.ts `parseFlags`). */
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** The API client for the target the flags, else the environment, name (cli/target.ts). */
export function clientFor(ctx: CliContext, values: Values): ApiClient {
  return new ApiClient(resolveTarget(
    { url: values.url as string | undefined, token: values.token as string | undefined, tokenFile: values["token-file"] as string | undefined },
    ctx.env,
    ctx.readTokenFile,
  ));
}

/**
 * Run `fn` with the VM's real hostname. On a 404 the name is looked up as a friendly-name tag
 * (`GET /nodes?tag=name=<v>`: the API never resolves names, the CLI retries). The retry
 * happens only when exactly one VM carries that tag and its hostname differs.
 * @throws the first error when it is not a 404 or no single VM matches; an `ERR_VM_NOT_FOUND`
 *   whose message does not name `host` (the API's is `VM not found`) is given one that does.
 */
export async function withVm<T>(client: ApiClient, host: string, fn: (hostname: string) => Promise<T>): Promise<T> {
  try {
    return await fn(host);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    const byName = await client.json<VmNode[]>("GET", "/nodes", { query: [["tag", `name=${host}`]] }).catch(() => [] as VmNode[]);
    if (!Array.isArray(byName) || byName.length !== 1 || byName[0]?.hostname === host) {
      if (err.code === "ERR_VM_NOT_FOUND" && !err.error.includes(host)) {
        throw new ApiError(404, `VM ${JSON.stringify(host)} not found: no VM has that hostname or a name=${host} tag (paddock vm list)`, err.code, { ...err.fields });
      }
      throw err;
    }
    return fn((byName[0] as VmNode).hostname);
  }
}

/**
 * The VM as `GET /vm/{h}` answers it when `err`, what a restore or relaunch of `hostname`
 * threw, is the daemon's 409 ERR_VM_ALREADY_RUNNING for a VM that is indeed Running: the CLI
 * takes that request as a no-op, as pause, resume and suspend take theirs. A paused or
 * suspended VM gets the same code (its message says how to bring it back) and stays an error.
 * @returns the running VM (`status: "Running"`)
 * @throws `err` itself when it is anything else, or the VM is not Running (or cannot be read)
 */
export async function runningInstead(client: ApiClient, hostname: string, err: unknown): Promise<VmNode> {
  if (!(err instanceof ApiError) || err.code !== "ERR_VM_ALREADY_RUNNING") throw err;
  const node = await client.json<VmNode>("GET", `/vm/${seg(hostname)}`).catch(() => undefined);
  if (node?.status !== "Running") throw err;
  return node;
}

/** The VM's real hostname (friendly names resolved as in {@link withVm}); for requests that cannot be retried. */
export async function resolveHostname(client: ApiClient, host: string): Promise<string> {
  return withVm(client, host, async (h) => (await client.json<VmNode>("GET", `/vm/${seg(h)}`)).hostname ?? h);
}
