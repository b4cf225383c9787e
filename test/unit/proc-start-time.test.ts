/**
 * supervisor/proc-info.ts: a process's wall-clock start from /proc (boot time `btime` of
 * /proc/stat plus `starttime` of /proc/<pid>/stat in USER_HZ ticks), and
 * supervisor/process-manager.ts ManagedDaemon: an adopted daemon's `startedAt` and uptime are its
 * process's start, not the adoption's. Real processes and the real /proc.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { CLOCK_TICKS_PER_SECOND, parseBootTimeSec, procStartWallMs, readProcStartWallMs, readProcStat, readProcStatSync } from "../../supervisor/proc-info.js";
import { ManagedDaemon } from "../../supervisor/process-manager.js";
import type { DaemonSpec } from "../../supervisor/daemon-process.js";
import type { DaemonRecord } from "../../supervisor/tenant-registry.js";
import { createLogger } from "../../shared/logger.js";

describe("process start time from /proc (supervisor/proc-info.ts)", () => {
  it("parses btime and converts boot-relative ticks to wall time", () => {
    const stat = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5 6\nctxt 77\nbtime 1796599862\nprocesses 9\n";
    expect(parseBootTimeSec(stat)).to.equal(1796599862);
    expect(parseBootTimeSec("cpu 1 2\nctxt 3\n")).to.equal(undefined);
    expect(CLOCK_TICKS_PER_SECOND).to.equal(100);
    // 12345 ticks at 100 Hz = 123.45 s after boot.
    expect(procStartWallMs(12345, 1_700_000_000)).to.equal(1_700_000_123_450);
    expect(procStartWallMs(0, 1_700_000_000)).to.equal(1_700_000_000_000);
    expect(procStartWallMs(250, 1_700_000_000, 250)).to.equal(1_700_000_001_000);
  });

  it("reads this process's start as its real start (within btime's second)", () => {
    const ticks = readProcStatSync(process.pid)?.startTicks as number;
    const started = readProcStartWallMs(ticks) as number;
    const truth = Date.now() - process.uptime() * 1000;
    expect(started).to.be.a("number");
    // btime is whole seconds rounded down: up to 1 s early; node's own start (process.uptime's
    // origin) comes a little after the exec the kernel records.
    expect(started).to.be.within(truth - 2000, truth + 100);
  });
});

describe("ManagedDaemon adoption keeps the process's start (supervisor/process-manager.ts)", function () {
  this.timeout(20_000);
  let dir = "";
  let child: ChildProcess | undefined;

  afterEach(async () => {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (dir !== "") await fs.rm(dir, { recursive: true, force: true });
  });

  it("records startedAt and counts uptime from the daemon's start, before the adoption", async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-starttime-"));
    const entry = path.join(dir, "launch.js");
    await fs.writeFile(entry, "setInterval(() => {}, 60_000);\n");
    const spec: DaemonSpec = { tenantId: "t1", entry, configPath: path.join(dir, "config.yaml"), socketPath: path.join(dir, "api.sock"), logFile: path.join(dir, "daemon.log"), env: {} };
    const c = spawn(process.execPath, [entry, "up", spec.configPath], { stdio: "ignore" });
    child = c;
    await new Promise<void>((resolve, reject) => { c.once("spawn", () => resolve()); c.once("error", reject); });
    const spawnedAt = Date.now();
    const pid = c.pid as number;
    const ticks = (await readProcStat(pid))?.startTicks;
    // Adopted a while after its start, as by a supervisor restarted later.
    await new Promise((r) => setTimeout(r, 1500));
    const patches: Partial<DaemonRecord>[] = [];
    const events = { record: async (_id: string, p: Partial<DaemonRecord>) => { patches.push(p); }, ready: async () => undefined, failed: async () => undefined, restarting: () => undefined };
    const policy = { initialBackoffMs: 100, maxBackoffMs: 1000, maxCrashes: 5, crashWindowMs: 60_000, stableAfterMs: 10_000, readyTimeoutMs: 5000, stopTimeoutMs: 1000 };
    const d = new ManagedDaemon(spec, policy, events, createLogger({ level: "error" }));
    const adoptedAt = Date.now();
    expect(await d.adopt(pid, ticks)).to.equal(true);
    try {
      await d.flush();
      const running = patches.find((p) => p.state === "running");
      const startedMs = Date.parse(running?.startedAt ?? "");
      expect(startedMs, running?.startedAt).to.be.at.most(spawnedAt);
      expect(startedMs).to.be.at.least(spawnedAt - 1500);
      expect(d.uptimeMs).to.be.at.least(adoptedAt - spawnedAt);
      // An adoption leaves the build its spawner recorded alone.
      expect(running).to.not.have.property("version");
    } finally {
      d.detach();
    }
  });
});
