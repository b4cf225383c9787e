/**
 * The machine a benchmark ran on (CPU, cores, memory, kernel, distribution, node and runc
 * versions) and the load on it while it ran: other engineers share this host, so the 1-minute
 * load average is sampled every few seconds and reported with the figures.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import { spawnTimed } from "./procs.js";

/** Description of the host, as written into the report. */
export interface MachineInfo {
  hostname: string;
  cpuModel: string;
  cores: number;
  memGiB: number;
  kernel: string;
  distro: string;
  node: string;
  runc: string;
  cgroup: string;
}

/** Collect {@link MachineInfo}. Never throws (unknown parts read `?`). */
export async function describeMachine(): Promise<MachineInfo> {
  const osRelease = await fs.readFile("/etc/os-release", "utf8").catch(() => "");
  const runc = await spawnTimed(["runc", "--version"], { allowFailure: true }).catch(() => undefined);
  const cgroup2 = await fs.stat("/sys/fs/cgroup/cgroup.controllers").then(() => true, () => false);
  return {
    hostname: os.hostname(),
    cpuModel: os.cpus()[0]?.model.trim() ?? "?",
    cores: os.cpus().length,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    distro: /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease)?.[1] ?? "?",
    node: process.version,
    runc: /runc version (\S+)/.exec(runc?.stdout ?? "")?.[1] ?? "?",
    cgroup: cgroup2 ? "v2" : "v1",
  };
}

/** Load averages seen during the run. */
export interface LoadReport {
  /** 1-minute load average at start and end. */
  start: number;
  end: number;
  min: number;
  max: number;
  mean: number;
  samples: number;
  /** [1, 5, 15]-minute averages at the end. */
  endTriple: number[];
}

/** Samples `os.loadavg()[0]` every `intervalMs` until {@link LoadSampler.stop}. */
export class LoadSampler {
  private readonly values: number[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs = 5000) {
    this.values.push(os.loadavg()[0] ?? 0);
    this.timer = setInterval(() => this.values.push(os.loadavg()[0] ?? 0), intervalMs);
    this.timer.unref();
  }

  /** Stop sampling; the summary of what was seen. */
  stop(): LoadReport {
    clearInterval(this.timer);
    const endTriple = os.loadavg();
    this.values.push(endTriple[0] ?? 0);
    const v = this.values;
    return {
      start: v[0] ?? 0,
      end: v[v.length - 1] ?? 0,
      min: Math.min(...v),
      max: Math.max(...v),
      mean: v.reduce((a, b) => a + b, 0) / v.length,
      samples: v.length,
      endTriple,
    };
  }
}
