/**
 * Host capacity from systeminformation (the admin API's host capacity), cached and time-boxed:
 * some calls are slow on hosts with many interfaces or mounts, so a snapshot is
 * reused for `cacheMs` and each refresh gives up after `timeoutMs`, keeping the last value.
 */
import si from "systeminformation";

/** What `GET /admin/v1/host` reports about the machine. */
export interface HostSnapshot {
  cpu: { cores: number; physical_cores: number; model: string; load_percent: number | null };
  load: { avg1: number; avg5: number; avg15: number };
  memory: { total_bytes: number; available_bytes: number; used_bytes: number };
  disk: { mount: string; size_bytes: number; used_bytes: number; available_bytes: number } | null;
  collected_at: string;
  stale: boolean;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.catch(() => undefined), new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), ms); })]).finally(() => clearTimeout(timer));
}

/** Cached systeminformation reader for one directory's filesystem (the state dir). */
export class HostInfo {
  private cached: { snap: HostSnapshot; atMs: number } | undefined;
  private inflight: Promise<HostSnapshot> | undefined;

  constructor(private readonly stateDir: string, private readonly cacheMs = 5000, private readonly timeoutMs = 3000) {}

  /** A snapshot no older than `cacheMs` when the refresh succeeds in time. */
  async snapshot(): Promise<HostSnapshot> {
    if (this.cached && Date.now() - this.cached.atMs < this.cacheMs) return this.cached.snap;
    this.inflight ??= this.refresh().finally(() => { this.inflight = undefined; });
    return this.inflight;
  }

  private async refresh(): Promise<HostSnapshot> {
    const [cpu, load, mem, fsList] = await Promise.all([
      withTimeout(si.cpu(), this.timeoutMs),
      withTimeout(si.currentLoad(), this.timeoutMs),
      withTimeout(si.mem(), this.timeoutMs),
      withTimeout(si.fsSize(), this.timeoutMs),
    ]);
    const { loadavg, cpus, totalmem, freemem } = await import("node:os");
    const la = loadavg();
    // The filesystem holding the state dir: the longest mount point that prefixes it.
    const disk = (fsList ?? []).filter((f) => this.stateDir === f.mount || this.stateDir.startsWith(f.mount.endsWith("/") ? f.mount : f.mount + "/")).sort((a, b) => b.mount.length - a.mount.length)[0];
    const stale = cpu === undefined || load === undefined || mem === undefined || fsList === undefined;
    const snap: HostSnapshot = {
      cpu: { cores: cpu?.cores ?? cpus().length, physical_cores: cpu?.physicalCores ?? cpus().length, model: cpu ? `${cpu.manufacturer} ${cpu.brand}`.trim() : (cpus()[0]?.model ?? "unknown"), load_percent: load ? Math.round(load.currentLoad * 10) / 10 : null },
      load: { avg1: la[0] ?? 0, avg5: la[1] ?? 0, avg15: la[2] ?? 0 },
      memory: { total_bytes: mem?.total ?? totalmem(), available_bytes: mem?.available ?? freemem(), used_bytes: (mem?.total ?? totalmem()) - (mem?.available ?? freemem()) },
      disk: disk ? { mount: disk.mount, size_bytes: disk.size, used_bytes: disk.used, available_bytes: disk.available } : null,
      collected_at: new Date().toISOString(),
      stale,
    };
    if (!stale || !this.cached) this.cached = { snap, atMs: Date.now() };
    return stale && this.cached ? { ...this.cached.snap, stale: true } : snap;
  }
}
