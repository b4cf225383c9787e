/**
 * `npm run bench:docs` (and `npm run bench -- --write-docs` at the end of a run): regenerate
 * docs/benchmarks.md and docs/benchmarks-density.svg from the runs in bench-results/. For each
 * figure the newest run that measured it is used (a run with `--only` contributes only its
 * figures), and the page says for each figure when, with which command and under what load it
 * was measured, on which machine, and what its floor is; the goals (lib/goals.ts) met or missed
 * against their floors, with the baseline build's check and before/after columns for a figure
 * whose run had `--baseline`; figures never measured are listed with the command that measures them.
 *
 *   node dist/scripts/bench/write-docs.js [--results DIR]
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { PROJECT_ROOT } from "../lib/daemon-harness.js";
import { FIGURE_TITLES, buildsLines, fmt, renderFigureBody, type BenchReport, type FigureResult } from "./lib/report.js";
import { evaluateGoals, goalsTableHeader, renderGoalsTable } from "./lib/goals.js";
import { renderLineChart, type LinePanel } from "./lib/svg-chart.js";
import { densityTopOfCommand, fitGoalRow, goalRowCells, parseCommittedDoc, type CommittedDoc, type CommittedFigure } from "./lib/committed-doc.js";

/** What each figure is measured against (scripts/bench/README.md has the full list of baselines). */
const FLOORS: Record<number, string> = {
  1: "`runc run` of the same bundle to a ready process (rows marked baseline)",
  2: "`runc exec` and `nsenter` of /bin/true into the same VM",
  3: "the daemon's socket directly, and nginx in front of the same socket",
  4: "the same stream on the daemon's socket, nginx, and a `runc exec` pipe",
  5: "`cat` through `runc exec` of the same bytes",
  6: "a tenant daemon started alone (no supervisor), and `node -e 0` (node's own start)",
  7: "growth per tenant / per VM; node's own RSS (`node -e 0` ≈ 40 MiB) is the floor of any daemon",
  8: "as many concurrent `runc run`",
  9: "the same measurements on runc (interleaved)",
  10: "the same guest work on runc (interleaved)",
  11: "`cp --reflink=auto` / `cp --sparse=always` of the same disk image, and a fresh create",
  13: "figure 6 (one tenant's create) and figure 7 (one idle daemon, one VM): density should not move them",
};

/** What bounds the number of tenants on one host, as found growing figure 13 (kept with the page). */
const SCALE_LIMITS: readonly string[] = [
  "**Network pool.** The supervisor's default pool, 169.254.0.0/16 in /22 blocks, holds 63 tenant blocks (the block of 169.254.169.254 is never used); the 64th create of a one-group template is refused with 409 `ERR_NETWORK_EXHAUSTED`, whose message names the pool's size and the `block_prefix` that would fit. `network.block_prefix: 24` holds 255 tenants of up to 64 isolated VMs per host group; figure 13 uses /26 blocks (16 VMs each) of a /18, 256 tenants. The supervisor logs the pool's capacity at start.",
  "**Pids.** A tenant's host pids are reserved against the host's `kernel.pid_max` minus `host_pids_reserve` (8192) at create (`ERR_PIDS_BUDGET_EXCEEDED`): its `max_pids`, or under gVisor 96 per VM + 12 per guest process (the sentry's, gofer's and stubs' threads; `sandbox-gvisor`'s 512 in 16 VMs take 7680). With the kernel's default pid_max of 32768 (this machine) and the sandbox template's 2048, only 12 tenants fit; set `kernel.pid_max = 4194304` (what systemd sets on 64-bit hosts) or lower `max_pids`. Figure 13's template uses 96 (a VM is tini plus the agent's ~11 node threads).",
  "**Descriptors.** node raises its soft RLIMIT_NOFILE to the hard limit at start, so the supervisor and every daemon (which inherits it) get the unit's `LimitNOFILE` (65536, templates/paddock-supervisor.service). An idle daemon holds ~20 fds; the supervisor holds no descriptor per idle tenant (figure 13's notes give its count at each step).",
  "**Threads and memory per daemon.** Each daemon is one node process (11 threads). It runs from one bundled file with a V8 code cache and `--max-semi-space-size=1 --max-old-space-size=512` (shared/daemon-node-flags.ts): figure 6 and 7 give its start and idle memory against the ESM module graph without flags.",
  "**nftables.** Every tenant has its own table in the host's netns, and nft 1.0.6 (Debian 12) builds a cache of every table on the host before any write: each table costs it 512 KiB of hash buckets it allocates and writes (src/rule.c `table_alloc`: four 8192-bucket tables), whatever the table holds, so one `nft -f` of a tenant's ruleset, its deletion or an `add element` costs ~0.1 s of CPU at 200 tables (~27,000 page faults, ~107 MiB peak RSS; `add element` ~0.25–0.28 s, it also reads every interval set's elements) and no command form or flag narrows a write (docs/performance.md, nftables at density; `node dist/scripts/bench/profile-nft.js`). The daemon runs nft with `glibc.malloc.mmap_threshold` raised (shared/nft-cli.ts `nftEnv`), which took the munmap of each bucket table off that (Daemon start, fourth look). A tenant start pays it once for its ruleset and once to read every other table's own ranges, from one `nft -t -j 'list sets inet; list chains inet'` (each table names its ranges in empty chains, shared/nft-cli.ts `listOwnRanges`; `list sets` also printed every table's `foreign_ranges`, quadratic in the tenants: 0.37–0.47 s of CPU at 200 tables against ~0.12 s; `nft list tables` decodes every rule and costs ~10 s, so nothing calls it); a daemon restart no longer re-applies the same table once per adopted VM (network/tenant-firewall.ts skips an unchanged text). Every create or delete of a VM in an isolated host group pays it once (concurrent ones share an apply); a tenant delete once, for the table's deletion, not once per VM (tenant-daemon/daemon-services.ts `stopServices`). Over a host's growth that is still quadratic: in figure 13's run of 2026-12-06 (load up to 36) the daemons took 1.1 s to set their network up at 10 tenants and 20 s at 100–150; the supervisor's `restart.ready_timeout_ms` defaults to 120 s for that reason (supervisor/supervisor-config.ts; templates/supervisor.example.yaml shows every default), and an nft write times out at 120 s.",
  "**inotify.** `fs.inotify.max_user_instances` defaults to 128 and each daemon's libuv takes one instance the first time it watches a VM's agent socket appear (vm/vm-agent-wait.ts); past ~128 daemons a new one falls back to polling every ≤ 100 ms instead of failing. Raise it (`sysctl fs.inotify.max_user_instances=8192`) on a host meant for more tenants.",
  "**Supervisor restart.** A SIGKILLed supervisor's ownership lock has to go stale before the next one starts (a few seconds, supervisor/main.ts); then every live daemon is adopted in parallel (pid, program and start time checked, supervisor/daemon-process.ts) — figure 13 gives the time until all answer through the gateway.",
];

/** The largest tenant count a run asked figure 13 for: `--density-steps`, else 200 with `--full`, else 10. */
function densityTop(report: BenchReport): number {
  const o = report.options as { full?: unknown; densitySteps?: unknown };
  if (Array.isArray(o.densitySteps) && o.densitySteps.length > 0) return Math.max(...o.densitySteps.map(Number));
  return o.full === true ? 200 : 10;
}

/**
 * The newest run holding each figure (measured rather than errored, when one exists). Figure
 * 13 is the exception: the run that grew the host furthest wins, newest among equals, so the
 * default run's 10 tenants never replace a `--full` curve.
 */
export function pickFigures(reports: readonly BenchReport[]): Array<{ figure: FigureResult; report: BenchReport }> {
  const byNum = new Map<number, { figure: FigureResult; report: BenchReport }>();
  const sorted = [...reports].sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  for (const report of sorted) {
    for (const figure of report.figures) {
      const prev = byNum.get(figure.num);
      const measured = !figure.error && figure.rows.length > 0;
      const prevMeasured = prev !== undefined && !prev.figure.error && prev.figure.rows.length > 0;
      if (figure.num === 13 && measured && prevMeasured && densityTop(report) < densityTop(prev.report)) continue;
      if (!prev || measured || (prev.figure.error && !measured)) byNum.set(figure.num, { figure, report });
    }
  }
  return [...byNum.values()].sort((a, b) => a.figure.num - b.figure.num);
}

/** The density curve (figure 13 rows `f13.t<n>.<what>`) as a line chart; undefined without figure 13. */
export function densityChart(f: FigureResult, rep: BenchReport): string | undefined {
  const steps = [...new Set(f.rows.map((r) => /^f13\.t(\d+)\./.exec(r.id)?.[1]).filter((x): x is string => x !== undefined))].map(Number).sort((a, b) => a - b);
  if (steps.length === 0) return undefined;
  const at = (what: string, q: "p50" | "p95" = "p50"): number[] => steps.map((n) => f.rows.find((r) => r.id === `f13.t${n}.${what}`)?.summary[q] ?? NaN);
  const panels: LinePanel[] = [
    { title: "Memory", unit: "MiB", series: [{ name: "daemon private, p50", values: at("daemon-anon") }, { name: "daemon RSS, p50", values: at("daemon-rss") }, { name: "VM private, p50", values: at("vm-anon") }, { name: "supervisor RSS", values: at("sup-rss") }] },
    { title: "Requests through the gateway", unit: "ms", series: [{ name: "exec /bin/true p50", values: at("exec") }, { name: "exec /bin/true p95", values: at("exec", "p95") }, { name: "GET /nodes p50", values: at("gateway") }] },
    { title: "Creates and supervisor restart", unit: "s", series: [{ name: "VM create p50", values: at("vm-create").map((v) => v / 1000) }, { name: "VM create p95", values: at("vm-create", "p95").map((v) => v / 1000) }, { name: "tenant create → ready p50", values: at("tenant-create").map((v) => v / 1000) }, { name: "SIGKILL → all daemons adopted", values: at("adopt-all").map((v) => v / 1000) }] },
  ];
  // Idle CPU rows exist in runs since they were added (figure 13 of older runs has none).
  const idle = [{ name: "supervisor, daemons adopted", values: at("sup-cpu") }, { name: "each daemon", values: at("daemon-cpu") }, { name: "each VM", values: at("vm-cpu") }];
  if (idle.some((x) => x.values.some(Number.isFinite))) panels.push({ title: "Idle CPU", unit: "ms/s", series: idle });
  const m = rep.machine;
  return renderLineChart(
    "Paddock density: tenants and VMs on one host",
    `${rep.startedAt} · ${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, kernel ${m.kernel}, node ${m.node} · load avg ${rep.load.min.toFixed(1)}–${rep.load.max.toFixed(1)} (mean ${rep.load.mean.toFixed(1)})`,
    "tenants (2.5 VMs each)",
    steps.map(String),
    panels,
  );
}

/**
 * The committed page's figures to keep: those no local run measured, and figure 13 when the
 * committed curve grew the host further than the local run did (see `pickFigures`).
 * @param picked - the figures of local runs (`pickFigures`).
 * @param committed - the committed page (`parseCommittedDoc`).
 */
export function figuresToCarry(picked: ReadonlyArray<{ figure: FigureResult; report: BenchReport }>, committed: CommittedDoc): CommittedFigure[] {
  const out: CommittedFigure[] = [];
  for (const c of committed.figures.values()) {
    const local = picked.find((p) => p.figure.num === c.num);
    const localMeasured = local !== undefined && !local.figure.error && local.figure.rows.length > 0;
    if (!local || (c.num === 13 && localMeasured && densityTop(local.report) < densityTopOfCommand(c.command))) out.push(c);
  }
  return out.sort((a, b) => a.num - b.num);
}

/** The Goals table: the local figures' goals, then the carried figures' rows as committed, by figure. */
function goalsTable(picked: ReadonlyArray<{ figure: FigureResult }>, carried: readonly CommittedFigure[]): string[] {
  const local = renderGoalsTable(evaluateGoals(picked.map((p) => p.figure)));
  const kept = carried.flatMap((c) => c.goalRows);
  if (kept.length === 0) return local;
  const hasLocal = local[0]?.startsWith("|") === true;
  const withBefore = hasLocal ? local[0]?.includes("before met") === true : kept.some((r) => goalRowCells(r).length === 8);
  const rows = [...(hasLocal ? local.slice(2) : []), ...kept.map((r) => fitGoalRow(r, withBefore))];
  const figOf = (r: string): number => Number(goalRowCells(r)[0]?.trim() ?? 0);
  return [...goalsTableHeader(withBefore), ...rows.map((r, i) => ({ r, i })).sort((x, y) => figOf(x.r) - figOf(y.r) || x.i - y.i).map((x) => x.r)];
}

/**
 * Render docs/benchmarks.md from the picked figures and the committed figures kept.
 * @param picked - figures of local runs (`pickFigures`).
 * @param hasChart - whether docs/benchmarks-density.svg was written from a local figure 13.
 * @param carried - committed figures to keep as they are (`figuresToCarry`), with `committed` for their runs' lines.
 */
export function renderBenchmarksDoc(pickedAll: Array<{ figure: FigureResult; report: BenchReport }>, hasChart: boolean, carried: readonly CommittedFigure[] = [], committed?: CommittedDoc): string {
  // A local figure the committed page's is kept over (a smaller figure 13) is not on the page:
  // neither its run nor its goals are listed, as a fresh clone (no local results) would not.
  const picked = pickedAll.filter((p) => !carried.some((c) => c.num === p.figure.num));
  const runs = [...new Set(picked.map((p) => p.report))];
  const localStamps = new Set(runs.map((r) => r.startedAt));
  const carriedStamps = [...new Set(carried.map((c) => c.startedAt))].filter((s) => !localStamps.has(s));
  const out: string[] = [
    "# Benchmarks",
    "",
    "Generated by `npm run bench:docs` from the newest run of each figure in `bench-results/` (do not edit by hand); a figure",
    "with no local run (bench-results/ is not committed) is kept as the committed page had it, under the run that measured it.",
    "Reproduce a figure with the command shown under it (root, the base image of `scripts/setup.sh`); `npm run bench` runs",
    "figures 1–8 and 13 at their normal sizes, `--all` adds 9–12, `--full` the long sizes, and `--write-docs` regenerates this page",
    "at the end of a run. What each figure measures and its baseline: scripts/bench/README.md.",
    "",
    "The host is shared with other engineers' test runs: every figure names the load average seen while its run measured",
    "it. Latencies measured under a high load are upper bounds; memory figures are not affected by load.",
    "",
    "## Machines and runs",
    "",
    "| run started | command | machine | load avg (min–max, mean) |",
    "|---|---|---|---|",
  ];
  // Local and carried runs in one order, newest first, so a page written from local results and
  // the same page written again from itself (a fresh clone) list them alike.
  const listed: Array<{ stamp: string; machineRow: string | undefined; runLines: string[] }> = [
    ...runs.map((r) => {
      const m = r.machine;
      return {
        stamp: r.startedAt,
        machineRow: `| ${r.startedAt} | \`${r.command}\` | ${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, ${m.distro}, kernel ${m.kernel}, cgroup ${m.cgroup}, node ${m.node}, runc ${m.runc} | ${r.load.min.toFixed(1)}–${r.load.max.toFixed(1)}, ${r.load.mean.toFixed(1)} |`,
        runLines: buildsLines(r.builds).map((l) => `Run ${r.startedAt}: ${l}`),
      };
    }),
    ...carriedStamps.map((s) => ({ stamp: s, machineRow: committed?.machineRows.get(s), runLines: committed?.runLines.get(s) ?? [] })),
  ].sort((a, b) => b.stamp.localeCompare(a.stamp));
  for (const l of listed) if (l.machineRow) out.push(l.machineRow);
  for (const l of listed) for (const line of l.runLines) out.push("", line);
  out.push(
    "",
    "## Goals",
    "",
    "Each goal checked on the p50s of the newest run of its figure (floor = what it is measured against); with a `--baseline` run, the same check on the baseline build measured in that run.",
    "",
    ...goalsTable(picked, carried),
  );
  out.push("", "## Limits at scale", "", ...SCALE_LIMITS.map((l) => `- ${l}`));
  out.push("", "## Figures", "", "| fig | title | measured | floor |", "|---|---|---|---|");
  const nums = [...new Set([...Object.keys(FIGURE_TITLES).map(Number), ...picked.map((p) => p.figure.num), ...carried.map((c) => c.num)])].sort((a, b) => a - b);
  for (const num of nums) {
    const c = carried.find((x) => x.num === num);
    if (c) {
      out.push(c.indexRow);
      continue;
    }
    const p = picked.find((x) => x.figure.num === num);
    const when = p ? p.report.startedAt : `not measured yet: \`npm run bench -- --only ${num}\``;
    out.push(`| ${num} | ${p?.figure.title ?? FIGURE_TITLES[num] ?? ""} | ${when} | ${FLOORS[num] ?? "rows marked baseline"} |`);
  }
  out.push("");
  const sections: Array<{ num: number; lines: string[] }> = carried.map((c) => ({ num: c.num, lines: [...c.section, ""] }));
  for (const { figure, report } of picked) {
    if (carried.some((c) => c.num === figure.num)) continue;
    const lines = [`## ${figure.num}. ${figure.title}`, ""];
    lines.push(`Measured ${report.startedAt} by \`${report.command}\` (this figure alone: \`npm run bench -- --only ${figure.num}\`); load average ${report.load.min.toFixed(1)}–${report.load.max.toFixed(1)} (mean ${fmt(report.load.mean)}) during that run. Floor: ${FLOORS[figure.num] ?? "the rows marked baseline"}.`, "");
    if (figure.num === 13 && hasChart) lines.push("![density curve](benchmarks-density.svg)", "");
    lines.push(...renderFigureBody(figure));
    sections.push({ num: figure.num, lines });
  }
  for (const s of sections.sort((a, b) => a.num - b.num)) out.push(...s.lines);
  return out.join("\n");
}

/** Nothing to write docs/benchmarks.md from (the CLI prints its message, without a stack). */
export class NoResultsError extends Error {}

/**
 * Read every `bench-results/*.json` and the committed docs/benchmarks.md, write
 * docs/benchmarks.md and (with a local figure 13 that is kept) docs/benchmarks-density.svg.
 * With no local result the page is written again from its committed figures alone.
 * @returns the paths written.
 * @throws NoResultsError when there is no local result and no committed figure to write from.
 */
export async function writeBenchmarkDocs(resultsDir = path.join(PROJECT_ROOT, "bench-results"), docsDir = path.join(PROJECT_ROOT, "docs")): Promise<string[]> {
  const names = (await fs.readdir(resultsDir).catch(() => [] as string[])).filter((n) => n.endsWith(".json"));
  const reports: BenchReport[] = [];
  for (const n of names) {
    try {
      const r = JSON.parse(await fs.readFile(path.join(resultsDir, n), "utf8")) as BenchReport;
      if (Array.isArray(r.figures) && typeof r.startedAt === "string") reports.push(r);
    } catch {
      // not a report
    }
  }
  const picked = pickFigures(reports);
  const md = path.join(docsDir, "benchmarks.md");
  const committed = parseCommittedDoc(await fs.readFile(md, "utf8").catch(() => ""));
  if (picked.length === 0 && committed.figures.size === 0) throw new NoResultsError(`no benchmark results in ${resultsDir} and no figure in ${md}: run \`npm run bench\` first`);
  const carried = figuresToCarry(picked, committed);
  const written: string[] = [];
  const density = carried.some((c) => c.num === 13) ? undefined : picked.find((p) => p.figure.num === 13);
  const svg = density ? densityChart(density.figure, density.report) : undefined;
  if (svg) {
    const f = path.join(docsDir, "benchmarks-density.svg");
    await fs.writeFile(f, svg + "\n");
    written.push(f);
  }
  await fs.writeFile(md, renderBenchmarksDoc(picked, svg !== undefined, carried, committed));
  written.push(md);
  return written;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const { values } = parseArgs({ options: { results: { type: "string" } } });
  try {
    for (const f of await writeBenchmarkDocs(values.results)) process.stdout.write(`wrote ${path.relative(PROJECT_ROOT, f)}\n`);
  } catch (err) {
    if (!(err instanceof NoResultsError)) throw err;
    process.stderr.write(`bench:docs: ${err.message}\n`);
    process.exitCode = 1;
  }
}
