/**
 * The idle scheduler's decisions (tenant-daemon/vm/vm-idle.ts) on a real VmTable and EventLog,
 * with the runtime side recorded instead of run (the privileged test
 * test/privileged/vm-idle-wake.test.ts runs it on real VMs): an open activity keeps a VM awake;
 * `idle_cpu_threshold` keeps a busy VM awake and lets a quiet one idle out; concurrent wakes share
 * one resume; a request arriving while the VM is being paused waits and then wakes it; a claimed
 * (client) pause is never woken; `idle_action: suspend` refused by the guest (ERR_VM_SUSPEND_REFUSED)
 * falls back to the idle pause once per idle period (event, metric, warn line) and is woken as
 * one; another suspend failure pauses nothing and backs off. Also: the CPU reader on this process's own cgroup, and the
 * milli-CPU arithmetic.
 */
import { readFileSync } from "node:fs";
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { JsonStateStore } from "../../shared/state-store.js";
import { parseTenantConfig, type GroupIdleConfig } from "../../shared/tenant-config.js";
import { EventLog, isVmEvent, type VmEvent } from "../../tenant-daemon/events/event-log.js";
import { VmIdle, idleRetryDelayMs, milliCpus, readCgroupCpuNs } from "../../tenant-daemon/vm/vm-idle.js";
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
  /** What suspend() does: the scripted runtime's answer (default: suspends). */
  suspendFails?: () => Error;
  /** Log lines at warn and error level: `level msg`, with the fields. */
  logged: { line: string; fields: Record<string, unknown> }[];
  /** Metric hook calls: `idled:group:action`, `failed:group:action:code`, `woke:group:action`. */
  metrics: string[];
}

function makeLab(policy: GroupIdleConfig): Lab {
  const config = parseTenantConfig({ config: { host_groups: [{ name: "sbox" }], hypervisor: "oci", api: { bind_address: "/tmp/x.sock" } }, paddock: { tenant_id: "t1" } }, "t.yaml", { baseDir: "/tmp", env: {} });
  const table = new VmTable({ config, store: new JsonStateStore<DaemonState>({ file: "/nonexistent/state.json", schemaVersion: 1, initial: () => ({ schemaVersion: 1, tenantId: "t1", counters: {}, vms: {} }) }) });
  const record = { hostname: "sbox-1", hostGroup: "sbox", tags: [] } as unknown as VmRecord;
  const vm: LiveVm = { record, phase: "running", pid: 1 };
  table.vms.set(record.hostname, vm);
  const log = new EventLog();
  const lab: Lab = { vm, events: [], calls: [], cpu: { ns: 0 }, idle: undefined as unknown as VmIdle, logged: [], metrics: [] };
  const logger: Logger = {
    ...silentLogger,
    warn: (m, f = {}) => lab.logged.push({ line: `warn ${m}`, fields: f }),
    error: (m, f = {}) => lab.logged.push({ line: `error ${m}`, fields: f }),
  };
  log.subscribe((e) => { if (isVmEvent(e)) lab.events.push(e); });
  lab.idle = new VmIdle({
    table, log: logger, events: log, policy: () => policy,
    metrics: {
      idled: (g, a) => lab.metrics.push(`idled:${g}:${a}`),
      failed: (g, a, c) => lab.metrics.push(`failed:${g}:${a}:${c}`),
      woke: (g, a) => lab.metrics.push(`woke:${g}:${a}`),
    },
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
    suspend: async (v) => {
      lab.calls.push("suspend");
      await sleepMs(5);
      if (lab.suspendFails !== undefined) throw lab.suspendFails();
      v.phase = "suspended";
    },
    restore: async (v) => {
      lab.calls.push("restore");
      v.phase = "running";
    },
    afterWake: () => undefined,
    waitForAgent: () => Promise.resolve(),
    emit: (r, type, reason, extra) => log.emit({ type, hostname: r.hostname, hostgroup: r.hostGroup, reason, ...extra }),
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
    // The client pauses it (VmService.pause claims it, and says it was idle-paused): requests no longer wake it.
    expect(l.idle.claim(l.vm)).to.equal("pause");
    expect(l.idle.claim(l.vm), "claimed already: not idle-paused").to.equal(undefined);
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

  it("idle_action: suspend refused by the guest (TCP sockets): pauses instead, once per idle period, with event, metric and a warn line; a request wakes it", async () => {
    const l = lab({ action: "suspend" });
    const refusal = "VM sbox-1 holds 1 TCP socket(s); gVisor (runsc 20221219) cannot checkpoint them and a failed checkpoint would stop the VM: close them first";
    l.suspendFails = () => new PaddockError("ERR_VM_SUSPEND_REFUSED", refusal, { details: { tcp_sockets: 1 } });
    await idled(l);
    expect(l.vm.record.idle?.action, "marked as an idle pause").to.equal("pause");
    expect(l.calls).to.deep.equal(["suspend", "pause"]);
    expect(l.events.map((e) => ({ type: e.type, reason: e.reason, fallback_from: e.fallback_from, refusal: e.refusal }))).to.deep.equal([
      { type: "paused", reason: "idle", fallback_from: "suspend", refusal },
    ]);
    expect(l.metrics).to.deep.equal(["failed:sbox:suspend:ERR_VM_SUSPEND_REFUSED", "idled:sbox:pause"]);
    expect(l.logged.map((x) => x.line)).to.deep.equal(["warn idle suspend refused by the guest; paused instead (a request wakes it; the next idle period tries the suspend again)"]);
    expect(l.logged[0]?.fields).to.include({ hostname: "sbox-1", idle_action: "suspend", fallback: "pause", code: "ERR_VM_SUSPEND_REFUSED", refusal });
    // Stays paused: no second try while idle-paused (once per idle period).
    await sleepMs(AFTER_MS * 3);
    expect(l.calls).to.deep.equal(["suspend", "pause"]);
    // A request wakes it like any idle pause: resume, resumed/wake.
    const end = l.idle.begin("sbox-1");
    await l.idle.wake("sbox-1");
    expect(l.vm.phase).to.equal("running");
    expect(l.vm.record.idle).to.equal(undefined);
    expect(l.events.map((e) => `${e.type}:${e.reason}`)).to.deep.equal(["paused:idle", "resumed:wake"]);
    expect(l.metrics.at(-1)).to.equal("woke:sbox:pause");
    // The next idle period tries the suspend again; the guest closed its socket: suspended.
    l.suspendFails = undefined;
    end();
    await until("idle suspend", () => Promise.resolve(l.vm.phase === "suspended" ? true : undefined), 10_000, 10);
    expect(l.calls).to.deep.equal(["suspend", "pause", "resume", "suspend"]);
    expect(l.events.at(-1)).to.include({ type: "suspended", reason: "idle" }).and.not.have.property("fallback_from");
    expect(l.vm.record.idle?.action).to.equal("suspend");
  });

  it("idle_action: suspend failing for another reason: no pause, an error line naming the suspend, retried with a doubling delay", async () => {
    const l = lab({ action: "suspend" });
    l.suspendFails = () => new PaddockError("ERR_RUNTIME_FAILED", "runsc checkpoint failed");
    await until("suspend tried", () => Promise.resolve(l.logged.length > 0 ? true : undefined), 10_000, 10);
    await sleepMs(AFTER_MS * 2);
    expect(l.calls, "tried once, not paused, not retried within 30 s").to.deep.equal(["suspend"]);
    expect(l.vm.phase).to.equal("running");
    expect(l.events).to.deep.equal([]);
    expect(l.metrics).to.deep.equal(["failed:sbox:suspend:ERR_RUNTIME_FAILED"]);
    expect(l.logged.map((x) => x.line)).to.deep.equal(["error idle suspend failed; retrying in 30 s"]);
    expect([1, 2, 3, 6, 7, 100].map(idleRetryDelayMs)).to.deep.equal([30_000, 60_000, 120_000, 960_000, 1_800_000, 1_800_000]);
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
