/**
 * Keeping the VM table true to what is on the host: start-up reconciliation with what the last
 * run left (the daemon may have been SIGKILLed at any point), the sweep of orphans, the purge of
 * a deleted tenant, and the guest-exit reaper, which also tells why a VM exited and reports OOM
 * kills inside VMs that keep running (vm-exit-reason.ts). Holds the reaper's timer and the OOM
 * counts already reported; everything else it reads and changes is the VM table's.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { JsonStateStore } from "../../shared/state-store.js";
import { pidAlive } from "../../shared/proc.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmNamespaces } from "../runtime/vm-namespaces.js";
import { removeUnmountedTree } from "../storage/vm-disk.js";
import type { VmLauncher } from "./vm-boot.js";
import type { VmPaths } from "./vm-paths.js";
import type { VmStorage } from "./vm-ports.js";
import { VmExitWatch, type CgroupCounterReader } from "./vm-exit-reason.js";
import { checkpointDir, checkpointsRoot } from "./vm-suspend.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { DaemonState, VmRecord } from "./vm-types.js";

/** What the {@link VmReconciler} works with. */
export interface VmReconcilerDeps {
  config: TenantConfig;
  store: JsonStateStore<DaemonState>;
  table: VmTable;
  launcher: VmLauncher;
  runtime: RuntimeDriver;
  storage: VmStorage;
  network: TenantNetwork;
  namespaces: VmNamespaces;
  paths: VmPaths;
  log: Logger;
  /** Called when the reaper removed a VM (the limits may have room for the warm pool again). */
  kickRefill: () => void;
  /**
   * Told of each transition this module drives (guest exits and why, OOM kills in running VMs,
   * VMs removed at start), for the event log; `extra.oom_kills` with reason `oom`.
   */
  onVmEvent?: (record: VmRecord, type: ReconcileEventType, reason: ReconcileEventReason, extra?: { oom_kills?: number }) => void;
  /** Reader of a VM cgroup's OOM-kill counter (default: the host's, vm-exit-reason.ts). */
  readOomKills?: CgroupCounterReader;
}

/** The event types this module emits. */
export type ReconcileEventType = "exited" | "stopped" | "deleted" | "oom";
/** The reasons this module gives. */
export type ReconcileEventReason = "guest_exit" | "oom" | "pids_limit" | "reaped" | "daemon_restart";

/** Start-up reconciliation, purge, sweep and the guest-exit reaper of one tenant's VMs. */
export class VmReconciler {
  private readonly deps: VmReconcilerDeps;
  private readonly log: Logger;
  private reaper: NodeJS.Timeout | undefined;
  private readonly oom: VmExitWatch;

  constructor(deps: VmReconcilerDeps) {
    this.deps = deps;
    this.log = deps.log;
    // Only a gVisor VM ends whole at its pids limit (vm-exit-reason.ts).
    this.oom = new VmExitWatch({ cgroupPath: (h) => deps.paths.cgroupPath(h), read: deps.readOomKills, pidsLimitEndsVm: deps.runtime.name === "runsc" });
  }

  /**
   * Load the state file into the table and reconcile with what the last run left: ephemeral
   * (and warm) VMs and VMs of groups no longer configured are removed entirely; persistent VMs
   * still running are re-attached, stopped ones stay Stopped (config VMs are booted again);
   * sandboxes, mounts and disks that belong to no record are removed; the state is saved.
   * @throws PaddockError ERR_STATE_CORRUPT when the state file belongs to another tenant, and
   *   the state store's and the sweep's errors.
   */
  async adopt(): Promise<void> {
    const { config, table, launcher } = this.deps;
    const state = await this.deps.store.init();
    if (state.tenantId !== config.paddock.tenantId) {
      throw new PaddockError("ERR_STATE_CORRUPT", `state file ${this.deps.store.file} belongs to tenant ${state.tenantId}, not ${config.paddock.tenantId}`);
    }
    for (const [g, n] of Object.entries(state.counters)) table.markIssued(g, n);
    const groups = new Set(config.hostGroups.map((g) => g.name));
    for (const record of Object.values(state.vms)) {
      const vm: LiveVm = { record, phase: "stopped", pid: undefined };
      const id = this.deps.paths.containerId(record.hostname);
      const st = await this.deps.runtime.state(id).catch(() => ({ status: "absent" as const, pid: undefined }));
      if (!record.persistent || !groups.has(record.hostGroup)) {
        this.log.info("removing VM left by the previous run", { hostname: record.hostname, persistent: record.persistent, warm: record.pooled === true });
        await launcher.teardown(vm, { removeDisk: true, graceful: false }).catch((err: unknown) => this.log.error("cleanup failed", { hostname: record.hostname, err }));
        this.deps.onVmEvent?.(record, "deleted", "daemon_restart");
        continue;
      }
      this.deps.network.reserve({ hostname: record.hostname, hostGroup: record.hostGroup, previousIp: record.ipCidr, override: record.network });
      table.vms.set(record.hostname, vm);
      if (st.status === "running" || st.status === "paused") {
        vm.phase = st.status;
        vm.pid = st.pid;
        // Its OOM kills so far were the previous run's to report.
        await this.oom.adopt(vm);
        // Reverse channel: the listener died with the previous daemon; bind it again where the
        // VM's read-only bind shows it, and the agent's retries find it.
        if (this.deps.runtime.agentChannel === "dial") {
          const range = this.deps.namespaces.range;
          await this.deps.paths.dialPools
            .open({ hostname: record.hostname, socketPath: this.deps.paths.agentDialSocket(record.hostname), owner: { uid: range.uidStart, gid: range.uidStart } })
            .catch((err: unknown) => this.log.error("re-binding the agent channel failed", { hostname: record.hostname, err }));
        }
        this.log.info("re-attached running VM", { hostname: record.hostname, pid: st.pid });
        continue;
      }
      // Suspended to disk (vm-suspend.ts): no sandbox by design; keep its image, bundle and disk.
      if (record.suspended !== undefined && st.status === "absent" && existsSync(checkpointDir(config.paddock.stateDir, record.hostname))) {
        vm.phase = "suspended";
        this.log.info("kept suspended VM", { hostname: record.hostname, imageBytes: record.suspended.imageBytes });
        continue;
      }
      // It ended while no daemon ran (its cgroup, read before the teardown, says whether by an OOM
      // kill), or a killed daemon left it created and never started: Paddock removes it.
      if (st.status === "stopped" || st.status === "created") {
        const exit = st.status === "created" ? { cause: "reaped" as const, oomKills: 0 } : await this.oom.exitCause(vm);
        this.log.info("VM found exited at start", { hostname: record.hostname, reason: exit.cause, oom_kills: exit.oomKills });
        this.deps.onVmEvent?.(record, "exited", exit.cause, exit.cause === "oom" ? { oom_kills: exit.oomKills } : {});
      }
      await launcher.teardown(vm, { removeDisk: false, graceful: false }).catch((err: unknown) => this.log.error("cleanup failed", { hostname: record.hostname, err }));
      vm.phase = "stopped";
      // Config VMs come back on every start; other persistent VMs wait for relaunch.
      if (record.protected) {
        await table.withLock(record.hostname, () => launcher.boot(vm)).catch(async (err: unknown) => {
          this.log.error("relaunch of config VM failed", { hostname: record.hostname, err });
          await launcher.teardown(vm, { removeDisk: false }).catch(() => undefined);
          vm.phase = "stopped";
        });
      }
    }
    await this.sweep();
    await table.persist();
  }

  /**
   * Remove every VM of the tenant the state file knows, and everything of the tenant the
   * sweep finds (sandboxes, mounts, disks), then save the empty table: used when a tenant is
   * deleted. @throws the state store's and the sweep's errors (teardown failures are logged).
   */
  async purge(): Promise<void> {
    const state = await this.deps.store.init();
    for (const record of Object.values(state.vms)) {
      const vm: LiveVm = { record, phase: "deleting", pid: undefined };
      await this.deps.launcher.teardown(vm, { removeDisk: true, graceful: false }).catch((err: unknown) => this.log.error("purge: cleanup failed", { hostname: record.hostname, err }));
    }
    this.deps.table.vms.clear();
    await this.sweep();
    await this.deps.table.persist();
  }

  /** Remove sandboxes, mounts, disks, user namespaces and run dirs of this tenant that no VM or warm VM owns. */
  private async sweep(): Promise<void> {
    const { table, paths } = this.deps;
    const keep = new Set([...table.vms.keys(), ...table.warm.keys()]);
    const prefix = paths.containerPrefix();
    for (const id of await this.deps.runtime.list(prefix)) {
      const hostname = id.slice(prefix.length);
      if (keep.has(hostname)) continue;
      this.log.warn("removing orphan sandbox", { id });
      await this.deps.runtime.destroy(id).catch((err: unknown) => this.log.error("orphan removal failed", { id, err }));
    }
    await this.deps.storage.sweep(keep);
    await this.deps.namespaces.sweep(keep);
    for (const base of [...paths.perVmRunDirs(), checkpointsRoot(this.deps.config.paddock.stateDir)]) {
      for (const entry of await fs.readdir(base).catch(() => [] as string[])) {
        if (!keep.has(entry)) await removeUnmountedTree(path.join(base, entry)).catch((err: unknown) => this.log.error("orphan dir removal failed", { dir: path.join(base, entry), err }));
      }
    }
  }

  /** Run the reaper every `intervalMs` (an unref'd timer: it keeps no process alive). */
  startReaper(intervalMs: number): void {
    this.reaper = setInterval(() => void this.reap(), intervalMs);
    this.reaper.unref();
  }

  /** Stop the reaper's timer (a pass already running goes on). */
  stopReaper(): void {
    if (this.reaper) clearInterval(this.reaper);
  }

  /**
   * OOM kills in running VMs: each pass reads the memory cgroup counter of every running VM
   * (one small kernel file per VM, no lock taken) and emits `oom` with the kills not reported
   * yet. Whether the VM's init is alive is read once, after the counter: a VM whose init died is
   * left to the exit path, which reports the kills as its exit reason. Never rejects (a failed
   * read is logged).
   * @returns the running VMs whose init was found dead, with that init's pid (for the reaper).
   */
  private async reportOomKills(): Promise<Map<LiveVm, number>> {
    const vms = this.deps.table.all();
    const live = new Set(vms.map((vm) => vm.record.hostname));
    for (const h of this.oom.hostnames()) if (!live.has(h)) this.oom.forget(h);
    const dead = new Map<LiveVm, number>();
    await Promise.all(vms.map(async (vm) => {
      const pid = vm.pid;
      if (vm.phase !== "running" || pid === undefined) return;
      // One /proc/<pid>/stat read per VM and pass (shared/proc.ts pidAlive), after the counter's.
      let alive: boolean | undefined;
      const initAlive = (): boolean => (alive ??= pidAlive(pid));
      try {
        const kills = await this.oom.takeNewKills(vm, () => vm.pid === pid && vm.phase === "running" && initAlive());
        if (kills > 0) {
          this.log.warn("OOM kill in VM", { hostname: vm.record.hostname, oom_kills: kills });
          this.deps.onVmEvent?.(vm.record, "oom", "oom", { oom_kills: kills });
        }
      } catch (err) {
        this.log.error("reading the OOM counter failed", { hostname: vm.record.hostname, err });
      }
      if (vm.pid === pid && !initAlive()) dead.set(vm, pid);
    }));
    return dead;
  }

  /**
   * Guest-exit reaper: a running VM (or warm VM) whose sandbox has stopped is removed
   * (ephemeral) or marked Stopped (persistent; config VMs come back at the next daemon start),
   * with the reason its cgroup tells (`oom`, `pids_limit` or `guest_exit`, vm-exit-reason.ts), read before the
   * teardown removes the cgroup. Reports OOM kills in VMs that keep running first; the VMs it
   * found dead there are the ones reaped (each init's liveness is read once per pass).
   * Never rejects (failures are logged per VM).
   */
  private async reap(): Promise<void> {
    const { table, launcher } = this.deps;
    const dead = await this.reportOomKills();
    for (const [vm, pid] of dead) {
      const h = vm.record.hostname;
      await table.withLock(h, async () => {
        // Changed while waiting for the lock: no longer running, or booted again (a new init,
        // read only then).
        if (vm.phase !== "running" || (vm.pid !== undefined && vm.pid !== pid && pidAlive(vm.pid))) return;
        const st = await this.deps.runtime.state(this.deps.paths.containerId(h));
        if (st.status === "running" || st.status === "paused") {
          vm.pid = st.pid;
          return;
        }
        const pooled = vm.record.pooled === true;
        const { cause, oomKills } = await this.oom.exitCause(vm);
        this.log.info("guest exited", { hostname: h, persistent: vm.record.persistent, warm: pooled, reason: cause, oom_kills: oomKills });
        this.deps.onVmEvent?.(vm.record, "exited", cause, cause === "oom" ? { oom_kills: oomKills } : {});
        if (!vm.record.persistent) {
          vm.phase = "deleting";
          try {
            await launcher.teardown(vm, { removeDisk: true, graceful: false });
          } finally {
            (pooled ? table.warm : table.vms).delete(h);
            this.deps.network.release(h);
            await table.persist();
          }
          this.deps.onVmEvent?.(vm.record, "deleted", cause);
          this.deps.kickRefill();
          return;
        }
        vm.phase = "stopping";
        await launcher.teardown(vm, { removeDisk: false, graceful: false }).catch(() => undefined);
        vm.phase = "stopped";
        await table.persist();
        this.deps.onVmEvent?.(vm.record, "stopped", cause);
      }).catch((err: unknown) => this.log.error("reaper failed", { hostname: h, err }));
    }
  }
}
