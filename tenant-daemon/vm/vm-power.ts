/**
 * Power operations on one existing VM: reboot, stop (a persistent VM), relaunch, pause and
 * resume. Each runs under the VM's lock in the VM table and saves the state where the record
 * changed. Holds no state of its own.
 */
import { PaddockError, isPaddockError } from "../../shared/errors.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmLauncher } from "./vm-boot.js";
import type { VmPaths } from "./vm-paths.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { VmPhase } from "./vm-types.js";

/**
 * 409 `ERR_VM_PAUSED` for a request that needs the agent of a VM a client paused (an idle-paused
 * VM is woken instead, api/wake.ts): says how to resume it, the route and the CLI command.
 */
export function vmPausedError(hostname: string): PaddockError {
  return new PaddockError("ERR_VM_PAUSED", `VM paused: ${hostname} was paused by a client; resume it with POST /vm/${hostname}/resume (CLI: paddock vm resume ${hostname}), then retry`);
}

/**
 * 409 `ERR_VM_NOT_RUNNING` for a pause of a VM that is not running or a resume of one that is not
 * paused. A suspended VM (checkpointed to disk) says to restore it, a stopped one to relaunch it:
 * the route and the CLI command (docs/slicer-api.md "Suspend and restore", `POST /vm/{h}/relaunch`).
 * @param verb - the refused operation.
 * @param phase - the VM's phase when it was refused.
 */
export function vmNotRunningError(hostname: string, verb: "pause" | "resume", phase: VmPhase): PaddockError {
  const head = `VM ${hostname} is not ${verb === "resume" ? "paused" : "running"}`;
  return new PaddockError("ERR_VM_NOT_RUNNING", head + notRunningAdvice(hostname, phase));
}

/**
 * The way back for a VM in `phase`, to append to a refusal: `: it is suspended …; bring it back
 * with POST /vm/{h}/restore (CLI: …)`, the same for a stopped VM and relaunch, else "".
 */
export function notRunningAdvice(hostname: string, phase: VmPhase): string {
  return phase === "suspended" ? `: it is suspended (checkpointed to disk); bring it back with POST /vm/${hostname}/restore (CLI: paddock vm restore ${hostname})`
    : phase === "stopped" ? `: it is stopped; boot it again with POST /vm/${hostname}/relaunch (CLI: paddock vm relaunch ${hostname})`
    : "";
}

/** Reboot, stop, relaunch, pause and resume of the VMs in `table`. */
export class VmPower {
  private readonly table: VmTable;
  private readonly launcher: VmLauncher;
  private readonly runtime: RuntimeDriver;
  private readonly paths: VmPaths;

  constructor(deps: { table: VmTable; launcher: VmLauncher; runtime: RuntimeDriver; paths: VmPaths }) {
    this.table = deps.table;
    this.launcher = deps.launcher;
    this.runtime = deps.runtime;
    this.paths = deps.paths;
  }

  /**
   * Restart a running or paused VM's sandbox in place (a new boot, a new agent proof); the VM
   * keeps its record and disk. @throws PaddockError ERR_VM_NOT_RUNNING, and the boot's errors.
   */
  async reboot(vm: LiveVm): Promise<void> {
    const hostname = vm.record.hostname;
    await this.table.withLock(hostname, async () => {
      if (vm.phase !== "running" && vm.phase !== "paused") throw new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} is not running`);
      vm.phase = "stopping";
      await this.launcher.teardown(vm, { removeDisk: false });
      try {
        await this.launcher.boot(vm);
      } finally {
        // The new boot's proof must be on disk before a restarted daemon re-attaches the VM.
        await this.table.persist();
      }
    });
  }

  /**
   * Stop a persistent VM and keep its disk: `Stopped`, desired `stopped` (it stays down across
   * daemon restarts until relaunched). A no-op when already stopped.
   * @throws the teardown's PaddockError ERR_RUNTIME_FAILED (the VM is Stopped anyway), the state store's errors.
   */
  async stop(vm: LiveVm): Promise<void> {
    await this.table.withLock(vm.record.hostname, async () => {
      if (vm.phase === "stopped") return;
      vm.phase = "stopping";
      vm.record.desired = "stopped";
      try {
        await this.launcher.teardown(vm, { removeDisk: false });
      } finally {
        vm.phase = "stopped";
        await this.table.persist();
      }
    });
  }

  /**
   * Boot a stopped VM again with its disk, name and address (waits for a stop in progress).
   * A failed boot is torn down and leaves the VM Stopped.
   * @throws PaddockError ERR_VM_ALREADY_RUNNING, ERR_STORAGE_OVERCOMMIT, ERR_VM_START_FAILED
   */
  async relaunch(vm: LiveVm): Promise<void> {
    const hostname = vm.record.hostname;
    await this.table.withLock(hostname, async () => {
      if (vm.phase === "suspended") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${hostname} is not stopped${notRunningAdvice(hostname, vm.phase)}`);
      if (vm.phase === "paused") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${hostname} is paused, not stopped; thaw it with POST /vm/${hostname}/resume (CLI: paddock vm resume ${hostname})`);
      if (vm.phase !== "stopped") throw new PaddockError("ERR_VM_ALREADY_RUNNING", `VM ${hostname} is already running`);
      vm.record.desired = "running";
      try {
        await this.launcher.boot(vm);
      } catch (err) {
        await this.launcher.teardown(vm, { removeDisk: false }).catch(() => undefined);
        vm.phase = "stopped";
        if (isPaddockError(err, "ERR_STORAGE_OVERCOMMIT")) throw err;
        throw new PaddockError("ERR_VM_START_FAILED", `relaunch of ${hostname} failed: ${(err as Error).message}`, { cause: err });
      } finally {
        await this.table.persist();
      }
    });
  }

  /** Freeze a running VM (no-op when paused). @throws PaddockError ERR_VM_NOT_RUNNING ({@link vmNotRunningError}), the runtime's errors */
  async pause(vm: LiveVm): Promise<void> {
    const hostname = vm.record.hostname;
    await this.table.withLock(hostname, async () => {
      if (vm.phase === "paused") return;
      if (vm.phase !== "running") throw vmNotRunningError(hostname, "pause", vm.phase);
      await this.runtime.pause(this.paths.containerId(hostname));
      vm.phase = "paused";
    });
  }

  /** Thaw a paused VM (no-op when running). @throws PaddockError ERR_VM_NOT_RUNNING ({@link vmNotRunningError}), the runtime's errors */
  async resume(vm: LiveVm): Promise<void> {
    const hostname = vm.record.hostname;
    await this.table.withLock(hostname, async () => {
      if (vm.phase === "running") return;
      if (vm.phase !== "paused") throw vmNotRunningError(hostname, "resume", vm.phase);
      await this.runtime.resume(this.paths.containerId(hostname));
      vm.phase = "running";
    });
  }
}
