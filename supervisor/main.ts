/**
 * The supervisor's composition root (the one place that builds and wires everything): config →
 * logger → registry, audit, metrics → tenant service (process manager inside) → reconcile → gateway
 * and admin listeners. `paddock up` calls {@link main}; tests call {@link runSupervisor}.
 */
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promises as fs, constants as fsConstants } from "node:fs";
import { randomBytes } from "node:crypto";
import { PaddockError, errnoCode, isPaddockError } from "../shared/errors.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { OWNERSHIP_ENTRIES, acquireOwnership } from "../shared/state-store.js";
import { pidAlive } from "../shared/proc.js";
import { readBuildVersion } from "../shared/build-info.js";
import { PADDOCK_VERSION } from "../shared/version.js";
import { assertListenFree, closeHttpServer, listenHttp } from "../shared/http/listen.js";
import { sleep } from "../shared/time.js";
import { formatListenAddress, loadSupervisorConfig, type ListenAddress, type SupervisorConfig, type SupervisorFlags } from "./supervisor-config.js";
import { TenantRegistry } from "./tenant-registry.js";
import { RUN_DIR_OWNER_FILE, claimRunDir } from "./run-dir-claim.js";
import { StartFootprint } from "./start-footprint.js";
import { AuditLog } from "./audit-log.js";
import { SupervisorMetrics } from "./metrics.js";
import { HostInfo } from "./host-info.js";
import { TenantService } from "./tenant-service.js";
import { createGatewayServer } from "./gateway.js";
import { PreviewKeys } from "./preview/preview-keys.js";
import { GatewayAdmission } from "./gateway-admission.js";
import { createAdminApp } from "./admin-api.js";
import { hashToken } from "./tokens.js";
import { TenantEvents } from "./events/tenant-events.js";
import { WebhookService } from "./webhooks/webhook-service.js";
import { poolCapacity, poolUsage } from "./block-allocator.js";
import { formatCidr } from "../shared/cidr.js";

/** Options of {@link runSupervisor}. */
export interface SupervisorOptions {
  /** Supervisor YAML; undefined ⇒ defaults. */
  configFile?: string;
  flags?: SupervisorFlags;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** How long to wait for a previous (killed) supervisor's ownership lock to go stale, ms. */
  lockWaitMs?: number;
  /** Gateway idle bound on a request body still being received, ms (default 60 s, shared/body-idle-timeout.ts). */
  gatewayBodyIdleMs?: number;
}

/** A running supervisor. */
export interface RunningSupervisor {
  config: SupervisorConfig;
  /** Bound gateway address (`127.0.0.1:41234` or a socket path). */
  gatewayAddress: string;
  adminAddress: string;
  adminTokenFile: string;
  tenants: TenantService;
  /** Stop listening; daemons keep running unless `stopDaemons` (default: the config's). */
  close(opts?: { stopDaemons?: boolean }): Promise<void>;
}

/**
 * Read `<state>/supervisor/admin-token`, creating it (0600, O_EXCL) with a new random token
 * on first start.
 * @returns the token text.
 */
export async function ensureAdminToken(file: string): Promise<{ token: string; created: boolean }> {
  try {
    const token = (await fs.readFile(file, "utf8")).trim();
    if (token.length < 32) throw new PaddockError("ERR_STATE_CORRUPT", `admin token file ${file} is too short; remove it to generate a new one`);
    return { token, created: false };
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") throw err;
  }
  const token = "pdk_admin_" + randomBytes(32).toString("base64url");
  const h = await fs.open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600);
  try {
    await h.writeFile(token + "\n");
    await h.sync();
  } finally {
    await h.close();
  }
  return { token, created: true };
}

async function listen(server: http.Server, addr: ListenAddress, mode: number): Promise<string> {
  const bound = await listenHttp(server, addr, mode);
  return typeof bound === "string" ? bound : formatListenAddress({ kind: "tcp", host: bound.address, port: bound.port });
}


/**
 * Start the supervisor.
 * Steps: 1. config; 2. the state dir (0700) and the one-supervisor-per-state-dir lock; 3. the
 * run dir's claim for this state dir (run-dir-claim.ts); 4. the gateway and admin addresses must
 * be free; dirs and the admin token; 5. registry (refuses corrupt state); 6. reconcile
 * tenants (adopt, restart, remove leftovers); 7. listeners. A refused start removes the files
 * and directories it made (start-footprint.ts): a state or run dir it created is gone, one that
 * existed is left as it was (what a reconcile of existing tenants did is not undone).
 * @throws PaddockError `ERR_FILE_UNREADABLE` (the config file), `ERR_CONFIG_INVALID`, `ERR_STATE_CORRUPT`, `ERR_STATE_LOCKED` (the state dir, or a run dir
 *   another supervisor state owns), `ERR_STORAGE_FAILED` (the run dir claim), `ERR_SOCKET_IN_USE`.
 */
export async function runSupervisor(opts: SupervisorOptions = {}): Promise<RunningSupervisor> {
  const config = await loadSupervisorConfig(opts.configFile, { env: opts.env, flags: opts.flags });
  // Batched (info lines ≤ 25 ms late, warn/error at once): the gateway writes an access line per request (shared/logger.ts makeSink).
  const log = (opts.logger ?? createLogger({ batch: true })).child({ component: "supervisor" });
  for (const w of config.warnings) log.warn("supervisor config", { warning: w });

  const supDir = path.join(config.stateDir, "supervisor");
  // What this start makes, removed again if it is refused (start-footprint.ts): a refused start
  // leaves nothing it made, and a state or run dir that existed before as it was.
  const made = new StartFootprint();
  await made.mkdir(supDir, 0o700);
  const deadline = Date.now() + (opts.lockWaitMs ?? 20_000);
  let release: () => Promise<void>;
  for (;;) {
    try {
      release = await acquireOwnership(supDir, "the supervisor state directory");
      break;
    } catch (err) {
      if (!isPaddockError(err, "ERR_STATE_LOCKED") || Date.now() >= deadline) {
        // Not ours: only the directories this start made, and only if still empty, go again.
        await made.removeDirs();
        throw err;
      }
      // Wait only for the lock of a killed supervisor to go stale; a live owner is another
      // supervisor on the same state: refuse at once.
      const holder = Number((await fs.readFile(path.join(supDir, "owner.pid"), "utf8").catch(() => "")).trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && pidAlive(holder)) {
        await made.removeDirs();
        throw err;
      }
      log.info("waiting for the ownership lock of a stopped supervisor to go stale", { dir: supDir, holder: Number.isInteger(holder) ? holder : undefined });
      await sleep(1000);
    }
  }

  const servers: http.Server[] = [];
  /** Stopped at close (and after a failed start), before the daemons. */
  const closers: (() => Promise<void>)[] = [];
  try {
    // Entries this start adds to <state>/supervisor (admin token, registry, audit log, …); the
    // ownership lock's own entries go with release().
    await made.watch(supDir, OWNERSHIP_ENTRIES);
    await made.mkdir(path.join(config.stateDir, "tenants"), 0o700);
    // Before anything reads or removes below the run dir: it must be this state's (run-dir-claim.ts).
    await made.mkdir(config.runDir, 0o711);
    if (await claimRunDir(config.runDir, config.stateDir)) made.madeFile(path.join(config.runDir, RUN_DIR_OWNER_FILE));
    // A taken gateway or admin address refuses the start before anything else is made or read
    // (listenHttp checks again when it binds). After the state lock and the run dir's claim, so a
    // second supervisor on the same config, or with its own state dir but the same run dir, is
    // told that first (README: it needs both), not that its ports are taken.
    for (const addr of [config.gateway, config.admin]) await assertListenFree(addr);
    // The run dir and its tenants/ are traversable, not listable (0711): VMs run as unprivileged
    // host uids (user namespaces) that runc resolves their rootfs path as, below <run>/tenants/<id>.
    await made.mkdir(path.join(config.runDir, "tenants"), 0o711);
    for (const dir of [config.runDir, path.join(config.runDir, "tenants")]) await fs.chmod(dir, 0o711);
    const adminTokenFile = path.join(supDir, "admin-token");
    const admin = await ensureAdminToken(adminTokenFile);
    if (admin.created) log.info("generated the admin token", { file: adminTokenFile });

    const registry = new TenantRegistry(path.join(supDir, "registry.json"));
    await registry.init();
    const audit = new AuditLog(path.join(supDir, "audit.log"), { maxBytes: config.logs.auditLogBytes, keep: config.logs.auditLogKeep });
    const metrics = new SupervisorMetrics();
    const admission = new GatewayAdmission(config.gatewayLimits, config.gatewayFds);
    // A pool too small for the host's tenants is refused at create with ERR_NETWORK_EXHAUSTED; say its size up front.
    const usage = poolUsage(config.pool, config.blockPrefix, Object.values(registry.snapshot().tenants).map((t) => ({ id: t.id, blocks: t.blocks.map((b) => b.cidr) })));
    log.info("network pool", { pool: formatCidr(config.pool), block_prefix: config.blockPrefix, tenant_blocks: poolCapacity(config.pool, config.blockPrefix), in_use: usage.inUse });
    if (usage.outside.length > 0) {
      // Their configs' foreign_ranges were cut from the pool of their create: blocks handed out
      // from this pool are not among them. A tenant rendered from this pool names their blocks in
      // its own (tenant-configs.ts `render`, block-allocator.ts `tenantForeignRanges`), so its
      // table drops the traffic between the two.
      log.warn("tenants hold network blocks outside the pool (network.pool changed since their create); their VMs keep those addresses, and tenants created from this pool drop traffic to and from them: set network.pool back, or delete and re-create them to move them into this pool", {
        pool: formatCidr(config.pool), tenants: usage.outside.length, ids: usage.outside.slice(0, 20),
      });
    }
    log.info("gateway limits", { per_tenant: config.gatewayLimits, fd_budget: admission.globalFds, tenant_fd_share: admission.tenantFds });
    // Tenant events and webhooks (supervisor/webhooks/webhook-service.ts): loaded once the
    // reconcile settled which tenants exist; their outboxes live under <state>/supervisor/webhooks.
    const events = new TenantEvents();
    const webhooks = new WebhookService({
      dir: path.join(supDir, "webhooks"), policy: config.webhooks, log: log.child({ component: "webhooks" }),
      tenantStatus: (id) => registry.find(id)?.status, socketPath: (id) => tenants.socketPath(id), onResult: (r) => metrics.observeWebhookDelivery(r),
    });
    events.addSink((e) => webhooks.takeTenantEvent(e));
    metrics.watchOutboxDepth(() => webhooks.outboxDepth());
    const tenants = new TenantService({ config, registry, audit, log, sessions: admission, events, onDaemonReady: (id) => webhooks.daemonReady(id) });
    closers.push(() => webhooks.close());
    await tenants.reconcile();
    await webhooks.init();

    // Preview keys follow the registry: a deleted tenant's key goes with it (its tokens die).
    const previewKeys = new PreviewKeys(config.stateDir);
    previewKeys.prepare();
    registry.onChange((state) => previewKeys.sweep(new Set(Object.keys(state.tenants))));
    const gateway = createGatewayServer({ tenants, metrics, audit, admission, log: log.child({ component: "gateway" }), bodyIdleMs: opts.gatewayBodyIdleMs, preview: { config: config.preview, keys: previewKeys } });
    servers.push(gateway);
    const gatewayAddress = await listen(gateway, config.gateway, 0o660);
    // The build this supervisor runs, read once (shared/build-info.ts): `dist/` above dist/supervisor/main.js.
    const version = readBuildVersion(path.dirname(path.dirname(fileURLToPath(import.meta.url)))) ?? PADDOCK_VERSION;
    const adminApp = createAdminApp({ tenants, host: new HostInfo(config.stateDir), audit, metrics, log: log.child({ component: "admin" }), adminTokenHash: hashToken(admin.token), events, webhooks, version });
    const adminServer = http.createServer(adminApp);
    servers.push(adminServer);
    const adminAddress = await listen(adminServer, config.admin, 0o600);
    log.info("supervisor ready", { version, gateway: gatewayAddress, admin: adminAddress, state: config.stateDir, run: config.runDir, tenants: Object.keys(registry.snapshot().tenants).length });

    let closed: Promise<void> | undefined;
    return {
      config, gatewayAddress, adminAddress, adminTokenFile, tenants,
      close: (o = {}) => {
        closed ??= (async () => {
          await Promise.all(servers.map(closeHttpServer));
          // Operations under way settle (and publish their events) before the webhooks close.
          const stopDaemons = o.stopDaemons ?? config.stopDaemonsOnExit;
          await tenants.shutdown(stopDaemons);
          for (const c of closers) await c();
          await release();
          log.info(stopDaemons ? "supervisor stopped; tenant daemons stopped too (their persistent VMs keep running)" : "supervisor stopped; tenant daemons and their VMs keep running, and the next paddock up adopts them", { stop_daemons: stopDaemons });
        })();
        return closed;
      },
    };
  } catch (err) {
    await Promise.all(servers.filter((s) => s.listening).map(closeHttpServer));
    for (const c of closers) await c().catch(() => undefined);
    await made.removeEntries();
    await release();
    await made.removeDirs();
    throw err;
  }
}

/**
 * Parse `up` flags (argv after the subcommand), before anything is created. Flags take their
 * value as the next argument or after `=`; a next argument starting with `-` is refused rather
 * than taken as the value (`--state-dir --x` would create `./--x`): write `--state-dir=-x`. The
 * messages are one line in the CLI's words (cli/args.ts `parseArgsMessage`).
 * @throws PaddockError `ERR_BAD_REQUEST` on an unknown flag, an argument that is no flag, a
 *   missing value, a value starting with `-` after a space, or `--stop-daemons-on-exit=` with no
 *   boolean word.
 */
export function parseUpArgs(argv: readonly string[]): { configFile?: string; flags: SupervisorFlags } {
  const flags: SupervisorFlags = {};
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const [name, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[i + 1];
      if (v === undefined) throw new PaddockError("ERR_BAD_REQUEST", `${name} needs a value`);
      const long = name === "-c" ? "--config" : name;
      if (v.startsWith("-")) throw new PaddockError("ERR_BAD_REQUEST", `${name} is followed by a value starting with -; write it as ${long}=VALUE`);
      i++;
      return v;
    };
    switch (name) {
      case "--config": case "-c": configFile = value(); break;
      case "--state-dir": flags.stateDir = value(); break;
      case "--run-dir": flags.runDir = value(); break;
      case "--gateway": flags.gateway = value(); break;
      case "--admin": flags.admin = value(); break;
      case "--templates-dir": flags.templatesDir = value(); break;
      case "--daemon-entry": flags.daemonEntry = value(); break;
      case "--stop-daemons-on-exit": flags.stopDaemonsOnExit = boolFlag(name, inline); break;
      default:
        if (a.startsWith("-")) throw new PaddockError("ERR_BAD_REQUEST", `unknown flag ${name} (see --help)`);
        throw new PaddockError("ERR_BAD_REQUEST", `unexpected argument ${JSON.stringify(a)}; paddock up takes only flags (see --help)`);
    }
  }
  return { configFile, flags };
}

/** A boolean flag's value: bare ⇒ true, else the Go spellings cli/args.ts accepts (`--x=false`). */
function boolFlag(name: string, inline: string | undefined): boolean {
  if (inline === undefined) return true;
  const word = inline.toLowerCase();
  if (["true", "1", "t", "yes"].includes(word)) return true;
  if (["false", "0", "f", "no"].includes(word)) return false;
  throw new PaddockError("ERR_BAD_REQUEST", `${name} takes true or false, got ${JSON.stringify(inline)}`);
}

/**
 * How `paddock up` reports a refused start on stderr, in the CLI's words (cli/cli-errors.ts
 * `describeError`): a bad command line is `usage error: MESSAGE` (exit 2); a bad value or config
 * (`ERR_CONFIG_INVALID`, `ERR_CONFIG_UNSUPPORTED`) is `error: MESSAGE (CODE)` with exit 2, as
 * `paddock daemon up` exits on a config it refuses; a conflict (HTTP 409: `ERR_STATE_LOCKED`,
 * another supervisor runs on the state dir or the run dir belongs to another state dir;
 * `ERR_SOCKET_IN_USE`, a port or socket in use) the same line with exit 4, the CLI's code for a
 * conflict (cli/cli-errors.ts `EXIT.CONFLICT`); a config file that cannot be read
 * (`ERR_FILE_UNREADABLE`) and any other client error the same line with exit 1. Pure.
 * @returns the line (without `paddock: ` and the newline) and the exit code, or undefined for an
 *   error that is no client error (logged with its stack instead).
 */
export function describeStartError(err: unknown): { line: string; exitCode: number } | undefined {
  // A config file that cannot be read (supervisor-config.ts loadSupervisorConfig): the CLI's own
  // code for a local file, exit 1 (cli/cli-errors.ts), never a server's answer (hence its 500).
  if (isPaddockError(err, "ERR_FILE_UNREADABLE")) return { line: `error: ${err.message} (${err.code})`, exitCode: 1 };
  if (!isPaddockError(err) || !err.isClientError) return undefined;
  if (err.code === "ERR_BAD_REQUEST") return { line: `usage error: ${err.message}`, exitCode: 2 };
  const line = `error: ${err.message}${err.message.includes(err.code) ? "" : ` (${err.code})`}`;
  if (err.code === "ERR_CONFIG_INVALID" || err.code === "ERR_CONFIG_UNSUPPORTED") return { line, exitCode: 2 };
  // The CLI's exit codes (cli/cli-errors.ts EXIT; supervisor/ does not import cli/): 4 = a
  // conflict (HTTP 409: the state dir or run dir in use, a port in use) or forbidden (403).
  return { line, exitCode: err.status === 409 || err.status === 403 ? 4 : 1 };
}

/**
 * `paddock up …` with its parsed arguments ({@link parseUpArgs}, which the CLI runs first so a bad
 * command line is its usage error): run until SIGTERM/SIGINT. Daemons keep running on exit unless
 * `--stop-daemons-on-exit` (or `stop_daemons_on_exit: true`).
 * @returns the process exit code: 0 after a stop by signal, else as {@link describeStartError}
 *   (1 for an unexpected error).
 */
export async function main(args: { configFile?: string; flags: SupervisorFlags }): Promise<number> {
  const log = createLogger({ batch: true });
  let sup: RunningSupervisor;
  try {
    sup = await runSupervisor({ configFile: args.configFile, flags: args.flags, logger: log });
  } catch (err) {
    const d = describeStartError(err);
    if (d !== undefined) {
      process.stderr.write(`paddock: ${d.line}\n`);
      return d.exitCode;
    }
    log.error("supervisor failed to start", { err });
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info("signal received; stopping", { signal });
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      void sup.close().then(resolve, (err: unknown) => { log.error("error while stopping", { err }); resolve(); });
    };
    const onTerm = (): void => stop("SIGTERM");
    const onInt = (): void => stop("SIGINT");
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
  });
  return 0;
}
