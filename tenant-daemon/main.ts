/**
 * Composition root of the tenant daemon: loads the config, takes the tenant id and state locks,
 * applies the tenant's cgroup budget, builds the services (daemon-services.ts), then serves the
 * Slicer API; or purges everything of a tenant.
 *
 *   node dist/tenant-daemon/main.js up <config.yaml>      serve until SIGTERM/SIGINT
 *   node dist/tenant-daemon/main.js purge <config.yaml>   delete every VM, disk, link and table of the tenant, then its state and run dirs
 *
 * Exit codes: 0 ok, 1 runtime failure, 2 bad config or usage.
 */
import { promises as fs, existsSync } from "node:fs";
import type http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PaddockError, isPaddockError } from "../shared/errors.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { OWNERSHIP_ENTRIES, acquireOwnership } from "../shared/state-store.js";
import { assertUserdataFilesReadable, loadTenantConfig, type TenantConfig } from "../shared/tenant-config.js";
import { claimUidRange, releaseUidRange } from "../shared/uid-ranges.js";
import { assertListenFree, attachUpgradeHandler, createApiApp, listenApi } from "./api/server.js";
import { VmStatsCollector } from "./api/vm-stats.js";
import { agentStats } from "./agent-client/agent-http.js";
import { createAgentUpgradeHandler } from "./api/ws-upgrade.js";
import { createPreviewProxy } from "./api/preview-routes.js";
import { DaemonMetrics } from "./api/metrics.js";
import { runscTenantPidsMax } from "../shared/host-pids.js";
import { OciDriver, warnRuncAdvisories } from "./runtime/oci-driver.js";
import { NO_KVM, RUNSC_INSTALL_HINT, chooseRunscPlatform, findRunsc, hostKvmFacts, type KvmFacts } from "./runtime/runsc-host.js";
import { scanHost, type HostScan } from "./network/tenant-ranges.js";
import { vmVethName } from "./network/names.js";
import { VmService } from "./vm/vm-service.js";
import { applyTenantCgroup, computeTenantBudget, detectCgroupLayout, renderTenantCgroup, type TenantBudgetPlan } from "./runtime/tenant-cgroup.js";
import { acquireTenantIdLock } from "../shared/tenant-id-lock.js";
import { readPidMax } from "../shared/host-pids.js";
import { assertNoLiveTenantDirs, otherTenantIdsOf, removeIfEmpty, removeTenantDir, sharedPaddockDirs, type LeftDir } from "./purge-dirs.js";
import { isPathUnder } from "./storage/vm-disk.js";
import { buildServices, loadAuthToken, stopServices, type Services } from "./daemon-services.js";

/** A running daemon, for tests and the CLI. */
export interface RunningDaemon {
  config: TenantConfig;
  vms: VmService;
  /** Stop serving; ephemeral VMs are deleted, persistent ones keep running (docs/slicer-api.md#vm-lifecycle). */
  stop(): Promise<void>;
}

/**
 * Refuse hypervisors this host cannot run: `firecracker` needs /dev/kvm, and the Firecracker
 * driver is not part of this release; `gvisor` needs runsc (tenant-daemon/runtime/runsc-host.ts)
 * and a usable platform (an explicit `paddock.gvisor.platform: kvm` needs a /dev/kvm that opens
 * read-write on a CPU with hardware virtualisation, runsc-host.ts `chooseRunscPlatform`).
 * @param runscBinary - the runsc found on this host (default: searched on PATH), null when absent.
 * @param kvmFacts - this host's KVM facts when /dev/kvm is present (default: runsc-host.ts `hostKvmFacts`).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE (runsc missing, with its install command; kvm
 *   platform asked for where it cannot work, saying why), ERR_CONFIG_UNSUPPORTED (firecracker)
 */
export function checkHypervisor(
  config: TenantConfig, kvmPresent = existsSync("/dev/kvm"), runscBinary: string | null = config.hypervisor === "gvisor" ? (findRunsc() ?? null) : null,
  kvmFacts: () => KvmFacts = hostKvmFacts,
): void {
  if (config.hypervisor === "oci") return;
  if (config.hypervisor === "gvisor") {
    if (runscBinary === null) {
      throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `${config.source}: config.hypervisor is gvisor, but runsc is not on PATH; ${RUNSC_INSTALL_HINT} (or set \`hypervisor: oci\`)`);
    }
    chooseRunscPlatform(config.paddock.gvisor.platform, kvmPresent ? kvmFacts() : NO_KVM);
    return;
  }
  if (!kvmPresent) {
    throw new PaddockError("ERR_CONFIG_UNSUPPORTED", `${config.source}: config.hypervisor is firecracker, but this host has no /dev/kvm; set \`hypervisor: oci\` to run VMs as OCI sandboxes (runc/crun)`);
  }
  throw new PaddockError("ERR_CONFIG_UNSUPPORTED", `${config.source}: the Firecracker driver is not available in this Paddock release; set \`hypervisor: oci\``);
}

/**
 * The tenant's budget from its limits and the host's pid_max (see computeTenantBudget), clamps
 * logged as warnings.
 */
async function planTenantBudget(config: TenantConfig, logger: Logger): Promise<TenantBudgetPlan> {
  const plan = computeTenantBudget({
    limits: config.paddock.limits,
    hostGroupVcpus: config.hostGroups.map((g) => g.vcpu),
    vmPidsLimit: config.paddock.pidsLimit,
    pidMax: await readPidMax(),
    reservePids: config.paddock.hostPidsReserve,
    // gVisor: the cgroup counts the sentry's, gofer's and stubs' host threads (runsc-spec.ts).
    ...(config.hypervisor === "gvisor" ? { hostTasks: (guestPids: number) => runscTenantPidsMax(guestPids, config.paddock.limits.maxVms) } : {}),
  });
  for (const note of plan.notes) logger.warn(`budget: ${note}`);
  return plan;
}

/**
 * Write the tenant's budget into its parent cgroup `/paddock/<tenant>` (created if absent),
 * before any VM of this run starts; VMs adopted from a previous run are already below it.
 * @throws PaddockError ERR_CGROUP_SETUP_FAILED (e.g. a lowered limit below what running VMs use).
 */
async function applyTenantBudget(config: TenantConfig, plan: TenantBudgetPlan, logger: Logger): Promise<void> {
  const layout = await detectCgroupLayout();
  await applyTenantCgroup(renderTenantCgroup(plan.budget, layout, config.paddock.tenantId));
  logger.info("tenant cgroup budget applied", { cgroup: `/paddock/${config.paddock.tenantId}`, cgroup_version: layout.version, pids_max: plan.budget.pidsMax, memory_bytes: plan.budget.memoryBytes ?? "max", cpu_quota_us: plan.budget.cpuQuotaUs ?? "max", vm_pids_limit: plan.vmPidsLimit });
}

/**
 * Start a daemon from a config file: take the host-global lock of the tenant id, lock the
 * state dir, apply the tenant's cgroup budget, reconcile, serve.
 * @throws PaddockError ERR_CONFIG_INVALID / ERR_CONFIG_UNSUPPORTED / ERR_TENANT_ID_IN_USE (another
 *   live daemon holds the tenant id; nothing touched) / ERR_STATE_LOCKED / ERR_SOCKET_IN_USE /
 *   ERR_IMAGE_NOT_FOUND / ERR_RUNTIME_UNAVAILABLE / ERR_CGROUP_SETUP_FAILED and start-up failures.
 */
export async function startDaemon(configPath: string, options: { logger?: Logger } = {}): Promise<RunningDaemon> {
  const timeline = new StartTimeline();
  const config = await loadTenantConfig(configPath);
  await assertUserdataFilesReadable(config);
  timeline.mark("config");
  // Info lines (one access line per request, api/access-log.ts) are written in batches, at
  // most LOG_BATCH_MS late (shared/logger.ts), not one write per request; warn/error at once.
  const logger = (options.logger ?? createLogger({ batch: true })).child({ tenant: config.paddock.tenantId });
  for (const w of config.warnings) logger.warn(`config: ${w}`);
  checkHypervisor(config);
  // Before anything else: container ids, the nftables table, links and cgroups are keyed by the
  // tenant id, so a second daemon of the same id must not touch any of them (shared/tenant-id-lock.ts).
  const releaseId = await acquireTenantIdLock({
    tenantId: config.paddock.tenantId, configPath: config.source, purpose: "serve", dirs: [config.paddock.stateDir, config.paddock.runDir],
    onCompromised: (err) => logger.error("the tenant id lock was lost while held", { err }),
  });
  // Then its dirs: neither may be, be inside or hold a dir of another live daemon (a shared run
  // dir means shared VM bundles and mounts); the state dir's own lock comes after.
  const releaseState = await assertNoLiveTenantDirs(config.paddock.tenantId, [config.paddock.stateDir, config.paddock.runDir], config.source, "start")
    .then(() => acquireOwnership(config.paddock.stateDir, `tenant ${config.paddock.tenantId}'s state`))
    .catch(async (err: unknown) => {
      await releaseId();
      throw err;
    });
  const release = async (): Promise<void> => {
    await releaseState();
    await releaseId();
  };
  timeline.mark("locks");
  let s: Services | undefined;
  let hostScan: Promise<HostScan> | undefined;
  try {
    // Refuse before touching anything (links, table, VMs) when the listen address is taken.
    await assertListenFree(config);
    // The tenant's host uid/gid range (shared/uid-ranges.ts); a refusal fails the start here.
    const uidRange = await claimUidRange({ tenantId: config.paddock.tenantId, stateDir: config.paddock.stateDir, requested: config.paddock.userns });
    const metrics = new DaemonMetrics();
    const budget = await planTenantBudget(config, logger);
    // The network's host scan (`ip -j link/addr/netns`, `nft -j list sets inet`) only reads the
    // host: it runs side by side with building the services (`runc --version`, the image, the
    // stores), which touch no link, netns or table. Its failure is thrown by network.start()
    // below, as before; the handler only keeps it from counting as unhandled meanwhile.
    hostScan = scanHost(config.paddock.tenantId);
    hostScan.catch(() => undefined);
    const svc = await buildServices(config, logger, metrics, "serve", uidRange, budget.vmPidsLimit, hostScan);
    s = svc;
    timeline.mark("services");
    // The cgroup budget and the network are independent; both are in place before any VM starts.
    // Both are awaited even when one fails, so no set-up runs on behind the clean-up below.
    await allSettledOrThrow([applyTenantBudget(config, budget, logger), svc.network.start()]);
    timeline.mark("cgroup_network");
    await svc.vms.start();
    // VM netns kept alive at network start but adopted by no VM record are removed now.
    await svc.network.sweep();
    timeline.mark("vms");
    const authToken = await loadAuthToken(config);
    const stats = new VmStatsCollector({
      vms: svc.vms,
      diskUsage: (h) => svc.storage.usage(h),
      diskMountDir: (h) => svc.storage.paths(h).diskDir,
      cgroupPath: (h) => `/paddock/${config.paddock.tenantId}/${h}`,
      agentStats,
    });
    // The server exists only after the app is built; until then it holds no connection.
    const api: { server?: http.Server } = {};
    const preview = createPreviewProxy({ resolveAgent: (h) => svc.vms.resolveAgent(h), createdAt: (h) => svc.vms.get(h).createdAt, authToken, logger, activity: svc.vms.idle });
    const app = createApiApp({
      preview,
      config, vms: svc.vms, metrics, logger, authToken, secrets: svc.secrets, stats, events: svc.events, proxyStore: svc.proxyStore,
      describeNetwork: (h) => svc.network.describe?.(h),
      egressVms: () => svc.vms.list({ kind: "none" }).map((n) => ({ hostname: n.hostname, hostGroup: n.hostgroup, veth: vmVethName(config.paddock.tenantId, n.hostname) })),
      openConnections: () => new Promise((resolve) => {
        if (api.server === undefined) resolve(0);
        else api.server.getConnections((err, n) => resolve(err ? 0 : n));
      }),
    });
    const server = await listenApi(app, config);
    api.server = server;
    const upgrades = createAgentUpgradeHandler({ resolveAgent: (h) => svc.vms.resolveAgent(h), authToken, logger, activity: svc.vms.idle, secretsSettled: (h) => svc.vms.secretsSettled(h) });
    attachUpgradeHandler(server, (req, socket, head) => {
      if (!preview.upgrade(req, socket, head)) upgrades.handle(req, socket, head);
    });
    timeline.mark("listen");
    logger.info("tenant daemon ready", { start_ms: timeline.steps(), listen: config.api.kind === "unix" ? config.api.socketPath : `${config.api.host}:${config.api.port}`, runtime: svc.runtime.name, vms: svc.vms.list({ kind: "none" }).length });
    // Advisory only, so after readiness: `runc --version` is not on the start's path.
    if (svc.runtime instanceof OciDriver) void warnRuncAdvisories(svc.runtime, logger);
    let stopped: Promise<void> | undefined;
    return {
      config,
      vms: svc.vms,
      stop: () => (stopped ??= (async () => {
        logger.info("stopping");
        upgrades.closeAll();
        preview.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await stopServices(svc, config, logger);
        if (config.api.kind === "unix") await fs.rm(config.api.socketPath, { force: true });
        await release();
        logger.info("stopped");
      })()),
    };
  } catch (err) {
    // A host scan still running (the services failed first) ends before anything is undone.
    await hostScan?.catch(() => undefined);
    // A start that failed half-way leaves what a stop would: warm and ephemeral VMs removed,
    // the network removed unless VMs that outlive the daemon need it.
    if (s !== undefined) await stopServices(s, config, logger).catch((e: unknown) => logger.error("cleanup after a failed start failed", { err: e }));
    // A first start that failed (bad image, unsupported runtime, ...) leaves nothing: when the
    // state dir holds only the ownership lock, no VM, disk or record uses the tenant's uid range,
    // so its claim goes (while the id lock is still held) and the empty dirs after the lock.
    const fresh = await stateDirHoldsOnlyLock(config.paddock.stateDir);
    if (fresh) await releaseUidRange({ tenantId: config.paddock.tenantId, stateDir: config.paddock.stateDir }).catch((e: unknown) => logger.error("releasing the uid range after a failed start failed", { err: e }));
    await release().catch(() => undefined);
    if (fresh) for (const dir of [config.paddock.stateDir, config.paddock.runDir]) await removeIfEmpty(dir).catch(() => undefined);
    throw err;
  }
}

/** True when `dir` holds nothing but {@link acquireOwnership}'s entries (false when unreadable). */
async function stateDirHoldsOnlyLock(dir: string): Promise<boolean> {
  const names = await fs.readdir(dir).catch(() => undefined);
  return names !== undefined && names.every((n) => OWNERSHIP_ENTRIES.includes(n));
}

/**
 * When each start step ended, in ms since the process started (`performance.now()`; its time
 * origin is the process start), logged with "tenant daemon ready" as `start_ms`. `code` is the
 * first mark: node's own start plus loading the daemon's code.
 */
class StartTimeline {
  private readonly marks: Record<string, number> = { code: Math.round(performance.now()) };

  /** Record that `step` has just ended. */
  mark(step: string): void {
    this.marks[step] = Math.round(performance.now());
  }

  /** Step name → ms since the process started when it ended, in order. */
  steps(): Readonly<Record<string, number>> {
    return { ...this.marks };
  }
}

/**
 * Wait for every promise; then throw the first rejection, if any. Unlike `Promise.all`, nothing
 * is left running when the caller goes on to clean up after a failure.
 */
async function allSettledOrThrow(work: readonly Promise<unknown>[]): Promise<void> {
  const failed = (await Promise.allSettled(work)).find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}

/**
 * Delete everything a tenant has on this host: every VM and disk, links, namespaces, the
 * nftables table, the tenant cgroup, its uid range claim, and last its state dir and run dir
 * (tenant-daemon/purge-dirs.ts says which dirs are left and why). No daemon may be running with
 * the tenant's id, nor with an id a dir to remove is named after or nested in
 * (`run_dir: …/tenants/<other>[/…]`), nor with recorded dirs a dir to remove is, is inside or holds.
 * @throws PaddockError ERR_TENANT_ID_IN_USE (a live process holds the id, or the id of a dir to
 *   remove, or a live tenant's dir is, is inside or is held by a dir to remove: nothing touched),
 *   ERR_STATE_LOCKED, ERR_STORAGE_FAILED (all else purged, but a
 *   dir was left: each named with the reason).
 * @returns the purged tenant's id.
 */
export async function purgeTenant(configPath: string, options: { logger?: Logger } = {}): Promise<{ tenantId: string }> {
  const config = await loadTenantConfig(configPath);
  const p = config.paddock;
  const logger = (options.logger ?? createLogger()).child({ tenant: p.tenantId, op: "purge" });
  // A purge removes everything keyed by the tenant id: never while another daemon holds it; nor
  // the dirs named after another tenant id while a process holds that one.
  const idLocks: (() => Promise<void>)[] = [];
  const releaseIds = async (): Promise<void> => {
    for (const r of idLocks.splice(0).reverse()) await r();
  };
  let releaseState: (() => Promise<void>) | undefined;
  try {
    for (const id of [p.tenantId, ...otherTenantIdsOf(p.tenantId, [p.stateDir, p.runDir])]) {
      idLocks.push(await acquireTenantIdLock({ tenantId: id, configPath: config.source, purpose: "purge", purging: { tenantId: p.tenantId, configPath: config.source } }));
    }
    // Nor a dir inside or around one a live daemon of another tenant recorded as its own.
    await assertNoLiveTenantDirs(p.tenantId, [p.stateDir, p.runDir], config.source);
    const release = await acquireOwnership(p.stateDir, `tenant ${p.tenantId}'s state`);
    let released: Promise<void> | undefined;
    releaseState = () => (released ??= release());
  } catch (err) {
    await releaseIds();
    throw err;
  }
  const left: LeftDir[] = [];
  try {
    const s = await buildServices(config, logger, new DaemonMetrics(), "purge");
    await s.vms.purge();
    await s.network.stop();
    await s.runtime.pruneCgroups?.(`/paddock/${p.tenantId}`);
    if (config.api.kind === "unix") await fs.rm(config.api.socketPath, { force: true });
    await releaseUidRange({ tenantId: p.tenantId, stateDir: p.stateDir });
    // The dirs last, under the id locks: the state dir's ownership lock stays held (its entries
    // kept) until its release below; a run dir that holds the state dir goes after that.
    const shared = sharedPaddockDirs(process.env, p.imageDir);
    const runHoldsState = isPathUnder(p.stateDir, p.runDir);
    if (!runHoldsState) left.push(...[await removeTenantDir(p.runDir, { shared })].filter((l) => l !== undefined));
    const stateLeft = await removeTenantDir(p.stateDir, { shared, keep: OWNERSHIP_ENTRIES });
    if (stateLeft !== undefined) left.push(stateLeft);
    await releaseState();
    if (stateLeft === undefined && !(await removeIfEmpty(p.stateDir))) left.push({ dir: p.stateDir, reason: "another process wrote into it during the purge" });
    if (runHoldsState) left.push(...[await removeTenantDir(p.runDir, { shared })].filter((l) => l !== undefined));
  } finally {
    await releaseState();
    await releaseIds();
  }
  if (left.length > 0) {
    throw new PaddockError("ERR_STORAGE_FAILED", `purged tenant ${p.tenantId}'s VMs, disks, network and cgroup, but left ${left.map((l) => `${l.dir} (${l.reason})`).join("; ")}`, {
      details: { left: left.map((l) => l.dir) },
    });
  }
  return { tenantId: p.tenantId };
}

/**
 * CLI entry: `up FILE` or `purge FILE`. Returns the process exit code ({@link daemonExitCode}:
 * 2 for a bad config, 4 for a conflict, 1 for any other failure). A failure of `up` is logged as an NDJSON error line (`msg`, `code`),
 * one of `purge` as the CLI's other errors, `paddock: error: MESSAGE (CODE)`; a done purge
 * says so on stdout.
 */
export async function main(argv: string[]): Promise<number> {
  const [cmd, file] = argv;
  if ((cmd !== "up" && cmd !== "purge") || !file) {
    process.stderr.write("usage: paddock daemon up <config.yaml> | paddock daemon purge <config.yaml>\n");
    return 2;
  }
  try {
    if (cmd === "purge") {
      const { tenantId } = await purgeTenant(file);
      process.stdout.write(`purged tenant ${tenantId}: its VMs, disks, links, nftables table, cgroup, state and run dirs\n`);
      return 0;
    }
    // Listen for the stop signal before start-up begins: without a listener, a SIGTERM during
    // start-up (network, reconciliation, warm pool) would end the process on the spot and leave
    // its table, links and sandboxes behind. A stop asked for during start-up waits for the
    // start to finish, then undoes it like any stop.
    //
    // `on`, not `once`: signal-exit (loaded by proper-lockfile; execa loaded it too before the
    // daemon dropped execa) re-raises a signal when its own are the only listeners left, and a
    // `once` listener is already gone while the signal is emitted, so the process died by its
    // own SIGTERM in the middle of the stop. A second signal during the stop is only logged;
    // SIGKILL remains the way to force an exit.
    let signalled: (sig: NodeJS.Signals) => void = () => undefined;
    let stopping = false;
    const stopAsked = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
    const onSignal = (sig: NodeJS.Signals): void => {
      process.stderr.write(stopping ? `received ${sig} again; already stopping\n` : `received ${sig}\n`);
      stopping = true;
      signalled(sig);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    const daemon = await startDaemon(file);
    await stopAsked;
    await daemon.stop().catch((err: unknown) => process.stderr.write(`stop failed: ${(err as Error).message}\n`));
    return 0;
  } catch (err) {
    if (cmd === "up") {
      // The daemon's log is NDJSON (shared/logger.ts): its fatal error is one more error line, the
      // one the supervisor reports as the reason of a failed start (supervisor/daemon-start-reason.ts).
      const log = createLogger();
      if (isPaddockError(err)) log.error(err.message, { code: err.code });
      else log.error(err instanceof Error ? err.message : String(err), { err });
    } else {
      // The CLI's error line (cli/cli-errors.ts).
      const msg = isPaddockError(err) ? `${err.message} (${err.code})` : (err as Error).stack ?? String(err);
      process.stderr.write(`paddock: error: ${msg}\n`);
    }
    return daemonExitCode(err);
  }
}

/**
 * The exit code of a failed `daemon up|purge`, in the CLI's scheme (cli/cli-errors.ts `EXIT`,
 * `paddock --help`): 2 for a config the daemon refuses, 4 for a conflict (another daemon holds the
 * tenant's state, socket or id: a PaddockError of status 409 or 403), 1 for anything else. The
 * supervisor does not act on it; it reads the reason from the log (supervisor/daemon-start-reason.ts).
 */
export function daemonExitCode(err: unknown): number {
  if (!isPaddockError(err)) return 1;
  if (err.code === "ERR_CONFIG_INVALID" || err.code === "ERR_CONFIG_UNSUPPORTED") return 2;
  if (err.status === 409 || err.status === 403) return 4;
  return 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // No top-level await: the bundled entry (scripts/build-daemon-bundle.ts) is CommonJS.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
