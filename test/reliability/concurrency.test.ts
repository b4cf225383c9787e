/**
 * Reliability: 30 concurrent VM creates and deletes across 3 tenants through the
 * gateway. Names unique per tenant, addresses unique across tenants, `max_vms` exact (never
 * exceeded, refusals are 403 ERR_LIMIT_EXCEEDED and only when full), and the registry and each
 * daemon's state file agree with what the API reports afterwards. A second daemon on the same
 * tenant state refuses with a clear error (the second supervisor: supervisor-kill.test.ts).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { DAEMON_MAIN } from "../helpers/daemon.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { checkDaemonState, checkRegistry, leaksOf, rid } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

interface Node { hostname: string; ip: string; status: string }

describeWhenReady(missingPrerequisites(), "reliability: concurrent creates and deletes through the gateway", function () {
  this.timeout(240_000);
  const MAX_VMS = 5;
  let sup: TestSupervisor;
  const ids = [rid("p"), rid("q"), rid("s")];
  const tok: Record<string, string> = {};

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    await Promise.all(ids.map(async (id) => {
      tok[id] = await sup.createTenant(id, "sandbox", { limits: { max_vms: MAX_VMS }, host_groups: { sbox: { ram_mb: 256, storage_size: "256M" } } });
    }));
  });

  after(async () => {
    if (!sup) return;
    await sup.destroy(ids);
    for (const id of ids) expect(await leaksOf(id), `leftovers of ${id}`).to.deep.equal([]);
  });

  it("30 concurrent operations: unique names and addresses, max_vms exact, registry and state consistent", async () => {
    // Two VMs per tenant first, so the burst has something to delete.
    const pre: Record<string, string[]> = {};
    for (const id of ids) {
      pre[id] = [];
      for (let i = 0; i < 2; i++) {
        const r = await sup.gw(tok[id] as string, "POST", "/hostgroup/sbox/nodes", {});
        expect(r.status, r.text).to.be.oneOf([200, 201]);
        pre[id]?.push((r.json as { hostname: string }).hostname);
      }
    }
    // The burst: per tenant 8 creates and 2 deletes, all 30 in flight at once.
    const ops = ids.flatMap((id) => [
      ...Array.from({ length: 8 }, () => ({ id, kind: "create" as const, p: "/hostgroup/sbox/nodes" })),
      ...(pre[id] ?? []).map((h) => ({ id, kind: "delete" as const, p: `/hostgroup/sbox/nodes/${h}` })),
    ]);
    let peak: Record<string, number> = {};
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const id of ids) {
          const r = await sup.gw(tok[id] as string, "GET", "/nodes").catch(() => undefined);
          if (r?.status === 200) peak = { ...peak, [id]: Math.max(peak[id] ?? 0, (r.json as unknown[]).length) };
        }
      }
    })();
    const t0 = Date.now();
    const results = await Promise.all(ops.map(async (op) => ({ op, r: await sup.gw(tok[op.id] as string, op.kind === "create" ? "POST" : "DELETE", op.p, op.kind === "create" ? {} : undefined) })));
    const burstMs = Date.now() - t0;
    sampling = false;
    await sampler;

    const allIps: string[] = [];
    for (const id of ids) {
      const mine = results.filter((x) => x.op.id === id);
      const created = mine.filter((x) => x.op.kind === "create" && (x.r.status === 200 || x.r.status === 201)).map((x) => x.r.json as { hostname: string; ip: string });
      const refused = mine.filter((x) => x.op.kind === "create" && !(x.r.status === 200 || x.r.status === 201));
      for (const x of refused) {
        expect(x.r.status, x.r.text).to.equal(403);
        expect((x.r.json as { code: string }).code).to.equal("ERR_LIMIT_EXCEEDED");
      }
      const deleted = mine.filter((x) => x.op.kind === "delete");
      for (const x of deleted) expect(x.r.status, x.r.text).to.be.oneOf([200, 204]);
      expect(new Set(created.map((c) => c.hostname)).size, "unique names").to.equal(created.length);
      expect(created.map((c) => c.hostname).filter((h) => pre[id]?.includes(h)), "no reused name of a live VM").to.deep.equal([]);
      const nodes = (await sup.gw(tok[id] as string, "GET", "/nodes")).json as Node[];
      // Limits exact: every create that was refused was refused because the tenant was full.
      expect(nodes.length, `${id} VMs`).to.equal(created.length);
      expect(created.length, `${id}: at most max_vms`).to.be.at.most(MAX_VMS);
      // A refusal means the tenant was full at that moment: at least MAX − (pre-existing) creates had succeeded.
      if (refused.length > 0) expect(created.length, `${id}: refusals only when full`).to.be.at.least(MAX_VMS - (pre[id]?.length ?? 0));
      expect(peak[id] ?? 0, `${id}: never above max_vms`).to.be.at.most(MAX_VMS + 0);
      expect(nodes.map((n) => n.hostname).sort()).to.deep.equal(created.map((c) => c.hostname).sort());
      allIps.push(...nodes.map((n) => n.ip));
      // The daemon's state file says the same.
      const st = checkDaemonState(await fs.readFile(sup.tenantStateFile(id), "utf8"), id);
      expect(Object.keys(st.vms).sort()).to.deep.equal(nodes.map((n) => n.hostname).sort());
      expect(Object.values(st.vms).map((v) => v.ipCidr.split("/")[0]).sort()).to.deep.equal(nodes.map((n) => n.ip).sort());
      console.log(`      ${id}: ${created.length} created, ${refused.length} refused (limit), ${deleted.length} deleted, peak ${peak[id]}`);
    }
    expect(new Set(allIps).size, `unique addresses across tenants: ${allIps.join(" ")}`).to.equal(allIps.length);
    const reg = checkRegistry(await fs.readFile(sup.registryFile(), "utf8"));
    expect(Object.keys(reg).sort()).to.deep.equal([...ids].sort());
    for (const id of ids) expect(reg[id]?.status).to.equal("active");
    // Each tenant's addresses come from its own registry blocks.
    for (const id of ids) {
      const nodes = (await sup.gw(tok[id] as string, "GET", "/nodes")).json as Node[];
      const blocks = reg[id]?.blocks.map((b) => b.cidr.split(".").slice(0, 3).join(".")) ?? [];
      for (const n of nodes) expect(blocks, `${n.ip} inside ${id}'s blocks`).to.include(n.ip.split(".").slice(0, 3).join("."));
    }
    console.log(`      burst of ${ops.length} operations took ${burstMs} ms`);
    // Exactness afterwards: exactly the free slots can be filled, and one more is refused.
    await Promise.all(ids.map(async (id) => {
      const have = ((await sup.gw(tok[id] as string, "GET", "/nodes")).json as Node[]).length;
      const fill = await Promise.all(Array.from({ length: MAX_VMS - have + 1 }, () => sup.gw(tok[id] as string, "POST", "/hostgroup/sbox/nodes", {})));
      const ok = fill.filter((r) => r.status === 200 || r.status === 201).length;
      expect(ok, `${id}: filled exactly to max_vms`).to.equal(MAX_VMS - have);
      expect(fill.filter((r) => r.status === 403).length, `${id}: one refused`).to.equal(1);
      const names = ((await sup.gw(tok[id] as string, "GET", "/nodes")).json as Node[]).map((n) => n.hostname);
      expect(names.length).to.equal(MAX_VMS);
      expect(new Set(names).size).to.equal(MAX_VMS);
    }));
  });

  it("a second daemon started on a tenant's state refuses with a clear error", async () => {
    const id = ids[0] as string;
    const cfg = path.join(sup.stateDir, "tenants", id, "config.yaml");
    const r = await execa(process.execPath, [DAEMON_MAIN, "up", cfg], { reject: false, timeout: 60_000, env: { PADDOCK_IMAGE_DIR: sup.stateDir } });
    expect(r.exitCode, r.stderr).to.equal(4); // a conflict: the CLI's exit code 4 (tenant-daemon/main.ts daemonExitCode)
    // The host-global tenant id lock refuses first (shared/tenant-id-lock.ts), naming the holder;
    // a failed `up` says so in one NDJSON error line with its code (tenant-daemon/main.ts).
    const errors = r.stderr.split("\n").flatMap((l) => {
      try {
        const j = JSON.parse(l) as { level?: string; msg?: string; code?: string };
        return j.level === "error" ? [j] : [];
      } catch {
        return [];
      }
    });
    const named = errors.some((e) => (e.code === "ERR_TENANT_ID_IN_USE" && /pid \d+/.test(e.msg ?? "")) || (e.code === "ERR_STATE_LOCKED" && /already in use by another running process \(pid \d+\)/.test(e.msg ?? "")));
    expect(named, r.stderr).to.equal(true);
    // The first daemon was not disturbed.
    expect((await sup.gw(tok[id] as string, "GET", "/healthz")).status).to.equal(200);
  });
});
