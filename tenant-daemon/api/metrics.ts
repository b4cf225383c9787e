/**
 * Prometheus metrics of a tenant daemon with the Slicer names (`GET /metrics`), kept in a
 * prom-client registry of its own (https://github.com/siimots/prom-client) so two daemons or a
 * test in one process never share series. Slicer's families and labels:
 * https://docs.slicervm.com/ (Logs & Monitoring, "Prometheus metrics via /metrics").
 */
import fs from "node:fs/promises";
import os from "node:os";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { PaddockError } from "../../shared/errors.js";
import type { VmIdleMetrics } from "../vm/vm-idle.js";
import type { WireStatus } from "../vm/vm-types.js";

/**
 * Buckets of `slicer_api_request_duration_seconds`, seconds: API calls take milliseconds, a
 * create with `wait=agent` seconds, exec streams and waits up to 600 s.
 */
export const API_DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

/** Buckets of `paddock_vm_wake_seconds`: a thaw takes milliseconds, a gVisor restore seconds. */
export const WAKE_DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** One VM whose host-side link the egress families read. */
export interface EgressVm {
  hostname: string;
  hostGroup: string;
  /** Name of the VM's host-side veth (network/names.ts `vmVethName`), made by the daemon. */
  veth: string;
}

/** What a scrape reads besides the counters the daemon keeps. */
export interface DaemonMetricsSources {
  /** VM counts by host group and wire status. */
  vms(): Record<string, Record<WireStatus, number>>;
  /** The warm pool by host group (`paddock_vm_warm`). */
  warm(): Record<string, { ready: number; booting: number }>;
  /** The VMs whose egress is counted (every VM the daemon has; a missing link counts nothing). */
  egressVms(): EgressVm[];
  /** Connections the API server holds open now (HTTP and upgraded WebSockets). */
  openConnections(): Promise<number>;
}

/** Byte counters of one host-side link, from the VM's point of view. */
export interface VmEgressBytes {
  /** Bytes the VM sent: the host side's `rx_bytes`. */
  tx: number;
  /** Bytes the VM received: the host side's `tx_bytes`. */
  rx: number;
}

const LINK_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * Byte counters of the host-side link `veth` from `/sys/class/net/<veth>/statistics` (host
 * sysfs; the VM's own namespace is never read). Counters restart when the link is made again
 * (a relaunch). `undefined` when the link does not exist (a stopped VM).
 * @throws PaddockError ERR_INTERNAL when `veth` is not a valid link name (the daemon names its
 *   links itself, tenant-daemon/network/names.ts, so this is a bug, never guest input).
 */
export async function readVmEgress(veth: string, sysClassNet = "/sys/class/net"): Promise<VmEgressBytes | undefined> {
  if (!LINK_NAME.test(veth) || veth === "." || veth === "..") throw new PaddockError("ERR_INTERNAL", `not a link name: ${JSON.stringify(veth)}`);
  const read = async (f: string): Promise<number> => Number((await fs.readFile(`${sysClassNet}/${veth}/statistics/${f}`, "utf8")).trim());
  try {
    const [rx, tx] = await Promise.all([read("rx_bytes"), read("tx_bytes")]);
    return { tx: rx, rx: tx };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENODEV") return undefined;
    throw err;
  }
}

/** Open file descriptors of this process: the entries of `/proc/self/fd` (the listing's own fd included). */
export async function countOpenFiles(procSelfFd = "/proc/self/fd"): Promise<number> {
  return (await fs.readdir(procSelfFd)).length;
}

/**
 * The daemon's metrics. Counters are kept as events happen ({@link launch}, {@link request});
 * gauges are read from {@link DaemonMetricsSources} at each scrape ({@link render}).
 */
export class DaemonMetrics {
  /** This daemon's own registry (never prom-client's global one). */
  readonly registry = new Registry();
  private readonly launches: Counter<"host_group" | "code">;
  private readonly requests: Counter<"method" | "code">;
  private readonly durations: Histogram<"method" | "code">;
  private readonly running: Gauge<"host_group" | "api" | "state">;
  private readonly gpus: Gauge<"host_group">;
  private readonly warm: Gauge<"host_group" | "state">;
  private readonly egressTx: Gauge;
  private readonly egressRx: Gauge;
  private readonly vmEgressTx: Gauge<"host_group" | "hostname">;
  private readonly vmEgressRx: Gauge<"host_group" | "hostname">;
  private readonly loads: [Gauge, Gauge, Gauge];
  private readonly memTotal: Gauge;
  private readonly memAvailable: Gauge;
  private readonly openFiles: Gauge;
  private readonly openConnections: Gauge;
  private readonly sysClassNet: string;
  private readonly idles: Counter<"hostgroup" | "action">;
  private readonly idleFailures: Counter<"hostgroup" | "action" | "code">;
  private readonly wakes: Counter<"hostgroup" | "action">;
  private readonly wakeSeconds: Histogram<"action">;

  /** `opts.sysClassNet`: where link counters are read (tests point it at a fixture tree). */
  constructor(opts: { sysClassNet?: string } = {}) {
    this.sysClassNet = opts.sysClassNet ?? "/sys/class/net";
    const registers = [this.registry];
    this.launches = new Counter({ name: "slicer_vm_launch_total", help: "VM launches by host group and outcome (ok, error)", labelNames: ["host_group", "code"], registers });
    this.running = new Gauge({ name: "slicer_vm_running", help: "VMs by host group and state", labelNames: ["host_group", "api", "state"], registers });
    this.gpus = new Gauge({ name: "slicer_vm_gpu_count", help: "GPUs given to the VMs of a host group; always 0: Paddock VMs have no GPUs", labelNames: ["host_group"], registers });
    this.warm = new Gauge({ name: "paddock_vm_warm", help: "warm-pool VMs by host group: ready (agent answered) or booting", labelNames: ["host_group", "state"], registers });
    this.requests = new Counter({ name: "slicer_api_requests_total", help: "API requests by method and status code", labelNames: ["method", "code"], registers });
    this.durations = new Histogram({ name: "slicer_api_request_duration_seconds", help: "API request duration, until the response ends", labelNames: ["method", "code"], buckets: API_DURATION_BUCKETS_S, registers });
    this.loads = [
      new Gauge({ name: "slicer_system_load_avg_1", help: "1-minute load average of the host", registers }),
      new Gauge({ name: "slicer_system_load_avg_5", help: "5-minute load average of the host", registers }),
      new Gauge({ name: "slicer_system_load_avg_15", help: "15-minute load average of the host", registers }),
    ];
    this.memTotal = new Gauge({ name: "slicer_system_memory_total_bytes", help: "host memory, bytes", registers });
    this.memAvailable = new Gauge({ name: "slicer_system_memory_available_bytes", help: "host memory available, bytes", registers });
    this.egressTx = new Gauge({ name: "slicer_system_egress_tx", help: "bytes sent by this tenant's VMs: the sum of paddock_vm_egress_tx_bytes (the host's own adapter is shared by tenants and not shown)", registers });
    this.egressRx = new Gauge({ name: "slicer_system_egress_rx", help: "bytes received by this tenant's VMs: the sum of paddock_vm_egress_rx_bytes", registers });
    this.vmEgressTx = new Gauge({ name: "paddock_vm_egress_tx_bytes", help: "bytes a VM sent, from its host-side veth (restarts at 0 when the VM is relaunched)", labelNames: ["host_group", "hostname"], registers });
    this.vmEgressRx = new Gauge({ name: "paddock_vm_egress_rx_bytes", help: "bytes a VM received, from its host-side veth (restarts at 0 when the VM is relaunched)", labelNames: ["host_group", "hostname"], registers });
    this.openFiles = new Gauge({ name: "slicer_system_open_files", help: "open file descriptors of the daemon process", registers });
    this.openConnections = new Gauge({ name: "slicer_system_open_connections", help: "connections open to the daemon's API server", registers });
    this.idles = new Counter({ name: "paddock_vm_idle_total", help: "VMs paused or suspended by their host group's idle_pause_after, by host group and action (pause, suspend)", labelNames: ["hostgroup", "action"], registers });
    this.idleFailures = new Counter({
      name: "paddock_vm_idle_failures_total",
      help: "idle pauses or suspends that failed, by host group, the action tried and the error code; a suspend the guest refused (ERR_VM_SUSPEND_REFUSED: it holds a TCP socket) is followed by an idle pause, counted in paddock_vm_idle_total{action=\"pause\"}",
      labelNames: ["hostgroup", "action", "code"], registers,
    });
    this.wakes = new Counter({ name: "paddock_vm_wakes_total", help: "idled VMs woken by a request, by host group and the idle action undone (pause, suspend)", labelNames: ["hostgroup", "action"], registers });
    this.wakeSeconds = new Histogram({ name: "paddock_vm_wake_seconds", help: "time a request waited for its idled VM to wake (resume; or restore and agent answering), by idle action", labelNames: ["action"], buckets: WAKE_DURATION_BUCKETS_S, registers });
  }

  /** The hooks the idle scheduler counts through (tenant-daemon/vm/vm-idle.ts). */
  idleMetrics(): VmIdleMetrics {
    return {
      idled: (hostgroup, action) => this.idles.inc({ hostgroup, action }),
      failed: (hostgroup, action, code) => this.idleFailures.inc({ hostgroup, action, code }),
      woke: (hostgroup, action, seconds) => {
        this.wakes.inc({ hostgroup, action });
        this.wakeSeconds.observe({ action }, seconds);
      },
    };
  }

  /** Count a VM launch with its outcome code (`ok` / `error`). */
  launch(hostGroup: string, code: "ok" | "error"): void {
    this.launches.inc({ host_group: hostGroup, code });
  }

  /** Count one API request and its duration in seconds. */
  request(method: string, status: number, seconds: number): void {
    const labels = { method, code: String(status) };
    this.requests.inc(labels);
    this.durations.observe(labels, seconds);
  }

  /** The Content-Type of {@link render}'s text (text exposition format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The exposition text (https://prometheus.io/docs/instrumenting/exposition_formats/): reads
   * every source first, then sets the gauges and renders, so one scrape is one snapshot.
   * @throws when /proc or /sys cannot be read (other than a missing link).
   */
  async render(src: DaemonMetricsSources): Promise<string> {
    const vmsList = src.egressVms();
    const [egress, openFiles, openConnections] = await Promise.all([
      Promise.all(vmsList.map(async (vm) => ({ vm, bytes: await readVmEgress(vm.veth, this.sysClassNet) }))),
      countOpenFiles(),
      src.openConnections(),
    ]);
    const vms = src.vms();
    const warm = src.warm();
    this.running.reset();
    this.gpus.reset();
    for (const [g, counts] of Object.entries(vms)) {
      this.gpus.set({ host_group: g }, 0);
      for (const [state, n] of Object.entries(counts)) this.running.set({ host_group: g, api: "true", state }, n);
    }
    this.warm.reset();
    for (const [g, c] of Object.entries(warm)) {
      this.warm.set({ host_group: g, state: "ready" }, c.ready);
      this.warm.set({ host_group: g, state: "booting" }, c.booting);
    }
    this.vmEgressTx.reset();
    this.vmEgressRx.reset();
    let tx = 0;
    let rx = 0;
    for (const { vm, bytes } of egress) {
      if (!bytes) continue;
      this.vmEgressTx.set({ host_group: vm.hostGroup, hostname: vm.hostname }, bytes.tx);
      this.vmEgressRx.set({ host_group: vm.hostGroup, hostname: vm.hostname }, bytes.rx);
      tx += bytes.tx;
      rx += bytes.rx;
    }
    this.egressTx.set(tx);
    this.egressRx.set(rx);
    os.loadavg().forEach((v, i) => this.loads[i]?.set(v));
    this.memTotal.set(os.totalmem());
    this.memAvailable.set(os.freemem());
    this.openFiles.set(openFiles);
    this.openConnections.set(openConnections);
    return this.registry.metrics();
  }
}
