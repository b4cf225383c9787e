/**
 * `npm run bench` (scripts/bench/README.md): Paddock's latency, throughput and footprint, each figure side by
 * side with its baseline in one run — repeated samples, p50/p95/p99 and spread, the machine
 * and its load named — written to bench-results/<stamp>.json, .md (tables, targets met or
 * missed with the measured cause) and .svg (chart). Never part of `npm test`. Root only;
 * loopback and Unix sockets only; everything started is stopped by pid and purged, and
 * scripts/leaks.sh is run for every tenant id created.
 *
 *   node dist/scripts/bench/run.js [--n 10] [--full] [--only 1,2,3] [--load-seconds 2]
 *                                  [--load-repeats 2] [--mb 100] [--network] [--density-steps 10,50] [--write-docs]
 *
 * Figures: 1 create → agent ready vs runc run · 2 exec vs runc exec vs nsenter · 3 gateway vs
 * direct vs nginx · 4 streaming · 5 cp vs cat · 6 tenant provisioning · 7 footprint · 8 scale ·
 * 9 runc vs gVisor (1, 2, 4, 5, 7 on both runtimes) · 10 syscall-heavy guest work on both · 11 cold fork (commit and fork of a 2 GiB disk) ·
 * 12 idle wake latency (an exec waking a paused runc VM and a suspended gVisor VM).
 * Modules: lib/ (stats, machine, processes, HTTP load, runc floors, supervisor lab, nginx,
 * report, chart), figures/ (one per figure).
 */
import { promises as fs, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import { PROJECT_ROOT, loopDevicesUnder, mountsUnder } from "../lib/daemon-harness.js";
import { run } from "../../shared/exec.js";
import { addProbe, startDaemon, type BareDaemon, type BenchOptions } from "./lib/context.js";
import { describeMachine, LoadSampler } from "./lib/machine.js";
import { renderMarkdown, type BenchReport, type FigureResult, type Row } from "./lib/report.js";
import { renderSvgChart } from "./lib/svg-chart.js";
import { SupervisorLab, type LabTenant } from "./lib/supervisor-lab.js";
import { ensureNginx, NginxProxy } from "./lib/nginx.js";
import { request } from "../lib/http-client.js";
import { nowMs } from "./lib/stats.js";
import { figureCreate } from "./figures/create-latency.js";
import { figureExec } from "./figures/exec-latency.js";
import { figureCopy } from "./figures/copy.js";
import { figureScale } from "./figures/scale.js";
import { vmFootprint } from "./figures/footprint-vms.js";
import { figureProvisioning } from "./figures/provisioning.js";
import { figureGateway } from "./figures/gateway-overhead.js";
import { figureStreaming } from "./figures/streaming.js";
import { figureColdFork } from "./figures/cold-fork.js";
import { figureIdleWake } from "./figures/idle-wake.js";
import { figureDensity } from "./figures/density.js";
import { writeBenchmarkDocs } from "./write-docs.js";
import { figureRuntimes, figureSyscalls, startRuntimeLabs, stopRuntimeLabs, type RuntimeLabs } from "./figures/runtimes.js";

const TITLES: Record<number, string> = {
  1: "Sandbox create → agent ready (wait=agent) vs runc run",
  2: "Buffered exec /bin/true: socket vs runc exec vs nsenter",
  3: "Gateway overhead: direct socket vs supervisor gateway vs nginx",
  4: "Streaming: exec writing to stdout",
  5: "cp in and out vs cat through runc exec",
  6: "Tenant provisioning",
  7: "Footprint: supervisor, tenant daemons, VMs",
  8: "Scale: concurrent creates in one tenant",
  9: "runc vs gVisor: create, exec, streaming, cp, idle VM footprint",
  10: "Syscall-heavy guest work: runc vs gVisor",
  11: "Cold fork: commit and fork of a 2 GiB disk",
  12: "Idle wake latency",
  13: "Density: tenants and VMs on one host",
};

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

/** Run one figure; a failure becomes a figure with `error` so the rest still report. */
async function measure(num: number, opts: BenchOptions, out: FigureResult[], fn: () => Promise<FigureResult>): Promise<void> {
  if (opts.only && !opts.only.has(num)) return;
  log(`figure ${num}: ${TITLES[num]}`);
  const t0 = nowMs();
  try {
    const f = await fn();
    f.wallMs = nowMs() - t0;
    out.push(f);
  } catch (err) {
    log(`figure ${num} failed: ${(err as Error).stack ?? String(err)}`);
    out.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: (err as Error).message.slice(0, 1000), wallMs: nowMs() - t0 });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: "string", default: "10" },
      full: { type: "boolean", default: false },
      only: { type: "string" },
      "load-seconds": { type: "string", default: "2" },
      "load-repeats": { type: "string", default: "2" },
      mb: { type: "string", default: "100" },
      network: { type: "boolean", default: false },
      "density-steps": { type: "string" },
      "write-docs": { type: "boolean", default: false },
    },
  });
  const imageDir = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
  if (process.getuid?.() !== 0) throw new Error("npm run bench needs root (runc, mounts, netns)");
  if (!existsSync(path.join(imageDir, "debian-12", "rootfs"))) throw new Error(`no base image at ${imageDir}/debian-12 (run scripts/setup.sh)`);
  const opts: BenchOptions = {
    n: Number(values.n),
    full: values.full ?? false,
    loadSeconds: Number(values["load-seconds"]),
    loadRepeats: Number(values["load-repeats"]),
    mb: Number(values.mb),
    only: values.only ? new Set(values.only.split(",").map(Number)) : undefined,
    imageDir,
    ...(values["density-steps"] ? { densitySteps: values["density-steps"].split(",").map(Number) } : {}),
  };
  const wants = (...nums: number[]): boolean => !opts.only || nums.some((x) => opts.only?.has(x));
  const startedAt = new Date().toISOString();
  const load = new LoadSampler(5000);
  const machine = await describeMachine();
  log(`machine: ${machine.cpuModel}, ${machine.cores} cores, kernel ${machine.kernel}, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}; options ${JSON.stringify({ ...opts, only: values.only ?? "all" })}`);
  const figures: FigureResult[] = [];
  const tenantIds: string[] = [];
  const tempDirs: string[] = [];
  let vmFoot: { rows: Row[]; notes: string[] } | undefined;
  let tenantFoot: { rows: Row[]; notes: string[] } | undefined;

  // Phase A: one tenant daemon (no supervisor) with a probe VM: figures 1, 2, 5, 7 (VMs), 8.
  if (wants(1, 2, 5, 7, 8)) {
    let bare: BareDaemon | undefined;
    try {
      log("starting a tenant daemon");
      bare = await startDaemon();
      tenantIds.push(bare.d.tenantId);
      tempDirs.push(bare.d.dir);
      const b = bare;
      if (wants(7)) {
        log(`figure 7 (VM half): footprint of fresh VMs at ${opts.full ? "1, 10 and 50" : "1 and 10"} VMs`);
        vmFoot = await vmFootprint(b, opts).catch((err: unknown) => ({ rows: [], notes: [`VM footprint not measured: ${(err as Error).message}`] }));
      }
      if (wants(1, 2, 5, 8)) {
        log("creating the probe VM");
        const l = await addProbe(b);
        await measure(1, opts, figures, () => figureCreate(l, opts, (id) => tenantIds.push(id)));
        await measure(2, opts, figures, () => figureExec(l, opts));
        await measure(5, opts, figures, () => figureCopy(l, opts));
        await measure(8, opts, figures, () => figureScale(l, opts));
      }
    } catch (err) {
      log(`daemon lab failed: ${(err as Error).stack ?? String(err)}`);
      for (const num of [1, 2, 5, 8]) if (wants(num) && !figures.some((f) => f.num === num)) figures.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: `daemon lab: ${(err as Error).message}` });
    } finally {
      if (bare) {
        log("destroying the tenant daemon (stop + purge)");
        await bare.d.destroy();
      }
    }
  }

  // Cold fork (its own tenant daemon with 2 GiB disks): figure 11.
  if (wants(11)) await measure(11, opts, figures, () => figureColdFork(opts, (id) => tenantIds.push(id)));

  // Idle wake (a runc and a gVisor tenant daemon whose VMs idle out after 1 s): figure 12.
  if (wants(12)) {
    await measure(12, opts, figures, () => figureIdleWake(opts, (id, dir) => {
      tenantIds.push(id);
      tempDirs.push(dir);
    }));
  }

  // Phase B: a real supervisor (`paddock up`): figures 6, 7 (tenants), 3, 4.
  if (wants(3, 4, 6, 7)) {
    let sup: SupervisorLab | undefined;
    let nginx: NginxProxy | undefined;
    let loadTenant: LabTenant | undefined;
    try {
      let nginxNote = "";
      if (wants(3, 4)) nginxNote = await ensureNginx();
      log(`starting the supervisor (paddock up)${nginxNote ? `; ${nginxNote}` : ""}`);
      sup = await SupervisorLab.start(imageDir);
      tempDirs.push(sup.dir);
      const s = sup;
      if (wants(6, 7)) {
        await measure(6, opts, figures, async () => {
          const r = await figureProvisioning(s, opts);
          tenantFoot = r.footprint;
          return r.figure;
        });
      }
      if (wants(3, 4)) {
        log("creating the load tenant and its VM");
        const id = `bl${crypto.randomBytes(3).toString("hex")}`;
        loadTenant = (await s.createTenant(id)).tenant;
        const gw = s.gateway(loadTenant.token);
        const v = await request({ host: gw.host as string, port: gw.port as number }, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", "{}", { ...gw.headers, "content-type": "application/json" });
        if (v.status !== 201) throw new Error(`load VM create failed (${v.status}): ${v.text}`);
        const vm = (v.json as { hostname: string }).hostname;
        nginx = await NginxProxy.start(loadTenant.socketPath);
        const ng = nginx;
        const targets = { direct: { name: "direct", socketPath: loadTenant.socketPath }, gateway: gw, nginx: ng.target() };
        const daemonPid = await s.daemonPid(loadTenant.id);
        await measure(3, opts, figures, () => figureGateway(targets, vm, { supervisor: s.pid, daemon: daemonPid, nginx: () => ng.workerPids() }, opts));
        await measure(4, opts, figures, () => figureStreaming(targets, vm, `pdk-${loadTenant?.id ?? id}-${vm}`, opts));
      }
    } catch (err) {
      log(`supervisor lab failed: ${(err as Error).stack ?? String(err)}`);
      for (const num of [3, 4, 6]) if (wants(num) && !figures.some((f) => f.num === num)) figures.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: `supervisor lab: ${(err as Error).message}` });
    } finally {
      if (nginx) await nginx.stop();
      if (sup) {
        if (loadTenant) await sup.deleteTenant(loadTenant.id).catch(() => undefined);
        log("stopping the supervisor");
        tenantIds.push(...sup.createdIds);
        await sup.stop();
      }
    }
  }

  // Density (its own supervisor, 10 and 50 tenants; --full: up to 200 tenants and 500 VMs): figure 13.
  if (wants(13)) await measure(13, opts, figures, () => figureDensity(opts, (ids) => tenantIds.push(...ids), log));

  // Phase C: one daemon per runtime (runc, gVisor) on the dev image: figures 9 and 10.
  if (wants(9, 10)) {
    let labs: RuntimeLabs | undefined;
    try {
      log("starting a runc and a gVisor tenant daemon with a probe VM each");
      labs = await startRuntimeLabs((id, dir) => {
        tenantIds.push(id);
        tempDirs.push(dir);
      });
      const l = labs;
      await measure(9, opts, figures, () => figureRuntimes(l, opts));
      await measure(10, opts, figures, () => figureSyscalls(l));
    } catch (err) {
      log(`runtime lab failed: ${(err as Error).stack ?? String(err)}`);
      for (const num of [9, 10]) if (wants(num) && !figures.some((f) => f.num === num)) figures.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: `runtime lab: ${(err as Error).message}` });
    } finally {
      if (labs) {
        log("destroying the runtime daemons (stop + purge)");
        await stopRuntimeLabs(labs);
      }
    }
  }

  if (wants(7)) {
    figures.push({
      num: 7,
      title: TITLES[7] as string,
      rows: [...(tenantFoot?.rows ?? []), ...(vmFoot?.rows ?? [])],
      targets: [],
      notes: [...(tenantFoot?.notes ?? ["tenant half not measured"]), ...(vmFoot?.notes ?? ["VM half not measured"]), "RSS counts shared pages (the node binary, libraries) in every process; private (RssAnon) is the process's own heap and stacks, what one more of it costs."],
    });
  }
  figures.sort((a, b) => a.num - b.num);
  // Cross-figure fact: does concurrency (fig 8) speed creates up over the sequential rate (fig 1)?
  const seq = figures.find((f) => f.num === 1)?.rows.find((r) => r.id === "f1.wait-agent")?.summary.p50;
  const f8 = figures.find((f) => f.num === 8);
  const wall = f8?.rows.find((r) => r.id === "f8.wall")?.summary.p50;
  const count = f8?.rows.find((r) => r.id === "f8.each")?.summary.n;
  if (f8 && seq !== undefined && wall !== undefined && count) {
    f8.notes.push(`Concurrent: ${(count / (wall / 1000)).toFixed(2)} creates/s; one at a time (fig 1 p50 ${seq.toFixed(0)} ms): ${(1000 / seq).toFixed(2)} creates/s — a ${(seq * count / wall).toFixed(2)}× speed-up from ${count}-way concurrency on 2 cores.`);
  }

  // Leak check: scripts/leaks.sh per tenant id, plus our floor containers and temp-dir mounts.
  const leaks: Record<string, string> = {};
  // A loaded host can make leaks.sh slow: give it time, and report (not crash on) a timeout, so
  // the figures measured so far are still written.
  // Four at a time: figure 13 creates hundreds of tenants.
  const toCheck = [...new Set(tenantIds)];
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let id = toCheck.shift(); id !== undefined; id = toCheck.shift()) {
      try {
        const r = await run("bash", [path.join(PROJECT_ROOT, "scripts/leaks.sh"), "--tenant", id], { allowFailure: true, timeoutMs: 180_000 });
        leaks[id] = r.exitCode === 0 ? "" : r.stdout.trim();
      } catch (err) {
        leaks[id] = `leak check failed: ${(err as Error).message}`;
      }
    }
  }));
  const floors = (await run("runc", ["list", "-q"], { allowFailure: true })).stdout.split("\n").filter((x) => x.startsWith("bfloor-"));
  const dirMounts: string[] = [];
  for (const d of tempDirs) dirMounts.push(...(await mountsUnder(d)), ...(await loopDevicesUnder(d)));
  leaks["floor containers and temp-dir mounts"] = [...floors, ...dirMounts].join("\n");

  const report: BenchReport = {
    startedAt,
    finishedAt: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim(),
    options: { ...opts, only: values.only ?? "all" },
    machine,
    load: load.stop(),
    figures,
    leaks,
  };
  const stamp = startedAt.replace(/[:.]/g, "-");
  const outDir = path.join(PROJECT_ROOT, "bench-results");
  await fs.mkdir(outDir, { recursive: true });
  const svgName = `${stamp}.svg`;
  const md = renderMarkdown(report, svgName);
  await fs.writeFile(path.join(outDir, `${stamp}.json`), JSON.stringify(report, null, 2));
  await fs.writeFile(path.join(outDir, `${stamp}.md`), md);
  await fs.writeFile(path.join(outDir, svgName), renderSvgChart(report));
  process.stdout.write(md + "\n");
  log(`wrote bench-results/${stamp}.{json,md,svg}`);
  if (values["write-docs"]) for (const f of await writeBenchmarkDocs()) log(`wrote ${path.relative(PROJECT_ROOT, f)}`);
  if (values.network) {
    await new Promise<void>((resolve) => spawn(process.execPath, [path.join(PROJECT_ROOT, "dist/scripts/bench/network-bench.js")], { stdio: "inherit" }).once("exit", () => resolve()));
  }
}

await main();
