/**
 * `paddock tenant …`: the supervisor's admin API (`/admin/v1`, supervisor/admin-api.ts,
 * docs/admin-api.openapi.yaml). Admin target and token: see cli/target.ts.
 */
import { parseFlags, parseIntFlag, parseSizeFlag, parseDurationFlag, parseKeyValues, expectPositionals, type FlagSpec } from "./args.js";
import { ApiClient, readBody, seg } from "./api-client.js";
import { ApiError, UsageError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { alreadyLine, formatAge, formatBytes, renderJson, renderKeyValues, renderTable, Progress } from "./output.js";
import { adminTokenPath, resolveAdminTarget } from "./target.js";
import { PaddockError } from "../shared/errors.js";
import { TENANT_ID_PATTERN } from "../shared/tenant-config-defaults.js";

const ADMIN_FLAGS = {
  "admin-url": { type: "string" },
  "admin-token": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies FlagSpec;

/** A tenant as the admin API returns it (snake_case; see supervisor/admin-api.ts `tenantView`). */
export interface TenantView {
  id: string;
  status?: string;
  status_reason?: string;
  template?: string;
  labels?: Record<string, string>;
  limits?: Record<string, number>;
  ranges?: { host_group: string; cidr: string }[];
  socket_path?: string;
  daemon?: { state?: string; pid?: number; restarts?: number; uptime_seconds?: number; started_at?: string; version?: string; last_error?: string };
  tokens?: { id: string; created_at?: string; expires_at?: string; revoked_at?: string }[];
  vms?: { total?: number; by_status?: Record<string, number> } | null;
  resources?: { vcpu?: number; ram_bytes?: number; disk_bytes?: number } | null;
  created_at?: string;
  token?: string;
  token_id?: string;
  [key: string]: unknown;
}

/** Help text of `paddock tenant`. */
export const TENANT_HELP = `usage: paddock tenant COMMAND [flags]

  create [ID | --id ID] [--template T] [--image NAME] [--hypervisor oci|gvisor] [--label k=v]...
         [--max-vms N] [--max-vcpu N] [--max-ram 16G] [--max-disk 200G] [--max-pids N]
         [--max-conns N] [--max-conns-per-vm N] [--token-expires-in 720h] [--json]
         the image its VMs will use (--image, else the template's) must be in the supervisor's
         image store and sound, or nothing is created (ERR_IMAGE_NOT_FOUND / ERR_IMAGE_CORRUPT)
  list [--status S] [--label k=v]... [--json]
  get ID [--json]                               tokens: the unrevoked ones, "(expires T)" or "(expired T)"
  update ID [--max-vms N] [--max-vcpu N] [--max-ram 16G] [--max-disk 200G] [--max-pids N]
            [--max-conns N] [--max-conns-per-vm N] [--json]
                                                change limits (PATCH); they apply at the daemon's next start
                                                (paddock tenant restart ID)
  delete ID                                     an unknown ID exits 3 ("does not exist")
  suspend ID [--reason R]
  resume ID
  restart ID                                    stop and start its daemon (applies changed limits);
                                                its ephemeral and warm VMs are deleted, persistent and count: VMs keep running
  logs ID [--lines N]
  token ID [--expires-in 24h] [--json]          issue a new token (shown once)
  token revoke ID TOKEN_ID                      a token already revoked: says so (since when), exit 0

--json: create prints the tenant (id = the tenant's id) with token and token_id; token prints
id and token_id (both the token's id: token_id as create and token revoke --json name it), token,
created_at, expires_at; token revoke prints id (the TENANT's id, kept for scripts; the admin
API's answer to a revoke names the token id) and tenant_id (the same), token_id, revoked,
already_revoked (and revoked_at when it was). Scripts: read tenant_id and token_id.

Admin API: --admin-url / PADDOCK_ADMIN_URL (default http://127.0.0.1:8081);
token --admin-token / PADDOCK_ADMIN_TOKEN, else \${PADDOCK_STATE_DIR:-/var/lib/paddock}/supervisor/admin-token
(with PADDOCK_STATE_DIR set, a missing file is refused before sending: ERR_FILE_UNREADABLE, exit 1).
`;

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function adminClient(ctx: CliContext, values: Values): ApiClient {
  return new ApiClient(resolveAdminTarget(
    { adminUrl: values["admin-url"] as string | undefined, adminToken: values["admin-token"] as string | undefined },
    ctx.env,
    ctx.readTokenFile,
  ));
}

/**
 * A failed daemon start (`ERR_DAEMON_START_FAILED` from `tenant create`, `restart`, `resume`;
 * supervisor/daemon-process.ts) as one line: the supervisor's message with the daemon's own code
 * (`daemon_code`, which the message ends with in parentheses) said in words rather than as a
 * second code in parentheses, what became of the tenant and where to look, then the one code.
 * Pure. @returns a PaddockError for `paddock: error: MESSAGE (ERR_DAEMON_START_FAILED)`, exit 1.
 */
export function daemonStartFailure(err: ApiError): PaddockError {
  const daemonCode = typeof err.fields.daemon_code === "string" && /^ERR_[A-Z0-9_]+$/.test(err.fields.daemon_code) ? err.fields.daemon_code : undefined;
  let msg = err.error;
  if (daemonCode !== undefined) {
    const suffix = ` (${daemonCode})`;
    msg = msg.endsWith(suffix) ? `${msg.slice(0, -suffix.length)} [the daemon's error: ${daemonCode}]` : `${msg} [the daemon's error: ${daemonCode}]`;
  }
  const id = typeof err.fields.tenant === "string" && TENANT_ID_PATTERN.test(err.fields.tenant) ? err.fields.tenant : undefined;
  if (id !== undefined) {
    // README "Tenants": a restart keeps the tenant's tokens and persistent VMs and starts the
    // config rendered at create again; only a cause in that config needs a delete and a create.
    msg += `; tenant ${id} is kept as failed: its log is \`paddock tenant logs ${id}\`; once the cause is fixed, \`paddock tenant restart ${id}\` starts it again with its tokens and persistent VMs (a cause in the config it was created with needs \`paddock tenant delete ${id}\` and a new create)`;
  }
  return new PaddockError("ERR_DAEMON_START_FAILED", msg);
}

/** Add a hint about where the admin token comes from to a 401; put a failed daemon start on one clear line ({@link daemonStartFailure}). */
async function admin<T>(ctx: CliContext, client: ApiClient, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApiError && err.code === "ERR_DAEMON_START_FAILED") throw daemonStartFailure(err);
    if (err instanceof ApiError && err.status === 401) {
      const hint = client.target.token === undefined
        ? `no admin token: pass --admin-token, set PADDOCK_ADMIN_TOKEN, or make ${adminTokenPath(ctx.env)} readable`
        : "the admin token was rejected (it is in <state_dir>/supervisor/admin-token on the supervisor's host)";
      throw new ApiError(401, `${err.error}; ${hint}`, err.code);
    }
    throw err;
  }
}

/** The `tenant list` table (pure). */
export function renderTenantTable(tenants: readonly TenantView[], nowMs: number): string {
  return renderTable(
    ["ID", "STATUS", "TEMPLATE", "RUNTIME", "DAEMON", "PID", "RESTARTS", "VERSION", "RANGES", "AGE", "LABELS"],
    tenants.map((t) => [
      t.id,
      t.status ?? "",
      t.template ?? "",
      typeof t.hypervisor === "string" ? t.hypervisor : "",
      t.daemon?.state ?? "",
      t.daemon?.pid === undefined ? "" : String(t.daemon.pid),
      t.daemon?.restarts === undefined ? "" : String(t.daemon.restarts),
      t.daemon?.version ?? "",
      (t.ranges ?? []).map((r) => `${r.host_group}=${r.cidr}`).join(","),
      formatAge(t.created_at, nowMs),
      Object.entries(t.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(","),
    ]),
  );
}

/**
 * `tenant get` as key/value lines (pure). Tokens: the unrevoked ones, each `ID`, `ID (expires T)`
 * or, once `expires_at` is not after `nowMs`, `ID (expired T)`: the gateway refuses an expired one.
 * @param nowMs - the time tokens are judged at, epoch ms (default: now).
 */
export function renderTenantDetails(t: TenantView, nowMs = Date.now()): string {
  const pairs: [string, string][] = [
    ["id", t.id],
    ["status", t.status_reason ? `${t.status ?? ""} (${t.status_reason})` : (t.status ?? "")],
    ["template", t.template ?? ""],
    ...(typeof t.image === "string" ? [["image", t.image] as [string, string]] : []),
    ...(typeof t.hypervisor === "string" ? [["hypervisor", t.hypervisor] as [string, string]] : []),
    ["socket", t.socket_path ?? ""],
    ["ranges", (t.ranges ?? []).map((r) => `${r.host_group}=${r.cidr}`).join(", ")],
    ["daemon", [t.daemon?.state, t.daemon?.pid === undefined ? undefined : `pid ${t.daemon.pid}`, t.daemon?.restarts === undefined ? undefined : `${t.daemon.restarts} restarts`, t.daemon?.uptime_seconds === undefined ? undefined : `up ${t.daemon.uptime_seconds}s${t.daemon.started_at ? ` (since ${t.daemon.started_at})` : ""}`].filter(Boolean).join(", ")],
  ];
  // The build its process runs: after an upgrade, one that differs from the supervisor's
  // (`GET /admin/v1/host` supervisor.version) runs the old code until `paddock tenant restart ID`.
  if (t.daemon?.version) pairs.push(["daemon version", t.daemon.version]);
  if (t.daemon?.last_error) pairs.push(["last error", t.daemon.last_error]);
  pairs.push(["labels", Object.entries(t.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ")]);
  const limits = Object.entries(t.limits ?? {}).map(([k, v]) => `${k}=${k.endsWith("_bytes") ? formatBytes(v) : v}`).join(", ");
  // Changed limits are rendered at once but applied at the daemon's next start (`tenant restart`).
  pairs.push(["limits", t.pending_restart === true ? `${limits} (pending restart: applied at the daemon's next start, paddock tenant restart)` : limits]);
  if (t.vms) {
    const byStatus = Object.entries(t.vms.by_status ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
    pairs.push(["vms", byStatus === "" ? String(t.vms.total ?? 0) : `${t.vms.total ?? 0} (${byStatus})`]);
  }
  if (t.resources) pairs.push(["committed", `${t.resources.vcpu ?? 0} vcpu, ${formatBytes(t.resources.ram_bytes ?? 0)} ram, ${formatBytes(t.resources.disk_bytes ?? 0)} disk`]);
  const live = (t.tokens ?? []).filter((k) => !k.revoked_at);
  const tokenText = (k: { id: string; expires_at?: string }): string => {
    if (!k.expires_at) return k.id;
    const at = Date.parse(k.expires_at);
    return `${k.id} (${Number.isFinite(at) && at <= nowMs ? "expired" : "expires"} ${k.expires_at})`;
  };
  pairs.push(["tokens", live.map(tokenText).join(", ")]);
  pairs.push(["created", t.created_at ?? ""]);
  return renderKeyValues(pairs);
}

/** The limit flags of `tenant create` and `tenant update`. */
const LIMIT_FLAGS = {
  "max-vms": { type: "string" },
  "max-vcpu": { type: "string" },
  "max-ram": { type: "string" },
  "max-disk": { type: "string" },
  "max-pids": { type: "string" },
  "max-conns": { type: "string" },
  "max-conns-per-vm": { type: "string" },
} as const;

/**
 * The admin API's `limits` object from {@link LIMIT_FLAGS} (only the flags given).
 * @returns `{ max_vms?, max_vcpu?, max_ram_bytes?, max_disk_bytes?, max_pids?, max_conns?, max_conns_per_vm? }`.
 * @throws UsageError for a value that is no count or size.
 */
function readLimitFlags(values: { [K in keyof typeof LIMIT_FLAGS]?: string }): Record<string, number> {
  const limits: Record<string, number> = {};
  const maxVms = parseIntFlag(values["max-vms"], "--max-vms", { min: 0 });
  const maxVcpu = parseIntFlag(values["max-vcpu"], "--max-vcpu", { min: 0 });
  const maxRam = parseSizeFlag(values["max-ram"], "--max-ram");
  const maxDisk = parseSizeFlag(values["max-disk"], "--max-disk");
  // Guest processes; the supervisor checks the bounds and, under gVisor, the host pids they take.
  const maxPids = parseIntFlag(values["max-pids"], "--max-pids", { min: 0 });
  if (maxVms !== undefined) limits.max_vms = maxVms;
  if (maxVcpu !== undefined) limits.max_vcpu = maxVcpu;
  if (maxRam !== undefined) limits.max_ram_bytes = maxRam;
  if (maxDisk !== undefined) limits.max_disk_bytes = maxDisk;
  if (maxPids !== undefined) limits.max_pids = maxPids;
  // Conntrack entries of the tenant's VMs (tenant-daemon/network/conn-limits.ts); the supervisor checks the bounds.
  const maxConns = parseIntFlag(values["max-conns"], "--max-conns", { min: 0 });
  const maxConnsPerVm = parseIntFlag(values["max-conns-per-vm"], "--max-conns-per-vm", { min: 0 });
  if (maxConns !== undefined) limits.max_conns = maxConns;
  if (maxConnsPerVm !== undefined) limits.max_conns_per_vm = maxConnsPerVm;
  return limits;
}

/**
 * `paddock tenant update ID [--max-…]`: `PATCH /admin/v1/tenants/{id}` with the limits given.
 * New limits reach the daemon at its next start (the answer's `pending_restart`), so the line
 * printed says how to apply them.
 */
async function tenantUpdate(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, ...LIMIT_FLAGS });
  expectPositionals(positionals, 1, 1, "paddock tenant update ID [--max-vms N] [--max-vcpu N] [--max-ram 16G] [--max-disk 200G] [--max-pids N] [--max-conns N] [--max-conns-per-vm N] [--json]");
  const id = positionals[0] as string;
  const limits = readLimitFlags(values);
  if (Object.keys(limits).length === 0) throw new UsageError("tenant update: give at least one of --max-vms, --max-vcpu, --max-ram, --max-disk, --max-pids, --max-conns, --max-conns-per-vm");
  const client = adminClient(ctx, values);
  const t = await admin(ctx, client, () => client.json<TenantView>("PATCH", `/admin/v1/tenants/${seg(id)}`, { json: { limits } }));
  if (values.json) {
    await writeOut(ctx.stdout, renderJson(t));
    return EXIT.OK;
  }
  const what = Object.entries(limits).map(([k, v]) => `${k} ${v}`).join(", ");
  await writeOut(ctx.stdout, t.pending_restart === true
    ? `tenant ${t.id} limits set (${what}); they apply at its daemon's next start: paddock tenant restart ${t.id}\n`
    : `tenant ${t.id} limits set (${what}); nothing to restart\n`);
  return EXIT.OK;
}

async function tenantCreate(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...ADMIN_FLAGS,
    id: { type: "string" },
    template: { type: "string" },
    image: { type: "string" },
    hypervisor: { type: "string" },
    label: { type: "string", multiple: true },
    ...LIMIT_FLAGS,
    "token-expires-in": { type: "string" },
  });
  expectPositionals(positionals, 0, 1, "paddock tenant create [ID | --id ID] [flags]");
  // The id may be given as every other tenant command takes it (`tenant create acme`), or as --id.
  const id = positionals[0] ?? values.id;
  if (positionals[0] !== undefined && values.id !== undefined && values.id !== positionals[0]) throw new UsageError(`two ids: ${JSON.stringify(positionals[0])} and --id ${JSON.stringify(values.id)}; give one`);
  const body: Record<string, unknown> = {};
  if (id !== undefined) body.id = id;
  if (values.template !== undefined) body.template = values.template;
  if (values.image !== undefined) body.image = values.image;
  // Checked by the supervisor (oci or gvisor, and runsc installed for gvisor).
  if (values.hypervisor !== undefined) body.hypervisor = values.hypervisor;
  if (values.label?.length) body.labels = parseKeyValues(values.label, "--label");
  const limits = readLimitFlags(values);
  if (Object.keys(limits).length > 0) body.limits = limits;
  const expiresMs = parseDurationFlag(values["token-expires-in"], "--token-expires-in");
  if (expiresMs !== undefined) body.token_expires_in_seconds = Math.max(1, Math.round(expiresMs / 1000));

  const client = adminClient(ctx, values);
  const progress = new Progress(ctx.stderr);
  progress.every(200, () => `provisioning tenant${id !== undefined ? ` ${id}` : ""} (starting its daemon) … ${progress.elapsed()}`);
  let t: TenantView;
  try {
    t = await admin(ctx, client, () => client.json<TenantView>("POST", "/admin/v1/tenants", { json: body }));
  } finally {
    progress.done();
  }
  if (values.json) {
    await writeOut(ctx.stdout, renderJson(t));
    return EXIT.OK;
  }
  await writeOut(ctx.stdout, renderKeyValues([
    ["tenant", t.id],
    ["status", t.status ?? ""],
    ["template", t.template ?? ""],
    ["ranges", (t.ranges ?? []).map((r) => `${r.host_group}=${r.cidr}`).join(", ")],
    ["socket", t.socket_path ?? ""],
    ["token id", t.token_id ?? ""],
    ["token", t.token ?? ""],
  ]) + "The token is shown only once. Use it as PADDOCK_TOKEN with PADDOCK_URL set to the gateway (default http://127.0.0.1:8080).\n");
  return EXIT.OK;
}

async function tenantList(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, status: { type: "string" }, label: { type: "string", multiple: true } }, { noArguments: true });
  expectPositionals(positionals, 0, 0, "paddock tenant list [--status S] [--label k=v]... [--json]");
  parseKeyValues(values.label, "--label");
  const client = adminClient(ctx, values);
  const list = await admin(ctx, client, () => client.json<TenantView[]>("GET", "/admin/v1/tenants", {
    query: [["status", values.status], ...(values.label ?? []).map((l) => ["label", l] as const)],
  }));
  const tenants = Array.isArray(list) ? list : [];
  await writeOut(ctx.stdout, values.json ? renderJson(tenants) : renderTenantTable(tenants, Date.now()));
  return EXIT.OK;
}

async function tenantGet(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, ADMIN_FLAGS);
  expectPositionals(positionals, 1, 1, "paddock tenant get ID [--json]");
  const client = adminClient(ctx, values);
  const t = await admin(ctx, client, () => client.json<TenantView>("GET", `/admin/v1/tenants/${seg(positionals[0] as string)}`));
  await writeOut(ctx.stdout, values.json ? renderJson(t) : renderTenantDetails(t));
  return EXIT.OK;
}

/** POST/DELETE on a tenant with a one-line confirmation (delete, suspend, resume, restart). */
async function tenantAction(ctx: CliContext, argv: string[], action: "delete" | "suspend" | "resume" | "restart"): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, reason: { type: "string" } });
  if (values.reason !== undefined && action !== "suspend") throw new UsageError("--reason only applies to tenant suspend");
  expectPositionals(positionals, 1, 1, `paddock tenant ${action} ID${action === "suspend" ? " [--reason R]" : ""}`);
  const id = positionals[0] as string;
  const client = adminClient(ctx, values);
  const progress = new Progress(ctx.stderr);
  progress.every(200, () => `${action} ${id} … ${progress.elapsed()}`);
  let out: TenantView | undefined;
  // The API's DELETE is idempotent (204 for an unknown id too); the CLI looks first so that a
  // mistyped id is not reported as deleted while the real tenant keeps running.
  let existed = true;
  try {
    out = await admin(ctx, client, async () => {
      if (action === "delete") {
        try {
          await readBody(await client.send("GET", `/admin/v1/tenants/${seg(id)}`), 64 * 1024);
        } catch (err) {
          if (!(err instanceof ApiError && err.status === 404)) throw err;
          existed = false;
        }
        const res = await client.send("DELETE", `/admin/v1/tenants/${seg(id)}`);
        await readBody(res, 64 * 1024);
        return undefined;
      }
      return client.json<TenantView>("POST", `/admin/v1/tenants/${seg(id)}/${action}`, { json: action === "suspend" && values.reason !== undefined ? { reason: values.reason } : {} });
    });
  } finally {
    progress.done();
  }
  if (!existed) {
    if (values.json) await writeOut(ctx.stdout, renderJson({ id, deleted: false, existed: false }));
    await writeOut(ctx.stderr, `paddock: tenant ${id} does not exist; nothing deleted\n`);
    return EXIT.NOT_FOUND;
  }
  if (values.json) await writeOut(ctx.stdout, renderJson(out ?? { id, deleted: true }));
  else if (action === "resume" && out?.already_active === true) {
    // The API answers 200 for an active tenant without doing anything (supervisor/tenant-suspension.ts).
    await writeOut(ctx.stdout, alreadyLine(`tenant ${id}`, "active", "nothing resumed"));
  } else if (action === "suspend" && out?.already_suspended === true) {
    // Likewise for a suspended one: its VMs stay paused, its reason is kept.
    const why = typeof out.status_reason === "string" && out.status_reason !== "" ? ` (${out.status_reason})` : "";
    await writeOut(ctx.stdout, alreadyLine(`tenant ${id}`, `suspended${why}`, "nothing paused"));
  } else {
    const past = { delete: "deleted", suspend: "suspended", resume: "resumed", restart: "restarted" }[action];
    const extraInfo = out?.paused_vms !== undefined ? ` (paused VMs: ${(out.paused_vms as string[]).join(", ") || "none"})`
      : out?.resumed_vms !== undefined ? ` (resumed VMs: ${(out.resumed_vms as string[]).join(", ") || "none"})` : "";
    // A restart stops the daemon as a stop does (README "Tenants"): say what that costs.
    const restartNote = action === "restart" ? " (its ephemeral and warm VMs were deleted; persistent and count: VMs kept running)" : "";
    await writeOut(ctx.stdout, `tenant ${id} ${past}${extraInfo}${restartNote}\n`);
  }
  return EXIT.OK;
}

async function tenantLogs(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, lines: { type: "string" } });
  expectPositionals(positionals, 1, 1, "paddock tenant logs ID [--lines N]");
  const lines = parseIntFlag(values.lines, "--lines", { min: 1, max: 10_000 });
  const client = adminClient(ctx, values);
  const out = await admin(ctx, client, () => client.json<{ lines?: string[] }>("GET", `/admin/v1/tenants/${seg(positionals[0] as string)}/logs`, { query: [["lines", lines]] }));
  await writeOut(ctx.stdout, values.json ? renderJson(out) : (out?.lines ?? []).map((l) => `${l}\n`).join(""));
  return EXIT.OK;
}

/**
 * What `paddock tenant token ID --json` prints: the admin API's answer with `token_id`, the
 * token id under the name `tenant create --json` uses, added beside `id` (kept for scripts). Pure.
 * @param out - `POST /admin/v1/tenants/{id}/tokens`'s body: `{id, token, created_at?, expires_at?}`.
 * @returns the same fields plus `token_id`, right after `id`.
 */
export function tokenJson<T extends { id: string }>(out: T): T & { token_id: string } {
  const { id, ...rest } = out;
  return { id, token_id: id, ...rest } as T & { token_id: string };
}

/**
 * What `tenant token revoke` prints (pure), from the admin API's answer `body` (empty for a fresh
 * revoke, 204; `{id, revoked_at, already_revoked: true}` for a token already revoked, 200):
 * `token T of tenant ID revoked`, or {@link alreadyLine} naming when it was revoked; with
 * `json`, `{id, tenant_id, token_id, revoked: true, already_revoked}` (+ `revoked_at` when
 * already revoked), where `id` is the tenant's id (as it always was here; kept for scripts)
 * though the admin API's body and `tenant token --json` use `id` for the token's.
 */
export function revokeOutput(id: string, tokenId: string, body: Buffer, json: boolean): string {
  let answer: { already_revoked?: unknown; revoked_at?: unknown } = {};
  if (body.length > 0) {
    try {
      answer = JSON.parse(body.toString("utf8")) as typeof answer;
    } catch {
      answer = {};
    }
  }
  const already = answer?.already_revoked === true;
  const at = typeof answer?.revoked_at === "string" ? answer.revoked_at : undefined;
  if (json) return renderJson({ id, tenant_id: id, token_id: tokenId, revoked: true, already_revoked: already, ...(already && at !== undefined ? { revoked_at: at } : {}) });
  return already ? alreadyLine(`token ${tokenId} of tenant ${id}`, `revoked${at !== undefined ? ` (at ${at})` : ""}`) : `token ${tokenId} of tenant ${id} revoked\n`;
}

async function tenantToken(ctx: CliContext, argv: string[]): Promise<number> {
  if (argv[0] === "revoke") {
    const { values, positionals } = parseFlags(argv.slice(1), ADMIN_FLAGS);
    expectPositionals(positionals, 2, 2, "paddock tenant token revoke ID TOKEN_ID");
    const [id, tokenId] = positionals as [string, string];
    const client = adminClient(ctx, values);
    const body = await admin(ctx, client, async () => readBody(await client.send("DELETE", `/admin/v1/tenants/${seg(id)}/tokens/${seg(tokenId)}`), 64 * 1024));
    await writeOut(ctx.stdout, revokeOutput(id, tokenId, body, values.json ?? false));
    return EXIT.OK;
  }
  const { values, positionals } = parseFlags(argv, { ...ADMIN_FLAGS, "expires-in": { type: "string" } });
  expectPositionals(positionals, 1, 1, "paddock tenant token ID [--expires-in 24h] | paddock tenant token revoke ID TOKEN_ID");
  const expiresMs = parseDurationFlag(values["expires-in"], "--expires-in");
  if (expiresMs !== undefined && expiresMs < 1000) throw new UsageError("--expires-in must be at least 1s");
  const client = adminClient(ctx, values);
  const out = await admin(ctx, client, () => client.json<{ id: string; token: string; created_at?: string; expires_at?: string }>(
    "POST", `/admin/v1/tenants/${seg(positionals[0] as string)}/tokens`,
    { json: expiresMs === undefined ? {} : { expires_in_seconds: Math.round(expiresMs / 1000) } },
  ));
  // `token_id` beside the API's `id`: the name `tenant create --json` and `token revoke --json`
  // give the token id (the admin API's body is left as it is, docs/admin-api.openapi.yaml).
  if (values.json) await writeOut(ctx.stdout, renderJson(tokenJson(out)));
  else await writeOut(ctx.stdout, renderKeyValues([["token id", out.id], ["token", out.token], ["expires", out.expires_at ?? "never"]]) + "The token is shown only once.\n");
  return EXIT.OK;
}

/** Dispatch `paddock tenant <command> …`. */
export async function tenantCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    await writeOut(ctx.stderr, TENANT_HELP);
    return EXIT.USAGE;
  }
  if (cmd === "help" || cmd === "--help" || cmd === "-h" || rest.includes("--help") || rest.includes("-h")) {
    await writeOut(ctx.stdout, TENANT_HELP);
    return EXIT.OK;
  }
  switch (cmd) {
    case "create": return tenantCreate(ctx, rest);
    case "list": case "ls": return tenantList(ctx, rest);
    case "get": return tenantGet(ctx, rest);
    case "update": return tenantUpdate(ctx, rest);
    case "delete": case "rm": return tenantAction(ctx, rest, "delete");
    case "suspend": return tenantAction(ctx, rest, "suspend");
    case "resume": return tenantAction(ctx, rest, "resume");
    case "restart": return tenantAction(ctx, rest, "restart");
    case "logs": return tenantLogs(ctx, rest);
    case "token": return tenantToken(ctx, rest);
    default: throw new UsageError(`unknown tenant command ${JSON.stringify(cmd)}; see paddock tenant --help`);
  }
}
