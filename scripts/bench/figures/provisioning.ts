/**
 * Figure 6: tenant provisioning through the supervisor's admin API — `POST /admin/v1/tenants`
 * until the new tenant's `GET /nodes` answers 200 through the gateway — for N tenants in
 * sequence and N tenants C at a time (10 and 5 by default; 50 and 10 with `--full`), and the
 * admin DELETE of each. Baselines: a tenant daemon started alone (TestDaemon: spawn →
 * /healthz, no supervisor) and node's own start-up (`node -e 0`).
 * Figure 7, tenant half (measured on the way): supervisor RSS at 0, 1 and N tenants, each
 * idle tenant daemon's RSS and PSS, and how they grow per tenant.
 */
import crypto from "node:crypto";
import type { BenchOptions } from "../lib/context.js";
import type { SupervisorLab } from "../lib/supervisor-lab.js";
import { anonBytes, mib, rssBytes, spawnTimed } from "../lib/procs.js";
import { fmt, row, type FigureResult, type Row } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";
import { TestDaemon } from "../../lib/daemon-harness.js";
import { pool } from "../lib/pool.js";

/** How long the idle daemons are left before their settled memory is read, ms. */
const SETTLE_MS = 8_000;

function tenantId(prefix: string, i: number): string {
  return `${prefix}${crypto.randomBytes(2).toString("hex")}${i}`.slice(0, 12);
}

export async function figureProvisioning(sup: SupervisorLab, opts: BenchOptions): Promise<{ figure: FigureResult; footprint: { rows: Row[]; notes: string[] } }> {
  const count = opts.full ? 50 : 10;
  const conc = opts.full ? 10 : 5;
  const fp: Row[] = [];
  const supAt: Record<number, number> = {};
  const measureSup = async (level: number): Promise<void> => {
    await new Promise((r) => setTimeout(r, 1000));
    supAt[level] = mib(await rssBytes(sup.pid));
    fp.push(row(`f7.sup-${level}`, `supervisor RSS, ${level} tenant${level === 1 ? "" : "s"}`, "MiB", "paddock", [supAt[level] as number], { group: "supervisor", ...(level === 0 ? {} : { vs: "f7.sup-0" }) }));
  };
  await measureSup(0);
  const seqPost: number[] = [], seqReady: number[] = [], seqDelete: number[] = [];
  const ids: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const id = tenantId("bs", i);
      const r = await sup.createTenant(id);
      ids.push(r.tenant.id);
      seqPost.push(r.postMs);
      seqReady.push(r.readyMs);
      if (i === 0) await measureSup(1);
    }
    await measureSup(count);
    const drss: number[] = [], danon: number[] = [];
    for (const id of ids) {
      const pid = await sup.daemonPid(id);
      drss.push(mib(await rssBytes(pid)));
      danon.push(mib(await anonBytes(pid)));
    }
    // The same daemons once settled: V8's memory reducer gives a daemon's start-up garbage back
    // within seconds of its last work (docs/performance.md "Daemon memory, sixth look"), so the
    // sample right after the creates holds garbage an idle daemon does not keep.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const settled: number[] = [];
    for (const id of ids) settled.push(mib(await anonBytes(await sup.daemonPid(id))));
    fp.push(
      row("f7.daemon-idle-rss", `idle tenant daemon RSS (each of ${count})`, "MiB", "paddock", drss, { group: "daemon" }),
      row("f7.daemon-idle-anon", `idle tenant daemon private (RssAnon, each of ${count}), right after the creates`, "MiB", "paddock", danon, { group: "daemon" }),
      row("f7.daemon-settled-anon", `idle tenant daemon private (RssAnon, each of ${count}), settled: ${SETTLE_MS / 1000} s later`, "MiB", "paddock", settled, { group: "daemon" }),
    );
  } finally {
    for (const id of ids.splice(0)) seqDelete.push(await sup.deleteTenant(id));
  }
  const concReady: number[] = [], concDelete: number[] = [];
  let concWall = NaN, concDelWall = NaN;
  try {
    const batch = Array.from({ length: count }, (_, i) => tenantId("bc", i));
    const t0 = nowMs();
    const res = await pool(conc, batch.map((id) => async () => {
      const r = await sup.createTenant(id);
      ids.push(r.tenant.id);
      return r;
    }));
    concWall = nowMs() - t0;
    concReady.push(...res.map((r) => r.readyMs));
  } finally {
    const t1 = nowMs();
    concDelete.push(...(await pool(conc, ids.splice(0).map((id) => () => sup.deleteTenant(id)))));
    concDelWall = nowMs() - t1;
  }
  const nodeStart: number[] = [];
  for (let i = 0; i < 5; i++) nodeStart.push((await spawnTimed([process.execPath, "-e", "0"])).ms);
  // The daemon alone (no supervisor): spawn → /healthz, then 20 requests, 1 s idle, memory, stop
  // + purge — the production entry (bundle + code cache + the daemon's V8 flags, as the
  // supervisor spawns it) interleaved with the ESM module graph of main.js without flags (before).
  // sup.build: the lab's build (lib/builds.ts), so a baseline lab times the baseline's daemon.
  const variants = {
    launch: sup.build.daemonArgv,
    esm: [sup.build.daemonMain],
  };
  const alone: Record<keyof typeof variants, { ms: number[]; rss: number[]; anon: number[] }> = { launch: { ms: [], rss: [], anon: [] }, esm: { ms: [], rss: [], anon: [] } };
  for (let i = 0; i < 5; i++) {
    for (const k of ["launch", "esm"] as const) {
      const d = await TestDaemon.create({ daemonArgv: variants[k] });
      sup.createdIds.push(d.tenantId);
      try {
        const t0 = nowMs();
        // Polled every 3 ms: at the harness's default 50 ms the time read is up to 50 ms late.
        await d.start(60_000, { command: [...variants[k], "up", d.configPath], pollMs: 3 });
        alone[k].ms.push(nowMs() - t0);
        for (let j = 0; j < 20; j++) await d.get("/nodes");
        await new Promise((r) => setTimeout(r, 1000));
        alone[k].rss.push(mib(await rssBytes(d.child?.pid as number)));
        alone[k].anon.push(mib(await anonBytes(d.child?.pid as number)));
      } finally {
        await d.destroy();
      }
    }
  }
  const daemonAlone = alone.launch.ms;
  fp.push(
    row("f7.alone-anon", "tenant daemon alone, idle private (RssAnon): bundle + code cache + V8 flags", "MiB", "paddock", alone.launch.anon, { group: "daemon", vs: "f7.alone-anon-esm" }),
    row("f7.alone-anon-esm", "before: the same with the ESM module graph (main.js), no V8 flags", "MiB", "baseline", alone.esm.anon, { group: "daemon" }),
    row("f7.alone-rss", "tenant daemon alone, idle RSS: bundle + code cache + V8 flags", "MiB", "paddock", alone.launch.rss, { group: "daemon", vs: "f7.alone-rss-esm" }),
    row("f7.alone-rss-esm", "before: the same with the ESM module graph (main.js), no V8 flags", "MiB", "baseline", alone.esm.rss, { group: "daemon" }),
  );
  const slope = ((supAt[count] ?? NaN) - (supAt[1] ?? NaN)) / (count - 1);
  return {
    figure: {
      num: 6,
      title: `Tenant provisioning: admin create → daemon ready (${count} in sequence; ${count} with ${conc} at a time)`,
      rows: [
        row("f6.seq-ready", `create → GET /nodes 200 via gateway, sequential (${count})`, "ms", "paddock", seqReady, { vs: "f6.daemon-alone" }),
        row("f6.seq-post", "admin POST /tenants → 201, sequential", "ms", "paddock", seqPost),
        row("f6.conc-ready", `create → ready, ${conc} at a time (${count})`, "ms", "paddock", concReady, { vs: "f6.seq-ready" }),
        row("f6.conc-wall", `wall time, ${count} tenants ${conc} at a time`, "ms", "info", [concWall], { group: "wall time" }),
        row("f6.seq-delete", "admin DELETE /tenants/<id>, sequential", "ms", "info", seqDelete),
        row("f6.conc-delete", `admin DELETE, ${conc} at a time`, "ms", "info", concDelete),
        row("f6.daemon-alone", "baseline: tenant daemon alone, spawn → /healthz (launch.js: bundle + code cache)", "ms", "baseline", daemonAlone, { vs: "f6.daemon-alone-esm" }),
        row("f6.daemon-alone-esm", "before: tenant daemon alone from the ESM module graph (main.js), spawn → /healthz", "ms", "baseline", alone.esm.ms),
        row("f6.node", "baseline: node -e 0 (process start-up floor)", "ms", "baseline", nodeStart),
      ],
      targets: [],
      notes: [`${count} tenants sequentially: ${fmt(seqReady.reduce((a, b) => a + b, 0) / 1000)} s in all; ${count} at ${conc} at a time: ${fmt(concWall / 1000)} s wall (${fmt((count / concWall) * 1000)} tenants/s); deleting them ${conc} at a time took ${fmt(concDelWall / 1000)} s. ${sup.overlapRetries} create(s) retried because another user's network overlapped the block (only the successful attempt is timed).`],
    },
    footprint: { rows: fp, notes: [`Supervisor grows ${fmt(slope)} MiB per tenant between 1 and ${count} tenants (RSS ${fmt(supAt[0] ?? NaN)} → ${fmt(supAt[1] ?? NaN)} → ${fmt(supAt[count] ?? NaN)} MiB at 0 / 1 / ${count}).`] },
  };
}
