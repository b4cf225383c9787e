/**
 * Prometheus metrics of a tenant daemon with the Slicer names (`GET /metrics`),
 * in the text exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/).
 */
import os from "node:os";
import type { WireStatus } from "../vm/vm-types.js";

/** Counters kept by the daemon; rendered by {@link renderMetrics}. */
export class DaemonMetrics {
  private readonly launches = new Map<string, number>();
  private readonly requests = new Map<string, number>();
  private readonly durationSum = new Map<string, number>();

  /** Count a VM launch with its outcome code (`ok` / `error`). */
  launch(hostGroup: string, code: "ok" | "error"): void {
    const k = `host_group="${esc(hostGroup)}",code="${code}"`;
    this.launches.set(k, (this.launches.get(k) ?? 0) + 1);
  }

  /** Count one API request and its duration in seconds. */
  request(method: string, status: number, seconds: number): void {
    const k = `method="${esc(method)}",code="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
    this.durationSum.set(k, (this.durationSum.get(k) ?? 0) + seconds);
  }

  /**
   * The exposition text. `vms` are counts by host group and status; `warm` the warm pool by
   * host group (`paddock_vm_warm{host_group,state="ready"|"booting"}`, Paddock's own family).
   */
  render(vms: Record<string, Record<WireStatus, number>>, warm: Record<string, { ready: number; booting: number }> = {}): string {
    const lines: string[] = [];
    const family = (name: string, type: string, help: string): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    family("slicer_vm_launch_total", "counter", "VM launches by host group and outcome");
    for (const [k, v] of this.launches) lines.push(`slicer_vm_launch_total{${k}} ${v}`);
    family("slicer_vm_running", "gauge", "VMs by host group and state");
    for (const [g, counts] of Object.entries(vms)) {
      for (const [state, n] of Object.entries(counts)) lines.push(`slicer_vm_running{host_group="${esc(g)}",api="true",state="${state}"} ${n}`);
    }
    family("paddock_vm_warm", "gauge", "warm-pool VMs by host group: ready (agent answered) or booting");
    for (const [g, c] of Object.entries(warm)) {
      lines.push(`paddock_vm_warm{host_group="${esc(g)}",state="ready"} ${c.ready}`, `paddock_vm_warm{host_group="${esc(g)}",state="booting"} ${c.booting}`);
    }
    family("slicer_api_requests_total", "counter", "API requests by method and status code");
    for (const [k, v] of this.requests) lines.push(`slicer_api_requests_total{${k}} ${v}`);
    family("slicer_api_request_duration_seconds", "summary", "API request duration");
    for (const [k, v] of this.durationSum) {
      lines.push(`slicer_api_request_duration_seconds_sum{${k}} ${v}`, `slicer_api_request_duration_seconds_count{${k}} ${this.requests.get(k) ?? 0}`);
    }
    const [l1, l5, l15] = os.loadavg();
    family("slicer_system_load_avg_1", "gauge", "1-minute load average");
    lines.push(`slicer_system_load_avg_1 ${l1}`);
    family("slicer_system_load_avg_5", "gauge", "5-minute load average");
    lines.push(`slicer_system_load_avg_5 ${l5}`);
    family("slicer_system_load_avg_15", "gauge", "15-minute load average");
    lines.push(`slicer_system_load_avg_15 ${l15}`);
    family("slicer_system_memory_total_bytes", "gauge", "host memory");
    lines.push(`slicer_system_memory_total_bytes ${os.totalmem()}`);
    family("slicer_system_memory_available_bytes", "gauge", "host memory available");
    lines.push(`slicer_system_memory_available_bytes ${os.freemem()}`);
    return lines.join("\n") + "\n";
  }
}

function esc(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
