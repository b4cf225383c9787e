/**
 * The power transitions the API asks of one VM (`POST /vm/{h}/shutdown|relaunch|pause|resume|
 * suspend|restore`): the runtime work (vm-power.ts, vm-suspend.ts), then what each transition
 * means to the rest of the daemon: its lifecycle event, the idle mark (a client's pause or
 * suspend is the client's), the deadlines that apply again (expiry), and the VM's secrets pushed
 * again after a resume or restore (vm-secrets-sync.ts). VmService exposes it as `transitions`.
 */
import { PaddockError } from "../../shared/errors.js";
import type { VmEventReason } from "../events/event-log.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import type { VmLifecycleEvents } from "./vm-lifecycle-events.js";
import type { VmPower } from "./vm-power.js";
import type { VmSecretsSync } from "./vm-secrets-sync.js";
import type { VmSuspender } from "./vm-suspend.js";
import type { VmTable } from "./vm-table.js";
import type { CreateResponseWire } from "./vm-types.js";
import { toCreateResponse } from "./vm-wire.js";

/** What {@link VmTransitions} works with (VmService builds it). */
export interface VmTransitionsDeps {
  table: VmTable;
  power: VmPower;
  suspender: VmSuspender;
  secretsSync: VmSecretsSync;
  agentWait: VmAgentWait;
  /** Lifecycle events, the ready watch, expiry and idle. */
  events: VmLifecycleEvents;
  /** Delete VM `hostname` whatever it is (VmService.remove with force), emitting `deleted` with `reason`. */
  remove(hostname: string, reason: VmEventReason): Promise<unknown>;
}

/** Shutdown, relaunch, pause, resume, suspend and restore of one VM, with their events. */
export class VmTransitions {
  private readonly deps: VmTransitionsDeps;
  private readonly events: VmLifecycleEvents;

  constructor(deps: VmTransitionsDeps) {
    this.deps = deps;
    this.events = deps.events;
  }

  /**
   * Shut a VM down (`POST /vm/{h}/shutdown`). `reboot` restarts the sandbox and keeps the VM; `shutdown`
   * (and the default) leaves it stopped: a persistent VM becomes `Stopped`, an ephemeral one is
   * reaped (record and disk removed). Returns once the VM has stopped.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING
   */
  async shutdown(hostname: string, action: "shutdown" | "reboot" | undefined): Promise<void> {
    const vm = this.deps.table.live(hostname);
    if (action === "reboot") return this.deps.power.reboot(vm);
    if (!vm.record.persistent) {
      await this.deps.remove(hostname, "shutdown");
      return;
    }
    const wasStopped = vm.phase === "stopped";
    await this.deps.power.stop(vm);
    if (!wasStopped) this.events.emit(vm.record, "stopped", "api");
  }

  /**
   * Bring a stopped persistent VM back with its disk, name and address (`POST /vm/{h}/relaunch`).
   * Waits for a stop in progress instead of answering 409.
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_ALREADY_RUNNING, ERR_STORAGE_OVERCOMMIT, ERR_VM_START_FAILED
   */
  async relaunch(hostname: string): Promise<CreateResponseWire> {
    const vm = this.deps.table.live(hostname);
    await this.deps.power.relaunch(vm);
    this.events.emit(vm.record, "relaunched", "api");
    void this.events.watchReady(vm);
    // A deadline that passed while it was stopped applies again now.
    this.events.expiry.kick();
    return toCreateResponse(vm.record);
  }

  /**
   * Freeze a running VM (`POST /vm/{h}/pause`); a no-op for a paused one.
   * @returns `alreadyPaused`: the VM was paused already (nothing was done but claiming an idle
   *   pause); `idleClaimed`: it had been paused by its group's idle rule and is the client's now.
   * @throws ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING
   */
  async pause(hostname: string): Promise<{ alreadyPaused: boolean; idleClaimed: boolean }> {
    const vm = this.deps.table.live(hostname);
    const was = vm.phase;
    await this.deps.power.pause(vm);
    const claimed = this.events.idle.claim(vm);
    if (was !== "paused") this.events.emit(vm.record, "paused", "api");
    return { alreadyPaused: was === "paused", idleClaimed: claimed === "pause" };
  }

  /**
   * Thaw a paused VM (`POST /vm/{h}/resume`), then push its secrets and resolve once they are
   * delivered: changes made while it was paused reach it now (agent routes wait for the push
   * too, as after a create: VmService.secretsSettled). A no-op (but the secrets push) for a
   * running VM.
   * @returns true when the VM was running already.
   * @throws ERR_VM_NOT_FOUND, ERR_VM_NOT_RUNNING; ERR_VM_START_FAILED when the push failed
   *   ({@link notDeliveredError}: the VM keeps running, resumed).
   */
  async resume(hostname: string): Promise<boolean> {
    const vm = this.deps.table.live(hostname);
    const was = vm.phase;
    await this.deps.power.resume(vm);
    if (was !== "running") this.events.emit(vm.record, "resumed", "api");
    const delivery = (vm.secretsDelivered = this.deps.secretsSync.request(vm, { agentReady: true }));
    const outcome = await delivery;
    if (!outcome.delivered) throw notDeliveredError(hostname, "resumed", outcome.err);
    return was === "running";
  }

  /**
   * Suspend a running VM to disk (`POST /vm/{h}/suspend`): wire status `Suspended`, its memory
   * given back, kept across daemon restarts (vm-suspend.ts). A no-op when already suspended.
   * @returns the image's size, bytes, whether the VM was suspended already (nothing done), and
   *   whether it had been suspended by its group's idle rule (`idleClaimed`: the client's now).
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_UNSUPPORTED (501: runc; names gVisor),
   *   ERR_VM_NOT_RUNNING, ERR_RUNTIME_FAILED
   */
  async suspend(hostname: string): Promise<{ imageBytes: number; alreadySuspended: boolean; idleClaimed: boolean }> {
    const vm = this.deps.table.live(hostname);
    const already = vm.record.suspended !== undefined;
    const imageBytes = await this.deps.suspender.suspend(vm);
    const claimed = this.events.idle.claim(vm);
    if (!already) this.events.emit(vm.record, "suspended", "api");
    return { imageBytes, alreadySuspended: already, idleClaimed: claimed === "suspend" };
  }

  /**
   * Restore a suspended VM (`POST /vm/{h}/restore`); with `wait: "agent"`, block until its agent
   * answers and its secrets are delivered (the VM keeps running when the wait times out or the
   * delivery fails). Its secrets are pushed again (changes made while it was suspended reach
   * it); without `wait` in the background, and agent routes wait for that push as after a
   * create (VmService.secretsSettled).
   * @throws PaddockError ERR_VM_NOT_FOUND, ERR_VM_UNSUPPORTED (501), ERR_VM_ALREADY_RUNNING,
   *   ERR_VM_NOT_RUNNING (not suspended), ERR_VM_WAIT_TIMEOUT (408), ERR_RUNTIME_FAILED;
   *   with `wait`, ERR_VM_START_FAILED when the push failed ({@link notDeliveredError}).
   */
  async restore(hostname: string, wait: { wait: "agent" | undefined; timeoutMs: number }): Promise<void> {
    const vm = this.deps.table.live(hostname);
    await this.deps.suspender.restore(vm);
    this.events.emit(vm.record, "restored", "api");
    this.events.expiry.kick();
    const delivery = (vm.secretsDelivered = this.deps.secretsSync.request(vm, { agentReady: false }));
    if (wait.wait === undefined) return;
    try {
      await this.deps.agentWait.waitForAgent(hostname, "agent", wait.timeoutMs);
    } catch (err) {
      if (err instanceof PaddockError && err.code === "ERR_VM_WAIT_TIMEOUT") {
        throw new PaddockError("ERR_VM_WAIT_TIMEOUT", `timed out after ${wait.timeoutMs} ms waiting for the agent of restored VM ${hostname}; the VM keeps running`, { cause: err });
      }
      throw err;
    }
    const outcome = await delivery;
    if (!outcome.delivered) throw notDeliveredError(hostname, "restored", outcome.err);
  }
}

/**
 * 500 ERR_VM_START_FAILED for a resume or restore whose secret push failed (`err`,
 * vm-secrets-sync.ts SecretsDelivery), as a create answers for its VM (vm-create.ts
 * secretsFailure), but the VM is not deleted: it existed before the request and keeps running
 * (`done`: "resumed" or "restored"); the message names the cause and how to push again (a
 * resume of a running VM pushes its secrets). Pure.
 */
export function notDeliveredError(hostname: string, done: "resumed" | "restored", err: unknown): PaddockError {
  const why = err instanceof Error ? err.message : String(err);
  return new PaddockError(
    "ERR_VM_START_FAILED",
    `VM ${hostname} was ${done} and keeps running, but its secrets could not be delivered: ${why}; push them again with POST /vm/${hostname}/resume (CLI: paddock vm resume ${hostname})`,
    { cause: err },
  );
}
