/**
 * `/metrics` of a REAL daemon with real runc VMs: a VM that sends 2 MB to a test host (a netns
 * made here, 198.18.0.0/15) shows at least those bytes in its egress counters
 * (`paddock_vm_egress_tx_bytes`, from its host-side veth) and in the tenant's
 * `slicer_system_egress_tx`; an idle VM of the same daemon (the control) does not. The scrape
 * parses strictly, with Slicer's other families present. Everything is removed in `after`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { parseExposition, sampleValue, series } from "../helpers/prometheus.js";
import { ip4, leftovers, makeTestHost, randomBlock, type TestHost } from "./network-fixtures.js";

const PORT = 18095;
const SENT = 2_000_000;
/** Reads a connection until `want` bytes arrived, then answers `got <n>`: the bytes crossed the VM's link. */
const SINK = "const net=require('net');const [h,p,want]=process.argv.slice(1);net.createServer(c=>{let n=0;c.on('data',d=>{n+=d.length;if(n>=Number(want))c.end('got '+n+'\\n')})}).listen(Number(p),h,()=>console.log('ready'));";

describe("daemon /metrics egress with real runc VMs (privileged)", function () {
  this.timeout(300_000);
  let d: TestDaemon | undefined;
  let th: TestHost | undefined;
  let sink: ChildProcess | undefined;

  before(async function () {
    skipUnlessRoot(this);
    th = await makeTestHost();
    const proc = spawn("ip", ["netns", "exec", th.ns, process.execPath, "-e", SINK, th.ip, String(PORT), String(SENT)], { stdio: ["ignore", "pipe", "pipe"] });
    sink = proc;
    await new Promise<void>((resolve, reject) => {
      proc.stdout?.on("data", (b: Buffer) => String(b).includes("ready") && resolve());
      proc.once("exit", (code) => reject(new Error(`sink exited ${code}`)));
    });
    d = await TestDaemon.create({
      hostGroups: [{ name: "iso", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } }],
    });
    await d.start();
    for (let i = 0; i < 2; i++) {
      const r = await d.post("/hostgroup/iso/nodes?wait=agent&timeout=120s", {});
      expect(r.status, r.text).to.equal(201);
    }
  });

  after(async function () {
    if (sink && sink.exitCode === null && sink.signalCode === null) {
      const exited = new Promise((resolve) => sink?.once("exit", resolve));
      sink.kill("SIGTERM");
      await exited;
    }
    const tenant = d?.tenantId;
    await d?.destroy();
    await th?.remove().catch(() => undefined);
    if (d !== undefined && tenant !== undefined) {
      expect(await leftovers(tenant), "network leftovers").to.deep.equal({ links: [], netns: [], table: false });
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${tenant}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
    }
  });

  async function scrape(): Promise<ReturnType<typeof parseExposition>> {
    const r = await (d as TestDaemon).get("/metrics");
    expect(r.status, r.text).to.equal(200);
    return parseExposition(r.text);
  }

  it("a VM's egress counters grow by at least the bytes it sent; an idle VM's do not", async () => {
    const host = th as TestHost;
    const before = await scrape();
    const tx0 = sampleValue(before, "paddock_vm_egress_tx_bytes", { hostname: "iso-1", host_group: "iso" });
    const idle0 = sampleValue(before, "paddock_vm_egress_tx_bytes", { hostname: "iso-2" });
    const total0 = sampleValue(before, "slicer_system_egress_tx");

    const send = new URLSearchParams({ cmd: "/usr/bin/timeout", buffered: "true" });
    for (const arg of ["30", "/bin/bash", "-c", `exec 3<>"/dev/tcp/$0/$1" && head -c ${SENT} /dev/zero >&3 && head -n1 <&3`, host.ip, String(PORT)]) send.append("args", arg);
    const r = await (d as TestDaemon).post(`/vm/iso-1/exec?${send.toString()}`);
    expect(r.status, r.text).to.equal(200);
    expect((r.json as { stdout?: string }).stdout?.trim(), r.text).to.equal(`got ${SENT}`);

    const after = await scrape();
    const tx1 = sampleValue(after, "paddock_vm_egress_tx_bytes", { hostname: "iso-1" });
    const idle1 = sampleValue(after, "paddock_vm_egress_tx_bytes", { hostname: "iso-2" });
    expect(tx1 - tx0, "bytes the sender VM sent, per its veth").to.be.at.least(SENT);
    expect(idle1 - idle0, "the idle VM (control) sent next to nothing").to.be.below(SENT / 10);
    expect(sampleValue(after, "slicer_system_egress_tx") - total0).to.be.at.least(SENT);
    expect(sampleValue(after, "paddock_vm_egress_rx_bytes", { hostname: "iso-1" }), "the sender received ACKs").to.be.greaterThan(0);
  });

  it("serves Slicer's families from a real daemon: GPUs 0, open files and connections, the duration histogram", async () => {
    const f = await scrape();
    expect(sampleValue(f, "slicer_vm_gpu_count", { host_group: "iso" })).to.equal(0);
    expect(sampleValue(f, "slicer_vm_running", { host_group: "iso", api: "true", state: "Running" })).to.equal(2);
    expect(sampleValue(f, "slicer_vm_launch_total", { host_group: "iso", code: "ok" })).to.equal(2);
    expect(sampleValue(f, "slicer_system_open_files")).to.be.greaterThan(3);
    expect(sampleValue(f, "slicer_system_open_connections"), "at least the scrape's own connection").to.be.at.least(1);
    const h = series(f, "slicer_api_request_duration_seconds", { method: "POST", code: "201" });
    expect(Number(h.count)).to.equal(2);
    expect(f.get("slicer_api_request_duration_seconds")?.type).to.equal("HISTOGRAM");
  });
});
