/**
 * Reliability: soak. Mixed create / exec / cp up+down / delete across 3 tenants
 * through the gateway (loopback only, bounded in count and time) while one tenant daemon is
 * kill -9'd every ~30 s (round robin; a third of the run when that is shorter). At the end: no
 * persistent VM lost (same names, Running), nothing leaked after the tenants are deleted, and
 * the supervisor's and daemons' RSS sampled every 5 s (the curve is printed).
 *
 * Normal suite: 45 s of load with a kill every 15 s, so the same two kills (two of the three
 * tenants' daemons restarted mid-load) as the earlier 90 s run, with time on both sides of each
 * kill for rounds to complete on a loaded host. That still catches a leak: the
 * end checks are exact (scripts/leaks.sh per tenant and the mounts and loop devices under the
 * supervisor's dir: one leftover container, netns, link, table, mount, loop device, cgroup or
 * daemon fails it), and what leaks is what a kill interrupts, not how many clean rounds ran.
 * A slow growth (RSS) shows only over a long run: `PADDOCK_SOAK_MINUTES=30` runs it, with a kill
 * every 30 s.
 */
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { hostLeftoversUnder, leaksOf, rid, rssBytes, sleepMs, until } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const MINUTES = Number(process.env.PADDOCK_SOAK_MINUTES ?? "0.75");
const KILL_EVERY_MS = Math.min(30_000, Math.round((MINUTES * 60_000) / 3));
const MAX_ROUNDS_PER_WORKER = Math.max(50, Math.round(MINUTES * 60));

interface Tally { rounds: number; ok: number; interrupted: number; failures: string[] }

describeWhenReady(missingPrerequisites(), `reliability: soak for ${MINUTES} min with a daemon kill -9 every ~${KILL_EVERY_MS / 1000} s`, function () {
  this.timeout(MINUTES * 60_000 + 240_000);
  let sup: TestSupervisor;
  const ids = { w: rid("w"), s1: rid("s"), s2: rid("s") };
  const all = Object.values(ids);
  const tok: Record<string, string> = {};
  const persistent: Record<string, string[]> = {};

  const daemonPid = async (id: string): Promise<number> => ((await sup.adminReq("GET", `/tenants/${id}`)).json as { daemon: { pid?: number } }).daemon.pid ?? 0;
  const waitUp = (id: string): Promise<true> => until(`${id} daemon up`, async () => ((await sup.gw(tok[id] as string, "GET", "/healthz")).status === 200 ? true : undefined), 90_000, 200);

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    // The three tenants and their persistent VMs come up side by side (independent tenants).
    const sandbox = async (id: string): Promise<void> => {
      tok[id] = await sup.createTenant(id, "sandbox", { host_groups: { sbox: { ram_mb: 256, storage_size: "256M" } } });
      const r = await sup.gw(tok[id] as string, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", { persistent: true, tags: ["keep"] });
      expect(r.status, r.text).to.be.oneOf([200, 201]);
      persistent[id] = [(r.json as { hostname: string }).hostname];
    };
    const workspace = async (): Promise<void> => {
      tok[ids.w] = await sup.createTenant(ids.w, "workspace", { host_groups: { sbox: { ram_mb: 256, storage_size: "256M" }, ctrl: { ram_mb: 256, storage_size: "256M" } } });
      persistent[ids.w] = ["ctrl-1"];
      await until("ctrl-1", async () => ((await sup.gw(tok[ids.w] as string, "GET", "/vm/ctrl-1/health")).status === 200 ? true : undefined), 90_000);
    };
    await Promise.all([workspace(), sandbox(ids.s1), sandbox(ids.s2)]);
  });

  after(async () => {
    if (!sup) return;
    await sup.destroy(all);
    for (const id of all) expect(await leaksOf(id), `leftovers of ${id}`).to.deep.equal([]);
    expect(await hostLeftoversUnder(sup.dir)).to.deep.equal([]);
  });

  it("mixed load with kills: no persistent VM lost, nothing leaked, RSS curve reported", async () => {
    const endAt = Date.now() + MINUTES * 60_000;
    const tallies: Record<string, Tally> = Object.fromEntries(all.map((id) => [id, { rounds: 0, ok: 0, interrupted: 0, failures: [] }]));
    /** A status that only a dead or restarting daemon explains. */
    const outage = (status: number): boolean => status === 502 || status === 503;

    const worker = async (id: string, n: number): Promise<void> => {
      const t = tallies[id] as Tally;
      const token = tok[id] as string;
      while (Date.now() < endAt && t.rounds < MAX_ROUNDS_PER_WORKER) {
        t.rounds++;
        let h: string | undefined;
        try {
          const c = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=60s", { tags: [`w${n}`] });
          if (outage(c.status)) { t.interrupted++; await sleepMs(500); continue; }
          if (c.status === 403) { await sleepMs(300); continue; } // another worker filled the tenant
          if (c.status !== 201 && c.status !== 200) { t.failures.push(`create ${c.status} ${c.text.slice(0, 200)}`); continue; }
          h = (c.json as { hostname: string }).hostname;
          const payload = `soak ${id} ${h} ${t.rounds} ${"z".repeat(4096)}`;
          const e = await sup.gw(token, "POST", `/vm/${h}/exec?cmd=echo&args=${encodeURIComponent(`hi-${h}`)}&buffered=true`);
          if (outage(e.status) || e.status === 404) { t.interrupted++; continue; }
          if (e.status !== 200 || !e.text.includes(`hi-${h}`)) { t.failures.push(`exec ${e.status} ${e.text.slice(0, 200)}`); continue; }
          const up = await sup.gw(token, "POST", `/vm/${h}/cp?path=%2Ftmp%2Fsoak.txt&mode=binary`, payload, { "content-type": "application/octet-stream" });
          if (outage(up.status) || up.status === 404) { t.interrupted++; continue; }
          if (up.status !== 200) { t.failures.push(`cp up ${up.status} ${up.text.slice(0, 200)}`); continue; }
          const down = await sup.gw(token, "GET", `/vm/${h}/cp?path=%2Ftmp%2Fsoak.txt&mode=binary`);
          if (outage(down.status) || down.status === 404) { t.interrupted++; continue; }
          if (down.status !== 200 || down.text !== payload) { t.failures.push(`cp down ${down.status} (${down.text.length} bytes)`); continue; }
          const del = await sup.gw(token, "DELETE", `/hostgroup/sbox/nodes/${h}`);
          if (outage(del.status) || del.status === 404) { t.interrupted++; continue; }
          if (del.status !== 200 && del.status !== 204) { t.failures.push(`delete ${del.status} ${del.text.slice(0, 200)}`); continue; }
          t.ok++;
        } catch (err) {
          // A socket reset while the daemon died under the request: interrupted, not a failure.
          t.interrupted++;
          if (!/ECONNRESET|socket hang up|EPIPE/.test((err as Error).message)) t.failures.push(`error ${(err as Error).message}`);
          await sleepMs(300);
        }
      }
    };

    const kills: Array<{ atS: number; tenant: string; pid: number }> = [];
    const killer = async (): Promise<void> => {
      const t0 = Date.now();
      let i = 0;
      while (Date.now() + KILL_EVERY_MS < endAt + 5_000) {
        await sleepMs(Math.min(KILL_EVERY_MS, Math.max(0, endAt - Date.now())));
        if (Date.now() >= endAt) break;
        const id = all[i++ % all.length] as string;
        const pid = await daemonPid(id);
        if (pid > 0) {
          process.kill(pid, "SIGKILL");
          kills.push({ atS: Math.round((Date.now() - t0) / 1000), tenant: id, pid });
        }
      }
    };

    const curve: Array<{ s: number; supMiB: number; daemonsMiB: number[] }> = [];
    const sampler = async (): Promise<void> => {
      const t0 = Date.now();
      while (Date.now() < endAt) {
        const pids = await Promise.all(all.map((id) => daemonPid(id).catch(() => 0)));
        curve.push({ s: Math.round((Date.now() - t0) / 1000), supMiB: rssBytes(sup.pid ?? 0) / 2 ** 20, daemonsMiB: pids.map((p) => (p ? rssBytes(p) / 2 ** 20 : 0)) });
        // Not past the end: a full 5 s sleep held the whole test up to 5 s after the load ended.
        await sleepMs(Math.min(5000, Math.max(0, endAt - Date.now())));
      }
    };

    await Promise.all([...all.flatMap((id) => [worker(id, 1), worker(id, 2)]), killer(), sampler()]);

    // Settle: every daemon back, the persistent VMs there and running.
    for (const id of all) {
      await waitUp(id);
      const nodes = await until(`${id} persistent VMs running`, async () => {
        const l = (await sup.gw(tok[id] as string, "GET", "/nodes")).json as Array<{ hostname: string; status: string }>;
        return (persistent[id] ?? []).every((h) => l.some((n) => n.hostname === h && n.status === "Running")) ? l : undefined;
      }, 60_000);
      for (const h of persistent[id] ?? []) expect(nodes.map((n) => `${n.hostname}:${n.status}`), `${id} kept ${h}`).to.include(`${h}:Running`);
      // Leftover ephemeral VMs of interrupted rounds: delete them (the tenant delete checks the host).
      for (const n of nodes) if (!(persistent[id] ?? []).includes(n.hostname)) await sup.gw(tok[id] as string, "DELETE", `/hostgroup/sbox/nodes/${n.hostname}`);
    }
    const reg = JSON.parse(await fs.readFile(sup.registryFile(), "utf8")) as { tenants: Record<string, { status: string; daemon: { restarts: number } }> };
    console.log(`      kills: ${kills.map((k) => `${k.atS}s ${k.tenant}`).join(", ")}`);
    for (const id of all) {
      const t = tallies[id] as Tally;
      console.log(`      ${id}: ${t.rounds} rounds, ${t.ok} complete, ${t.interrupted} interrupted by kills, ${t.failures.length} failures; daemon restarts ${reg.tenants[id]?.daemon.restarts}`);
    }
    console.log("      RSS MiB (t: supervisor | daemons):");
    for (const c of curve) console.log(`        ${String(c.s).padStart(4)}s: ${c.supMiB.toFixed(1)} | ${c.daemonsMiB.map((m) => m.toFixed(1)).join(" ")}`);
    for (const id of all) {
      const t = tallies[id] as Tally;
      expect(t.failures, `${id} failures`).to.deep.equal([]);
      expect(t.ok, `${id} completed rounds`).to.be.greaterThan(0);
      expect(reg.tenants[id]?.status).to.equal("active");
    }
    expect(kills.length, "daemons were killed").to.be.at.least(Math.max(1, Math.floor((MINUTES * 60_000) / KILL_EVERY_MS) - 1));
    const first = curve[0]?.supMiB ?? 0;
    const last = curve[curve.length - 1]?.supMiB ?? 0;
    expect(last, "supervisor RSS did not run away").to.be.lessThan(first + 100);
  });
});
