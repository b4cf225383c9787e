/**
 * The tenant daemon's `/metrics` text (tenant-daemon/api/metrics.ts) parsed with a real
 * exposition parser: Slicer's families and labels, the request-duration histogram, egress from
 * host-side link counters (a fixture sysfs tree), open files, connections and GPUs.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { API_DURATION_BUCKETS_S, DaemonMetrics, countOpenFiles, readVmEgress, type DaemonMetricsSources, type EgressVm } from "../../tenant-daemon/api/metrics.js";
import { parseExposition, sampleValue, series } from "../helpers/prometheus.js";

function sources(egressVms: EgressVm[] = [], connections = 0): DaemonMetricsSources {
  return {
    vms: () => ({ sbox: { Running: 2, Stopped: 1, Paused: 0 } as never, ctrl: { Running: 0 } as never }),
    warm: () => ({ sbox: { ready: 1, booting: 0 } }),
    egressVms: () => egressVms,
    openConnections: () => Promise.resolve(connections),
  };
}

describe("daemon metrics (prom-client)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "paddock-metrics-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function link(name: string, rxBytes: number, txBytes: number): Promise<void> {
    await fs.mkdir(path.join(dir, name, "statistics"), { recursive: true });
    await fs.writeFile(path.join(dir, name, "statistics", "rx_bytes"), `${rxBytes}\n`);
    await fs.writeFile(path.join(dir, name, "statistics", "tx_bytes"), `${txBytes}\n`);
  }

  it("keeps Slicer's family names, types and labels", async () => {
    const m = new DaemonMetrics({ sysClassNet: dir });
    m.launch("sbox", "ok");
    m.launch("sbox", "ok");
    m.launch("sbox", "error");
    m.request("GET", 200, 0.003);
    m.request("GET", 200, 0.2);
    m.request("POST", 201, 42);
    const f = parseExposition(await m.render(sources([], 5)));
    expect(f.get("slicer_vm_launch_total")?.type).to.equal("COUNTER");
    expect(sampleValue(f, "slicer_vm_launch_total", { host_group: "sbox", code: "ok" })).to.equal(2);
    expect(sampleValue(f, "slicer_vm_launch_total", { host_group: "sbox", code: "error" })).to.equal(1);
    expect(sampleValue(f, "slicer_vm_running", { host_group: "sbox", api: "true", state: "Running" })).to.equal(2);
    expect(sampleValue(f, "slicer_vm_running", { host_group: "sbox", api: "true", state: "Stopped" })).to.equal(1);
    expect(sampleValue(f, "paddock_vm_warm", { host_group: "sbox", state: "ready" })).to.equal(1);
    expect(f.get("slicer_api_requests_total")?.type).to.equal("COUNTER");
    expect(sampleValue(f, "slicer_api_requests_total", { method: "GET", code: "200" })).to.equal(2);
    for (const name of ["slicer_system_load_avg_1", "slicer_system_load_avg_5", "slicer_system_load_avg_15", "slicer_system_memory_total_bytes", "slicer_system_memory_available_bytes"]) {
      expect(f.get(name)?.type, name).to.equal("GAUGE");
    }
    expect(sampleValue(f, "slicer_system_memory_total_bytes")).to.equal(os.totalmem());
    expect(sampleValue(f, "slicer_system_open_connections")).to.equal(5);
    expect(sampleValue(f, "slicer_system_open_files")).to.be.greaterThan(2);
  });

  it("gives request durations histogram buckets (cumulative, with sum and count)", async () => {
    const m = new DaemonMetrics({ sysClassNet: dir });
    m.request("GET", 200, 0.003);
    m.request("GET", 200, 0.2);
    m.request("GET", 200, 42);
    const f = parseExposition(await m.render(sources()));
    expect(f.get("slicer_api_request_duration_seconds")?.type).to.equal("HISTOGRAM");
    const h = series(f, "slicer_api_request_duration_seconds", { method: "GET", code: "200" });
    expect(Object.keys(h.buckets ?? {})).to.have.length(API_DURATION_BUCKETS_S.length + 1);
    expect(h.buckets).to.include({ "0.005": "1", "0.1": "1", "0.25": "2", "30": "2", "60": "3", "600": "3", "+Inf": "3" });
    expect(Number(h.count)).to.equal(3);
    expect(Number(h.sum)).to.be.closeTo(42.203, 1e-9);
  });

  it("reports zero GPUs for every host group", async () => {
    const f = parseExposition(await new DaemonMetrics({ sysClassNet: dir }).render(sources()));
    expect(f.get("slicer_vm_gpu_count")?.help).to.match(/no GPUs/);
    expect(sampleValue(f, "slicer_vm_gpu_count", { host_group: "sbox" })).to.equal(0);
    expect(sampleValue(f, "slicer_vm_gpu_count", { host_group: "ctrl" })).to.equal(0);
  });

  it("reads each VM's egress from its host-side link, from the VM's side, and sums them", async () => {
    // The host side receives what the VM sends: the VM's tx is the link's rx_bytes.
    await link("pkaaaa", 1000, 70);
    await link("pkbbbb", 24, 6);
    const vms: EgressVm[] = [
      { hostname: "sbox-1", hostGroup: "sbox", veth: "pkaaaa" },
      { hostname: "sbox-2", hostGroup: "sbox", veth: "pkbbbb" },
      { hostname: "sbox-3", hostGroup: "sbox", veth: "pkgone" },
    ];
    const f = parseExposition(await new DaemonMetrics({ sysClassNet: dir }).render(sources(vms)));
    expect(sampleValue(f, "paddock_vm_egress_tx_bytes", { hostname: "sbox-1", host_group: "sbox" })).to.equal(1000);
    expect(sampleValue(f, "paddock_vm_egress_rx_bytes", { hostname: "sbox-1" })).to.equal(70);
    expect(sampleValue(f, "paddock_vm_egress_tx_bytes", { hostname: "sbox-2" })).to.equal(24);
    expect(() => series(f, "paddock_vm_egress_tx_bytes", { hostname: "sbox-3" }), "a VM without a link has no series").to.throw(/0 series/);
    expect(sampleValue(f, "slicer_system_egress_tx")).to.equal(1024);
    expect(sampleValue(f, "slicer_system_egress_rx")).to.equal(76);
  });

  it("refuses a link name that is not one (never builds a path from it)", async () => {
    for (const bad of ["..", "a/b", "", "x".repeat(16), "a b"]) {
      await readVmEgress(bad, dir).then(() => expect.fail(`accepted ${JSON.stringify(bad)}`), (err: Error) => expect(err.message).to.match(/not a link name/));
    }
    expect(await readVmEgress("pknone", dir)).to.equal(undefined);
  });

  it("counts this process's open files from /proc/self/fd", async () => {
    const before = await countOpenFiles();
    const h = await fs.open(path.join(dir, "f"), "w");
    try {
      expect(await countOpenFiles()).to.equal(before + 1);
    } finally {
      await h.close();
    }
  });

  it("keeps each daemon's series in its own registry", async () => {
    const a = new DaemonMetrics({ sysClassNet: dir });
    const b = new DaemonMetrics({ sysClassNet: dir });
    a.request("GET", 200, 0.1);
    expect(parseExposition(await b.render(sources())).get("slicer_api_requests_total")?.metrics).to.deep.equal([]);
    expect(sampleValue(parseExposition(await a.render(sources())), "slicer_api_requests_total", { method: "GET", code: "200" })).to.equal(1);
  });
});
