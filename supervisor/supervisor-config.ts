/**
 * The supervisor's configuration (templates/supervisor.example.yaml): a YAML file read with the
 * shared {@link ConfigReader} (every problem reported at once with its YAML path, unknown keys
 * warned about), defaulted, merged with environment and flags, and frozen.
 *
 * Precedence for the state and run directories: flag > environment
 * (`PADDOCK_STATE_DIR`, `PADDOCK_RUN_DIR`) > file > default (`/var/lib/paddock`, `/run/paddock`).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { findProjectRoot } from "../shared/proc.js";
import { ConfigReader, parseYamlSafe } from "../shared/yaml-reader.js";
import { parseCidr, parseIpv4, type Cidr } from "../shared/cidr.js";
import { fileReadError } from "../shared/file-read-error.js";
import { parseGoDurationMs } from "../shared/time.js";
import { DEFAULT_PIDS_RESERVE } from "../shared/host-pids.js";
import { layerLimits, readLimitsSection } from "./tenant-limits.js";
import type { LimitsRecord } from "./tenant-registry.js";
import { DEFAULT_DENY, DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, denyEntryProblem } from "../shared/tenant-config.js";
import type { FdBudgetConfig, TenantGatewayLimits } from "./gateway-admission.js";
import { DEFAULT_WEBHOOK_POLICY, type WebhookPolicy } from "./webhooks/dispatcher.js";
import { envValue } from "../shared/env.js";

/** A listener: TCP host and port, or a Unix socket path. */
export type ListenAddress = { kind: "tcp"; host: string; port: number } | { kind: "unix"; socketPath: string };

/** Restart policy of tenant daemons: capped exponential backoff; a crash loop ends in `failed`. */
export interface RestartPolicy {
  /** First backoff after a crash, ms; doubled per consecutive crash. */
  initialBackoffMs: number;
  /** Backoff cap, ms. */
  maxBackoffMs: number;
  /** This many crashes within {@link crashWindowMs} ⇒ the tenant is `failed`. */
  maxCrashes: number;
  crashWindowMs: number;
  /** A run longer than this resets the consecutive-crash counter (backoff back to initial). */
  stableAfterMs: number;
  /** How long a starting daemon has to answer `GET /healthz`, ms. */
  readyTimeoutMs: number;
  /** Grace between SIGTERM and SIGKILL when stopping a daemon, ms. */
  stopTimeoutMs: number;
}

/**
 * Size-capped rotation of the supervisor's logs (`logs:`): a file is rotated
 * (`<f>.<keep-1>` → `<f>.<keep>`, …, `<f>` → `<f>.1`) when it reaches its size, so at most
 * `(keep + 1) × bytes` are kept per file.
 */
export interface LogRotation {
  /** Each tenant daemon's `logs/daemon.log` (default 10 MiB), rotated by its logcap reader (supervisor/daemon-process.ts). */
  daemonLogBytes: number;
  /** Rotated daemon logs kept (default 3). */
  daemonLogKeep: number;
  /** `supervisor/audit.log` (default 10 MiB; supervisor/audit-log.ts). */
  auditLogBytes: number;
  /** Rotated audit logs kept (default 5). */
  auditLogKeep: number;
}

/** Preview URLs through the gateway (`preview:`; docs/slicer-api.md#preview-urls). */
export interface PreviewConfig {
  /**
   * Base domain of the host-name form `<port>-<hostname>.<tenant>.<base_domain>` (lower case,
   * no trailing dot); undefined ⇒ the host-name form is off (the path form always works).
   */
  baseDomain: string | undefined;
  /**
   * Scheme clients use to reach preview URLs (`http`, or `https` behind a TLS-terminating
   * proxy): sent to the app as `X-Forwarded-Proto`, and `https` makes the preview cookie
   * `Secure` and `__Host-` prefixed.
   */
  scheme: "http" | "https";
  /** Preview token lifetime when a mint names none, ms (default 1 h). */
  defaultTtlMs: number;
  /** Longest preview token lifetime a mint may ask for, ms (default 24 h). */
  maxTtlMs: number;
}

/** Default preview settings: host-name form off, http, tokens of 1 h, at most 24 h. */
export const DEFAULT_PREVIEW: Readonly<PreviewConfig> = Object.freeze({ baseDomain: undefined, scheme: "http", defaultTtlMs: 3_600_000, maxTtlMs: 86_400_000 });

/** The validated, frozen supervisor config. */
export interface SupervisorConfig {
  /** File it came from, or `<defaults>` ({@link DEFAULTS_SOURCE}). */
  source: string;
  gateway: ListenAddress;
  /** Per-tenant caps of the gateway (`gateway.limits`); see {@link DEFAULT_GATEWAY_LIMITS}. */
  gatewayLimits: TenantGatewayLimits;
  /** The gateway's descriptor budget (`gateway.fd_reserve`, `gateway.tenant_fd_share_percent`). */
  gatewayFds: FdBudgetConfig;
  admin: ListenAddress;
  stateDir: string;
  runDir: string;
  /** Base image store handed to daemons (`PADDOCK_IMAGE_DIR`), default `<state>/images`. */
  imageDir: string;
  /** Pool tenant blocks are cut from (default 169.254.0.0/16). */
  pool: Cidr;
  /** Prefix length of one block (default 22). */
  blockPrefix: number;
  templatesDir: string;
  defaultTemplate: string;
  restart: RestartPolicy;
  /**
   * Operator deny list rendered into every tenant's `paddock.deny`: a floor no template or
   * per-VM override reopens. Absent ⇒ DEFAULT_DENY (shared/tenant-config.ts: cloud metadata
   * and RFC 1918); `[]` ⇒ none.
   */
  deny: readonly string[];
  /**
   * Limits of a tenant whose create and template leave them out (`default_limits`, over
   * DEFAULT_TENANT_LIMITS of supervisor/tenant-limits.ts).
   */
  defaultLimits: Readonly<Required<LimitsRecord>>;
  /** Pids of pid_max no tenant budget may take (`host_pids_reserve`, default DEFAULT_PIDS_RESERVE of shared/host-pids.ts). */
  hostPidsReserve: number;
  /** Stop tenant daemons when the supervisor stops (default false: they keep running). */
  stopDaemonsOnExit: boolean;
  /** Tenant daemon entry point (`<root>/dist/tenant-daemon/launch.js`: the bundled daemon, tenant-daemon/launch.ts). */
  daemonEntry: string;
  logs: LogRotation;
  /** Webhook retries and transport (`webhooks:`; supervisor/webhooks/dispatcher.ts). */
  webhooks: WebhookPolicy;
  /** Preview URLs (`preview:`). */
  preview: PreviewConfig;
  warnings: readonly string[];
}

/** Overrides from the command line (`paddock up --state-dir …`). */
export interface SupervisorFlags {
  stateDir?: string;
  runDir?: string;
  gateway?: string;
  admin?: string;
  templatesDir?: string;
  daemonEntry?: string;
  stopDaemonsOnExit?: boolean;
}


/**
 * Parse `host:port` or a Unix socket path (starts with `/` or `./`, or ends with `.sock`).
 * @returns undefined when invalid.
 */
export function parseListenAddress(text: string): ListenAddress | undefined {
  if (text.startsWith("/") || text.startsWith("./") || text.endsWith(".sock")) {
    const socketPath = path.resolve(text);
    return Buffer.byteLength(socketPath) <= 107 ? { kind: "unix", socketPath } : undefined;
  }
  const m = /^(.+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const host = (m[1] as string).replace(/^\[(.*)\]$/, "$1");
  const port = Number(m[2]);
  if (port > 65535) return undefined;
  return { kind: "tcp", host, port };
}

/** Human form of a listen address (`127.0.0.1:8080` or the socket path). */
export function formatListenAddress(a: ListenAddress): string {
  return a.kind === "unix" ? a.socketPath : `${a.host.includes(":") ? `[${a.host}]` : a.host}:${a.port}`;
}

/**
 * Default per-tenant gateway caps: room for a busy CI tenant (hundreds of concurrent exec
 * streams) while one tenant alone cannot take the gateway (~8k requests/s on 2 cores).
 */
export const DEFAULT_GATEWAY_LIMITS: Readonly<TenantGatewayLimits> = Object.freeze({ maxConnections: 256, maxRequests: 256, requestsPerSecond: 200, burst: 400 });
/** Default descriptor budget: 1024 kept back from RLIMIT_NOFILE, one tenant may take a quarter of the rest. */
export const DEFAULT_GATEWAY_FDS: Readonly<FdBudgetConfig> = Object.freeze({ reserve: 1024, tenantSharePercent: 25 });

const TOP_KEYS = ["gateway", "admin", "state_dir", "run_dir", "image_dir", "network", "templates", "restart", "deny", "stop_daemons_on_exit", "daemon_entry", "logs", "default_limits", "host_pids_reserve", "webhooks", "preview"] as const;
const RESTART_KEYS = ["initial_backoff_ms", "max_backoff_ms", "max_crashes", "crash_window_ms", "stable_after_ms", "ready_timeout_ms", "stop_timeout_ms"] as const;

function readAddress(r: ConfigReader, raw: unknown, p: string, fallback: string, otherKeys: readonly string[] = []): ListenAddress {
  const obj = r.object(raw, p);
  r.unknownKeys(obj, p, ["address", ...otherKeys]);
  const text = r.string(obj.address, `${p}.address`) ?? fallback;
  const parsed = parseListenAddress(text);
  if (!parsed) {
    r.problem(`${p}.address`, `expected host:port or a Unix socket path of at most 107 bytes, got ${JSON.stringify(text)}`);
    return parseListenAddress(fallback) as ListenAddress;
  }
  return parsed;
}

/** The `source` of a config made from defaults, flags and environment, without a file. */
export const DEFAULTS_SOURCE = "<defaults>";

/**
 * Validate a parsed YAML tree (or `undefined` for no file) into a frozen config.
 * @throws PaddockError `ERR_CONFIG_INVALID` listing every problem with its YAML path.
 */
export function parseSupervisorConfig(tree: unknown, source: string, opts: { env?: NodeJS.ProcessEnv; flags?: SupervisorFlags; baseDir?: string } = {}): SupervisorConfig {
  const env = opts.env ?? process.env;
  const flags = opts.flags ?? {};
  const baseDir = opts.baseDir ?? process.cwd();
  const r = new ConfigReader();
  const root = r.object(tree, "(root)");
  r.unknownKeys(root, "(root)", TOP_KEYS);

  let gateway = readAddress(r, root.gateway, "gateway", "127.0.0.1:8080", ["limits", "fd_reserve", "tenant_fd_share_percent"]);
  // readAddress reported a gateway that is not a mapping already.
  const gw = (root.gateway !== null && typeof root.gateway === "object" && !Array.isArray(root.gateway) ? root.gateway : {}) as Record<string, unknown>;
  const gl = r.object(gw.limits, "gateway.limits");
  r.unknownKeys(gl, "gateway.limits", ["max_connections", "max_requests", "requests_per_second", "burst"]);
  const D = DEFAULT_GATEWAY_LIMITS;
  const gatewayLimits: TenantGatewayLimits = {
    maxConnections: r.int(gl.max_connections, "gateway.limits.max_connections", { min: 1, max: 1_000_000 }) ?? D.maxConnections,
    maxRequests: r.int(gl.max_requests, "gateway.limits.max_requests", { min: 1, max: 1_000_000 }) ?? D.maxRequests,
    requestsPerSecond: r.int(gl.requests_per_second, "gateway.limits.requests_per_second", { min: 1, max: 1_000_000 }) ?? D.requestsPerSecond,
    burst: r.int(gl.burst, "gateway.limits.burst", { min: 1, max: 1_000_000 }) ?? D.burst,
  };
  const gatewayFds: FdBudgetConfig = {
    reserve: r.int(gw.fd_reserve, "gateway.fd_reserve", { min: 0, max: 1 << 30 }) ?? DEFAULT_GATEWAY_FDS.reserve,
    tenantSharePercent: r.int(gw.tenant_fd_share_percent, "gateway.tenant_fd_share_percent", { min: 1, max: 100 }) ?? DEFAULT_GATEWAY_FDS.tenantSharePercent,
  };
  let admin = readAddress(r, root.admin, "admin", "127.0.0.1:8081");
  if (flags.gateway !== undefined) {
    const g = parseListenAddress(flags.gateway);
    if (!g) r.problem("--gateway", `expected host:port or a socket path, got ${JSON.stringify(flags.gateway)}`);
    else gateway = g;
  }
  if (flags.admin !== undefined) {
    const a = parseListenAddress(flags.admin);
    if (!a) r.problem("--admin", `expected host:port or a socket path, got ${JSON.stringify(flags.admin)}`);
    else admin = a;
  }
  if (formatListenAddress(gateway) === formatListenAddress(admin) && !(gateway.kind === "tcp" && gateway.port === 0)) r.problem("admin.address", "must differ from gateway.address");

  const fileStateDir = r.string(root.state_dir, "state_dir");
  const fileRunDir = r.string(root.run_dir, "run_dir");
  const stateDir = path.resolve(baseDir, flags.stateDir ?? envValue(env.PADDOCK_STATE_DIR) ?? fileStateDir ?? DEFAULT_STATE_DIR);
  const runDir = path.resolve(baseDir, flags.runDir ?? envValue(env.PADDOCK_RUN_DIR) ?? fileRunDir ?? DEFAULT_RUN_DIR);
  // A file value a flag or the environment overrides is easy to miss (the systemd unit sets
  // both variables, templates/paddock-supervisor.service): say which one won.
  for (const [key, file, used, flag, variable] of [["state_dir", fileStateDir, stateDir, flags.stateDir, "PADDOCK_STATE_DIR"], ["run_dir", fileRunDir, runDir, flags.runDir, "PADDOCK_RUN_DIR"]] as const) {
    if (file !== undefined && path.resolve(baseDir, file) !== used) r.warn(key, `${file} is overridden by ${flag !== undefined ? `--${key.replace("_", "-")}` : variable} (${used})`);
  }
  // <run>/tenants/<12-char id>/api.sock must stay under the 107-byte socket path limit.
  if (Buffer.byteLength(path.join(runDir, "tenants", "x".repeat(12), "api.sock")) > 107) {
    r.problem("run_dir", `run dir ${runDir} is too long for tenant socket paths (107-byte limit)`);
  }
  const imageDir = path.resolve(baseDir, envValue(env.PADDOCK_IMAGE_DIR) ?? r.string(root.image_dir, "image_dir") ?? path.join(stateDir, "images"));

  const net = r.object(root.network, "network");
  r.unknownKeys(net, "network", ["pool", "block_prefix"]);
  const poolText = r.string(net.pool, "network.pool") ?? "169.254.0.0/16";
  let pool: Cidr = { base: parseIpv4("169.254.0.0") as number, prefix: 16 };
  try {
    pool = parseCidr(poolText, { strict: true });
  } catch (err) {
    r.problem("network.pool", (err as Error).message);
  }
  const blockPrefix = r.int(net.block_prefix, "network.block_prefix", { min: 1, max: 30 }) ?? 22;
  if (blockPrefix < pool.prefix) r.problem("network.block_prefix", `block /${blockPrefix} is larger than the pool ${poolText}`);

  const root2 = findProjectRootSafe();
  const tpl = r.object(root.templates, "templates");
  r.unknownKeys(tpl, "templates", ["dir", "default"]);
  const templatesDir = path.resolve(baseDir, flags.templatesDir ?? r.string(tpl.dir, "templates.dir") ?? path.join(root2, "templates"));
  const defaultTemplate = r.string(tpl.default, "templates.default", { pattern: /^[a-z0-9][a-z0-9-]*$/, patternText: "a template name of [a-z0-9-]" }) ?? "sandbox";

  const rs = r.object(root.restart, "restart");
  r.unknownKeys(rs, "restart", RESTART_KEYS);
  const restart: RestartPolicy = {
    initialBackoffMs: r.int(rs.initial_backoff_ms, "restart.initial_backoff_ms", { min: 10, max: 3_600_000 }) ?? 1000,
    maxBackoffMs: r.int(rs.max_backoff_ms, "restart.max_backoff_ms", { min: 10, max: 3_600_000 }) ?? 30_000,
    maxCrashes: r.int(rs.max_crashes, "restart.max_crashes", { min: 1, max: 1000 }) ?? 5,
    crashWindowMs: r.int(rs.crash_window_ms, "restart.crash_window_ms", { min: 100, max: 86_400_000 }) ?? 120_000,
    stableAfterMs: r.int(rs.stable_after_ms, "restart.stable_after_ms", { min: 100, max: 86_400_000 }) ?? 60_000,
    // 120 s: a daemon's start runs nft calls that each read every tenant's table; at ~100
    // tenants on a loaded 2-core host its network start alone took 20-25 s (figure 13).
    readyTimeoutMs: r.int(rs.ready_timeout_ms, "restart.ready_timeout_ms", { min: 100, max: 600_000 }) ?? 120_000,
    stopTimeoutMs: r.int(rs.stop_timeout_ms, "restart.stop_timeout_ms", { min: 100, max: 600_000 }) ?? 30_000,
  };
  if (restart.maxBackoffMs < restart.initialBackoffMs) r.problem("restart.max_backoff_ms", "must be at least restart.initial_backoff_ms");

  const deny = r.stringList(root.deny, "deny") ?? [...DEFAULT_DENY];
  deny.forEach((d, i) => {
    const problem = denyEntryProblem(d);
    if (problem !== undefined) r.problem(`deny[${i}]`, problem);
  });
  const defaultLimits = layerLimits(readLimitsSection(r, root.default_limits, "default_limits", { unknownIsProblem: true }));
  const hostPidsReserve = r.int(root.host_pids_reserve, "host_pids_reserve", { min: 0, max: 4_194_304 }) ?? DEFAULT_PIDS_RESERVE;
  const stopDaemonsOnExit = flags.stopDaemonsOnExit ?? r.bool(root.stop_daemons_on_exit, "stop_daemons_on_exit") ?? false;
  const daemonEntry = path.resolve(baseDir, flags.daemonEntry ?? r.string(root.daemon_entry, "daemon_entry") ?? path.join(root2, "dist", "tenant-daemon", "launch.js"));

  const lg = r.object(root.logs, "logs");
  r.unknownKeys(lg, "logs", ["daemon_log_bytes", "daemon_log_keep", "audit_log_bytes", "audit_log_keep"]);
  const logs: LogRotation = {
    daemonLogBytes: r.int(lg.daemon_log_bytes, "logs.daemon_log_bytes", { min: 64 * 1024, max: 2 ** 32 - 2 }) ?? 10 * 2 ** 20,
    daemonLogKeep: r.int(lg.daemon_log_keep, "logs.daemon_log_keep", { min: 1, max: 100 }) ?? 3,
    auditLogBytes: r.int(lg.audit_log_bytes, "logs.audit_log_bytes", { min: 64 * 1024, max: 2 ** 40 }) ?? 10 * 2 ** 20,
    auditLogKeep: r.int(lg.audit_log_keep, "logs.audit_log_keep", { min: 1, max: 1000 }) ?? 5,
  };

  const wh = r.object(root.webhooks, "webhooks");
  r.unknownKeys(wh, "webhooks", ["initial_backoff_ms", "max_backoff_ms", "max_attempts", "timeout_ms", "concurrency"]);
  const W = DEFAULT_WEBHOOK_POLICY;
  const webhooks: WebhookPolicy = {
    initialBackoffMs: r.int(wh.initial_backoff_ms, "webhooks.initial_backoff_ms", { min: 10, max: 3_600_000 }) ?? W.initialBackoffMs,
    maxBackoffMs: r.int(wh.max_backoff_ms, "webhooks.max_backoff_ms", { min: 10, max: 86_400_000 }) ?? W.maxBackoffMs,
    maxAttempts: r.int(wh.max_attempts, "webhooks.max_attempts", { min: 1, max: 100 }) ?? W.maxAttempts,
    timeoutMs: r.int(wh.timeout_ms, "webhooks.timeout_ms", { min: 100, max: 300_000 }) ?? W.timeoutMs,
    concurrency: r.int(wh.concurrency, "webhooks.concurrency", { min: 1, max: 1000 }) ?? W.concurrency,
  };
  if (webhooks.maxBackoffMs < webhooks.initialBackoffMs) r.problem("webhooks.max_backoff_ms", "must be at least webhooks.initial_backoff_ms");
  const preview = readPreview(r, root.preview);

  // Without a config file the problems are in the flags (or PADDOCK_* variables), which each problem names.
  r.throwIfProblems(source === DEFAULTS_SOURCE ? "the command line (no --config file)" : source);
  return Object.freeze({
    source, gateway: Object.freeze(gateway), gatewayLimits: Object.freeze(gatewayLimits), gatewayFds: Object.freeze(gatewayFds), admin: Object.freeze(admin), stateDir, runDir, imageDir,
    pool: Object.freeze(pool), blockPrefix, templatesDir, defaultTemplate, restart: Object.freeze(restart),
    deny: Object.freeze([...deny]), defaultLimits: Object.freeze(defaultLimits), hostPidsReserve, stopDaemonsOnExit, daemonEntry, logs: Object.freeze(logs), webhooks: Object.freeze(webhooks), preview: Object.freeze(preview),
    warnings: Object.freeze(r.warnings.map((w) => `${w.path}: ${w.message}`)),
  });
}

/** A DNS name of at least two labels, lower case (the base domain of preview hosts). */
const BASE_DOMAIN = /^(?=.{1,200}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

function readPreview(r: ConfigReader, raw: unknown): PreviewConfig {
  const pv = r.object(raw, "preview");
  r.unknownKeys(pv, "preview", ["base_domain", "scheme", "default_ttl", "max_ttl"]);
  const baseDomain = r.string(pv.base_domain, "preview.base_domain", { pattern: BASE_DOMAIN, patternText: "a lower-case DNS name of two labels or more, no trailing dot" });
  const scheme = r.string(pv.scheme, "preview.scheme", { pattern: /^https?$/, patternText: "http or https" }) ?? DEFAULT_PREVIEW.scheme;
  const ttl = (v: unknown, key: string, fallback: number): number => {
    const text = r.string(v, `preview.${key}`);
    if (text === undefined) return fallback;
    try {
      const ms = parseGoDurationMs(text, `preview.${key}`);
      if (ms >= 1000) return ms;
      r.problem(`preview.${key}`, "must be at least 1s");
    } catch (err) {
      r.problem(`preview.${key}`, (err as Error).message);
    }
    return fallback;
  };
  const maxTtlMs = ttl(pv.max_ttl, "max_ttl", DEFAULT_PREVIEW.maxTtlMs);
  const defaultTtlMs = ttl(pv.default_ttl, "default_ttl", Math.min(DEFAULT_PREVIEW.defaultTtlMs, maxTtlMs));
  if (defaultTtlMs > maxTtlMs) r.problem("preview.default_ttl", "must not exceed preview.max_ttl");
  return { baseDomain, scheme: scheme === "https" ? "https" : "http", defaultTtlMs, maxTtlMs };
}

function findProjectRootSafe(): string {
  try {
    return findProjectRoot();
  } catch {
    return process.cwd();
  }
}

/**
 * Read and validate the supervisor config file; no file ⇒ defaults (plus env and flags).
 * @throws PaddockError `ERR_FILE_UNREADABLE` (the file cannot be read: `cannot read FILE (from
 *   paddock up --config): no such file (ENOENT)`), `ERR_CONFIG_INVALID` (YAML syntax, any problem).
 */
export async function loadSupervisorConfig(file: string | undefined, opts: { env?: NodeJS.ProcessEnv; flags?: SupervisorFlags } = {}): Promise<SupervisorConfig> {
  if (file === undefined) return parseSupervisorConfig(undefined, DEFAULTS_SOURCE, opts);
  const abs = path.resolve(file);
  let text: string;
  try {
    text = await fs.readFile(abs, "utf8");
  } catch (err) {
    // A file that cannot be read is no invalid config: ERR_FILE_UNREADABLE, exit 1, as for the
    // config of `paddock daemon up FILE` (README "CLI").
    throw fileReadError(abs, "paddock up --config", err);
  }
  return parseSupervisorConfig(parseYamlSafe(text, abs), abs, { ...opts, baseDir: path.dirname(abs) });
}
