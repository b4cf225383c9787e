/**
 * Before/after in one run (`npm run bench -- --baseline <ref>`): each figure is measured on the
 * baseline build's lab and on the current build's lab, both labs up at the same time,
 * alternating in rounds — round r runs the figure on one build then the other, the order
 * flipping every round (A B B A …) and starting with the other build on every other figure, so
 * a load that drifts during the run reaches both builds alike. Each round gets `n / rounds`
 * samples (and `loadRepeats / rounds` repeats); the rows of a build's rounds are pooled by id.
 * The figure modules are unchanged: they run once per round on the lab they are given.
 */
import type { BenchOptions } from "./context.js";
import { row, type BaselineFigure, type FigureResult, type Row } from "./report.js";
import { nowMs } from "./stats.js";

/** Which build a round measures. */
export type BuildName = "current" | "baseline";

/**
 * The order of the builds in round `round` (0-based) of figure `num`: A B, then B A, … with A =
 * baseline on odd figures and current on even ones.
 */
export function roundOrder(num: number, round: number): BuildName[] {
  const baselineFirst = (num + round) % 2 === 1;
  return baselineFirst ? ["baseline", "current"] : ["current", "baseline"];
}

/** The options of one of `rounds` rounds: samples and load repeats split (at least 1 each). */
export function roundOptions(opts: BenchOptions, rounds: number): BenchOptions {
  if (rounds <= 1) return opts;
  return { ...opts, n: Math.max(1, Math.ceil(opts.n / rounds)), loadRepeats: Math.max(1, Math.ceil(opts.loadRepeats / rounds)) };
}

/**
 * Pool the rounds of one build into one figure: rows with the same id have their samples
 * concatenated (order of first appearance), wall times add up; title, targets, notes and chart
 * lines are the last measured round's (a figure evaluates its targets on its own samples — the
 * notes say so when there were several rounds). Rounds that failed are named in `error`; a
 * figure with no measured round is an error.
 * @throws Error when `rounds` is empty.
 */
export function poolRounds(rounds: readonly FigureResult[]): FigureResult {
  const last = rounds[rounds.length - 1];
  if (!last) throw new Error("poolRounds: no rounds");
  const measured = rounds.filter((f) => !f.error);
  const base = measured[measured.length - 1] ?? last;
  const samples = new Map<string, { proto: Row; samples: number[] }>();
  for (const f of rounds) {
    for (const r of f.rows) {
      const acc = samples.get(r.id);
      if (acc) acc.samples.push(...r.samples);
      else samples.set(r.id, { proto: r, samples: [...r.samples] });
    }
  }
  const rows = [...samples.values()].map(({ proto, samples: s }) => {
    const { id, label, unit, role, vs, higherIsBetter, group } = proto;
    return row(id, label, unit, role, s, { ...(vs !== undefined ? { vs } : {}), ...(higherIsBetter !== undefined ? { higherIsBetter } : {}), ...(group !== undefined ? { group } : {}) });
  });
  const errors = rounds.map((f, i) => (f.error ? `round ${i + 1} of ${rounds.length}: ${f.error}` : "")).filter(Boolean);
  const wallMs = rounds.reduce((a, f) => a + (f.wallMs ?? 0), 0);
  const notes = [...base.notes];
  if (rounds.length > 1) notes.push(`Pooled from ${rounds.length} rounds (${measured.length} measured) interleaved with the other build; the targets and notes above are the last round's.`);
  return {
    num: base.num,
    title: base.title,
    rows,
    targets: base.targets,
    notes,
    ...(base.chartLines ? { chartLines: base.chartLines } : {}),
    ...(errors.length ? { error: errors.join("; ") } : {}),
    wallMs,
  };
}

/** The baseline half of a figure as {@link FigureResult.before} keeps it. */
export function asBaseline(f: FigureResult): BaselineFigure {
  return { rows: f.rows, targets: f.targets, ...(f.error ? { error: f.error } : {}), ...(f.wallMs !== undefined ? { wallMs: f.wallMs } : {}) };
}

/** One build's way to run a figure once: `run(opts)` measures it on that build's lab. */
export interface BuildRun {
  name: BuildName;
  run: (opts: BenchOptions) => Promise<FigureResult>;
}

/**
 * Measure figure `num` on every build given, interleaved in `rounds` rounds when there are two
 * (one build: one run with `opts`, as without `--baseline`). A round that throws becomes an
 * error of that build's figure; the other rounds and the other build still run.
 * @returns the current build's figure (pooled), with the baseline's in `before`.
 */
export async function measureInterleaved(num: number, title: string, builds: readonly BuildRun[], opts: BenchOptions, rounds: number, log: (msg: string) => void): Promise<FigureResult> {
  const two = builds.length > 1;
  const k = two ? Math.max(1, rounds) : 1;
  const per = roundOptions(opts, k);
  const results = new Map<BuildName, FigureResult[]>(builds.map((b) => [b.name, []]));
  for (let r = 0; r < k; r++) {
    for (const name of two ? roundOrder(num, r) : [builds[0]?.name as BuildName]) {
      const b = builds.find((x) => x.name === name);
      if (!b) continue;
      if (two) log(`figure ${num}: round ${r + 1}/${k}, ${name} build`);
      const t0 = nowMs();
      try {
        const f = await b.run(per);
        f.wallMs = nowMs() - t0;
        results.get(name)?.push(f);
      } catch (err) {
        log(`figure ${num} (${name} build) failed: ${(err as Error).stack ?? String(err)}`);
        results.get(name)?.push({ num, title, rows: [], targets: [], notes: [], error: (err as Error).message.slice(0, 1000), wallMs: nowMs() - t0 });
      }
    }
  }
  const current = poolRounds(results.get("current") ?? []);
  const baseline = results.get("baseline");
  if (baseline?.length) current.before = asBaseline(poolRounds(baseline));
  return current;
}
