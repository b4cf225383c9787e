// The bench report's pure parts: goal checks against floors, before/after columns of a
// `--baseline` run, pooling of interleaved rounds, and the docs page built from them
// (scripts/bench/lib/goals.ts, lib/ab.ts, lib/report.ts, write-docs.ts), and the dirty-tree check of
// the current build (lib/builds.ts, on a scratch git repository). No timing.
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { treeDirty } from "../../scripts/bench/lib/builds.js";
import { evaluateGoals, figureGoals, renderGoalsTable } from "../../scripts/bench/lib/goals.js";
import { poolRounds, roundOptions, roundOrder } from "../../scripts/bench/lib/ab.js";
import { changeText, compareRows, renderFigureBody, row, type BenchReport, type FigureResult, type Row } from "../../scripts/bench/lib/report.js";
import { NoResultsError, figuresToCarry, pickFigures, renderBenchmarksDoc, writeBenchmarkDocs } from "../../scripts/bench/write-docs.js";
import { densityTopOfCommand, fitGoalRow, parseCommittedDoc } from "../../scripts/bench/lib/committed-doc.js";
import type { BenchOptions } from "../../scripts/bench/lib/context.js";

const hb = { higherIsBetter: true };

function fig5(cpIn: number[], catIn: number[]): FigureResult {
  return {
    num: 5,
    title: "cp",
    rows: [
      row("f5.cp-in", "cp in", "MB/s", "paddock", cpIn, { ...hb, vs: "f5.cat-in" }),
      row("f5.cat-in", "cat in", "MB/s", "baseline", catIn, hb),
      row("f5.cp-in-tar", "cp in, tar", "MB/s", "paddock", cpIn.map((x) => x / 2), { ...hb, vs: "f5.cat-in" }),
    ],
    targets: [],
    notes: [],
  };
}

/** Figure 3's req/s rows of one cell (`<endpoint>.c<clients>`): one row per target given, the gateway's as Paddock's. */
function f3Cell(cell: string, rps: Partial<Record<"direct" | "gateway" | "nginx" | "node", number>>): Row[] {
  return Object.entries(rps).map(([target, v]) => row(`f3.${cell}.${target}.rps`, target, "req/s", target === "gateway" ? "paddock" : "baseline", [v], hb));
}

describe("bench report: goals, before/after", function () {
  it("checks figure 5's cp rows (binary and tar) against 70 % of cat", function () {
    const goals = figureGoals(5, fig5([80, 80, 80], [100, 100, 100]).rows);
    expect(goals.map((g) => [g.id, g.met])).to.deep.equal([["f5.cp-in", true], ["f5.cp-in-tar", false]]);
    expect(goals[0]?.value).to.be.closeTo(0.8, 1e-9);
  });

  it("checks ratio goals in their direction and says 'not measured' by leaving a goal out", function () {
    const f1 = figureGoals(1, [row("f1.wait-agent", "w", "ms", "paddock", [300]), row("f1.floor", "f", "ms", "baseline", [100])]);
    expect(f1[0]).to.include({ id: "f1.no-pool", met: false, bound: 2, cmp: "≤" });
    expect(figureGoals(1, [row("f1.floor", "f", "ms", "baseline", [100])])).to.deep.equal([]);
    const f6 = figureGoals(6, [row("f6.daemon-alone", "d", "ms", "baseline", [240, 260, 200])]);
    expect(f6[0]).to.include({ met: true, value: 240 });
    const f7 = figureGoals(7, [row("f7.alone-anon", "a", "MiB", "paddock", [25])]);
    expect(f7[0]).to.include({ met: false, value: 25 });
  });

  it("compares the gateway's share of direct req/s with nginx's per endpoint and concurrency", function () {
    const rows = [...f3Cell("tiny.c16", { direct: 1000, gateway: 800, nginx: 700 }), ...f3Cell("exec.c1", { direct: 100, gateway: 50, nginx: 90 })];
    expect(figureGoals(3, rows).map((g) => [g.id, g.met])).to.deep.equal([["f3.tiny.c16", true], ["f3.exec.c1", false]]);
  });

  it("names the bare Node proxy's share beside nginx's when the run measured it (older runs did not)", function () {
    const rows = [...f3Cell("tiny.c1", { direct: 1000, gateway: 300, nginx: 600, node: 450 }), ...f3Cell("exec.c1", { direct: 100, gateway: 50, nginx: 90 })];
    expect(figureGoals(3, rows).map((g) => g.measured)).to.deep.equal([
      "gateway 30 %, bare Node proxy 45 %, nginx 60 % of direct (1000 req/s)",
      "gateway 50 %, nginx 90 % of direct (100.0 req/s)",
    ]);
  });

  it("evaluates goals on the baseline build's rows too and renders both", function () {
    const f = fig5([80, 80], [100, 100]);
    f.before = { rows: fig5([50, 50], [100, 100]).rows, targets: [] };
    const goals = evaluateGoals([f]);
    expect(goals[0]?.after.met).to.equal(true);
    expect(goals[0]?.before?.met).to.equal(false);
    const table = renderGoalsTable(goals).join("\n");
    expect(table).to.include("| before | before met |");
    expect(table).to.match(/cp in ≥ 70 % of cat .*✅ met \| 0\.50× \(≥ 0\.7×\) \| missed \|/);
  });

  it("calls a change better or worse only when the interquartile ranges do not overlap", function () {
    const after = row("x", "x", "ms", "paddock", [10, 11, 12, 13]);
    const before = row("x", "x", "ms", "paddock", [20, 21, 22, 23]);
    expect(compareRows(after, before)?.verdict).to.equal("better");
    expect(compareRows(before, after)?.verdict).to.equal("worse");
    expect(compareRows(after, row("x", "x", "ms", "paddock", [11, 12, 13, 14]))?.verdict).to.equal("same");
    const tput = row("t", "t", "MB/s", "paddock", [200, 210, 220], hb);
    expect(compareRows(tput, row("t", "t", "MB/s", "paddock", [100, 105, 110], hb))?.verdict).to.equal("better");
    expect(changeText(after, before)).to.match(/^0\.5\d× \(−10\.0 ms\), better$/);
  });

  it("adds before p50 and after ÷ before columns when the figure has a baseline", function () {
    const f = fig5([80, 80], [100, 100]);
    expect(renderFigureBody(f).join("\n")).not.to.include("before p50");
    f.before = { rows: [row("f5.cp-in", "cp in", "MB/s", "paddock", [40, 40], hb)], targets: [] };
    const body = renderFigureBody(f).join("\n");
    expect(body).to.include("| before p50 | after ÷ before |");
    expect(body).to.match(/\| cp in \| paddock \|.*\| 40\.0 \| 2\.00× \(\+40\.0 MB\/s\), better \|/);
    // A row the baseline did not measure gets empty cells, not a made-up ratio.
    expect(body).to.match(/\| cat in \| baseline \|.*\| {2}\| {2}\|$/m);
  });

  it("pools interleaved rounds by row id and splits samples across rounds", function () {
    const a = fig5([1, 2], [10]);
    const b = fig5([3], [20, 30]);
    b.error = undefined;
    const pooled = poolRounds([{ ...a, wallMs: 5 }, { ...b, wallMs: 7 }]);
    expect(pooled.rows.find((r) => r.id === "f5.cp-in")?.samples).to.deep.equal([1, 2, 3]);
    expect(pooled.rows.find((r) => r.id === "f5.cat-in")?.summary.n).to.equal(3);
    expect(pooled.wallMs).to.equal(12);
    const failed = poolRounds([a, { ...b, rows: [], error: "boom" }]);
    expect(failed.error).to.equal("round 2 of 2: boom");
    expect(failed.rows.find((r) => r.id === "f5.cp-in")?.samples).to.deep.equal([1, 2]);
    const opts = { n: 10, loadRepeats: 3 } as BenchOptions;
    expect(roundOptions(opts, 2)).to.include({ n: 5, loadRepeats: 2 });
    expect(roundOptions(opts, 1)).to.equal(opts);
    // Each build goes first in half the rounds; neighbouring figures start with different builds.
    expect([0, 1].map((r) => roundOrder(2, r)[0])).to.deep.equal(["current", "baseline"]);
    expect(roundOrder(3, 0)[0]).to.equal("baseline");
  });

  it("puts goals, both builds and every figure (measured or not) on the docs page", function () {
    const f = fig5([80, 80], [100, 100]);
    f.before = { rows: fig5([50, 50], [100, 100]).rows, targets: [] };
    const rep: BenchReport = {
      startedAt: "2026-12-06T15:00:00.000Z",
      finishedAt: "2026-12-06T15:05:00.000Z",
      command: "npm run bench -- --only 5 --baseline HEAD~1",
      options: {},
      machine: { cpuModel: "cpu", cores: 2, memGiB: 4, distro: "d", kernel: "k", cgroup: "v1", node: "v20", runc: "1.1", hostname: "h" } as BenchReport["machine"],
      load: { start: 1, end: 1, min: 1, max: 2, mean: 1.5, samples: 3 } as BenchReport["load"],
      figures: [f],
      leaks: {},
      builds: {
        current: { ref: "HEAD", commit: "a".repeat(40), subject: "new", dirty: false, daemonArgv: [] },
        baseline: { ref: "HEAD~1", commit: "b".repeat(40), subject: "old", dirty: false, daemonArgv: [] },
        rounds: 2,
        method: "interleaved",
      },
    };
    const doc = renderBenchmarksDoc([{ figure: f, report: rep }], false);
    expect(doc).to.include("## Goals");
    expect(doc).to.include("**before** = `bbbbbbbbbbbb` (HEAD~1: old)");
    expect(doc).to.include("`npm run bench -- --only 5 --baseline HEAD~1`");
    expect(doc).to.include("| 13 | Density: tenants and VMs on one host | not measured yet: `npm run bench -- --only 13` |");
  });

  it("takes each figure from its newest run, but figure 13 from the run that grew the host furthest", function () {
    const measured = (num: number): FigureResult => ({ num, title: "t", rows: [row(`f${num}.x`, "x", "ms", "paddock", [1, 2, 3])], targets: [], notes: [] });
    const run = (startedAt: string, options: Record<string, unknown>, nums: number[]): BenchReport =>
      ({ startedAt, options, figures: nums.map(measured) }) as unknown as BenchReport;
    const full = run("2026-12-06T15:00:00.000Z", { full: true }, [13]);
    const later = run("2026-12-06T18:00:00.000Z", { full: false }, [1, 13]);
    const picked = new Map(pickFigures([later, full]).map((p) => [p.figure.num, p.report.startedAt]));
    expect(picked.get(1)).to.equal(later.startedAt);
    expect(picked.get(13), "the --full curve stays").to.equal(full.startedAt);
    const newerFull = run("2026-12-06T19:00:00.000Z", { densitySteps: [10, 50, 100, 200] }, [13]);
    expect(new Map(pickFigures([full, later, newerFull]).map((p) => [p.figure.num, p.report.startedAt])).get(13)).to.equal(newerFull.startedAt);
  });

  it("keeps the committed page's figures that no local run measured, with their runs' lines", function () {
    const mk = (startedAt: string, command: string, options: Record<string, unknown>, figures: FigureResult[]): BenchReport => ({
      startedAt,
      finishedAt: startedAt,
      command,
      options,
      machine: { cpuModel: "cpu", cores: 2, memGiB: 4, distro: "d", kernel: "k", cgroup: "v1", node: "v20", runc: "1.1", hostname: "h" } as BenchReport["machine"],
      load: { start: 1, end: 1, min: 1, max: 2, mean: 1.5, samples: 3 } as BenchReport["load"],
      figures,
      leaks: {},
    }) as BenchReport;
    const f13 = (v: number): FigureResult => ({ num: 13, title: "Density", rows: [row("f13.t10.daemon-anon", "anon", "MiB", "paddock", [v])], targets: [], notes: [] });
    const oldFive = mk("2026-12-06T10:00:00.000Z", "npm run bench -- --only 5", {}, [fig5([40, 40], [100, 100])]);
    const oldFull = mk("2026-12-06T11:00:00.000Z", "npm run bench -- --only 13 --full", { full: true }, [f13(31.5)]);
    const committedMd = renderBenchmarksDoc(pickFigures([oldFive, oldFull]), true);
    const committed = parseCommittedDoc(committedMd);
    expect([...committed.figures.keys()]).to.deep.equal([5, 13]);
    expect(committed.figures.get(13)?.command).to.equal("npm run bench -- --only 13 --full");
    expect(committed.figures.get(5)?.goalRows).to.have.length(2);

    // A new local run of figure 5 and of figure 13 at the default size only.
    const newRun = mk("2026-12-07T03:00:00.000Z", "npm run bench", { full: false }, [fig5([90, 90], [100, 100]), f13(20.1)]);
    const picked = pickFigures([newRun]);
    const carried = figuresToCarry(picked, committed);
    expect(carried.map((c) => c.num), "the committed --full curve outranks a 10-tenant run").to.deep.equal([13]);
    const doc = renderBenchmarksDoc(picked, false, carried, committed);
    expect(doc).to.include("| 2026-12-06T11:00:00.000Z | `npm run bench -- --only 13 --full` |");
    expect(doc, "the old figure 5 run is gone").not.to.include("2026-12-06T10:00:00.000Z");
    expect(doc).to.include("![density curve](benchmarks-density.svg)");
    expect(doc).to.include("| 31.5 |").and.not.to.include("| 20.1 |");
    expect(doc.match(/^## 13\. /gm)).to.have.length(1);
    expect(doc.indexOf("## 5. "), "sections in figure order").to.be.lessThan(doc.indexOf("## 13. "));
    // Regenerating from the page it wrote keeps it as it is (nothing lost or doubled).
    expect(renderBenchmarksDoc(picked, false, figuresToCarry(picked, parseCommittedDoc(doc)), parseCommittedDoc(doc))).to.equal(doc);
    // Without a committed page only local figures appear.
    expect(figuresToCarry(picked, parseCommittedDoc(""))).to.deep.equal([]);
    // A local run whose only figure is outranked by the committed one is not listed at all (a
    // fresh clone without that local result writes the same page).
    const fiveOnly = mk("2026-12-07T03:00:00.000Z", "npm run bench -- --only 5", {}, [fig5([90, 90], [100, 100])]);
    const smallCurve = mk("2026-12-07T04:00:00.000Z", "npm run bench -- --only 13 --density-steps 8", { densitySteps: [8] }, [f13(19.9)]);
    const picked2 = pickFigures([fiveOnly, smallCurve]);
    expect(picked2.map((p) => p.report.startedAt)).to.deep.equal([fiveOnly.startedAt, smallCurve.startedAt]);
    const doc2 = renderBenchmarksDoc(picked2, false, figuresToCarry(picked2, committed), committed);
    expect(doc2, "the outranked run is not listed").not.to.include("2026-12-07T04:00:00.000Z");
    expect(doc2).to.include("| 31.5 |").and.not.to.include("| 19.9 |");
  });

  it("reads the density size of a run command and fits goal rows to the table's columns", function () {
    expect(densityTopOfCommand("npm run bench -- --only 13 --full")).to.equal(200);
    expect(densityTopOfCommand("npm run bench -- --density-steps 10,50")).to.equal(50);
    expect(densityTopOfCommand("npm run bench")).to.equal(10);
    expect(fitGoalRow("| 1 | a \\| b | f | m | v | ✅ met |", true)).to.equal("| 1 | a \\| b | f | m | v | ✅ met | – | – |");
    expect(fitGoalRow("| 1 | a | f | m | v | met | x | y |", false)).to.equal("| 1 | a | f | m | v | met |");
  });

  it("parses the committed docs/benchmarks.md: every figure it lists as measured", async function () {
    const { readFile } = await import("node:fs/promises");
    const md = await readFile(new URL("../../../docs/benchmarks.md", import.meta.url), "utf8");
    const doc = parseCommittedDoc(md);
    const listed = md.split("\n").filter((l) => /^\| \d+ \| [^|]+ \| \d{4}-/.test(l)).length;
    expect(doc.figures.size).to.equal(listed).and.to.be.greaterThan(0);
    for (const f of doc.figures.values()) expect(doc.machineRows.has(f.startedAt), `run of figure ${f.num}`).to.equal(true);
    const runStamps = [...md.matchAll(/^Run (\S+Z): /gm)].map((m) => m[1]);
    expect([...doc.runLines.keys()]).to.deep.equal(runStamps);
  });

  it("with no local result (a fresh clone) writes the committed page again unchanged; with neither, says so", async function () {
    const { mkdir, mkdtemp, readFile, writeFile, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const pathMod = await import("node:path");
    const tmp = await mkdtemp(pathMod.join(tmpdir(), "pdk-benchdocs-"));
    try {
      const committedMd = await readFile(new URL("../../../docs/benchmarks.md", import.meta.url), "utf8");
      const docsDir = pathMod.join(tmp, "docs");
      const results = pathMod.join(tmp, "bench-results");
      await mkdir(docsDir);
      await writeFile(pathMod.join(docsDir, "benchmarks.md"), committedMd);
      await writeBenchmarkDocs(results, docsDir);
      expect(await readFile(pathMod.join(docsDir, "benchmarks.md"), "utf8")).to.equal(committedMd);
      await rm(pathMod.join(docsDir, "benchmarks.md"));
      let thrown: unknown;
      await writeBenchmarkDocs(results, docsDir).catch((e: unknown) => (thrown = e));
      expect(thrown).to.be.instanceOf(NoResultsError);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});

describe("bench: the current build's 'uncommitted changes' label (scripts/bench/lib/builds.ts treeDirty)", () => {
  let repo = "";
  const git = (...args: string[]): string => execFileSync("git", ["-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", ...args], { encoding: "utf8" });
  beforeEach(async () => {
    repo = await fs.mkdtemp(path.join(os.tmpdir(), "pdkd-benchdirty-"));
    git("init", "-q");
    await fs.mkdir(path.join(repo, "docs"));
    await fs.mkdir(path.join(repo, "bench-results"));
    for (const f of ["docs/benchmarks.md", "docs/benchmarks2.md", "bench-results/r.json", "README.md"]) await fs.writeFile(path.join(repo, f), "v1\n");
    git("add", "-A");
    git("commit", "-qm", "init");
  });
  afterEach(async () => {
    await fs.rm(repo, { recursive: true, force: true });
  });

  it("ignores exactly docs/benchmarks.md and bench-results/ (written by the bench itself), and counts anything else", async () => {
    expect(await treeDirty(repo)).to.equal(false);
    await fs.writeFile(path.join(repo, "docs/benchmarks.md"), "v2\n");
    await fs.writeFile(path.join(repo, "bench-results/r.json"), "v2\n");
    expect(await treeDirty(repo), "only the bench's output changed").to.equal(false);
    // Also from a subdirectory's point of view the paths are the repository's own.
    expect(await treeDirty(path.join(repo, "docs"))).to.equal(false);
    await fs.writeFile(path.join(repo, "docs/benchmarks2.md"), "v2\n");
    expect(await treeDirty(repo), "another doc").to.equal(true);
    git("checkout", "--", "docs/benchmarks2.md");
    await fs.writeFile(path.join(repo, "README.md"), "v2\n");
    expect(await treeDirty(repo)).to.equal(true);
  });
});
