/**
 * The expiry scheduler (tenant-daemon/vm/vm-expiry.ts) on a real VmTable, with the action
 * recorded instead of run: which VMs it acts on at their deadline.
 */
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { JsonStateStore } from "../../shared/state-store.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { VmExpiry } from "../../tenant-daemon/vm/vm-expiry.js";
import { VmTable, type LiveVm } from "../../tenant-daemon/vm/vm-table.js";
import type { DaemonState, VmPhase, VmRecord } from "../../tenant-daemon/vm/vm-types.js";
import { until } from "../helpers/wait.js";

describe("VM expiry scheduler", () => {
  const config = parseTenantConfig({ config: { host_groups: [{ name: "sbox" }], hypervisor: "oci", api: { bind_address: "/tmp/x.sock" } }, paddock: { tenant_id: "t1" } }, "t.yaml", { baseDir: "/tmp", env: {} });
  const past = new Date(Date.now() - 1000).toISOString();

  function lab(vms: { hostname: string; phase: VmPhase; persistent: boolean }[], expiresWhileSuspended?: (vm: LiveVm) => boolean) {
    const table = new VmTable({ config, store: new JsonStateStore<DaemonState>({ file: "/nonexistent/state.json", schemaVersion: 1, initial: () => ({ schemaVersion: 1, tenantId: "t1", counters: {}, vms: {} }) }) });
    for (const v of vms) {
      const record = { hostname: v.hostname, hostGroup: "sbox", persistent: v.persistent, tags: [`expires_at=${past}`] } as unknown as VmRecord;
      table.vms.set(v.hostname, { record, phase: v.phase, pid: 1 });
    }
    const acted: string[] = [];
    const expiry = new VmExpiry({ table, log: silentLogger, expire: async (vm) => {
      // As a delete would: the VM leaves the table.
      acted.push(vm.record.hostname);
      table.vms.delete(vm.record.hostname);
    }, ...(expiresWhileSuspended ? { expiresWhileSuspended } : {}) });
    return { expiry, acted };
  }

  it("acts on overdue running and paused VMs, and on a suspended one only when a delete would end it (its image and disk go)", async () => {
    const { expiry, acted } = lab([
      { hostname: "run-1", phase: "running", persistent: false },
      { hostname: "pau-1", phase: "paused", persistent: true },
      { hostname: "sus-eph", phase: "suspended", persistent: false },
      { hostname: "sus-per", phase: "suspended", persistent: true },
      { hostname: "stop-1", phase: "stopped", persistent: true },
    ], (vm) => !vm.record.persistent);
    try {
      expiry.kick();
      await until("acted", async () => (acted.length >= 3 ? true : undefined), 5000, 10);
      expect([...acted].sort()).to.deep.equal(["pau-1", "run-1", "sus-eph"]);
    } finally {
      expiry.stop();
    }
  });

  it("without the rule, a suspended VM waits for its restore (control)", async () => {
    const { expiry, acted } = lab([{ hostname: "sus-eph", phase: "suspended", persistent: false }, { hostname: "run-1", phase: "running", persistent: false }]);
    try {
      expiry.kick();
      await until("acted", async () => (acted.length >= 1 ? true : undefined), 5000, 10);
      expect(acted).to.deep.equal(["run-1"]);
    } finally {
      expiry.stop();
    }
  });
});
