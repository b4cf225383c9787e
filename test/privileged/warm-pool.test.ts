/**
 * The warm pool (`paddock.warm_pool`, tenant-daemon/vm/vm-service.ts): a real daemon boots VMs
 * ahead, hands them out to plain creates (with a runtime update for a smaller size and only the
 * secrets the request names), boots a new VM for requests a warm VM cannot serve, refills, keeps
 * within the tenant's limits, replaces a warm VM whose sandbox died, and leaves nothing behind
 * on stop. Real runc sandboxes; every daemon is destroyed (purged) in `after`.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { until } from "../helpers/wait.js";

interface Node { hostname: string; cpus: number; ram_bytes: number; tags: string[]; persistent: boolean }

async function tenantContainers(tenantId: string): Promise<string[]> {
  return (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${tenantId}-`)).sort();
}

const untilWarm = (d: TestDaemon, group: string, ready: number): Promise<true> =>
  until(`${ready} warm VM(s) ready in ${group}`, async () => ((await d.warmPool(group)).ready === ready ? true : undefined));

async function execOut(d: TestDaemon, host: string, script: string): Promise<string> {
  const r = await d.post(`/vm/${host}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&buffered=true`);
  expect(r.status, r.text).to.equal(200);
  return String((r.json as { stdout: string }).stdout);
}

async function assertNothingLeft(d: TestDaemon): Promise<void> {
  expect(await tenantContainers(d.tenantId), "runc containers left").to.deep.equal([]);
  expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
  expect(await loopDevicesUnder(d.dir), "loop devices left").to.deep.equal([]);
}

/**
 * A daemon with one isolated `sbox` group of `size` and the given `paddock:` keys, started in
 * `before` and destroyed (then checked for leftovers) in `after` of the calling suite.
 * @returns a getter for the daemon (set once `before` ran).
 */
function daemonPerSuite(size: { vcpu: number; ram_mb: number; storage_size: string }, paddock: Record<string, unknown>): () => TestDaemon {
  let d: TestDaemon | undefined;
  before(async function () {
    d = await TestDaemon.create({ hostGroups: [{ name: "sbox", count: 0, ...size, storage: "image", network: { mode: "isolated", range: randomIsolatedRange() } }], paddock });
    await d.start();
  });
  after(async function () {
    await d?.destroy();
    if (d) await assertNothingLeft(d);
  });
  return () => {
    if (!d) throw new Error("the suite's daemon is not started");
    return d;
  };
}

describe("warm pool (privileged, real runc)", function () {
  this.timeout(180_000);
  const daemon = daemonPerSuite({ vcpu: 2, ram_mb: 512, storage_size: "256M" }, { warm_pool: { sbox: 1 } });
  let d: TestDaemon;

  before(async function () {
    d = daemon();
    const s = await d.post("/secrets", { name: "tok", data: Buffer.from("t0ken").toString("base64") });
    expect(s.status, s.text).to.equal(201);
  });

  it("boots the pool ahead without listing it", async () => {
    await untilWarm(d, "sbox", 1);
    expect((await d.get("/nodes")).json).to.deep.equal([]);
    expect(await tenantContainers(d.tenantId)).to.deep.equal([`pdk-${d.tenantId}-sbox-1`]);
    expect((await d.get("/vm/sbox-1/health")).status, "a warm VM is not reachable through the API").to.equal(404);
  });

  it("hands the warm VM to a plain create, which is ready at once, and refills", async () => {
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=30s", { tags: ["job=1"] });
    expect(r.status, r.text).to.equal(201);
    expect(r.json).to.include({ hostname: "sbox-1", persistent: false });
    const nodes = (await d.get("/nodes")).json as Node[];
    expect(nodes.map((n) => n.hostname)).to.deep.equal(["sbox-1"]);
    expect(nodes[0]).to.include({ cpus: 2, ram_bytes: 512 * 2 ** 20 });
    expect(nodes[0]?.tags).to.deep.equal(["job=1"]);
    expect(await execOut(d, "sbox-1", "hostname; cat /etc/hostname")).to.equal("sbox-1\nsbox-1\n");
    // Secrets: none named in the request ⇒ all of the tenant's, delivered before the 201.
    expect(await execOut(d, "sbox-1", "cat /run/slicer/secrets/tok")).to.equal("t0ken");
    await untilWarm(d, "sbox", 1);
    expect(await tenantContainers(d.tenantId)).to.deep.equal([`pdk-${d.tenantId}-sbox-1`, `pdk-${d.tenantId}-sbox-2`]);
  });

  it("applies a smaller size to a warm VM and delivers only the named secrets", async () => {
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=30s", { cpus: 1, ram_bytes: 256 * 2 ** 20, secrets: [] });
    expect(r.status, r.text).to.equal(201);
    expect(r.json).to.include({ hostname: "sbox-2" });
    const node = ((await d.get("/nodes")).json as Node[]).find((n) => n.hostname === "sbox-2");
    expect(node).to.include({ cpus: 1, ram_bytes: 256 * 2 ** 20 });
    const limits = await execOut(d, "sbox-2", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max");
    expect(limits.split("\n")[0]).to.equal(String(256 * 2 ** 20));
    expect(limits.split("\n")[1]).to.match(/^100000\b/);
    expect(await execOut(d, "sbox-2", "ls /run/slicer/secrets 2>/dev/null | wc -l")).to.equal("0\n");
    await untilWarm(d, "sbox", 1);
  });

  it("boots a new VM for a create with userdata, leaving the warm VM in the pool", async () => {
    const r = await d.post("/hostgroup/sbox/nodes?wait=userdata&timeout=60s", { userdata: "#!/bin/sh\necho ran > /root/ud.txt\n" });
    expect(r.status, r.text).to.equal(201);
    // sbox-3 is warm; the cold boot takes the next name.
    expect(r.json).to.include({ hostname: "sbox-4" });
    expect(await execOut(d, "sbox-4", "cat /root/ud.txt")).to.equal("ran\n");
    expect(await d.warmPool("sbox")).to.deep.equal({ ready: 1, booting: 0 });
    const next = await d.post("/hostgroup/sbox/nodes", {});
    expect(next.json).to.include({ hostname: "sbox-3" });
    await untilWarm(d, "sbox", 1);
  });

  it("replaces a warm VM whose sandbox died", async () => {
    const warmId = (await tenantContainers(d.tenantId)).find((id) => id.endsWith("sbox-5"));
    expect(warmId, "sbox-5 is the warm VM").to.be.a("string");
    await run("runc", ["kill", String(warmId), "KILL"]);
    await until("sbox-5 removed and sbox-6 warm", async () => {
      const ids = await tenantContainers(d.tenantId);
      return !ids.includes(`pdk-${d.tenantId}-sbox-5`) && ids.includes(`pdk-${d.tenantId}-sbox-6`) && (await d.warmPool("sbox")).ready === 1 ? true : undefined;
    });
  });

  it("removes the warm VM on stop; after a restart handed-out names are never given again", async () => {
    for (const n of (await d.get("/nodes")).json as Node[]) expect((await d.del(`/hostgroup/sbox/nodes/${n.hostname}`)).status).to.equal(200);
    await d.stop();
    expect(await tenantContainers(d.tenantId)).to.deep.equal([]);
    expect(await mountsUnder(d.dir)).to.deep.equal([]);
    await d.start();
    await untilWarm(d, "sbox", 1);
    // sbox-1..4 were handed out; sbox-6 was only warm, so the new pool may take it again.
    const r = await d.post("/hostgroup/sbox/nodes", {});
    expect(r.status, r.text).to.equal(201);
    expect((r.json as { hostname: string }).hostname).to.equal("sbox-5");
  });
});

describe("warm pool within tenant limits (privileged, real runc)", function () {
  this.timeout(120_000);
  const daemon = daemonPerSuite({ vcpu: 1, ram_mb: 256, storage_size: "128M" }, { warm_pool: { sbox: 2 }, limits: { max_vms: 2 } });
  let d: TestDaemon;
  before(() => (d = daemon()));

  it("fills only while the limits leave room, and warm VMs do not count against them", async () => {
    await untilWarm(d, "sbox", 2);
    const a = await d.post("/hostgroup/sbox/nodes", { tags: ["name=web"] });
    const b = await d.post("/hostgroup/sbox/nodes", {});
    expect([a.status, b.status]).to.deep.equal([201, 201]);
    expect([a.json, b.json].map((j) => (j as { hostname: string }).hostname)).to.deep.equal(["sbox-1", "sbox-2"]);
    const c = await d.post("/hostgroup/sbox/nodes", {});
    expect(c.status).to.equal(403);
    expect(c.json).to.include({ code: "ERR_LIMIT_EXCEEDED" });
    // At the limit, a malformed request is still a 400 naming what is wrong, not the limit.
    const bad = await d.post("/hostgroup/sbox/nodes", { ttl: "5s", tags: ["expires_at=2030-01-01T00:00:00Z"] });
    expect(bad.status).to.equal(400);
    expect(bad.json).to.include({ code: "ERR_TTL_INVALID" });
    // So are a network field the group cannot take, and a name= tag another VM holds.
    for (const [body, status, code] of [
      [{ ip: "1.2.3.4" }, 400, "ERR_VM_INVALID_REQUEST"],
      [{ network: { allow: ["not-a-cidr"] } }, 400, "ERR_VM_INVALID_REQUEST"],
      [{ tags: ["name=web"] }, 409, "ERR_VM_NAME_TAKEN"],
    ] as const) {
      const r = await d.post("/hostgroup/sbox/nodes", body);
      expect(r.status, `${JSON.stringify(body)}: ${r.text}`).to.equal(status);
      expect(r.json).to.include({ code });
    }
    // Two VMs live and max_vms 2: the pool stays empty.
    await new Promise((r) => setTimeout(r, 1500));
    expect(await d.warmPool("sbox")).to.deep.equal({ ready: 0, booting: 0 });
    expect((await d.del("/hostgroup/sbox/nodes/sbox-1")).status).to.equal(200);
    await untilWarm(d, "sbox", 1);
    expect((await tenantContainers(d.tenantId)).length).to.equal(2);
  });
});

describe("warm pool: a create right after start (privileged, real runc)", function () {
  this.timeout(120_000);
  const daemon = daemonPerSuite({ vcpu: 1, ram_mb: 256, storage_size: "128M" }, { warm_pool: { sbox: 1 } });
  let d: TestDaemon;
  before(() => (d = daemon()));

  it("is handed the warm VM still booting, so the first VM is still <group>-1", async () => {
    expect((await d.warmPool("sbox")).booting, "the warm VM is still booting").to.equal(1);
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=60s", {});
    expect(r.status, r.text).to.equal(201);
    expect(r.json).to.include({ hostname: "sbox-1" });
    expect(await execOut(d, "sbox-1", "hostname")).to.equal("sbox-1\n");
    await untilWarm(d, "sbox", 1);
    expect(await tenantContainers(d.tenantId)).to.deep.equal([`pdk-${d.tenantId}-sbox-1`, `pdk-${d.tenantId}-sbox-2`]);
  });

  it("gives a create the address a warm VM held (the warm VM makes way)", async () => {
    const state = JSON.parse(await fs.readFile(path.join(d.stateDir, "state.json"), "utf8")) as { vms: Record<string, { ipCidr: string; pooled?: boolean }> };
    const warmIp = state.vms["sbox-2"]?.ipCidr.split("/")[0];
    expect(state.vms["sbox-2"]?.pooled, "sbox-2 is the warm VM").to.equal(true);
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=60s", { ip: warmIp });
    expect(r.status, r.text).to.equal(201);
    expect(r.json).to.include({ hostname: "sbox-3", ip: `${String(warmIp)}/30` });
    await untilWarm(d, "sbox", 1);
    const ids = await tenantContainers(d.tenantId);
    expect(ids).to.not.include(`pdk-${d.tenantId}-sbox-2`);
    expect(ids).to.include(`pdk-${d.tenantId}-sbox-4`);
  });
});
