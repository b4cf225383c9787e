/**
 * The warm pool (`paddock.warm_pool`, Paddock's own; README.md "How it behaves"): per host
 * group, N VMs booted ahead with the group's defaults (and its userdata), agent ready, under the
 * next names of the group's counter. A create that asks for nothing a warm VM cannot give (no
 * `userdata`, `ip` or `network` of its own; `cpus`/`ram_bytes` at most the defaults, applied with
 * a runtime update) is handed the warm VM with the lowest N instead of booting one, and the pool
 * is refilled in the background. Warm VMs live in the VM table's `warm` map: not listed, not
 * counted against the tenant's limits (the pool only fills while the limits leave room for it),
 * no secrets until handed out, removed on daemon stop and restart; their names were never handed
 * out, so a restart may give them again.
 *
 * This file holds the refill's state (the running refill, the retry back-off per group, the
 * stop after a boot the tenant's pids budget refused: no warm boot until a VM of the tenant is
 * removed, a VM created since boots whole, or the daemon restarts with a new budget,
 * vm-pids-budget.ts).
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import { rfc3339 } from "../../shared/time.js";
import type { TenantNetwork } from "../network/network.js";
import type { RuntimeDriver } from "../runtime/driver.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import type { VmSecretsSync } from "./vm-secrets-sync.js";
import type { VmLauncher } from "./vm-boot.js";
import type { VmPaths } from "./vm-paths.js";
import { isPidsRefusal, type PidsBudgetProbe } from "./vm-pids-budget.js";
import type { CreateVmRequest } from "./vm-request.js";
import type { VmTable, WarmVm } from "./vm-table.js";
import type { VmRecord } from "./vm-types.js";

/** Longest a warm VM may take to boot and answer before it is discarded, ms. */
const WARM_BOOT_TIMEOUT_MS = 60_000;
/** Retry delays after a failed warm boot: doubling from the first, capped at the second, ms. */
const WARM_RETRY_MS = [1_000, 60_000] as const;

/** What the {@link WarmPool} works with: the config, the VM table, the launcher and the ports it calls. */
export interface WarmPoolDeps {
  config: TenantConfig;
  table: VmTable;
  launcher: VmLauncher;
  agentWait: VmAgentWait;
  /** Secret delivery at hand-out (vm-secrets-sync.ts). */
  secretsSync: VmSecretsSync;
  network: TenantNetwork;
  runtime: RuntimeDriver;
  paths: VmPaths;
  log: Logger;
  /** Tells a warm boot refused by the pids budget (vm-pids-budget.ts); without it every failure is retried. */
  pids?: PidsBudgetProbe;
}

/** Fills, hands out and drops the warm VMs of the table. */
export class WarmPool {
  private readonly deps: WarmPoolDeps;
  private readonly log: Logger;
  /** The running refill of the warm pool, if any; `refillAgain` asks it for one more pass. */
  private refilling: Promise<void> | undefined;
  private refillAgain = false;
  /** Per group: consecutive warm boot failures and when the next try may start (epoch ms). */
  private readonly warmRetry = new Map<string, { failures: number; at: number }>();
  /**
   * Set when a boot (warm or not) was refused by the pids budget: the VMs (API and warm) the
   * tenant had then. No warm boot while every one of them is still there: only a removal frees
   * pids for sure (a budget change restarts the daemon).
   */
  private pidsFull: { held: Set<string>; err: PaddockError } | undefined;

  constructor(deps: WarmPoolDeps) {
    this.deps = deps;
    this.log = deps.log;
  }

  /** Warm-pool VMs per configured group: `ready` (agent answered) and `booting`. */
  counts(): Record<string, { ready: number; booting: number }> {
    const out: Record<string, { ready: number; booting: number }> = {};
    for (const g of Object.keys(this.deps.config.paddock.warmPool)) out[g] = { ready: 0, booting: 0 };
    for (const vm of this.deps.table.warm.values()) {
      const c = (out[vm.record.hostGroup] ??= { ready: 0, booting: 0 });
      if (vm.ready) c.ready += 1;
      else c.booting += 1;
    }
    return out;
  }

  /** Settles when the refill running now (if any) has ended; never rejects. */
  async settled(): Promise<void> {
    await this.refilling;
  }

  /**
   * Hand out the warm VM of `group` with the lowest N, made the VM `req` asks for (tags,
   * persistence, secrets, a smaller size by a runtime update): a ready one if there is one,
   * else one still booting (its boot is further on than a new one would be; and right after
   * a daemon start the first create still gets `<group>-1`). Undefined when the group has no
   * warm VM, when `req` needs a boot of its own (userdata, ip, network), or when the hand-out
   * failed (the warm VM is then discarded and the caller boots one).
   *
   * A ready VM's secrets are delivered before this resolves: when the push fails the VM is
   * discarded (a create must not answer 201 without the secrets it asked for) and the caller
   * boots one. A VM still booting is handed out as its boot goes on:
   * - `deadline` set (a create with `wait`): its agent is awaited until then at most; then it
   *   is discarded and the create answers 408, as a cold create whose wait ran out;
   * - `deadline` unset (a create without `wait`): only until its sandbox runs, as a cold create
   *   answers; its secrets are then delivered once its agent answers, as at a cold boot
   *   (vm-boot.ts), and the returned VM's `ready` is false.
   * @param deadline - epoch ms: a create's `wait` ends then; unset for a create without `wait`.
   * @returns the VM (`ready`: its agent answered), or undefined (see above).
   * @throws PaddockError ERR_VM_WAIT_TIMEOUT (the VM was discarded) at `deadline`;
   *   ERR_LIMIT_EXCEEDED when the warm VM's boot was refused by the pids budget (a cold boot
   *   would be too). Nothing else.
   */
  async handOut(group: HostGroupConfig, req: CreateVmRequest, deadline?: number): Promise<WarmVm | undefined> {
    const { table, launcher } = this.deps;
    if (req.userdata !== undefined || req.ip !== undefined || req.network !== undefined) return undefined;
    let vm: WarmVm | undefined;
    const rank = (w: WarmVm): number => (w.ready ? 0 : 1e9) + w.record.index;
    for (const w of table.warm.values()) {
      if (w.record.hostGroup !== group.name || (w.ready ? w.phase !== "running" : w.phase !== "creating" && w.phase !== "running")) continue;
      if (vm === undefined || rank(w) < rank(vm)) vm = w;
    }
    if (vm === undefined) return undefined;
    const r = vm.record;
    // Taken synchronously: no other create can be handed the same VM.
    table.warm.delete(r.hostname);
    table.vms.set(r.hostname, vm);
    table.markIssued(group.name, r.index);
    const resize = req.cpus !== r.cpus || req.ramBytes !== r.ramBytes;
    delete r.pooled;
    Object.assign(r, { cpus: req.cpus, ramBytes: req.ramBytes, persistent: req.persistent, tags: [...req.tags], secrets: req.secrets, createdAt: rfc3339() });
    // A create without `wait` awaits the sandbox only, never the agent: no longer than a cold create.
    const booted = deadline === undefined ? await vm.launched : await bootedBy(vm, deadline);
    if (booted === "timeout") {
      // bootWarm's agent wait ends when the VM leaves the table (vm-agent-wait.ts).
      this.log.warn("the warm VM handed out did not boot within the request's timeout; deleting it", { hostname: r.hostname });
      await launcher.discard(vm);
      throw new PaddockError("ERR_VM_WAIT_TIMEOUT", `timed out waiting for agent on ${r.hostname} (a warm VM still booting); the VM was deleted`);
    }
    if (!booted) {
      // bootWarm leaves a VM it no longer holds to its new owner.
      if (table.vms.get(r.hostname) === vm) await launcher.discard(vm);
      if (vm.bootError !== undefined && isPidsRefusal(vm.bootError)) throw vm.bootError;
      this.log.warn("the warm VM handed out failed to boot; booting a new one", { hostname: r.hostname });
      return undefined;
    }
    // Deliver alongside the state write: at once when the agent has answered, else once it
    // does (a boot's delivery, vm-secrets-sync.ts).
    const ready = vm.ready;
    vm.secretsDelivered = this.deps.secretsSync.request(vm, { agentReady: ready });
    try {
      await table.withLock(r.hostname, async () => {
        if (vm.phase !== "running") throw new PaddockError("ERR_VM_NOT_RUNNING", `warm VM ${r.hostname} stopped before it was handed out`);
        await Promise.all([resize ? this.deps.runtime.update(this.deps.paths.containerId(r.hostname), { cpus: r.cpus, ramBytes: r.ramBytes }) : undefined, table.persist()]);
      });
    } catch (err) {
      this.log.warn("hand-out of a warm VM failed; deleting it and booting a new one", { hostname: r.hostname, reason: "hand_out_failed", err });
      await launcher.discard(vm);
      return undefined;
    }
    const delivery = ready ? await vm.secretsDelivered : undefined;
    if (delivery?.delivered === false) {
      // Seen with a full pids budget: the push failed and the guest exited soon after.
      this.log.warn("the secrets of the warm VM handed out could not be delivered; deleting it and booting a new one", { hostname: r.hostname, reason: "secrets_not_delivered", err: delivery.err });
      await launcher.discard(vm);
      return undefined;
    }
    return vm;
  }

  /** Remove the warm VM holding address `ip` (a.b.c.d), if any; the pool refills later. Never rejects. */
  async dropHolding(ip: string): Promise<void> {
    for (const w of this.deps.table.warm.values()) {
      if (w.record.ipCidr.split("/")[0] !== ip) continue;
      this.deps.table.warm.delete(w.record.hostname);
      this.log.info("removing a warm VM whose address a create asks for", { hostname: w.record.hostname, ip });
      // No refill from here: it would take the address back before the caller reserves it
      // (VmService.create refills after its answer).
      await this.deps.launcher.discard(w);
      return;
    }
  }

  /** Start a refill of the warm pool unless one runs (then it makes one more pass). No-op once the table is stopping. */
  kick(): void {
    if (this.deps.table.stopping || Object.keys(this.deps.config.paddock.warmPool).length === 0) return;
    if (this.refilling) {
      this.refillAgain = true;
      return;
    }
    this.refillAgain = false;
    this.refilling = this.refill().finally(() => {
      this.refilling = undefined;
      if (this.refillAgain) this.kick();
    });
  }

  /**
   * Boot warm VMs one at a time (a burst of boots would slow the creates the pool is for) until
   * every group has its `warm_pool` size, the tenant's limits leave no room, or a group failed
   * and waits for its retry time (doubling delays, {@link WARM_RETRY_MS}).
   */
  private async refill(): Promise<void> {
    for (;;) {
      const group = this.groupToWarm();
      if (group === undefined) return;
      try {
        await this.bootWarm(group);
        this.warmRetry.delete(group.name);
      } catch (err) {
        if (this.deps.table.stopping) return;
        // bootWarm stopped the pool (pidsRefused): no retry.
        if (isPidsRefusal(err)) continue;
        const failures = (this.warmRetry.get(group.name)?.failures ?? 0) + 1;
        const delay = Math.min(WARM_RETRY_MS[0] * 2 ** (failures - 1), WARM_RETRY_MS[1]);
        this.warmRetry.set(group.name, { failures, at: Date.now() + delay });
        this.log.warn("warm VM boot failed; retrying later", { hostGroup: group.name, failures, retryInMs: delay, err });
        setTimeout(() => this.kick(), delay).unref();
      }
    }
  }

  /**
   * A boot of VM `hostname` (warm or not) was refused by the tenant's pids limits (`err`,
   * vm-pids-budget.ts): no warm boot until one of the other VMs the tenant holds now is removed
   * (that VM's own removal frees nothing). Logged once per stop.
   */
  pidsRefused(err: PaddockError, hostname: string): void {
    const { table } = this.deps;
    if (this.pidsFull === undefined && Object.keys(this.deps.config.paddock.warmPool).length > 0) {
      this.log.warn("warm pool stopped filling: a boot was refused by the tenant's pids budget; it fills again once a VM of the tenant is removed or a VM created since boots", { limit: err.details?.limit, err: err.message });
    }
    const held = new Set([...table.vms.keys(), ...table.warm.keys()]);
    held.delete(hostname);
    this.pidsFull = { held, err };
  }

  /**
   * VM `hostname`, booted cold, has its agent answering. When the pool stopped for the pids
   * budget ({@link pidsRefused}) before this VM existed, the budget had room for a whole VM since
   * (a spike in a long-lived VM ended, or one freed its pids), so the stop ends and the pool fills
   * again: without this it stayed empty, every create booting cold, until a VM the tenant held at
   * the stop was removed, which may be never (a `count:` VM cannot be deleted). A warm boot the
   * budget refuses stops the pool again, so it boots at most once per such cold boot. A VM that
   * existed at the stop (its boot may have begun before) ends nothing.
   */
  bootSucceeded(hostname: string): void {
    if (this.pidsFull === undefined || this.pidsFull.held.has(hostname)) return;
    this.pidsFull = undefined;
    this.log.info("warm pool fills again: a VM booted since the stop", { hostname });
    this.kick();
  }

  /** True while {@link pidsRefused}'s stop holds: every VM the tenant had then is still there. */
  private pidsStillFull(): boolean {
    const full = this.pidsFull;
    if (full === undefined) return false;
    const { table } = this.deps;
    for (const h of full.held) {
      if (!table.vms.has(h) && !table.warm.has(h)) {
        this.pidsFull = undefined;
        this.log.info("warm pool fills again: a VM of the tenant was removed", { hostname: h });
        return false;
      }
    }
    return true;
  }

  /** The next host group short of warm VMs that may get one now, if any. */
  private groupToWarm(): HostGroupConfig | undefined {
    const { table } = this.deps;
    if (table.stopping || this.pidsStillFull()) return undefined;
    for (const [name, size] of Object.entries(this.deps.config.paddock.warmPool)) {
      const retry = this.warmRetry.get(name);
      if (retry !== undefined && retry.at > Date.now()) continue;
      let have = 0;
      for (const w of table.warm.values()) if (w.record.hostGroup === name) have += 1;
      if (have >= size) continue;
      const group = table.hostGroup(name);
      try {
        table.checkLimits(group.vcpu, group.ramBytes, group.storageSizeBytes, { includeWarm: true });
      } catch {
        continue;
      }
      return group;
    }
    return undefined;
  }

  /**
   * Boot one warm VM of `group` and wait for its agent.
   * @throws whatever the boot threw (rolled back), unless the VM left the pool meanwhile.
   */
  private async bootWarm(group: HostGroupConfig): Promise<void> {
    const { table, launcher } = this.deps;
    const { hostname, index } = table.allocateName(group.name);
    const ipCidr = this.deps.network.reserve({ hostname, hostGroup: group.name, override: undefined, requestedIp: undefined });
    const record: VmRecord = {
      hostname, hostGroup: group.name, index, cpus: group.vcpu, ramBytes: group.ramBytes, storageSizeBytes: group.storageSizeBytes,
      persistent: false, protected: false, tags: [], createdAt: rfc3339(), ipCidr, userdata: undefined, secrets: undefined,
      network: undefined, desired: "running", pooled: true,
    };
    let settle: (ok: boolean) => void = () => undefined;
    let settleLaunch: (ok: boolean) => void = () => undefined;
    const vm: WarmVm = {
      record, phase: "creating", pid: undefined, ready: false,
      booted: new Promise<boolean>((resolve) => (settle = resolve)),
      launched: new Promise<boolean>((resolve) => (settleLaunch = resolve)),
    };
    table.warm.set(hostname, vm);
    try {
      await launcher.saveAndBoot(vm);
      settleLaunch(true);
      await this.deps.agentWait.waitForAgent(hostname, "agent", WARM_BOOT_TIMEOUT_MS);
      vm.ready = true;
      settle(true);
      this.log.debug("warm VM ready", { hostname });
    } catch (caught) {
      // Read before the teardown: the VM's cgroup goes with it.
      const err = this.deps.pids ? await this.deps.pids.explain(caught, hostname, vm.pid !== undefined) : caught;
      if (isPidsRefusal(err)) {
        vm.bootError = err;
        this.pidsRefused(err, hostname);
      }
      // A no-op for `launched` when the sandbox ran (the agent then failed).
      settleLaunch(false);
      settle(false);
      if (table.warm.get(hostname) === vm) {
        await launcher.discard(vm);
        throw err;
      }
      // Handed out while booting: a failed boot of the pool's (its retry backs off). A create
      // with `wait` discards the VM; one without took it with its sandbox running and keeps it,
      // as a cold VM whose agent never answers is kept (the reaper removes it if its guest exits).
      if (table.vms.get(hostname) === vm) throw err;
      // Taken out of the pool on purpose meanwhile (daemon stop, a create wanting its address,
      // the reaper): whoever took it tears it down; not a failed boot.
      this.log.debug("warm VM removed while it booted", { hostname, err });
    }
  }
}

/**
 * Await a warm VM's boot until `deadline` (epoch ms).
 * @returns the boot's outcome (true: the agent answered), or "timeout".
 */
async function bootedBy(vm: WarmVm, deadline: number): Promise<boolean | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([vm.booted, new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()))))]);
  } finally {
    clearTimeout(timer);
  }
}
