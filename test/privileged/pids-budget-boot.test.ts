/**
 * A VM boot refused by the tenant's pids budget (tenant-daemon/vm/vm-pids-budget.ts), with real
 * daemons and real runc VMs on this host's cgroups, budgets so small that the second VM hits
 * them (one VM of the template image takes 12 pids: tini and the agent's threads):
 * - max_pids 16, no warm pool: `runc run` of the second VM fails (its init cannot fork or make
 *   threads; runc removes the VM's cgroup): 403 ERR_LIMIT_EXCEEDED naming the budget, never a
 *   500 ERR_INTERNAL;
 * - max_pids 18 with a warm pool of 1: the second VM runs but its agent cannot start its
 *   threads; the create (handed the warm VM still booting, or booting one) answers 403 at once
 *   instead of waiting out its timeout, the pool logs once that it stopped and boots no more
 *   VMs, and fills again once the first VM is deleted.
 * Every daemon is destroyed (purged) in `after`, even on failure.
 */
import { expect } from "chai";
import { existsSync } from "node:fs";
import path from "node:path";
import { DAEMON_MAIN, TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { until } from "../helpers/wait.js";

const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
const V1 = existsSync("/sys/fs/cgroup/pids/cgroup.procs") && !existsSync("/sys/fs/cgroup/cgroup.controllers");
const ready = process.getuid?.() === 0 && existsSync(path.join(IMAGE_DIR, "debian-12")) && existsSync(DAEMON_MAIN) && V1;

interface ErrorBody { code?: string; error?: string; limit?: string }

(ready ? describe : describe.skip)("a boot refused by the tenant's pids budget (privileged, real runc, cgroup v1)", function () {
  this.timeout(120_000);
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.destroy();
  });

  async function daemon(paddock: Record<string, unknown>): Promise<TestDaemon> {
    const d = await TestDaemon.create({ hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }], paddock });
    daemons.push(d);
    await d.start();
    return d;
  }

  const create = (d: TestDaemon) => d.post("/hostgroup/sbox/nodes?wait=agent&timeout=5s", {});

  function expectPidsRefusal(r: { status: number; text: string; json: unknown }, maxPids: number): void {
    const body = r.json as ErrorBody;
    expect({ status: r.status, code: body.code, limit: body.limit }, r.text).to.deep.equal({ status: 403, code: "ERR_LIMIT_EXCEEDED", limit: "max_pids" });
    expect(body.error).to.match(new RegExp(`^the tenant's pids budget \\(max_pids ${maxPids}, \\d+ in use\\) refused a process of VM sbox-\\d+'s boot; delete a VM or raise max_pids`));
  }

  it("a runc run the budget refuses answers 403 ERR_LIMIT_EXCEEDED, not 500 ERR_INTERNAL", async () => {
    const d = await daemon({ limits: { max_pids: 16 } });
    expect((await create(d)).status).to.equal(201);
    expectPidsRefusal(await create(d), 16);
    expect(d.stderr).to.contain("runc run");
    expect((await d.get("/nodes")).json).to.have.length(1);
  });

  it("an agent the budget starves fails the create at once; the warm pool stops until a VM is deleted", async () => {
    const d = await daemon({ limits: { max_pids: 18 }, warm_pool: { sbox: 1 } });
    const first = await create(d);
    expect(first.status, first.text).to.equal(201);
    expectPidsRefusal(await create(d), 18);
    expectPidsRefusal(await create(d), 18);
    await until("the warm pool stopped", async () => (d.stderr.includes("warm pool stopped filling") ? true : undefined));
    const booted = (d.stderr.match(/"msg":"warm VM boot failed; retrying later"/g) ?? []).length;
    expect(booted, "no warm boot retried against the full budget").to.equal(0);
    expect(d.stderr).to.not.contain("ERR_INTERNAL");
    expect(await d.warmPool("sbox")).to.deep.equal({ ready: 0, booting: 0 });
    const del = await d.del(`/hostgroup/sbox/nodes/${(first.json as { hostname: string }).hostname}`);
    expect(del.status, del.text).to.be.oneOf([200, 204]);
    await until("the warm pool refilled", async () => ((await d.warmPool("sbox")).ready === 1 ? true : undefined));
    expect((d.stderr.match(/warm pool stopped filling/g) ?? []).length, "the stop is logged once").to.equal(1);
  });
});
