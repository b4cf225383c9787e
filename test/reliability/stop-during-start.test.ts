/**
 * A daemon stopped at any point of its start-up leaves nothing on the host: no nft table, link,
 * netns, mount, loop device, container or process. The stop lands before `/healthz` answers,
 * right after it does, and while the warm pool boots its first VM; each point 10 times, with
 * scripts/leaks.sh (and a scan of the daemon's dirs) after every stop. A SIGKILL at the same
 * point is the positive control: it does leave things behind, which the same checks see.
 * The supervisor's tenant delete issued right after the create returns is held to the same.
 *
 * Rounds whose stop point is an event (healthz answered, a sandbox exists) run in two lanes:
 * each round has its own tenant, dirs and range. The sweep by time after spawn stays serial, so
 * its 0–400 ms points are not shifted by a second daemon starting beside it.
 */
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { execa } from "execa";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { expectNoLeaks, inLanes, rid, sleepMs, until } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const ROUNDS = 8;
/** Concurrent lanes for the rounds stopped at an event (see the header). */
const LANES = 2;
/** A daemon's start-up on a host loaded by other runs (and the other lane) can take a while. */
const START_TIMEOUT_MS = 180_000;

/** Wait for the child to exit; its exit code, or the signal name. */
function exited(d: TestDaemon): Promise<number | string> {
  const child = d.child;
  if (!child) return Promise.resolve("not started");
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  if (child.signalCode !== null) return Promise.resolve(child.signalCode);
  return new Promise((resolve) => child.once("exit", (code, sig) => resolve(code ?? sig ?? "unknown")));
}

/** True once the runtime knows a sandbox of the tenant (the warm pool's boot has begun). */
async function sandboxExists(tenantId: string): Promise<boolean> {
  const r = await execa("runc", ["list", "-q"], { reject: false });
  return r.stdout.split("\n").some((id) => id.startsWith(`pdk-${tenantId}-`));
}

describeWhenReady(missingPrerequisites(), "reliability: a daemon stopped during its start-up leaves nothing", function () {
  this.timeout(900_000);
  const made: TestDaemon[] = [];

  const fresh = async (): Promise<TestDaemon> => {
    const d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
      paddock: { warm_pool: { sbox: 1 } },
    });
    made.push(d);
    return d;
  };

  /**
   * SIGTERM, wait for the exit, then check the host; the daemon's dir is removed afterwards
   * (nothing else to purge: the check just found nothing; after a failed check the after hook's
   * destroy purges).
   */
  const stopAndCheck = async (d: TestDaemon, where: string): Promise<void> => {
    d.child?.kill("SIGTERM");
    const code = await exited(d);
    d.child = undefined;
    const leaks = await expectNoLeaks(d.tenantId, [d.dir]);
    expect(leaks, `${where}: leftovers after a clean stop (exit ${String(code)}); daemon stderr:\n${d.stderr.slice(-2000)}`).to.deep.equal([]);
    // A SIGTERM before node installed its handler ends the process by the signal, and then
    // nothing can have been made; once the handler is in place the daemon stops and exits 0.
    if (d.stderr.includes("received SIGTERM")) expect(code, `${where}: exit after the handler ran`).to.equal(0);
    else expect([0, "SIGTERM"], `${where}: exit`).to.include(code);
    await fs.rm(d.dir, { recursive: true, force: true });
  };

  after(async () => {
    for (const d of made) await d.destroy().catch(() => undefined);
  });

  it("positive control: a SIGKILL right after /healthz leaves the table, links and warm VM, and leaks.sh sees them", async () => {
    const d = await fresh();
    await d.start();
    await until("a sandbox of the warm pool", async () => ((await sandboxExists(d.tenantId)) ? true : undefined), 30_000, 20);
    d.child?.kill("SIGKILL");
    await exited(d);
    d.child = undefined;
    const leaks = await expectNoLeaks(d.tenantId, [d.dir]);
    expect(leaks.some((l) => /^nft\b/.test(l)), `leaks.sh output:\n${leaks.join("\n")}`).to.equal(true);
    expect(leaks.length).to.be.greaterThan(1);
    await d.destroy();
    expect(await expectNoLeaks(d.tenantId, [d.dir]), "purge after the control").to.deep.equal([]);
  });

  it(`SIGTERM 0–400 ms after spawn, before /healthz answers (${ROUNDS} rounds)`, async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const d = await fresh();
      d.spawn();
      await sleepMs(Math.floor((i / ROUNDS) * 400));
      await stopAndCheck(d, `round ${i} (${Math.floor((i / ROUNDS) * 400)} ms after spawn)`);
    }
  });

  it(`SIGTERM at once after /healthz answers (${ROUNDS} rounds)`, async () => {
    await inLanes(ROUNDS, LANES, async (i) => {
      const d = await fresh();
      await d.start(START_TIMEOUT_MS);
      await stopAndCheck(d, `round ${i} (right after healthz)`);
    });
  });

  it(`SIGTERM while the warm pool boots its first VM (${ROUNDS} rounds)`, async () => {
    await inLanes(ROUNDS, LANES, async (i) => {
      const d = await fresh();
      await d.start(START_TIMEOUT_MS);
      await until("a sandbox of the warm pool", async () => ((await sandboxExists(d.tenantId)) ? true : undefined), 30_000, 20);
      await stopAndCheck(d, `round ${i} (during the warm boot)`);
    });
  });
});

describeWhenReady(missingPrerequisites(), "reliability: a tenant deleted right after its create returns leaves nothing", function () {
  this.timeout(600_000);
  let sup: TestSupervisor | undefined;
  const ids: string[] = [];

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
  });

  after(async () => {
    await sup?.destroy(ids);
  });

  it(`create, then DELETE at once (${ROUNDS} rounds): 204 and no leftovers of the tenant`, async () => {
    const s = sup as TestSupervisor;
    await inLanes(ROUNDS, LANES, async (i) => {
      const id = rid("s");
      ids.push(id);
      await s.createTenant(id);
      const del = await s.adminReq("DELETE", `/tenants/${id}`);
      expect(del.status, del.text).to.equal(204);
      const leaks = await expectNoLeaks(id, []);
      expect(leaks, `round ${i}: leftovers of tenant ${id}`).to.deep.equal([]);
    });
  });
});
