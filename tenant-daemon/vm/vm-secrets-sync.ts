/**
 * Secret delivery to running VMs (docs/slicer-api.md#secrets): at boot and hand-out, on resume,
 * and whenever `POST`, `PATCH` or `DELETE /secrets` changes a secret a VM is granted. Slicer
 * re-syncs secrets into running VMs too (https://docs.slicervm.com/reference/secrets).
 *
 * Every push sends the VM's whole granted set, read from the store when the push starts, and
 * the agent removes files of secrets no longer in it (tenant-daemon/agent/secrets-sync.ts). Pushes
 * to one VM never overlap: a request while one is in flight marks the VM dirty and one more push
 * follows, so the last push always reads the store after the last change. Pushes to different
 * VMs run in parallel, at most {@link SECRET_PUSH_CONCURRENCY} at a time.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { VmAgentWait } from "./vm-agent-wait.js";
import type { VmPaths } from "./vm-paths.js";
import type { AgentPort } from "./vm-ports.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { SecretsDelivery } from "./vm-types.js";

export type { SecretsDelivery } from "./vm-types.js";

/** Most secret pushes in flight at once, all VMs together. */
export const SECRET_PUSH_CONCURRENCY = 8;
/** How long the agent has to answer one push, ms. */
const PUSH_TIMEOUT_MS = 10_000;
/** How long a boot delivery waits for the agent to answer, ms. */
const BOOT_AGENT_WAIT_MS = 60_000;

/** Per-VM push state: `dirty` ⇒ one more push; `waitAgent` ⇒ poll the agent's health first. */
interface Slot {
  dirty: boolean;
  waitAgent: boolean;
  done: Promise<SecretsDelivery>;
}

/** A counting semaphore: at most `limit` holders. */
class Semaphore {
  private active = 0;
  private readonly waiters: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiters.push(resolve));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/** Pushes the tenant's secrets to the agents of the VMs in `table` that are granted them. */
export class VmSecretsSync {
  private readonly table: VmTable;
  private readonly agent: AgentPort;
  private readonly paths: VmPaths;
  private readonly agentWait: VmAgentWait;
  private readonly log: Logger;
  private readonly slots = new Map<string, Slot>();
  private readonly limit = new Semaphore(SECRET_PUSH_CONCURRENCY);

  constructor(deps: { table: VmTable; agent: AgentPort; paths: VmPaths; agentWait: VmAgentWait; log: Logger }) {
    this.table = deps.table;
    this.agent = deps.agent;
    this.paths = deps.paths;
    this.agentWait = deps.agentWait;
    this.log = deps.log;
  }

  /**
   * Push `vm`'s granted secrets to its agent. `agentReady: false` (a boot) first waits up to
   * 60 s for the agent to answer. Resolves when this push, and any requested meanwhile, ended,
   * with the outcome of the last of them; never rejects (failures are logged per VM while the
   * VM is running). A VM that is not running when its turn comes is skipped (not delivered):
   * its next boot or resume delivers.
   */
  request(vm: LiveVm, opts: { agentReady: boolean }): Promise<SecretsDelivery> {
    const h = vm.record.hostname;
    const slot = this.slots.get(h);
    if (slot) {
      slot.dirty = true;
      slot.waitAgent ||= !opts.agentReady;
      return slot.done;
    }
    const s: Slot = { dirty: true, waitAgent: !opts.agentReady, done: Promise.resolve({ delivered: true }) };
    this.slots.set(h, s);
    s.done = (async () => {
      try {
        let outcome: SecretsDelivery = { delivered: true };
        while (s.dirty) {
          s.dirty = false;
          const waitAgent = s.waitAgent;
          s.waitAgent = false;
          outcome = await this.pushOnce(h, waitAgent);
        }
        return outcome;
      } finally {
        this.slots.delete(h);
      }
    })();
    return s.done;
  }

  /**
   * A secret was created, changed or deleted: push to every running VM granted `name` (its
   * create named it in `secrets`, or named none). Paused VMs get it on resume, booting ones
   * from their boot delivery. Resolves when every push ended; never rejects.
   */
  async secretChanged(name: string): Promise<void> {
    const targets = [...this.table.vms.values()].filter((vm) => vm.phase === "running" && (vm.record.secrets === undefined || vm.record.secrets.includes(name)));
    await Promise.all(targets.map((vm) => this.request(vm, { agentReady: true })));
  }

  /** One push to VM `hostname` (after its agent answers when `waitAgent`); never rejects. */
  private async pushOnce(hostname: string, waitAgent: boolean): Promise<SecretsDelivery> {
    const running = (): LiveVm | undefined => {
      const vm = this.table.lookup(hostname);
      return vm?.phase === "running" ? vm : undefined;
    };
    try {
      if (waitAgent) await this.agentWait.waitForAgent(hostname, "agent", BOOT_AGENT_WAIT_MS);
      return await this.limit.run(async (): Promise<SecretsDelivery> => {
        const vm = running();
        if (vm === undefined) return { delivered: false, err: new PaddockError("ERR_VM_NOT_RUNNING", `VM ${hostname} was not running when its secrets were to be delivered`) };
        await this.agent.syncSecrets(this.paths.endpoint(vm.record), vm.record.secrets, PUSH_TIMEOUT_MS);
        return { delivered: true };
      });
    } catch (err) {
      if (running()) this.log.warn("secret delivery failed", { hostname, err });
      return { delivered: false, err };
    }
  }
}
