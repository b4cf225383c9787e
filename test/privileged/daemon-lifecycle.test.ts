/**
 * A real tenant daemon on a temp-dir Unix socket running real runc sandboxes. Each promise of
 * the host groups and the VM lifecycle (create, list, pause, shutdown, delete, a daemon restart
 * or kill -9) is its own test.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { pidAlive } from "../../shared/proc.js";
import { guestCgroupFiles, parseGuestCgroupFiles, readCgroupLimits } from "../helpers/cgroup.js";
import { TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { until } from "../helpers/wait.js";
import { listen, makeTestHost, probe } from "./network-fixtures.js";

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

interface Node { hostname: string; hostgroup: string; ip: string; status: string; tags: string[]; persistent: boolean; created_at: string; cpus: number; ram_bytes: number }

/** TCP connect from inside sandbox `id` (runc exec, no daemon needed): `ok`, `timeout` (dropped) or `error …`. */
async function probeFromSandbox(id: string, host: string, port: number): Promise<string> {
  const r = await run("runc", ["exec", id, "/usr/bin/timeout", "1.5", "/bin/bash", "-c", 'exec 3<>"/dev/tcp/$0/$1" && head -n1 <&3', host, String(port)], { allowFailure: true });
  if (r.exitCode === 0 && r.stdout.trim() === "ok") return "ok";
  if (r.exitCode === 124) return "timeout";
  return `error ${r.exitCode}: ${r.stderr}`;
}

async function runcState(id: string): Promise<string> {
  const r = await run("runc", ["state", id], { allowFailure: true });
  if (r.exitCode !== 0) return "absent";
  return (JSON.parse(r.stdout) as { status: string }).status;
}

describe("tenant daemon: host groups and VM lifecycle (privileged, real runc)", function () {
  let d: TestDaemon;

  const sboxRange = randomIsolatedRange();
  let ctrlRange = randomIsolatedRange();
  while (ctrlRange === sboxRange) ctrlRange = randomIsolatedRange();

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [
        { name: "sbox", count: 0, vcpu: 2, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: sboxRange } },
        { name: "ctrl", count: 1, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: ctrlRange } },
      ],
    });
    await d.start();
  });

  after(async function () {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
    expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
    expect(await loopDevicesUnder(d.dir), "loop devices left").to.deep.equal([]);
  });

  const cid = (h: string) => `pdk-${d.tenantId}-${h}`;
  const disk = (h: string) => path.join(d.stateDir, "disks", `${h}.img`);

  it("GET /healthz answers OK (text/plain) and /info uses Go arch names", async () => {
    const h = await d.get("/healthz");
    expect(h.status).to.equal(200);
    expect(h.text).to.equal("OK");
    const info = await d.get("/info");
    expect(info.status).to.equal(200);
    expect(info.json).to.have.keys(["version", "git_commit", "platform", "arch"]);
    expect((info.json as { arch: string }).arch).to.match(/^(amd64|arm64)$/);
    expect((info.json as { platform: string }).platform).to.equal("linux");
  });

  it("GET /hostgroup lists the configured groups with sizes", async () => {
    const r = await d.get("/hostgroup");
    expect(r.status).to.equal(200);
    expect(r.json).to.deep.include({ name: "sbox", count: 0, ram_bytes: 512 * 2 ** 20, cpus: 2, arch: "x86_64", gpu_count: 0 });
  });

  it("count: N VMs exist at start and are protected from DELETE (403)", async () => {
    const r = await d.get("/hostgroup/ctrl/nodes");
    expect((r.json as Node[]).map((n) => n.hostname)).to.deep.equal(["ctrl-1"]);
    expect((r.json as Node[])[0]).to.include({ status: "Running", persistent: true });
    expect(await runcState(cid("ctrl-1"))).to.equal("running");
    const del = await d.del("/hostgroup/ctrl/nodes/ctrl-1");
    expect(del.status).to.equal(403);
    expect(del.json).to.include({ code: "ERR_VM_PROTECTED" });
  });

  it("POST /hostgroup/sbox/nodes creates sbox-1 (201) with an ip at once, RFC3339 created_at, ephemeral by default", async () => {
    const r = await d.post("/hostgroup/sbox/nodes", { tags: ["user=alice", "job=build-4821"] });
    expect(r.status, r.text).to.equal(201);
    const body = r.json as Node & { arch: string };
    expect(body.hostname).to.equal("sbox-1");
    expect(body.hostgroup).to.equal("sbox");
    const third = Number(sboxRange.split(".")[2]);
    expect(body.ip).to.match(/^169\.254\.\d+\.\d+\/\d+$/);
    expect(Number(body.ip.split(".")[2]) - third).to.be.within(0, 3);
    expect(body.created_at).to.match(RFC3339);
    expect(body.arch).to.equal("amd64");
    expect(body.persistent).to.equal(false);
    expect(await runcState(cid("sbox-1"))).to.equal("running");
  });

  it("the sandbox has its hostname, its cgroup memory and CPU limits (host and guest view) and its own disk", async () => {
    // The guest agent writes /etc/hostname at boot; sbox-1 was created without wait=agent.
    await until("sbox-1 agent", async () => ((await d.get("/vm/sbox-1/health")).status === 200 ? true : undefined), 60_000);
    const hn = await run("runc", ["exec", cid("sbox-1"), "/bin/cat", "/etc/hostname", "/proc/sys/kernel/hostname"]);
    expect(hn.stdout).to.equal("sbox-1\nsbox-1\n");
    // The VM's cgroup (v1 controllers or v2 unified, whichever the host has; a missing file
    // fails): 2 vCPUs as a CFS quota, 512 MiB, and the guest sees the same from inside.
    const limits = await readCgroupLimits(`/paddock/${d.tenantId}/sbox-1`);
    expect(limits).to.include({ memoryBytes: 512 * 2 ** 20, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000 });
    const guest = await run("runc", ["exec", cid("sbox-1"), "/bin/cat", ...guestCgroupFiles(limits.version)]);
    expect(parseGuestCgroupFiles(limits.version, guest.stdout)).to.include({ memoryBytes: 512 * 2 ** 20, cpuQuotaUs: 200_000 });
    const st = await fs.stat(disk("sbox-1"));
    expect(st.size).to.equal(256 * 2 ** 20);
  });

  it("omitted size gets the defaults, smaller is honoured, larger is a 400", async () => {
    const small = await d.post("/hostgroup/sbox/nodes", { cpus: 1, ram_bytes: 256 * 2 ** 20, tags: ["user=bob"] });
    expect(small.status, small.text).to.equal(201);
    const list = (await d.get("/nodes")).json as Node[];
    expect(list.find((n) => n.hostname === "sbox-1")).to.include({ cpus: 2, ram_bytes: 512 * 2 ** 20 });
    expect(list.find((n) => n.hostname === "sbox-2")).to.include({ cpus: 1, ram_bytes: 256 * 2 ** 20 });
    const big = await d.post("/hostgroup/sbox/nodes", { cpus: 8 });
    expect(big.status).to.equal(400);
    expect(big.json).to.include({ code: "ERR_VM_SIZE_EXCEEDED" });
    const bigRam = await d.post("/hostgroup/sbox/nodes", { ram_bytes: 2 ** 40 });
    expect(bigRam.status).to.equal(400);
  });

  it("lists by exact tag and by prefix, on /nodes and per host group, including the Go encoded-? form", async () => {
    const names = (r: { json: unknown }) => (r.json as Node[]).map((n) => n.hostname).sort();
    expect(names(await d.get("/nodes?tag=user%3Dalice"))).to.deep.equal(["sbox-1"]);
    expect(names(await d.get("/nodes?tag_prefix=user%3D"))).to.deep.equal(["sbox-1", "sbox-2"]);
    expect(names(await d.get("/hostgroup/sbox/nodes?tag_prefix=job="))).to.deep.equal(["sbox-1"]);
    expect(names(await d.get("/hostgroup/sbox/nodes%3Ftag=user%253Dbob"))).to.deep.equal(["sbox-2"]);
    expect((await d.get("/nodes?tag=a&tag_prefix=b")).status).to.equal(400);
    const all = await d.get("/nodes");
    expect((all.json as Node[]).every((n) => typeof n.ip === "string" && !n.ip.includes("/"))).to.equal(true);
  });

  it("unknown host group and VM are 404, trailing slash is 404 (no redirect), wrong method 405", async () => {
    expect((await d.get("/hostgroup/nope/nodes")).status).to.equal(404);
    expect((await d.post("/hostgroup/nope/nodes", {})).status).to.equal(404);
    expect((await d.get("/vm/sbox-99")).status).to.equal(404);
    expect((await d.del("/hostgroup/sbox/nodes/sbox-99")).status).to.equal(404);
    expect((await d.del("/hostgroup/ctrl/nodes/sbox-1")).status, "VM of another group").to.equal(404);
    expect((await d.get("/nodes/")).status).to.equal(404);
    expect((await d.del("/nodes")).status).to.equal(405);
  });

  it("malformed JSON and wrong types are clear 400s with codes, and leave nothing half-created", async () => {
    const before = ((await d.get("/nodes")).json as Node[]).length;
    const bad = await d.post("/hostgroup/sbox/nodes", "{not json", { "content-type": "application/json" });
    expect(bad.status).to.equal(400);
    expect(bad.json).to.include({ code: "ERR_BODY_INVALID_JSON" });
    const wrong = await d.post("/hostgroup/sbox/nodes", { tags: "x" });
    expect(wrong.status).to.equal(400);
    expect((wrong.json as { code: string }).code).to.equal("ERR_TAGS_INVALID");
    expect(((await d.get("/nodes")).json as Node[]).length).to.equal(before);
  });

  it("GET /vm/{h} describes and /vm/{h}/tags patches atomically", async () => {
    const desc = await d.get("/vm/sbox-1");
    expect(desc.status).to.equal(200);
    expect(desc.json).to.include({ hostname: "sbox-1", hostgroup: "sbox", storage: "image", image: "debian-12" });
    expect((await d.get("/vm/sbox-1/tags")).json).to.deep.equal({ hostname: "sbox-1", tags: ["user=alice", "job=build-4821"] });
    const p = await d.patch("/vm/sbox-1/tags", { add: ["role=builder"], remove: ["job=build-4821"] });
    expect(p.status).to.equal(200);
    expect(p.json).to.deep.equal({ hostname: "sbox-1", tags: ["user=alice", "role=builder"] });
    expect((await d.patch("/vm/sbox-1/tags", { replace: ["a"], add: ["b"] })).status).to.equal(400);
  });

  it("pause freezes the sandbox (Paused; agent endpoints 409 ERR_VM_PAUSED) and resume thaws it (Running)", async () => {
    expect((await d.post("/vm/sbox-1/pause")).status).to.equal(200);
    expect(((await d.get("/vm/sbox-1")).json as Node).status).to.equal("Paused");
    expect(await runcState(cid("sbox-1"))).to.equal("paused");
    const exec = await d.post("/vm/sbox-1/exec?cmd=true&buffered=true");
    expect({ status: exec.status, code: (exec.json as { code?: string } | undefined)?.code }).to.deep.equal({ status: 409, code: "ERR_VM_PAUSED" });
    expect((await d.post("/vm/sbox-1/resume")).status).to.equal(200);
    expect(((await d.get("/vm/sbox-1")).json as Node).status).to.equal("Running");
    expect(await runcState(cid("sbox-1"))).to.equal("running");
  });

  it("suspend and restore answer 501 ERR_VM_UNSUPPORTED naming gVisor (runc takes no memory snapshot); the VM keeps running", async () => {
    for (const verb of ["suspend", "restore?wait=agent"]) {
      const r = await d.post(`/vm/sbox-1/${verb}`);
      expect({ status: r.status, code: (r.json as { code?: string } | undefined)?.code }, verb).to.deep.equal({ status: 501, code: "ERR_VM_UNSUPPORTED" });
      expect((r.json as { error?: string }).error, verb).to.match(/hypervisor: gvisor/);
    }
    expect((await d.post("/vm/sbox-99/suspend")).status, "unknown VM").to.equal(404);
    expect(await runcState(cid("sbox-1"))).to.equal("running");
  });

  it("shutdown action=reboot&restart=true restarts the sandbox in place: new init pid, same name, address and disk", async () => {
    const before = (await d.get("/vm/sbox-1")).json as Node;
    const pid = async (): Promise<number> => (JSON.parse((await run("runc", ["state", cid("sbox-1")])).stdout) as { pid: number }).pid;
    const oldPid = await pid();
    await run("runc", ["exec", cid("sbox-1"), "/bin/sh", "-c", "echo survives-reboot > /root/reboot-marker"]);
    const r = await d.post("/vm/sbox-1/shutdown?action=reboot&restart=true", {});
    expect(r.status, r.text).to.equal(200);
    const after = (await d.get("/vm/sbox-1")).json as Node;
    expect(after).to.include({ hostname: "sbox-1", status: "Running", ip: before.ip, created_at: before.created_at });
    expect(await runcState(cid("sbox-1"))).to.equal("running");
    expect(await pid(), "a new sandbox init").to.not.equal(oldPid);
    expect((await run("runc", ["exec", cid("sbox-1"), "/bin/cat", "/root/reboot-marker"])).stdout).to.equal("survives-reboot\n");
  });

  it("a guest that fills its disk gets ENOSPC inside the VM; the host disk is untouched", async () => {
    const hostFreeBefore = Number((await run("df", ["--output=avail", "-B1", d.dir])).stdout.split("\n")[1]);
    const r = await run("runc", ["exec", cid("sbox-2"), "/bin/dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=400"], { allowFailure: true, timeoutMs: 60_000 });
    expect(r.exitCode).to.not.equal(0);
    expect(r.stderr).to.match(/No space left on device/);
    const hostFreeAfter = Number((await run("df", ["--output=avail", "-B1", d.dir])).stdout.split("\n")[1]);
    expect((await fs.stat(disk("sbox-2"))).size).to.equal(256 * 2 ** 20);
    expect(hostFreeBefore - hostFreeAfter).to.be.lessThan(300 * 2 ** 20);
  });

  it("DELETE stops the VM and removes its disk (200 JSON, disk_removed as a string)", async () => {
    const r = await d.del("/hostgroup/sbox/nodes/sbox-2");
    expect(r.status).to.equal(200);
    expect(r.json).to.deep.equal({ message: "VM deleted successfully", disk_removed: "true", error: "" });
    expect(await runcState(cid("sbox-2"))).to.equal("absent");
    await fs.access(disk("sbox-2")).then(() => expect.fail("disk still there"), () => undefined);
    expect((await d.get("/vm/sbox-2")).status).to.equal(404);
  });

  // A paused VM's processes are frozen (cgroup v1 freezer): the delete kills them while frozen,
  // then thaws them (tenant-daemon/runtime/oci-lifecycle.ts killFrozen); they die at the thaw.
  it("DELETE of a paused VM removes it whole: every process gone, no cgroup, no disk", async () => {
    const r = await d.post("/hostgroup/sbox/nodes", {});
    const h = (r.json as Node).hostname;
    expect((await d.post(`/vm/${h}/pause`)).status).to.equal(200);
    const freezer = path.join("/sys/fs/cgroup/freezer/paddock", d.tenantId, h);
    const pids = (await fs.readFile(path.join(freezer, "cgroup.procs"), "utf8")).split("\n").filter(Boolean).map(Number);
    expect(pids.length, "the paused VM's processes").to.be.greaterThan(0);
    const del = await d.del(`/hostgroup/sbox/nodes/${h}`);
    expect(del.status, del.text).to.equal(200);
    expect(await runcState(cid(h))).to.equal("absent");
    await until("every process of the paused VM gone", async () => (pids.every((p) => !pidAlive(p)) ? true : undefined), 10_000);
    await fs.access(freezer).then(() => expect.fail("its freezer cgroup is still there"), () => undefined);
    await fs.access(disk(h)).then(() => expect.fail("disk still there"), () => undefined);
  });

  it("a guest that exits on its own is reaped: ephemeral record and disk removed", async () => {
    const r = await d.post("/hostgroup/sbox/nodes", {});
    const h = (r.json as Node).hostname;
    await run("runc", ["kill", cid(h), "KILL"]);
    await until("reaper", async () => ((await d.get(`/vm/${h}`)).status === 404 && !(await fs.access(disk(h)).then(() => true, () => false)) ? true : undefined));
    expect(await runcState(cid(h))).to.equal("absent");
  });

  let persistentName = "";
  it("a persistent VM survives shutdown (Stopped, disk kept) and comes back with relaunch", async () => {
    const r = await d.post("/hostgroup/sbox/nodes", { persistent: true, tags: ["purpose=dev"] });
    expect(r.status).to.equal(201);
    persistentName = (r.json as Node).hostname;
    await run("runc", ["exec", cid(persistentName), "/bin/sh", "-c", "echo kept > /root/marker"]);
    expect((await d.post(`/vm/${persistentName}/shutdown`, {})).status).to.equal(200);
    expect(((await d.get(`/vm/${persistentName}`)).json as Node).status).to.equal("Stopped");
    expect(await runcState(cid(persistentName))).to.equal("absent");
    await fs.access(disk(persistentName));
    expect((await d.post(`/vm/${persistentName}/relaunch`)).status).to.equal(200);
    expect(((await d.get(`/vm/${persistentName}`)).json as Node).status).to.equal("Running");
    const marker = await run("runc", ["exec", cid(persistentName), "/bin/cat", "/root/marker"]);
    expect(marker.stdout).to.equal("kept\n");
    expect((await d.post(`/vm/${persistentName}/relaunch`)).status, "relaunch of a running VM").to.equal(409);
  });

  it("shutdown of an ephemeral VM reaps it, and so does action=reboot without restart=true (the Go SDK's default)", async () => {
    for (const action of ["shutdown", "reboot"]) {
      const r = await d.post("/hostgroup/sbox/nodes", {});
      const h = (r.json as Node).hostname;
      expect((await d.post(`/vm/${h}/shutdown?action=${action}`)).status, action).to.equal(200);
      expect((await d.get(`/vm/${h}`)).status, action).to.equal(404);
      expect(await runcState(cid(h)), action).to.equal("absent");
      await fs.access(disk(h)).then(() => expect.fail("disk still there"), () => undefined);
    }
  });

  it("20 concurrent creates get 20 distinct names and addresses", async () => {
    const rs = await Promise.all(Array.from({ length: 20 }, () => d.post("/hostgroup/sbox/nodes", { tags: ["batch=1"] })));
    expect(rs.map((r) => r.status)).to.deep.equal(Array(20).fill(201));
    const names = rs.map((r) => (r.json as Node).hostname);
    const ips = rs.map((r) => (r.json as Node).ip);
    expect(new Set(names).size).to.equal(20);
    expect(new Set(ips).size).to.equal(20);
    await Promise.all(names.map((h) => d.del(`/hostgroup/sbox/nodes/${h}`)));
    expect(((await d.get("/nodes?tag=batch%3D1")).json as Node[]).length).to.equal(0);
  });

  it("after a daemon restart: ephemeral VMs are gone, persistent and count VMs are re-attached (their link and firewall in force meanwhile), names are not reused", async () => {
    const ctrlPid = (await run("runc", ["state", cid("ctrl-1")]).then((r) => JSON.parse(r.stdout) as { pid: number })).pid;
    expect(await d.stop()).to.equal(0);
    expect(await runcState(cid("sbox-1")), "ephemeral VM stopped with the daemon").to.equal("absent");
    expect(await runcState(cid(persistentName)), "persistent VM outlives the daemon").to.equal("running");
    // With no daemon running, the persistent VM's link and the tenant's firewall are in force:
    // it reaches a test host (the positive control), and a host address stays dropped.
    const th = await makeTestHost();
    try {
      const l1 = await listen(th.ns, th.ip, 18071);
      const l2 = await listen(undefined, th.hostSideIp, 18072);
      try {
        expect(await probeFromSandbox(cid(persistentName), th.ip, 18071), "VM → test host").to.equal("ok");
        expect(await probeFromSandbox(cid(persistentName), th.hostSideIp, 18072), "VM → a host address").to.equal("timeout");
        expect(await probe(th.ns, th.hostSideIp, 18072), "test host → that host address (control)").to.equal("ok");
      } finally {
        await l1.stop();
        await l2.stop();
      }
    } finally {
      await th.remove();
    }
    await d.start();
    const list = (await d.get("/nodes")).json as Node[];
    expect(list.map((n) => n.hostname).sort()).to.deep.equal(["ctrl-1", persistentName].sort());
    expect(list.every((n) => n.status === "Running")).to.equal(true);
    expect((await run("runc", ["state", cid("ctrl-1")]).then((r) => JSON.parse(r.stdout) as { pid: number })).pid, "ctrl-1 re-attached, not restarted").to.equal(ctrlPid);
    await fs.access(disk("sbox-1")).then(() => expect.fail("ephemeral disk still there"), () => undefined);
    const next = await d.post("/hostgroup/sbox/nodes", {});
    const n = Number((next.json as Node).hostname.split("-")[1]);
    expect(n).to.be.greaterThan(Number(persistentName.split("-")[1]));
    expect(n).to.be.greaterThan(20);
  });

  it("after kill -9 of the daemon: persistent VMs keep running and are re-attached; ephemeral ones are removed; a count: VM whose sandbox is gone is re-created", async () => {
    const eph = ((await d.get("/nodes")).json as Node[]).find((x) => !x.persistent)?.hostname;
    expect(eph).to.be.a("string");
    await d.kill9();
    expect(await runcState(cid(persistentName))).to.equal("running");
    // ctrl-1 (count: 1) loses its sandbox while no daemon runs.
    await run("runc", ["delete", "--force", cid("ctrl-1")]);
    expect(await runcState(cid("ctrl-1"))).to.equal("absent");
    await d.start();
    const ctrl = ((await d.get("/hostgroup/ctrl/nodes")).json as Node[]).map((x) => `${x.hostname}:${x.status}`);
    expect(ctrl, "ctrl-1 re-created at start").to.deep.equal(["ctrl-1:Running"]);
    expect(await runcState(cid("ctrl-1"))).to.equal("running");
    const hn = await run("runc", ["exec", cid("ctrl-1"), "/bin/cat", "/proc/sys/kernel/hostname"]);
    expect(hn.stdout).to.equal("ctrl-1\n");
    const list = (await d.get("/nodes")).json as Node[];
    expect(list.map((x) => x.hostname)).to.not.include(eph);
    expect(await runcState(cid(eph as string))).to.equal("absent");
    expect(await mountsUnder(path.join(d.runDir, "bundles", eph as string))).to.deep.equal([]);
    expect(list.find((x) => x.hostname === persistentName)?.status).to.equal("Running");
  });

  it("a second daemon on the same state refuses to start with a clear error", async () => {
    const other = await TestDaemon.create({ tenantId: d.tenantId });
    try {
      await fs.writeFile(other.configPath, (await fs.readFile(d.configPath, "utf8")).replace(d.socketPath, other.socketPath));
      let err: Error | undefined;
      try {
        await other.start(20_000);
      } catch (e) {
        err = e as Error;
      }
      // The host-wide tenant id lock (shared/tenant-id-lock.ts) or the state lock refuses it.
      expect(err?.message).to.match(/ERR_TENANT_ID_IN_USE|ERR_STATE_LOCKED/);
    } finally {
      await other.stop();
      await fs.rm(other.dir, { recursive: true, force: true });
    }
  });

  it("wait=agent with a timeout that cannot be met answers 408 ERR_VM_WAIT_TIMEOUT and deletes the VM", async () => {
    const before = ((await d.get("/nodes")).json as Node[]).length;
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=1ms", {});
    expect({ status: r.status, code: (r.json as { code?: string } | undefined)?.code }).to.deep.equal({ status: 408, code: "ERR_VM_WAIT_TIMEOUT" });
    expect(((await d.get("/nodes")).json as Node[]).length).to.equal(before);
    expect((await d.post("/hostgroup/sbox/nodes?wait=ready", {})).status).to.equal(400);
  });

  it("wait=agent returns once the guest agent answers", async () => {
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=60s", {});
    expect(r.status, r.text).to.equal(201);
    const h = (r.json as Node).hostname;
    const health = await d.get(`/vm/${h}/health`);
    expect(health.status, health.text).to.equal(200);
    expect((health.json as { agent_uptime: number }).agent_uptime).to.be.greaterThan(0);
  });

  it("GET /metrics exposes Slicer metric names", async () => {
    const r = await d.get("/metrics");
    expect(r.status).to.equal(200);
    expect(r.text).to.include("slicer_vm_launch_total{host_group=\"sbox\",code=\"ok\"}");
    expect(r.text).to.include("slicer_vm_running{host_group=\"sbox\"");
    expect(r.text).to.include("slicer_api_requests_total");
  });

  it("SIGTERM stops the daemon cleanly (exit 0, socket removed)", async () => {
    expect(await d.stop()).to.equal(0);
    await fs.access(d.socketPath).then(() => expect.fail("socket left"), () => undefined);
  });
});
