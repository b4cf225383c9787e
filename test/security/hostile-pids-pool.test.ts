/**
 * A tenant's guest against its warm pool's stop at a full pids budget (tenant-daemon/vm/warm-pool.ts
 * `pidsRefused`, `bootSucceeded`). Seen with a real daemon and runc VMs (max_pids 80, warm pool
 * 1): guest root of a long-lived VM forked `sleep 20` until the budget was full; a create in
 * that window answered 403 ERR_LIMIT_EXCEEDED and the pool stopped. Twenty seconds later the
 * budget was at 36 of 80, cold creates booted fine, and the pool still stayed empty, every create
 * booting cold, until a VM the tenant held at the stop was removed: never, for a `count:` VM
 * (DELETE ⇒ 403). Now a VM created after the stop that boots whole ends it; one that existed at
 * the stop does not (control), nor does anything before a boot succeeded (no warm boot
 * against a budget still full). The pool on in-memory tables: no daemon, no VM.
 */
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import type { HostGroupConfig, TenantConfig } from "../../shared/tenant-config.js";
import type { VmLauncher } from "../../tenant-daemon/vm/vm-boot.js";
import type { LiveVm, VmTable, WarmVm } from "../../tenant-daemon/vm/vm-table.js";
import type { VmRecord } from "../../tenant-daemon/vm/vm-types.js";
import { WarmPool, type WarmPoolDeps } from "../../tenant-daemon/vm/warm-pool.js";

describe("security: a pids spike in a long-lived VM against the warm pool's stop (tenant-daemon/vm/warm-pool.ts)", () => {
  const group = { name: "g", vcpu: 1, ramBytes: 256 * 2 ** 20, storageSizeBytes: 2 ** 28 } as HostGroupConfig;

  /** A pool of group `g` (size 1) on in-memory tables; `boots` counts its warm boots. */
  function fixture() {
    const state = { boots: 0, next: 1 };
    const table = {
      warm: new Map<string, WarmVm>(),
      vms: new Map<string, LiveVm>(),
      stopping: false,
      hostGroup: () => group,
      checkLimits: () => undefined,
      allocateName: () => ({ hostname: `g-${state.next}`, index: state.next++ }),
      persist: async () => undefined,
      withLock: async (_h: string, fn: () => Promise<unknown>) => fn(),
    };
    const launcher = {
      saveAndBoot: async (vm: LiveVm) => {
        state.boots++;
        vm.phase = "running";
      },
      discard: async (vm: LiveVm) => {
        table.warm.delete(vm.record.hostname);
      },
    } as unknown as VmLauncher;
    const log = { ...silentLogger, child: () => log } as Logger;
    const deps = {
      config: { paddock: { warmPool: { g: 1 } } } as unknown as TenantConfig,
      table: table as unknown as VmTable,
      launcher,
      agentWait: { waitForAgent: async () => undefined },
      secretsSync: { request: async () => undefined },
      network: { reserve: () => "169.254.0.2/30" },
      runtime: {},
      paths: {},
      log,
    } as unknown as WarmPoolDeps;
    return { pool: new WarmPool(deps), table, state };
  }

  const running = (hostname: string): LiveVm => ({ record: { hostname } as VmRecord, phase: "running", pid: 1 });

  it("a VM created after the stop that boots whole ends it; a VM held at the stop does not", async () => {
    const f = fixture();
    // The long-lived VM whose guest filled the budget, and the create the budget refused.
    f.table.vms.set("dev-1", running("dev-1"));
    f.pool.pidsRefused(new PaddockError("ERR_LIMIT_EXCEEDED", "refused", { details: { limit: "max_pids" } }), "g-9");
    f.pool.kick();
    await f.pool.settled();
    expect(f.state.boots, "stopped: no warm boot against the full budget").to.equal(0);
    // Control: dev-1 existed at the stop (its boot may predate it): nothing is proven.
    f.pool.bootSucceeded("dev-1");
    f.pool.kick();
    await f.pool.settled();
    expect(f.state.boots, "a VM held at the stop ends nothing").to.equal(0);
    // The spike is over: a cold create made since boots whole, and no held VM was removed.
    f.table.vms.set("g-10", running("g-10"));
    f.pool.bootSucceeded("g-10");
    await f.pool.settled();
    expect(f.state.boots, "the pool fills again").to.equal(1);
    expect(f.table.vms.has("dev-1")).to.equal(true);
  });
});
