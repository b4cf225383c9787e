/**
 * Suspend to disk and restore of one VM (`POST /vm/{h}/suspend`, `POST /vm/{h}/restore`), for
 * runtimes with a memory checkpoint (gVisor: tenant-daemon/runtime/runsc-checkpoint.ts).
 *
 * Suspend: the runtime writes the VM's memory and processes into a host-only image directory
 * (`<stateDir>/checkpoints/<hostname>/`, root 0700: no guest reaches it; admitted first by the
 * disk ledger with the VM's memory size, tenant-daemon/storage/disk-ledger.ts), after the reverse
 * agent channel's connections are closed (runsc cannot save them); the sandbox is removed, so
 * its memory goes back to the host, and so are its network namespace and links (netstack
 * strips the netns's addresses: docs/gvisor-findings.md §3.3, so a restore needs a fresh one).
 * The disk stays mounted at the same path (the restore needs the same rootfs, unchanged) and
 * the bundle's config.json, the boot dir and the agent channel's dir stay. The VM is then
 * `suspended` (wire status `Suspended`) with `record.suspended` persisted, so a restarted
 * daemon keeps it (vm-reconcile.ts).
 *
 * Restore: the network is attached again (same address), the agent channel's listener bound
 * again, the disk mounted (a no-op when still mounted), and the runtime restores the sandbox
 * from the image; the image is removed once the VM runs. The agent dials back in by itself
 * (tenant-daemon/agent/reverse-transport.ts retries with backoff).
 *
 * Any teardown (delete, stop, purge) removes the image (vm-boot.ts): a suspended VM that is
 * stopped or deleted loses its memory, as a microVM's snapshot would.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmNamespaces } from "../runtime/vm-namespaces.js";
import type { VmPaths } from "./vm-paths.js";
import type { VmStorage } from "./vm-ports.js";
import type { LiveVm, VmTable } from "./vm-table.js";

/** The directory of the tenant's suspend images: `<stateDir>/checkpoints` (root 0700). */
export function checkpointsRoot(stateDir: string): string {
  return path.join(stateDir, "checkpoints");
}

/**
 * The image directory of VM `hostname`'s suspend: `<checkpointsRoot>/<hostname>`. It exists
 * only once complete (the runtime writes `<dir>.partial` and renames it).
 */
export function checkpointDir(stateDir: string, hostname: string): string {
  return path.join(checkpointsRoot(stateDir), hostname);
}

/** Message of the 501 on runtimes without a memory checkpoint (runc). */
export const SUSPEND_UNSUPPORTED_MESSAGE =
  "suspend and restore need a memory snapshot, which the OCI runtime (runc) cannot take: run the tenant with `hypervisor: gvisor` (runsc checkpoint/restore)";

/** What {@link VmSuspender} works with. */
export interface VmSuspenderDeps {
  config: TenantConfig;
  table: VmTable;
  runtime: RuntimeDriver;
  storage: VmStorage;
  network: TenantNetwork;
  namespaces: VmNamespaces;
  paths: VmPaths;
  log: Logger;
}

/** Suspend and restore of the VMs in the table (see the file header). */
export class VmSuspender {
  private readonly deps: VmSuspenderDeps;

  constructor(deps: VmSuspenderDeps) {
    this.deps = deps;
  }

  /** @throws PaddockError ERR_VM_UNSUPPORTED (501) when the runtime cannot checkpoint (runc), naming gVisor. */
  assertSupported(): void {
    const { runtime } = this.deps;
    if (runtime.suspend === undefined || runtime.restore === undefined) throw new PaddockError("ERR_VM_UNSUPPORTED", SUSPEND_UNSUPPORTED_MESSAGE);
  }

  /** The VM's image directory. */
  imageDir(hostname: string): string {
    return checkpointDir(this.deps.config.paddock.stateDir, hostname);
  }

  /**
   * Suspend a running VM to disk (a no-op when already suspended).
   * @returns the image's size, bytes (0 for the no-op).
   * @throws PaddockError ERR_VM_UNSUPPORTED; ERR_VM_NOT_RUNNING (stopped, paused, being made);
   *   ERR_RUNTIME_FAILED: when the agent channel would not close the VM keeps running; when the
   *   checkpoint itself failed the sandbox is gone and the reaper handles it as a guest exit.
   */
  async suspend(vm: LiveVm): Promise<number> {
    this.assertSupported();
    const { table, runtime, paths, network, namespaces, log } = this.deps;
    const h = vm.record.hostname;
    return table.withLock(h, async () => {
      if (vm.phase === "suspended") return 0;
      if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${h} is not running`);
      const dir = this.imageDir(h);
      await fs.mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
      await fs.rm(dir, { recursive: true, force: true });
      const id = paths.containerId(h);
      const t0 = performance.now();
      // The image holds at most the VM's memory: admitted by the disk ledger like a disk.
      await this.deps.storage.reserveFile?.(dir, vm.record.ramBytes);
      let imageBytes: number;
      try {
        ({ imageBytes } = await (runtime.suspend as NonNullable<RuntimeDriver["suspend"]>)(id, dir, paths.dialPools.get(h)));
      } catch (err) {
        this.deps.storage.releaseFile?.(dir);
        const st = await runtime.state(id).catch(() => ({ status: "absent" as const }));
        if (st.status === "running" && runtime.agentChannel === "dial") await this.openChannel(h).catch((e: unknown) => log.error("re-binding the agent channel failed", { hostname: h, err: e }));
        throw namedByHostname(err, id, h);
      }
      await paths.dialPools.close(h);
      vm.phase = "suspended";
      vm.pid = undefined;
      vm.record.suspended = { imageBytes, at: new Date().toISOString() };
      await Promise.all([network.detach(h), namespaces.remove(h)]).catch((err: unknown) => log.error("releasing the network of a suspended VM failed", { hostname: h, err }));
      await table.persist();
      log.info("vm suspended", { hostname: h, imageBytes, ms: Math.round(performance.now() - t0) });
      return imageBytes;
    });
  }

  /**
   * Bring a suspended VM back (the caller waits for its agent when asked). On failure the VM
   * stays suspended with its image, and what the restore made is released.
   * @throws PaddockError ERR_VM_UNSUPPORTED; ERR_VM_ALREADY_RUNNING (running, or paused: its
   *   message says to resume it);
   *   ERR_VM_NOT_RUNNING (stopped, not suspended); the network's, storage's and runtime's errors.
   */
  async restore(vm: LiveVm): Promise<void> {
    this.assertSupported();
    const { table, runtime, paths, network, namespaces, storage, config, log } = this.deps;
    const r = vm.record;
    const h = r.hostname;
    await table.withLock(h, async () => {
      if (vm.phase === "running") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${h} is already running`);
      if (vm.phase === "paused") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${h} is paused, not suspended; thaw it with POST /vm/${h}/resume (CLI: paddock vm resume ${h})`);
      if (vm.phase !== "suspended") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${h} is not suspended`);
      const t0 = performance.now();
      vm.phase = "creating";
      try {
        await storage.mount(h);
        // Same address: it stayed reserved while suspended.
        await network.attach({ hostname: h, hostGroup: r.hostGroup, previousIp: r.ipCidr, override: r.network });
        if (runtime.agentChannel === "dial") await this.openChannel(h);
        const st = await (runtime.restore as NonNullable<RuntimeDriver["restore"]>)(paths.containerId(h), this.imageDir(h), {
          bundleDir: paths.bundleDir(h), consoleLogPath: paths.consoleLogPath(h), consoleLogBytes: config.paddock.consoleLogBytes,
        });
        if (st.status !== "running") throw new PaddockError("ERR_RUNTIME_FAILED", `sandbox of ${h} is ${st.status} right after restore; see the console log`);
        vm.pid = st.pid;
      } catch (err) {
        await paths.dialPools.close(h).catch(() => undefined);
        await Promise.all([network.detach(h), namespaces.remove(h)]).catch((e: unknown) => log.error("releasing the network after a failed restore failed", { hostname: h, err: e }));
        vm.phase = "suspended";
        throw err;
      }
      vm.phase = "running";
      delete r.suspended;
      await table.persist();
      await fs.rm(this.imageDir(h), { recursive: true, force: true });
      storage.releaseFile?.(this.imageDir(h));
      log.info("vm restored", { hostname: h, ms: Math.round(performance.now() - t0) });
    });
  }

  /** Bind the VM's reverse agent channel listener (owned by the VM's root uid). */
  private async openChannel(hostname: string): Promise<void> {
    const { paths, namespaces } = this.deps;
    const range = namespaces.range;
    await paths.dialPools.open({ hostname, socketPath: paths.agentDialSocket(hostname), owner: { uid: range.uidStart, gid: range.uidStart } });
  }
}

/**
 * `err` with the runtime's container id `id` in its message replaced by the VM's name `hostname`
 * (the runtime names sandboxes by id; an API client knows the VM by name); code, status, details
 * and cause kept. Anything else as it is.
 */
function namedByHostname(err: unknown, id: string, hostname: string): unknown {
  if (!(err instanceof PaddockError) || !err.message.includes(id)) return err;
  return new PaddockError(err.code, err.message.split(id).join(hostname), { cause: err.cause, status: err.status, details: err.details });
}
