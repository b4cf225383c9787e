/**
 * The tenant daemon's services (tenant-daemon/main.ts starts and purges with them): the runtime
 * driver, storage, namespaces, state store, event log, egress proxy wiring, network, secrets,
 * agent port, commit store and VM service, built in dependency order, and stopped again.
 */
import { promises as fs } from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { PaddockError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { JsonStateStore, writeFileAtomic } from "../shared/state-store.js";
import type { TenantConfig } from "../shared/tenant-config.js";
import type { UidRange } from "../shared/uid-ranges.js";
import type { DaemonMetrics } from "./api/metrics.js";
import { resolveImage } from "../shared/image-store.js";
import type { RuntimeDriver } from "./runtime/driver.js";
import { createOciDriver } from "./runtime/oci-driver.js";
import { createRunscDriver } from "./runtime/runsc-driver.js";
import { CommitStore } from "./storage/commit-store.js";
import { createVmStorage } from "./storage/vm-storage.js";
import { createTenantNetwork } from "./network/tenant-network.js";
import type { HostScan } from "./network/tenant-ranges.js";
import { createAgentPort } from "./vm/agent-port.js";
import { SecretStore } from "./secrets/secret-store.js";
import { VmService } from "./vm/vm-service.js";
import { EventLog } from "./events/event-log.js";
import { ProxyStore } from "./proxy/proxy-store.js";
import { egressCounters } from "./proxy/egress-telemetry.js";
import { EgressProxyWiring } from "./network/egress-proxy-wiring.js";
import { VmNamespaces } from "./runtime/vm-namespaces.js";
import { tenantCgroupPath } from "./runtime/tenant-cgroup.js";
import type { DaemonState } from "./vm/vm-types.js";
import { DAEMON_EXTRA_CA_ENV } from "../shared/daemon-env.js";

/**
 * The tenant's runtime driver. `hypervisor` is one value per tenant config (the Slicer
 * `config.hypervisor` key), so every VM of a tenant runs under the same driver: `gvisor` ⇒ runsc
 * with the tenant's private state root `<runDir>/runsc` (runsc-driver.ts), else runc/crun.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE (runtime binary or platform missing)
 */
export async function createRuntime(config: TenantConfig, logger: Logger, purpose: "serve" | "purge"): Promise<RuntimeDriver> {
  const p = config.paddock;
  // A purge boots no sandbox: it must work even where the configured platform cannot (kvm refused).
  if (config.hypervisor === "gvisor") return createRunscDriver({ stateRoot: path.join(p.runDir, "runsc"), cgroupParent: tenantCgroupPath(p.tenantId), platform: purpose === "purge" ? "ptrace" : p.gvisor.platform, logger });
  return createOciDriver({ cgroupParent: tenantCgroupPath(p.tenantId), preference: p.runtime, logger });
}

/** Read or create (0600) the API bearer token for TCP binds (docs/slicer-api.md#authentication). */
export async function loadAuthToken(config: TenantConfig): Promise<string | undefined> {
  if (!config.api.auth.enabled) return undefined;
  if (config.api.auth.token) return config.api.auth.token;
  const file = path.join(config.paddock.stateDir, "auth", "token");
  try {
    return (await fs.readFile(file, "utf8")).trim();
  } catch {
    const token = crypto.randomBytes(32).toString("base64url");
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, token + "\n", 0o600);
    return token;
  }
}

/**
 * Check that every ancestor of `dir` lets other users traverse it (mode o+x): the VMs' roots
 * are unprivileged host uids (user namespaces) and runc resolves their rootfs path as them.
 * @throws PaddockError ERR_CONFIG_INVALID naming the directory and the fix.
 */
export async function assertTraversable(dir: string): Promise<void> {
  let d = path.resolve(dir);
  for (;;) {
    const st = await fs.stat(d);
    if ((st.mode & 0o001) === 0) {
      throw new PaddockError("ERR_CONFIG_INVALID", `run dir ${dir}: ${d} is not traversable by other users (mode ${(st.mode & 0o777).toString(8)}); VMs run as unprivileged host users and must reach their rootfs below it: \`chmod o+x ${d}\` or choose another run dir`);
    }
    const parent = path.dirname(d);
    if (parent === d) return;
    d = parent;
  }
}

/** The daemon's services, as {@link buildServices} builds them. */
export type Services = Awaited<ReturnType<typeof buildServices>>;

/**
 * Stop the VM service and, when no VM outlives the daemon, the network and the tenant's cgroup
 * parent. Persistent and config VMs keep running while the daemon is down (docs/slicer-api.md#vm-lifecycle):
 * their links and the tenant's nftables table stay in force so their isolation holds, and the
 * next start adopts them.
 * @throws the network's stop error (after the cgroups are pruned), the VM service's and the runtime's errors.
 */
export async function stopServices(s: Services, config: TenantConfig, logger: Logger): Promise<void> {
  s.proxyStore.close();
  // The VMs leaving at this stop do not rewrite the table one by one: it is deleted below when
  // none survive (a tenant delete), else brought up to date once.
  s.network.deferDetachRules();
  await s.vms.stop();
  // The proxy stops with the daemon; VMs that outlive it lose their way out until the next start.
  await s.egress?.close();
  const survivors = s.vms.list({ kind: "none" }).filter((n) => n.status !== "Stopped").length;
  if (survivors === 0) {
    // The cgroups go even when the network's stop fails (its error is thrown after): a failed
    // start's clean-up left the tenant's cgroups behind when `ip` failed.
    const networkErr = await s.network.stop().then(() => undefined, (err: unknown) => ({ err }));
    await s.runtime.pruneCgroups?.(`/paddock/${config.paddock.tenantId}`);
    if (networkErr !== undefined) throw networkErr.err;
  } else {
    logger.info("keeping the network of VMs that outlive the daemon", { survivors });
    await s.network.flushDetaches().catch((err: unknown) => logger.error("firewall update at stop failed", { err }));
  }
}

/**
 * Build the daemon's services. `purpose: "purge"` does not require the base image: deleting a
 * tenant must work even when its image has been removed from the store (nothing is mounted).
 * `hostScan`: the tenant network's host scan, begun by the caller (tenant-network.ts `hostScan`).
 */
export async function buildServices(config: TenantConfig, logger: Logger, metrics: DaemonMetrics, purpose: "serve" | "purge" = "serve", uidRange?: UidRange, vmPidsLimit?: number, hostScan?: Promise<HostScan>) {
  const p = config.paddock;
  await fs.mkdir(p.stateDir, { recursive: true, mode: 0o700 });
  // VMs' roots are unprivileged host uids that must reach their rootfs under the run dir while
  // the runtime sets it up: traversable, not listable (0711), and so must its parents be.
  await fs.mkdir(p.runDir, { recursive: true, mode: 0o711 });
  await fs.chmod(p.runDir, 0o711);
  if (purpose === "serve") await assertTraversable(p.runDir);
  // Independent look-ups (the image store, the runtime binary's version) run side by side.
  const [imageRootfs, runtime] = await Promise.all([
    purpose === "serve"
      ? resolveImage(p.imageDir, config.image)
      : resolveImage(p.imageDir, config.image).catch(() => path.join(p.imageDir, config.image, "rootfs")),
    createRuntime(config, logger, purpose),
  ]);
  const storage = createVmStorage({ stateDir: p.stateDir, runDir: p.runDir, imageRootfs, logger, uidRange, diskCommitRatio: p.diskCommitRatio });
  // A purge only removes namespace pins; it needs no range.
  const namespaces = new VmNamespaces(p.runDir, uidRange ?? { uidStart: 1, size: 1 }, logger);
  const store = new JsonStateStore<DaemonState>({
    file: path.join(p.stateDir, "state.json"),
    schemaVersion: 1,
    initial: () => ({ schemaVersion: 1, tenantId: p.tenantId, counters: {}, vms: {} }),
    validate: (v) => (typeof (v as DaemonState).vms === "object" && typeof (v as DaemonState).counters === "object" ? undefined : "missing vms or counters"),
  });
  // The lifecycle event log: VmService emits into it, GET /events streams it.
  const events = new EventLog();
  // The egress proxy's clients, secrets and rules (`/proxy/v1`); the engine matches against it.
  const proxyStore = new ProxyStore(p.stateDir);
  if (purpose === "serve") await proxyStore.init();
  // Proxy mode (`egress_proxy` host groups): the engine and its resolver listen on the proxy-mode
  // links' gateways, as the tenant network says (network/egress-proxy-wiring.ts). Both are loaded
  // on first use; the engine's counters are in /metrics from the start, as before.
  if (purpose === "serve") egressCounters(metrics.registry);
  const egress = purpose === "serve" ? new EgressProxyWiring({
    logger,
    policy: { hostAllowed: (client, host) => proxyStore.hasRuleForHost(client, host) },
    makeEngine: async (identify) => {
      const [{ EgressProxy }, { createHostResolver }] = await Promise.all([import("./proxy/egress-proxy.js"), import("./proxy/upstream-guard.js")]);
      return new EgressProxy({
        store: proxyStore, identify, resolveHost: createHostResolver(p.proxy.hosts), log: logger.child({ component: "egress" }),
        metrics: metrics.registry, events: (e) => events.emit(e), stateDir: p.stateDir, tenantId: p.tenantId, settings: p.proxy,
        // The supervisor's NODE_EXTRA_CA_CERTS, passed on under this name (shared/daemon-env.ts).
        upstreamCaFile: process.env[DAEMON_EXTRA_CA_ENV],
        // Link-local (derived isolated ranges) is refused by the guard anyway; bridges and explicit ranges here.
        refusedRanges: [...p.foreignRanges, ...config.hostGroups.flatMap((g) => (g.network.mode === "isolated" ? (g.network.range !== undefined ? [g.network.range] : []) : (g.network.gateway !== undefined ? [g.network.gateway] : [])))],
      });
    },
  }) : undefined;
  const network = createTenantNetwork({
    config, logger, stateDir: p.stateDir,
    ...(egress !== undefined ? { egress } : {}),
    ...(hostScan !== undefined ? { hostScan } : {}),
    ...(uidRange !== undefined ? { makeNetns: (hostname: string, netnsName: string) => namespaces.create(hostname, netnsName) } : {}),
    // What the VM table recorded (a state file of another tenant is refused later, by the VM service).
    recordedAddresses: async () => {
      const state = await store.read();
      return new Map(state.tenantId !== p.tenantId ? [] : Object.values(state.vms).flatMap((r) => (r.ipCidr ? [[r.hostname, r.ipCidr] as const] : [])));
    },
  });
  const secrets = new SecretStore(path.join(p.stateDir, "secrets"), { maxSecrets: p.maxSecrets, maxSecretBytes: p.maxSecretBytes });
  const agent = createAgentPort({ secrets, logger, ...(egress !== undefined ? { egress } : {}) });
  const commitStore = new CommitStore(p.stateDir, storage.ledger, logger.child({ component: "commits" }));
  const vms = new VmService({
    config, store, runtime, storage, network, agent, namespaces, logger, vmPidsLimit, events,
    cold: { store: commitStore, disks: storage },
    idleMetrics: metrics.idleMetrics(),
    onEvent: (event, group) => {
      if (event === "launch") metrics.launch(group, "ok");
      if (event === "launch_failed") metrics.launch(group, "error");
    },
  });
  return { runtime, storage, network, secrets, agent, vms, uidRange, events, proxyStore, egress };
}
