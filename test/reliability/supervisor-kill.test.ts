/**
 * Reliability: kill -9 of the supervisor during a tenant create and a tenant delete.
 * After its restart the tenant is fully created (active, daemon answering, VMs running) or
 * fully absent (no registry entry, no dirs, nothing on the host); other tenants' daemons
 * are adopted (same pid) and their VMs untouched (same sandbox pid). Plus promise 3's
 * "a second supervisor on the same state refuses with a clear error".
 */
import { promises as fs, existsSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { CLI_MAIN, TestSupervisor, daemonPidsOf, realDaemonConfig } from "../helpers/supervisor.js";
import { checkDaemonState, checkRegistry, leaksOf, rid, until } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

describeWhenReady(missingPrerequisites(), "reliability: kill -9 of the supervisor mid-operation", function () {
  this.timeout(240_000);
  let sup: TestSupervisor;
  const ids: string[] = [];
  const keeper = rid("k");
  let keeperToken = "";
  let keeperDaemonPid = 0;
  let keeperVmPid = 0;

  const sandboxPid = async (tenant: string, h: string): Promise<number> => {
    const r = await execa("runc", ["state", `pdk-${tenant}-${h}`], { reject: false });
    return r.exitCode === 0 ? (JSON.parse(r.stdout) as { pid: number }).pid : 0;
  };
  const registry = async (): Promise<ReturnType<typeof checkRegistry>> => checkRegistry(await fs.readFile(sup.registryFile(), "utf8"));

  /** The keeper tenant was adopted, not restarted, and its persistent VM kept running. */
  const keeperUntouched = async (): Promise<void> => {
    const t = (await sup.adminReq("GET", `/tenants/${keeper}`)).json as { daemon: { pid: number; restarts: number } };
    expect(t.daemon.pid, "keeper daemon adopted").to.equal(keeperDaemonPid);
    expect(await sandboxPid(keeper, "ctrl-1"), "keeper VM untouched").to.equal(keeperVmPid);
    const r = await sup.gw(keeperToken, "GET", "/nodes");
    expect(r.status, r.text).to.equal(200);
    expect((r.json as Array<{ hostname: string; status: string }>).map((n) => `${n.hostname}:${n.status}`)).to.deep.equal(["ctrl-1:Running"]);
  };

  /** Fully created (and usable through a new token) or fully absent. */
  const createdOrAbsent = async (id: string): Promise<"created" | "absent"> => {
    const reg = await registry();
    const rec = reg[id];
    if (!rec) {
      expect(existsSync(path.join(sup.stateDir, "tenants", id)), "no state dir").to.equal(false);
      expect(existsSync(path.join(sup.runDir, "tenants", id)), "no run dir").to.equal(false);
      expect(daemonPidsOf(path.join(sup.stateDir, "tenants", id, "config.yaml")), "no daemon").to.deep.equal([]);
      expect(await leaksOf(id), "nothing on the host").to.deep.equal([]);
      return "absent";
    }
    let last = "";
    const t = await until(`tenant ${id} active`, async () => {
      const x = await sup.adminReq("GET", `/tenants/${id}`);
      last = x.text;
      const r = x.json as { status: string; daemon: { state: string; pid: number } };
      return r.status === "active" && r.daemon.state === "running" ? r : undefined;
    }, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; last view: ${last}; supervisor errors: ${sup.output.split("\n").filter((l) => /"level":"(error|warn)"/.test(l)).join("\n").slice(-4000)}`);
    });
    expect(daemonPidsOf(path.join(sup.stateDir, "tenants", id, "config.yaml"))).to.deep.equal([t.daemon.pid]);
    const tok = await sup.adminReq("POST", `/tenants/${id}/tokens`, {});
    expect(tok.status, tok.text).to.equal(201);
    const nodes = await until("ctrl-1 running", async () => {
      const r = await sup.gw((tok.json as { token: string }).token, "GET", "/nodes");
      const l = r.json as Array<{ hostname: string; status: string }>;
      return r.status === 200 && l.length === 1 && l[0]?.status === "Running" ? l : undefined;
    }, 60_000);
    expect(nodes.map((n) => n.hostname)).to.deep.equal(["ctrl-1"]);
    checkDaemonState(await fs.readFile(sup.tenantStateFile(id), "utf8"), id);
    return "created";
  };

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    ids.push(keeper);
    keeperToken = await sup.createTenant(keeper, "workspace");
    await until("keeper ctrl-1", async () => ((await sup.gw(keeperToken, "GET", "/vm/ctrl-1/health")).status === 200 ? true : undefined), 60_000);
    keeperDaemonPid = ((await sup.adminReq("GET", `/tenants/${keeper}`)).json as { daemon: { pid: number } }).daemon.pid;
    keeperVmPid = await sandboxPid(keeper, "ctrl-1");
    expect(keeperDaemonPid).to.be.greaterThan(0);
    expect(keeperVmPid).to.be.greaterThan(0);
  });

  after(async () => {
    if (!sup) return;
    if (!sup.child) await sup.start().catch(() => undefined);
    await sup.destroy(ids);
    for (const id of ids) expect(await leaksOf(id), `leftovers of ${id}`).to.deep.equal([]);
  });

  // Kill points along the create: as soon as the registry names the tenant (config maybe not
  // written yet), once its config is written, and once its daemon socket exists.
  const createKillPoints: Array<[string, (id: string) => Promise<boolean>]> = [
    ["the registry entry appears", async (id) => (await fs.readFile(sup.registryFile(), "utf8").catch(() => "")).includes(`"${id}"`)],
    ["its config is written", async (id) => existsSync(path.join(sup.stateDir, "tenants", id, "config.yaml"))],
    ["its daemon socket exists", async (id) => existsSync(path.join(sup.runDir, "tenants", id, "api.sock"))],
  ];
  for (const [point, reached] of createKillPoints) {
    it(`kill -9 during a tenant create, when ${point}: fully created or fully absent after restart`, async () => {
      const id = rid("c");
      ids.push(id);
      const call = sup.adminReq("POST", "/tenants", { id, template: "workspace" }).then((r) => ({ ok: true as const, status: r.status }), (e: Error) => ({ ok: false as const, err: e.message }));
      await until(point, async () => ((await reached(id)) ? true : undefined), 60_000, 2);
      await sup.kill9();
      const res = await call;
      if (res.ok) expect(res.status, "a create that finished answered 201").to.equal(201);
      await sup.start();
      const outcome = await createdOrAbsent(id);
      console.log(`      kill when ${point}: client ${res.ok ? res.status : "socket error"}, tenant ${outcome}`);
      await keeperUntouched();
    });
  }

  it("kill -9 during a tenant delete: fully absent after restart, nothing left on the host", async () => {
    const id = rid("d");
    ids.push(id);
    await sup.createTenant(id, "workspace");
    await until("ctrl-1 of the doomed tenant", async () => ((await sandboxPid(id, "ctrl-1")) > 0 ? true : undefined), 60_000);
    const call = sup.adminReq("DELETE", `/tenants/${id}`).then((r) => r.status, () => "socket error");
    await until("deleting", async () => ((await registry())[id]?.status === "deleting" ? true : undefined), 30_000, 2);
    await sup.kill9();
    await call;
    await sup.start();
    // Reconcile finishes the deletion before the listeners open.
    expect((await registry())[id], "registry entry gone").to.equal(undefined);
    expect((await sup.adminReq("GET", `/tenants/${id}`)).status).to.equal(404);
    expect(await createdOrAbsent(id)).to.equal("absent");
    await keeperUntouched();
  });

  it("a second supervisor on the same state dir refuses at once with a clear error", async () => {
    const r = await execa(process.execPath, [CLI_MAIN, "up", "--config", sup.configFile as string, "--gateway", "127.0.0.1:0", "--admin", "127.0.0.1:0"], { reject: false, timeout: 60_000 });
    expect(r.exitCode, r.stderr).to.equal(4); // EXIT.CONFLICT (cli/cli-errors.ts): ERR_STATE_LOCKED
    expect(r.stderr).to.match(/already in use by another running process \(pid \d+\)/);
    // A live owner is refused at once: the supervisor never entered the wait for a stale lock,
    // which it logs each round (supervisor/main.ts).
    expect(`${r.stdout}\n${r.stderr}`, "refused without waiting for the lock to go stale").not.to.include("waiting for the ownership lock");
    await keeperUntouched();
  });
});
