/**
 * `npm run bench` (scripts/bench/README.md): Paddock's latency, throughput and footprint, each figure side by
 * side with its baseline in one run — repeated samples, p50/p95/p99 and spread, the machine
 * and its load named — written to bench-results/<stamp>.json, .md (tables, targets met or
 * missed with the measured cause) and .svg (chart). Never part of `npm test`. Root only;
 * loopback and Unix sockets only; everything started is stopped by pid and purged, and
 * scripts/leaks.sh is run for every tenant id created.
 *
 *   node dist/scripts/bench/run.js [--n 10] [--full] [--all | --only 1,2,3] [--load-seconds 2]
 *                                  [--load-repeats 2] [--mb 100] [--network] [--density-steps 10,50] [--write-docs]
 *                                  [--baseline <git-ref> [--ab-rounds 2]]
 *
 * Without `--only` or `--all` it measures {@link DEFAULT_FIGURES} (the data paths, the control
 * paths and density: under 10 minutes on the 2-core dev machine); `--all` adds the runtime,
 * cold-fork and idle-wake comparisons (9–12), several minutes more.
 *
 * `--baseline <ref>`: figures 1–8 are also measured on <ref>'s build (lib/builds.ts: a cached
 * git worktree, npm ci + build), interleaved with the current build in the same run
 * (lib/ab.ts); every row gets the baseline's p50 and after ÷ before, the chart both bars.
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
import { addProbe, startDaemon, type BareDaemon, type BenchOptions, type DaemonLab } from "./lib/context.js";
import { asBaseline, measureInterleaved, poolRounds, roundOrder, type BuildName, type BuildRun } from "./lib/ab.js";
import { currentBuild, prepareBaseline, type PaddockBuild } from "./lib/builds.js";
import { describeMachine, LoadSampler } from "./lib/machine.js";
import { FIGURE_TITLES as TITLES, renderMarkdown, type BenchReport, type BuildInfo, type FigureResult, type Row } from "./lib/report.js";
import { renderSvgChart } from "./lib/svg-chart.js";
import { SupervisorLab, type LabTenant } from "./lib/supervisor-lab.js";
import { ensureNginx, NginxProxy } from "./lib/nginx.js";
import { BareNodeProxy } from "./lib/bare-proxy.js";
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

/** Figures a run without `--only` or `--all` measures: 1–8 and density (13). */
const DEFAULT_FIGURES: readonly number[] = Object.freeze([1, 2, 3, 4, 5, 6, 7, 8, 13]);

/** Figures measured on both builds with `--baseline` (the data and control paths). */
const AB_FIGURES = new Set([1, 2, 3, 4, 5, 6, 7, 8]);
/** Figures measured once per build whatever `--ab-rounds` says: fixed sizes, each run minutes. */
const ONE_ROUND = new Set([6]);

function buildInfo(b: PaddockBuild): BuildInfo {
  return { ref: b.ref, commit: b.commit, subject: b.subject, dirty: b.dirty, daemonArgv: b.daemonArgv };
}

/** One build's lab of a phase (undefined `lab` when it failed to start: `error`). */
interface BuildLab<T> {
  build: PaddockBuild;
  lab?: T;
  error?: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: "string", default: "10" },
      full: { type: "boolean", default: false },
      only: { type: "string" },
      all: { type: "boolean", default: false },
      "load-seconds": { type: "string", default: "2" },
      "load-repeats": { type: "string", default: "2" },
      mb: { type: "string", default: "100" },
      network: { type: "boolean", default: false },
      "density-steps": { type: "string" },
      "write-docs": { type: "boolean", default: false },
      baseline: { type: "string" },
      "ab-rounds": { type: "string", default: "2" },
    },
  });
  const abRounds = Number(values["ab-rounds"]);
  if (!Number.isInteger(abRounds) || abRounds < 1 || abRounds > 10) throw new Error(`--ab-rounds must be an integer 1..10, got ${values["ab-rounds"]}`);
  const imageDir = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
  if (process.getuid?.() !== 0) throw new Error("npm run bench needs root (runc, mounts, netns)");
  if (!existsSync(path.join(imageDir, "debian-12", "rootfs"))) throw new Error(`no base image at ${imageDir}/debian-12 (run scripts/setup.sh)`);
  const opts: BenchOptions = {
    n: Number(values.n),
    full: values.full ?? false,
    loadSeconds: Number(values["load-seconds"]),
    loadRepeats: Number(values["load-repeats"]),
    mb: Number(values.mb),
    only: values.only ? new Set(values.only.split(",").map(Number)) : values.all ? undefined : new Set(DEFAULT_FIGURES),
    imageDir,
    ...(values["density-steps"] ? { densitySteps: values["density-steps"].split(",").map(Number) } : {}),
  };
  if (values.only && values.all) throw new Error("--only and --all exclude each other");
  const figureSet = values.only ?? (values.all ? "all" : DEFAULT_FIGURES.join(","));
  const wants = (...nums: number[]): boolean => !opts.only || nums.some((x) => opts.only?.has(x));
  // Build the baseline first (minutes when not cached): it is not part of the measured run.
  const current = await currentBuild();
  const baseline = values.baseline !== undefined && wants(...AB_FIGURES) ? await prepareBaseline(values.baseline, log) : undefined;
  const startedAt = new Date().toISOString();
  const load = new LoadSampler(5000);
  const machine = await describeMachine();
  log(`machine: ${machine.cpuModel}, ${machine.cores} cores, kernel ${machine.kernel}, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}; options ${JSON.stringify({ ...opts, only: figureSet })}`);
  const figures: FigureResult[] = [];
  const tenantIds: string[] = [];
  const tempDirs: string[] = [];
  if (baseline && baseline.commit === current.commit && !current.dirty) log(`note: --baseline ${values.baseline} is the current commit: before and after measure the same code (an A/A run: the spread of after ÷ before is the noise)`);
  /** The builds of figures 1–8: the current one first. */
  const builds: PaddockBuild[] = baseline ? [current, baseline] : [current];
  const vmFoot = new Map<BuildName, { rows: Row[]; notes: string[] }>();
  const tenantFoot = new Map<BuildName, { rows: Row[]; notes: string[] }>();
  /** Measure figure `num` on every build whose lab started (interleaved with two). */
  const measureAB = async <T>(num: number, labs: ReadonlyArray<BuildLab<T>>, fn: (lab: T, o: BenchOptions) => Promise<FigureResult>): Promise<void> => {
    if (opts.only && !opts.only.has(num)) return;
    log(`figure ${num}: ${TITLES[num]}${labs.length > 1 ? " (current and baseline builds, interleaved)" : ""}`);
    const runs: BuildRun[] = labs.filter((l) => l.lab !== undefined).map((l) => ({ name: l.build.name, run: (o) => fn(l.lab as T, o) }));
    const f = await measureInterleaved(num, TITLES[num] ?? "", runs, opts, ONE_ROUND.has(num) ? 1 : abRounds, log);
    const failed = labs.find((l) => l.build.name === "baseline" && l.lab === undefined);
    if (failed) f.before = { rows: [], targets: [], error: failed.error ?? "its lab did not start" };
    figures.push(f);
  };

  // Phase A: one tenant daemon per build (no supervisor) with a probe VM: figures 1, 2, 5, 7 (VMs), 8.
  if (wants(1, 2, 5, 7, 8)) {
    const labs: Array<BuildLab<DaemonLab> & { bare?: BareDaemon }> = builds.map((build) => ({ build }));
    try {
      for (const l of labs) {
        log(`starting a tenant daemon (${l.build.name} build)`);
        try {
          l.bare = await startDaemon({}, l.build.daemonArgv);
          tenantIds.push(l.bare.d.tenantId);
          tempDirs.push(l.bare.d.dir);
        } catch (err) {
          if (l.build.name === "current") throw err;
          l.error = `daemon lab: ${(err as Error).message}`;
          log(`baseline daemon lab failed: ${(err as Error).stack ?? String(err)}`);
        }
      }
      if (wants(7)) {
        log(`figure 7 (VM half): footprint of fresh VMs at ${opts.full ? "1, 10 and 50" : "1 and 10"} VMs`);
        for (const name of roundOrder(7, 0)) {
          const b = labs.find((l) => l.build.name === name)?.bare;
          if (b) vmFoot.set(name, await vmFootprint(b, opts).catch((err: unknown) => ({ rows: [], notes: [`VM footprint not measured: ${(err as Error).message}`] })));
        }
      }
      if (wants(1, 2, 5, 8)) {
        for (const l of labs) {
          if (!l.bare) continue;
          log(`creating the probe VM (${l.build.name} build)`);
          try {
            l.lab = await addProbe(l.bare);
          } catch (err) {
            if (l.build.name === "current") throw err;
            l.error = `daemon lab: ${(err as Error).message}`;
          }
        }
        await measureAB(1, labs, (l, o) => figureCreate(l, o, (id) => tenantIds.push(id)));
        await measureAB(2, labs, (l, o) => figureExec(l, o));
        await measureAB(5, labs, (l, o) => figureCopy(l, o));
        await measureAB(8, labs, (l, o) => figureScale(l, o));
      }
    } catch (err) {
      log(`daemon lab failed: ${(err as Error).stack ?? String(err)}`);
      for (const num of [1, 2, 5, 8]) if (wants(num) && !figures.some((f) => f.num === num)) figures.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: `daemon lab: ${(err as Error).message}` });
    } finally {
      for (const l of labs) {
        if (!l.bare) continue;
        log(`destroying the tenant daemon of the ${l.build.name} build (stop + purge)`);
        await l.bare.d.destroy();
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

  // Phase B: a real supervisor (`paddock up`) per build: figures 6, 7 (tenants), 3, 4.
  if (wants(3, 4, 6, 7)) {
    interface SupLab { name: BuildName; sup: SupervisorLab; nginx?: NginxProxy; node?: BareNodeProxy; loadTenant?: LabTenant; vm?: string }
    const labs: Array<BuildLab<SupLab>> = builds.map((build) => ({ build }));
    /** Every supervisor started (stopped in `finally`, usable or not). */
    const started: SupLab[] = [];
    try {
      let nginxNote = "";
      if (wants(3, 4)) nginxNote = await ensureNginx();
      for (const l of labs) {
        log(`starting the supervisor (paddock up, ${l.build.name} build)${nginxNote ? `; ${nginxNote}` : ""}`);
        try {
          const sup = await SupervisorLab.start(imageDir, { build: l.build, avoidPools: started.map((o) => o.sup.pool) });
          l.lab = { name: l.build.name, sup };
          started.push(l.lab);
          tempDirs.push(sup.dir);
        } catch (err) {
          if (l.build.name === "current") throw err;
          l.error = `supervisor lab: ${(err as Error).message}`;
          log(`baseline supervisor lab failed: ${(err as Error).stack ?? String(err)}`);
        }
      }
      if (wants(6, 7)) {
        await measureAB(6, labs, async (l, o) => {
          const r = await figureProvisioning(l.sup, o);
          tenantFoot.set(l.name, r.footprint);
          return r.figure;
        });
      }
      if (wants(3, 4)) {
        for (const l of labs) {
          const s = l.lab;
          if (!s) continue;
          try {
            log(`creating the load tenant and its VM (${l.build.name} build)`);
            const id = `bl${crypto.randomBytes(3).toString("hex")}`;
            s.loadTenant = (await s.sup.createTenant(id)).tenant;
            const gw = s.sup.gateway(s.loadTenant.token);
            const v = await request({ host: gw.host as string, port: gw.port as number }, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", "{}", { ...gw.headers, "content-type": "application/json" });
            if (v.status !== 201) throw new Error(`load VM create failed (${v.status}): ${v.text}`);
            s.vm = (v.json as { hostname: string }).hostname;
            s.nginx = await NginxProxy.start(s.loadTenant.socketPath);
            s.node = await BareNodeProxy.start(s.loadTenant.socketPath);
          } catch (err) {
            if (l.build.name === "current") throw err;
            l.error = `supervisor lab: ${(err as Error).message}`;
            l.lab = undefined; // not measured; still stopped through `started`
          }
        }
        const targetsOf = (s: SupLab): { direct: { name: string; socketPath: string }; gateway: ReturnType<SupervisorLab["gateway"]>; nginx: ReturnType<NginxProxy["target"]>; node: ReturnType<BareNodeProxy["target"]> } => {
          const t = s.loadTenant as LabTenant;
          const gateway = s.sup.gateway(t.token);
          // The bare proxy gets the gateway's request bytes (its Bearer token is dropped there too).
          return { direct: { name: "direct", socketPath: t.socketPath }, gateway, nginx: (s.nginx as NginxProxy).target(), node: (s.node as BareNodeProxy).target(gateway.headers) };
        };
        await measureAB(3, labs, async (s, o) => {
          const ng = s.nginx as NginxProxy;
          const daemonPid = await s.sup.daemonPid((s.loadTenant as LabTenant).id);
          return figureGateway(targetsOf(s), s.vm as string, { supervisor: s.sup.pid, daemon: daemonPid, nginx: () => ng.workerPids(), node: (s.node as BareNodeProxy).pid }, o);
        });
        await measureAB(4, labs, (s, o) => figureStreaming(targetsOf(s), s.vm as string, `pdk-${(s.loadTenant as LabTenant).id}-${s.vm as string}`, o));
      }
    } catch (err) {
      log(`supervisor lab failed: ${(err as Error).stack ?? String(err)}`);
      for (const num of [3, 4, 6]) if (wants(num) && !figures.some((f) => f.num === num)) figures.push({ num, title: TITLES[num] ?? "", rows: [], targets: [], notes: [], error: `supervisor lab: ${(err as Error).message}` });
    } finally {
      for (const s of started) {
        if (s.nginx) await s.nginx.stop();
        if (s.node) await s.node.stop();
        if (s.loadTenant) await s.sup.deleteTenant(s.loadTenant.id).catch(() => undefined);
        log(`stopping the supervisor (${s.name} build)`);
        tenantIds.push(...s.sup.createdIds);
        await s.sup.stop();
      }
    }
  }

  // Density (its own supervisor, 10 tenants; --full: 10, 50, 100, 200 tenants and 500 VMs): figure 13.
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
    const fig7 = (name: BuildName): FigureResult => ({
      num: 7,
      title: TITLES[7] as string,
      rows: [...(tenantFoot.get(name)?.rows ?? []), ...(vmFoot.get(name)?.rows ?? [])],
      targets: [],
      notes: [...(tenantFoot.get(name)?.notes ?? ["tenant half not measured"]), ...(vmFoot.get(name)?.notes ?? ["VM half not measured"]), "RSS counts shared pages (the node binary, libraries) in every process; private (RssAnon) is the process's own heap and stacks, what one more of it costs."],
    });
    const f7 = fig7("current");
    if (baseline) f7.before = asBaseline(poolRounds([fig7("baseline")]));
    figures.push(f7);
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
    ...(baseline ? { builds: { current: buildInfo(current), baseline: buildInfo(baseline), rounds: abRounds, method: `figures ${[...AB_FIGURES].join(", ")} measured on both builds' labs (both up at once), alternating in ${abRounds} round(s) per build (figure 6: 1), the order flipping every round and figure; each round gets n/${abRounds} samples and load-repeats/${abRounds} repeats, rows pooled per build.` } } : {}),
    startedAt,
    finishedAt: new Date().toISOString(),
    command: `npm run bench -- ${process.argv.slice(2).join(" ")}`.trim(),
    options: { ...opts, only: figureSet },
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
