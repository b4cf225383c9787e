/**
 * The idle scheduler's decisions (tenant-daemon/vm/vm-idle.ts) on a real VmTable and EventLog,
 * with the runtime side recorded instead of run (the privileged test
 * test/privileged/vm-idle-wake.test.ts runs it on real VMs): an open activity keeps a VM awake;
 * `idle_cpu_threshold` keeps a busy VM awake and lets a quiet one idle out; concurrent wakes share
 * one resume; a request arriving while the VM is being paused waits and then wakes it; a claimed
 * (client) pause is never woken. Also: the CPU reader on this process's own cgroup, and the
 * milli-CPU arithmetic.
 */
import { readFileSync } from "node:fs";
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { JsonStateStore } from "../../shared/state-store.js";
import { parseTenantConfig, type GroupIdleConfig } from "../../shared/tenant-config.js";
import { EventLog, isVmEvent, type VmEvent } from "../../tenant-daemon/events/event-log.js";
import { VmIdle, milliCpus, readCgroupCpuNs } from "../../tenant-daemon/vm/vm-idle.js";
import { VmTable, type LiveVm } from "../../tenant-daemon/vm/vm-table.js";
import type { DaemonState, VmRecord } from "../../tenant-daemon/vm/vm-types.js";
import { sleepMs, until } from "../helpers/wait.js";

const AFTER_MS = 150;

interface Lab {
  idle: VmIdle;
  vm: LiveVm;
  events: VmEvent[];
  calls: string[];
  /** The VM's cgroup CPU time the scheduler reads, ns. */
  cpu: { ns: number };
  /** Held while set: pause() waits for it. */
  pauseGate?: Promise<void>;
}

function makeLab(policy: GroupIdleConfig): Lab {
  const config = parseTenantConfig({ config: { host_groups: [{ name: "sbox" }], hypervisor: "oci", api: { bind_address: "/tmp/x.sock" } }, paddock: { tenant_id: "t1" } }, "t.yaml", { baseDir: "/tmp", env: {} });
  const table = new VmTable({ config, store: new JsonStateStore<DaemonState>({ file: "/nonexistent/state.json", schemaVersion: 1, initial: () => ({ schemaVersion: 1, tenantId: "t1", counters: {}, vms: {} }) }) });
  const record = { hostname: "sbox-1", hostGroup: "sbox", tags: [] } as unknown as VmRecord;
  const vm: LiveVm = { record, phase: "running", pid: 1 };
  table.vms.set(record.hostname, vm);
  const log = new EventLog();
  const lab: Lab = { vm, events: [], calls: [], cpu: { ns: 0 }, idle: undefined as unknown as VmIdle };
  log.subscribe((e) => { if (isVmEvent(e)) lab.events.push(e); });
  lab.idle = new VmIdle({
    table, log: silentLogger, events: log, policy: () => policy,
    pause: async (v) => {
      lab.calls.push("pause");
      await lab.pauseGate;
      v.phase = "paused";
    },
    resume: async (v) => {
      lab.calls.push("resume");
      await sleepMs(20);
      v.phase = "running";
    },
    suspend: () => Promise.reject(new Error("not used")),
    restore: () => Promise.reject(new Error("not used")),
    afterWake: () => undefined,
    waitForAgent: () => Promise.resolve(),
    emit: (r, type, reason) => log.emit({ type, hostname: r.hostname, hostgroup: r.hostGroup, reason }),
    persist: () => Promise.resolve(),
    cpuNs: () => Promise.resolve(lab.cpu.ns),
  });
  lab.idle.start();
  return lab;
}

const idled = (lab: Lab): Promise<true> => until("idle pause", () => Promise.resolve(lab.vm.phase === "paused" && lab.vm.record.idle !== undefined ? true : undefined), 10_000, 10);

describe("idle scheduler (vm-idle.ts)", () => {
  const labs: Lab[] = [];
  const lab = (p: Partial<GroupIdleConfig> = {}): Lab => {
    const l = makeLab({ afterMs: AFTER_MS, cpuMilli: undefined, action: "pause", ...p });
    labs.push(l);
    return l;
  };
  afterEach(() => {
    for (const l of labs.splice(0)) l.idle.stop();
  });

  it("pauses a VM idle for idle_pause_after (event paused/idle), but not while an activity is open", async () => {
    const l = lab();
    const end = l.idle.begin("sbox-1");
    await sleepMs(AFTER_MS * 3);
    expect(l.vm.phase, "open activity keeps it awake").to.equal("running");
    end();
    await idled(l);
    expect(l.events.map((e) => `${e.type}:${e.reason}`)).to.deep.equal(["paused:idle"]);
  });

  it("concurrent requests share one wake (one resume, one resumed/wake event); a client's pause is never woken", async () => {
    const l = lab();
    await idled(l);
    const ends = [1, 2, 3].map(() => l.idle.begin("sbox-1"));
    await Promise.all([l.idle.wake("sbox-1"), l.idle.wake("sbox-1"), l.idle.wake("sbox-1")]);
    expect(l.calls).to.deep.equal(["pause", "resume"]);
    expect(l.events.map((e) => `${e.type}:${e.reason}`)).to.deep.equal(["paused:idle", "resumed:wake"]);
    expect(l.vm.phase).to.equal("running");
    for (const e of ends) e();
    await idled(l);
    // The client pauses it (VmService.pause claims it): requests no longer wake it.
    l.idle.claim(l.vm);
    await l.idle.wake("sbox-1");
    expect(l.vm.phase).to.equal("paused");
    expect(l.calls.filter((c) => c === "resume")).to.have.length(1);
  });

  it("a request that arrives while the VM is being paused waits for the pause, then wakes it", async () => {
    const l = lab();
    let open!: () => void;
    l.pauseGate = new Promise((r) => (open = r));
    await until("pause started", () => Promise.resolve(l.calls.includes("pause") ? true : undefined), 10_000, 10);
    const end = l.idle.begin("sbox-1");
    const woken = l.idle.wake("sbox-1");
    open();
    await woken;
    expect(l.vm.phase, "the request reaches a running VM").to.equal("running");
    expect(l.events.map((e) => `${e.type}:${e.reason}`)).to.deep.equal(["paused:idle", "resumed:wake"]);
    end();
  });

  it("idle_cpu_threshold: a VM burning CPU stays up; once quiet it idles out", async () => {
    const l = lab({ cpuMilli: 100 });
    // One CPU busy: AFTER_MS of CPU time per AFTER_MS of wall time, every 20 ms.
    const burn = setInterval(() => (l.cpu.ns += 20 * 1e6), 20);
    try {
      await sleepMs(AFTER_MS * 5);
      expect(l.vm.phase, "busy: not paused").to.equal("running");
      expect(l.calls).to.deep.equal([]);
    } finally {
      clearInterval(burn);
    }
    await idled(l);
  });

  it("reads a cgroup's CPU time (this process's own) and turns two samples into milli-CPUs", async () => {
    const line = readFileSync("/proc/self/cgroup", "utf8").split("\n").find((x) => /:(cpu,cpuacct|cpuacct,cpu|cpuacct):/.test(x) || x.startsWith("0::"));
    const rel = line?.split(":")[2] ?? "/";
    const ns = await readCgroupCpuNs(rel);
    expect(ns, `cgroup ${rel}`).to.be.a("number").and.above(0);
    expect(milliCpus({ ns: 0, atMs: 0 }, { ns: 500e6, atMs: 1000 })).to.equal(500);
    expect(milliCpus({ ns: 0, atMs: 0 }, { ns: 2e9, atMs: 1000 })).to.equal(2000);
    expect(await readCgroupCpuNs("/paddock/no-such-tenant/vm-1")).to.equal(undefined);
  });
});
