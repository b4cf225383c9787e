/**
 * Tenant budgets in the kernel and one daemon per tenant id, with real daemons and real runc
 * VMs on this host's cgroups (v1 on a hybrid host):
 * - the tenant cgroup `/paddock/<tenant>` carries pids.max, memory (+memsw) and the CFS quota
 *   from `paddock.limits`, and each VM's pids.max is clamped to the tenant's budget;
 * - a fork bomb in two VMs of one tenant stops at the tenant's pids budget (positive control:
 *   it reaches it), while the host forks and another tenant's VM answers exec;
 * - two VMs of one tenant whose memory limits sum past the tenant's budget (lowered at a
 *   restart) are OOM-killed inside the tenant's cgroup, not elsewhere;
 * - a second daemon with the same tenant id (other config, socket and state dir) refuses with
 *   ERR_TENANT_ID_IN_USE naming the first's pid and config, and a purge of it too; the first's
 *   VM keeps answering.
 * Everything made is removed in `after` hooks: VMs and daemons (TestDaemon.destroy), cgroups
 * and tenant id locks (checked gone).
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { run } from "../../shared/exec.js";
import { DAEMON_MAIN, TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { sleepMs, until } from "../helpers/wait.js";

const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
const V1 = existsSync("/sys/fs/cgroup/pids/cgroup.procs") && !existsSync("/sys/fs/cgroup/cgroup.controllers");
const ready = process.getuid?.() === 0 && existsSync(path.join(IMAGE_DIR, "debian-12")) && existsSync(DAEMON_MAIN) && V1;
const MiB = 2 ** 20;
const LOCK_DIR = "/run/paddock/tenant-locks";

const cg = (ctrl: string, rel: string, file: string): Promise<string> => fs.readFile(path.join("/sys/fs/cgroup", ctrl, rel, file), "utf8").then((s) => s.trim());
const cgNum = async (ctrl: string, rel: string, file: string): Promise<number> => Number(await cg(ctrl, rel, file));
/** `oom_kill N` of a v1 memory.oom_control. */
const oomKills = async (rel: string): Promise<number> => Number(/^oom_kill (\d+)$/m.exec(await cg("memory", rel, "memory.oom_control"))?.[1] ?? 0);

function group(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() }, ...extra };
}

/**
 * `runc exec -d`: the detached process inherits runc's stdio, so it gets /dev/null (pipes would
 * keep a waiting reader open for the process's whole life).
 * @throws Error when runc exits non-zero.
 */
async function execDetached(containerId: string, argv: string[]): Promise<void> {
  const child = spawn("runc", ["exec", "-d", containerId, ...argv], { stdio: "ignore" });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("exit", resolve);
    child.once("error", reject);
  });
  if (code !== 0) throw new Error(`runc exec -d ${containerId} exited ${code}`);
}

async function createVm(d: TestDaemon, body: Record<string, unknown> = {}): Promise<string> {
  const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=120s", body);
  expect(r.status, r.text).to.equal(201);
  return (r.json as { hostname: string }).hostname;
}

async function execEcho(d: TestDaemon, h: string, word: string): Promise<string> {
  const r = await d.post(`/vm/${h}/exec?cmd=echo&args=${word}&buffered=true`);
  expect(r.status, r.text).to.equal(200);
  return String((r.json as { stdout: unknown }).stdout);
}

/** After a daemon's destroy: its tenant cgroup (every v1 hierarchy) and its id lock are gone. */
async function expectNothingLeft(tenantId: string): Promise<void> {
  for (const ctrl of ["pids", "memory", "cpu"]) expect(existsSync(`/sys/fs/cgroup/${ctrl}/paddock/${tenantId}`), `${ctrl} cgroup of ${tenantId} left`).to.equal(false);
  expect(existsSync(path.join(LOCK_DIR, `${tenantId}.lock`)), "tenant id lock left").to.equal(false);
  expect(existsSync(path.join(LOCK_DIR, `${tenantId}.lock.mutex`)), "tenant id lock mutex left").to.equal(false);
}

(ready ? describe : describe.skip)("tenant budgets and tenant id lock (privileged, real runc, cgroup v1)", function () {
  this.timeout(180_000);
  let other: TestDaemon | undefined;
  let otherVm = "";

  before(async () => {
    // Another tenant with one VM: it must keep answering while the tenants below hit their bounds.
    other = await TestDaemon.create({ hostGroups: [group("sbox")], paddock: { limits: { max_pids: 512, max_ram_bytes: 512 * MiB } } });
    await other.start();
    otherVm = await createVm(other);
  });
  after(async () => {
    await other?.destroy();
    if (other) await expectNothingLeft(other.tenantId);
  });

  describe("pids budget", () => {
    let d: TestDaemon | undefined;
    after(async () => {
      await d?.destroy();
      if (d) await expectNothingLeft(d.tenantId);
    });

    it("the tenant cgroup holds the budget from paddock.limits and each VM's pids.max is clamped to it", async () => {
      d = await TestDaemon.create({ hostGroups: [group("sbox")], paddock: { limits: { max_pids: 256, max_ram_bytes: 1024 * MiB, max_vcpu: 2, max_vms: 4 } } });
      await d.start();
      // The default pids_limit (4096) is lowered to the budget without a warning at every start
      // (tenant-daemon/runtime/tenant-cgroup.ts); only a pids_limit the config sets is reported.
      expect(d.stderr).to.not.contain("exceeds the tenant's pids budget");
      const rel = `paddock/${d.tenantId}`;
      expect(await cg("pids", rel, "pids.max")).to.equal("256");
      expect(await cg("memory", rel, "memory.limit_in_bytes")).to.equal(String(1024 * MiB));
      if (existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")) expect(await cg("memory", rel, "memory.memsw.limit_in_bytes")).to.equal(String(1024 * MiB));
      expect(await cg("cpu", rel, "cpu.cfs_period_us")).to.equal("100000");
      expect(await cg("cpu", rel, "cpu.cfs_quota_us")).to.equal("200000");
      const h = await createVm(d);
      expect(await cg("pids", `${rel}/${h}`, "pids.max")).to.equal("256");
      expect(await cg("cpu", `${rel}/${h}`, "cpu.cfs_quota_us")).to.equal("100000");
    });

    it("a fork bomb in two VMs stops at the tenant's budget; the host forks and another tenant's VM answers", async function () {
      if (!d) this.skip();
      const rel = `paddock/${d.tenantId}`;
      const vms = ((await d.get("/nodes")).json as Array<{ hostname: string }>).map((n) => n.hostname);
      vms.push(await createVm(d));
      expect(vms).to.have.length(2);
      const budget = await cgNum("pids", rel, "pids.max");
      const before = await cgNum("pids", rel, "pids.current");
      // Each VM's own pids.max equals the budget: only the tenant cgroup can bound their sum.
      // Both bombs are attached before either forks: a process joining a cgroup (runc exec writes
      // cgroup.procs) is not checked against pids.max, only fork() and clone() are
      // (https://docs.kernel.org/admin-guide/cgroup-v1/pids.html), so attaching the second bomb
      // into a tenant the first had filled would count one past the budget without any fork doing so.
      for (const h of vms) await execDetached(`pdk-${d.tenantId}-${h}`, ["/bin/bash", "-c", "sleep 2; b(){ b|b& }; b"]);
      // Positive control: the bomb reaches the budget.
      const peak = await until("the fork bomb to reach the tenant's pids budget", async () => {
        const n = await cgNum("pids", rel, "pids.current");
        return n >= budget - 4 ? n : undefined;
      }, 60_000, 50);
      const samples: number[] = [peak];
      const hostForks: number[] = [];
      for (let i = 0; i < 20; i++) {
        samples.push(await cgNum("pids", rel, "pids.current"));
        hostForks.push(spawnSync("/bin/true").status ?? -1);
        await sleepMs(100);
      }
      const perVm = await Promise.all(vms.map((h) => cgNum("pids", `${rel}/${h}`, "pids.current")));
      // Fork failures as the kernel counts them (on v1 in the cgroup of the forking task).
      const forkFails = (await Promise.all([rel, ...vms.map((h) => `${rel}/${h}`)].map((c) => cg("pids", c, "pids.events").catch(() => ""))))
        .map((e) => Number(/^max (\d+)$/m.exec(e)?.[1] ?? 0));
      // The other tenant's VM answers exec through its daemon during the bomb.
      expect(await execEcho(other as TestDaemon, otherVm, "alive")).to.equal("alive\n");
      console.log(`      pids: before ${before}, budget ${budget}, peak ${Math.max(...samples)}, per VM ${perVm.join("+")} (each VM's own pids.max ${budget}), pids.events max (tenant, VMs) ${forkFails.join("/")}`);
      expect(Math.max(...samples), "tenant pids.current").to.be.at.most(budget);
      expect(perVm.reduce((a, b) => a + b, 0)).to.be.at.most(budget);
      expect(hostForks.every((s) => s === 0), "the host could not fork").to.equal(true);
      // The bomb goes with its VMs.
      for (const h of vms) expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.be.oneOf([200, 204]);
      expect(await cgNum("pids", rel, "pids.current")).to.be.at.most(before);
    });
  });

  describe("memory budget", () => {
    let d: TestDaemon | undefined;
    after(async () => {
      await d?.destroy();
      if (d) await expectNothingLeft(d.tenantId);
    });

    it("two VMs whose limits sum past the tenant's budget (lowered at restart) are OOM-killed inside the tenant's cgroup", async () => {
      d = await TestDaemon.create({ hostGroups: [group("sbox", { ram_mb: 224 })], paddock: { limits: { max_pids: 512, max_ram_bytes: 512 * MiB } } });
      await d.start();
      const vms = [await createVm(d, { persistent: true }), await createVm(d, { persistent: true })];
      // Lower the budget below the VMs' 2 × 224 MiB: persistent VMs outlive the daemon, and the
      // restarted daemon writes the new budget over the running VMs.
      await d.stop();
      await fs.writeFile(d.configPath, (await fs.readFile(d.configPath, "utf8")).replace(`max_ram_bytes: ${512 * MiB}`, `max_ram_bytes: ${256 * MiB}`));
      await d.start();
      const rel = `paddock/${d.tenantId}`;
      expect(await cgNum("memory", rel, "memory.limit_in_bytes")).to.equal(256 * MiB);
      for (const h of vms) expect(await cgNum("memory", `${rel}/${h}`, "memory.limit_in_bytes")).to.equal(224 * MiB);
      const otherRel = `paddock/${(other as TestDaemon).tenantId}/${otherVm}`;
      const otherKillsBefore = await oomKills(otherRel);
      const killsBefore = (await Promise.all([rel, ...vms.map((h) => `${rel}/${h}`)].map(oomKills))).reduce((a, b) => a + b, 0);
      // tail holds everything it read from a pipe without a newline until EOF: 150 MiB per VM,
      // below each VM's 224 MiB, but both together above the tenant's 256 MiB.
      const hog = "(head -c 150M /dev/zero; sleep 600) | tail > /dev/null";
      await execDetached(`pdk-${d.tenantId}-${vms[0]}`, ["/bin/sh", "-c", hog]);
      await until("the first hog to hold its memory", async () => ((await cgNum("memory", `${rel}/${vms[0]}`, "memory.usage_in_bytes")) > 140 * MiB ? true : undefined), 60_000);
      const second = await run("runc", ["exec", `pdk-${d.tenantId}-${vms[1]}`, "/bin/sh", "-c", "(head -c 150M /dev/zero; sleep 3) | tail > /dev/null; echo rc=$?"], { allowFailure: true, timeoutMs: 90_000 });
      const kills = (await Promise.all([rel, ...vms.map((h) => `${rel}/${h}`)].map(oomKills))).reduce((a, b) => a + b, 0) - killsBefore;
      // Peak usage per cgroup (this kernel keeps memory.failcnt at 0, so peaks tell which limit was reached).
      const maxUsage = await cgNum("memory", rel, "memory.max_usage_in_bytes");
      const vmMaxUsage = await Promise.all(vms.map((h) => cgNum("memory", `${rel}/${h}`, "memory.max_usage_in_bytes")));
      console.log(`      memory: tenant peak ${(maxUsage / MiB).toFixed(1)} MiB of 256, VM peaks ${vmMaxUsage.map((u) => (u / MiB).toFixed(1)).join("/")} MiB of 224 each, OOM kills in the tenant ${kills}, second hog: exit ${second.exitCode} ${second.stdout.trim()}`);
      // Positive control: the tenant's limit was reached, neither VM's own.
      expect(maxUsage, "tenant peak").to.be.within(255 * MiB, 256 * MiB);
      for (const u of vmMaxUsage) expect(u, "VM peak").to.be.below(224 * MiB - MiB);
      expect(kills, "OOM kills inside the tenant's cgroup").to.be.at.least(1);
      expect(await oomKills(otherRel), "OOM kills in the other tenant's VM").to.equal(otherKillsBefore);
      expect(await execEcho(other as TestDaemon, otherVm, "alive")).to.equal("alive\n");
    });
  });

  describe("one daemon per tenant id", () => {
    let first: TestDaemon | undefined;
    let second: TestDaemon | undefined;
    after(async () => {
      await second?.stop();
      await first?.destroy();
      await second?.destroy();
      if (first) await expectNothingLeft(first.tenantId);
    });

    it("a second daemon with the same id (other config, socket, state dir) refuses naming the first; its purge too; the first's VM keeps answering", async () => {
      first = await TestDaemon.create({ hostGroups: [group("sbox")], paddock: { limits: { max_pids: 256 } } });
      await first.start();
      const h = await createVm(first);
      const owner = JSON.parse(await fs.readFile(path.join(LOCK_DIR, `${first.tenantId}.lock`), "utf8")) as { pid: number; config: string };
      expect(owner).to.include({ pid: first.child?.pid, config: first.configPath });

      second = await TestDaemon.create({ tenantId: first.tenantId, hostGroups: [group("sbox")] });
      const err = await second.start(30_000).then(() => undefined, (e: unknown) => e as Error);
      expect(err?.message).to.match(/daemon exited \(4\) during start/);
      expect(second.stderr).to.contain("ERR_TENANT_ID_IN_USE").and.contain(`pid ${first.child?.pid}`).and.contain(`config ${first.configPath}`);
      expect(existsSync(second.runDir), "run dir of the refused daemon").to.equal(false);
      expect(existsSync(path.join(second.stateDir, "state.json")), "state.json of the refused daemon").to.equal(false);

      const purge = await run(process.execPath, [DAEMON_MAIN, "purge", second.configPath], { allowFailure: true, timeoutMs: 60_000 });
      expect(purge.exitCode).to.equal(4);
      expect(purge.stderr).to.contain("ERR_TENANT_ID_IN_USE").and.contain(`pid ${first.child?.pid}`);
      // The CLI's one error line shape, as every other command's.
      expect(purge.stderr).to.match(/^paddock: error: .* \(ERR_TENANT_ID_IN_USE\)$/m);

      // The first daemon and its VM are untouched.
      expect(first.child?.exitCode).to.equal(null);
      expect(await execEcho(first, h, "still")).to.equal("still\n");
      expect(JSON.parse((await run("runc", ["state", `pdk-${first.tenantId}-${h}`])).stdout)).to.include({ status: "running" });
      expect(await cg("pids", `paddock/${first.tenantId}`, "pids.max")).to.equal("256");

      // Positive control: once the first is gone, the second starts with the same id.
      await first.destroy();
      await second.start();
      expect((await second.get("/healthz")).status).to.equal(200);
      expect(JSON.parse(await fs.readFile(path.join(LOCK_DIR, `${first.tenantId}.lock`), "utf8"))).to.include({ pid: second.child?.pid, config: second.configPath });
    });
  });
});
