/**
 * Boot and teardown of one VM against the runtime driver: its disk and mounts, its network, the
 * host-only agent dir with boot.json (and, for `agentChannel: dial` runtimes, the reverse
 * channel's listener), and `runtime.run`; and the reverse. Also the two steps that
 * wrap them in the VM table's lock: save-while-booting and discard (roll back and forget).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { newAgentProof } from "../agent-client/agent-endpoint.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmNamespaces } from "../runtime/vm-namespaces.js";
import { removeUnmountedTree } from "../storage/vm-disk.js";
import type { VmPaths } from "./vm-paths.js";
import type { VmSecretsSync } from "./vm-secrets-sync.js";
import { checkpointDir } from "./vm-suspend.js";
import type { AgentPort, VmStorage } from "./vm-ports.js";
import type { LiveVm, VmTable } from "./vm-table.js";

/** What {@link VmLauncher} drives: the tenant's config, its VM table and the host-side ports. */
export interface VmLauncherDeps {
  config: TenantConfig;
  table: VmTable;
  runtime: RuntimeDriver;
  storage: VmStorage;
  network: TenantNetwork;
  agent: AgentPort;
  namespaces: VmNamespaces;
  paths: VmPaths;
  /** Secret delivery (vm-secrets-sync.ts): a boot delivers once the agent answers. */
  secretsSync: VmSecretsSync;
  log: Logger;
  /** pids.max of each VM; undefined ⇒ `paddock.pids_limit`. */
  vmPidsLimit: number | undefined;
  /**
   * Told when a teardown's graceful stop had to SIGKILL the sandbox (it ignored SIGTERM for
   * `paddock.stop_timeout_seconds`): Paddock, not the guest, ended it (event reason `reaped`).
   */
  onReaped?: (vm: LiveVm) => void;
}

/** Boots and tears down the sandboxes of the VMs in the table. */
export class VmLauncher {
  private readonly deps: VmLauncherDeps;
  private readonly log: Logger;

  constructor(deps: VmLauncherDeps) {
    this.deps = deps;
    this.log = deps.log;
  }

  /**
   * Start a VM's sandbox: disk, rootfs, network, boot info, runtime. Leaves the VM `running`
   * with its pid, and (unless it is a warm VM) starts its secret delivery.
   * On failure the caller tears down.
   * @throws PaddockError ERR_HOSTGROUP_NOT_FOUND, ERR_VM_START_FAILED (sandbox not running right
   *   after start), and whatever storage, network or runtime threw.
   */
  async boot(vm: LiveVm): Promise<void> {
    const { table, paths } = this.deps;
    const r = vm.record;
    // Read now: a warm VM may be handed out while it boots.
    const warmBoot = r.pooled === true;
    const group = table.hostGroup(r.hostGroup);
    vm.phase = "creating";
    // The boot's proof, set before the first await: saveAndBoot's state write runs alongside
    // this boot, and a daemon killed right after it must find the proof the agent will echo.
    r.agentProof = newAgentProof();
    const spans = new Spans();
    const range = this.deps.namespaces.range;
    const owner = { uid: range.uidStart, gid: range.uidStart };
    // The host-only dirs, the disk and the network are independent: all three are made
    // concurrently. All settle before anything else happens, so a failure never leaves one
    // still running while the caller tears down.
    const dirs = Promise.all([
      fs.mkdir(path.dirname(paths.consoleLogPath(r.hostname)), { recursive: true, mode: 0o700 }),
      (async () => {
        // A fresh boot dir each boot: nothing of an earlier boot survives in it.
        await fs.rm(paths.bootDir(r.hostname), { recursive: true, force: true });
        await fs.mkdir(paths.bootDir(r.hostname), { recursive: true, mode: 0o700 });
        await fs.chown(paths.bootDir(r.hostname), owner.uid, owner.gid);
        if (this.deps.runtime.agentChannel === "dial") await traversableByVmRoot(paths.agentDirChain(r.hostname), owner.gid);
      })(),
      fs.mkdir(paths.bundleDir(r.hostname), { recursive: true, mode: 0o711 }),
    ]).finally(() => spans.mark("dirs"));
    const [dirsMade, disk, net] = await Promise.allSettled([
      dirs,
      (async () => {
        await this.deps.storage.prepare(r.hostname, r.storageSizeBytes);
        spans.mark("disk");
        const dir = await this.deps.storage.mount(r.hostname);
        spans.mark("mount");
        return dir;
      })(),
      this.deps.network.attach({ hostname: r.hostname, hostGroup: r.hostGroup, previousIp: r.ipCidr, override: r.network }).finally(() => spans.mark("network")),
    ]);
    if (dirsMade.status === "rejected") throw dirsMade.reason;
    if (disk.status === "rejected") throw disk.reason;
    if (net.status === "rejected") throw net.reason;
    const rootfsDir = disk.value;
    const attachment = net.value;
    const userdata = r.userdata ?? group.userdata ?? (group.userdataFile ? await fs.readFile(group.userdataFile, "utf8") : undefined);
    // The host writes nothing into the guest's tree: hostname and resolv.conf travel in boot.json
    // (a host-only, read-only bind) and the agent writes them from inside the VM.
    await this.deps.agent.writeBoot(paths.bootDir(r.hostname), { hostname: r.hostname, userdata, resolvConf: attachment.resolvConf, proof: r.agentProof, egressProxy: attachment.egressProxy !== undefined }, owner);
    spans.mark("files");
    // Reverse channel (runtimes without fd passing): the daemon's listener, bound before the
    // sandbox starts so the agent's first dial finds it.
    const dial = this.deps.runtime.agentChannel === "dial";
    if (dial) await paths.dialPools.open({ hostname: r.hostname, socketPath: paths.agentDialSocket(r.hostname), owner });
    const id = paths.containerId(r.hostname);
    const p = this.deps.config.paddock;
    const st = await this.deps.runtime.run({
      id, hostname: r.hostname, cpus: r.cpus, ramBytes: r.ramBytes, pidsLimit: this.deps.vmPidsLimit ?? p.pidsLimit,
      rootfsDir, bundleDir: paths.bundleDir(r.hostname), bootDir: paths.bootDir(r.hostname), agentSocketPath: paths.agentSocket(r.hostname),
      ...(dial ? { agentDialDir: paths.agentDialDir(r.hostname) } : {}),
      netnsPath: attachment.netnsPath,
      userns: { path: attachment.netnsPath === undefined ? undefined : this.deps.namespaces.usernsPath(r.hostname), uidStart: range.uidStart, size: range.size },
      consoleLogPath: paths.consoleLogPath(r.hostname), consoleLogBytes: p.consoleLogBytes, cgroupPath: paths.cgroupPath(r.hostname),
      seccomp: p.seccomp[r.hostGroup] ?? "default",
    });
    spans.mark("runtime-run");
    if (st.status !== "running") throw new PaddockError("ERR_VM_START_FAILED", `sandbox ${id} is ${st.status} right after start; see the console log`);
    vm.pid = st.pid;
    vm.phase = "running";
    this.log.debug("vm boot timing", { hostname: r.hostname, totalMs: spans.totalMs(), atMs: spans.atMs });
    // A warm VM gets its secrets when it is handed out (the request names which).
    if (!warmBoot) vm.secretsDelivered = this.deps.secretsSync.request(vm, { agentReady: false });
  }

  /**
   * Stop the sandbox and release its runtime, links and mounts; optionally its disk and console
   * log. Idempotent. Without `graceful: false` (and with `graceful_shutdown` configured) the
   * guest gets `paddock.stop_timeout_seconds` to stop before it is killed (then
   * {@link VmLauncherDeps.onReaped} is told).
   * @throws PaddockError ERR_RUNTIME_FAILED after every step ran, naming the first that failed.
   */
  async teardown(vm: LiveVm, opts: { removeDisk: boolean; graceful?: boolean }): Promise<void> {
    const { runtime, paths } = this.deps;
    const h = vm.record.hostname;
    const id = paths.containerId(h);
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
        this.log.error(`teardown: ${what} failed`, { hostname: h, err });
      }
    };
    const spans = new Spans();
    const timeoutMs = opts.graceful === false || !this.deps.config.gracefulShutdown ? 0 : this.deps.config.paddock.stopTimeoutSeconds * 1000;
    // Without a grace period there is nothing to wait for: destroy (`runc delete --force`)
    // SIGKILLs what still runs (thawing a paused sandbox first), saving the state/kill round trips.
    if (timeoutMs > 0) {
      await step("stop", async () => {
        const st = await runtime.state(id);
        if (st.status === "paused") await runtime.resume(id);
        if (st.status === "running" || st.status === "paused") {
          const { forced } = await runtime.stop(id, timeoutMs);
          if (forced) {
            this.log.warn("vm reaped: it ignored SIGTERM and was killed", { hostname: h, reason: "reaped", stopTimeoutMs: timeoutMs });
            this.deps.onReaped?.(vm);
          }
        }
      });
      spans.mark("stop");
    }
    await step("destroy", () => runtime.destroy(id));
    spans.mark("destroy");
    // With the sandbox gone, links, mounts and the agent dir are independent of each other.
    await Promise.all([
      step("network", () => this.deps.network.detach(h)).finally(() => spans.mark("network")),
      step("agent dir", async () => {
        await paths.dialPools.close(h);
        await fs.rm(paths.agentDir(h), { recursive: true, force: true });
      }),
      step("user namespace", () => this.deps.namespaces.remove(h)),
      // A teardown ends a suspended VM's memory too (vm-suspend.ts).
      step("checkpoint image", async () => {
        await fs.rm(checkpointDir(this.deps.config.paddock.stateDir, h), { recursive: true, force: true });
        this.deps.storage.releaseFile?.(checkpointDir(this.deps.config.paddock.stateDir, h));
        delete vm.record.suspended;
      }),
      (async () => {
        await step("unmount", () => this.deps.storage.unmount(h));
        spans.mark("unmount");
        await step("bundle dir", () => removeUnmountedTree(paths.bundleDir(h)));
        if (opts.removeDisk) await step("disk", () => this.deps.storage.remove(h));
      })(),
      opts.removeDisk ? step("console log", async () => {
        // The console log and its rotated part (see consoleArgv in tenant-daemon/runtime/oci-bundle.ts).
        await Promise.all([paths.consoleLogPath(h), `${paths.consoleLogPath(h)}.1`].map((f) => fs.rm(f, { force: true })));
      }) : undefined,
    ]);
    vm.pid = undefined;
    this.log.debug("vm teardown timing", { hostname: h, totalMs: spans.totalMs(), atMs: spans.atMs });
    if (errors.length > 0) throw new PaddockError("ERR_RUNTIME_FAILED", `cleanup of ${h} was incomplete: ${(errors[0] as Error).message}`, { cause: errors[0] });
  }

  /**
   * Under the VM's lock, save the state (with its new record) while the VM boots. A crash
   * mid-boot is cleaned by the start-up sweep either way: everything of a VM is found by its
   * deterministic names. @throws the boot's error first, else the save's; the caller rolls back.
   */
  async saveAndBoot(vm: LiveVm): Promise<void> {
    const { table } = this.deps;
    await table.withLock(vm.record.hostname, async () => {
      const [saved, booted] = await Promise.allSettled([table.persist(), this.boot(vm)]);
      if (booted.status === "rejected") throw booted.reason;
      if (saved.status === "rejected") throw saved.reason;
    });
  }

  /**
   * Tear down a VM that never became (or stopped being) one the API shows, and forget it: out
   * of the table, its address released, the state saved. Never rejects (failures are logged).
   */
  async discard(vm: LiveVm): Promise<void> {
    const { table } = this.deps;
    const hostname = vm.record.hostname;
    await table.withLock(hostname, () => this.teardown(vm, { removeDisk: true })).catch((e: unknown) => this.log.error("rollback failed", { hostname, err: e }));
    table.forget(vm);
    this.deps.network.release(hostname);
    await table.persist().catch(() => undefined);
  }
}

/**
 * Make `dirs` (host-made, root-owned) traversable by the VM's root and nobody else: `root:<gid>`
 * mode 0710. runsc's gofer runs as the VM's root uid and resolves each bind source (the boot
 * dir, the reverse channel's dir) as that uid, where runc resolves them as host root
 * (docs/gvisor-findings.md §5). Every VM of a tenant shares the tenant's id range, so the
 * shared `<run>/vms` gets the same group. Nothing in them is guest-writable.
 */
async function traversableByVmRoot(dirs: readonly string[], gid: number): Promise<void> {
  for (const d of dirs) {
    await fs.chown(d, 0, gid);
    await fs.chmod(d, 0o710);
  }
}

/**
 * Timestamps of the steps of one operation, for debug timing lines: `atMs[step]` = ms since the
 * operation started when the step finished (rounded to 0.1; concurrent steps overlap).
 */
class Spans {
  private readonly t0 = performance.now();
  readonly atMs: Record<string, number> = {};
  /** Record that `step` finished now. */
  mark(step: string): void {
    this.atMs[step] = this.totalMs();
  }
  /** ms since the operation started. */
  totalMs(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }
}
