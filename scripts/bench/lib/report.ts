/**
 * The benchmark report: figures made of rows (one measured thing each, with its summary and
 * the row it is compared against), targets met or missed with the measured cause, and the
 * renderers to JSON and Markdown. The SVG chart lives in svg-chart.ts.
 */
import type { LoadReport, MachineInfo } from "./machine.js";
import { percentile, summarize, type Summary } from "./stats.js";

/** Every figure's title by number (`npm run bench -- --only N`). */
export const FIGURE_TITLES: Readonly<Record<number, string>> = Object.freeze({
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
});

/** What a row is: Paddock's own figure, a baseline/floor, a measured cause, or context. */
export type RowRole = "paddock" | "baseline" | "cause" | "info";

/** One measured thing. */
export interface Row {
  /** Unique within the report, e.g. `f1.create-agent`. */
  id: string;
  label: string;
  /** `ms`, `MB/s`, `req/s`, `MiB`, `count`, … */
  unit: string;
  role: RowRole;
  summary: Summary;
  /** Id of the row this one is compared with (its baseline); the ratio of p50s is shown. */
  vs?: string;
  /** Higher is better (throughput); default false (latency, memory). */
  higherIsBetter?: boolean;
  /** Raw samples (kept in the JSON). */
  samples: number[];
  /** Chart panel within the figure (rows of one unit and group share a scale). */
  group?: string;
}

/** A target of the issue, evaluated against the measured rows. */
export interface TargetResult {
  text: string;
  met: boolean;
  /** What was measured, in words and numbers. */
  measured: string;
  /** For a miss: the cause as measured (which step costs what). */
  cause?: string;
}

/** One figure of the issue (1..8). */
export interface FigureResult {
  num: number;
  title: string;
  rows: Row[];
  targets: TargetResult[];
  /** Free-text facts: counts, errors, how it was measured. */
  notes: string[];
  /** Reference lines for the chart (e.g. a 150 ms target), by unit. */
  chartLines?: Array<{ unit: string; value: number; label: string }>;
  /** Set when the figure could not be measured (the error), so the run still reports the rest. */
  error?: string;
  /** Wall time spent measuring it, ms. */
  wallMs?: number;
  /**
   * With `--baseline <ref>`: the same figure measured on the baseline build in the same run,
   * interleaved with this one (lib/ab.ts). Rows are matched by id.
   */
  before?: BaselineFigure;
}

/** A figure as the baseline build measured it (lib/ab.ts). */
export interface BaselineFigure {
  rows: Row[];
  targets: TargetResult[];
  /** Set when the baseline build could not measure it. */
  error?: string;
  wallMs?: number;
}

/** One build a run measured (lib/builds.ts), as the report names it. */
export interface BuildInfo {
  ref: string;
  commit: string;
  subject: string;
  /** The current tree had uncommitted changes. */
  dirty: boolean;
  /** How its daemons were started alone: node arguments before `up <config>`. */
  daemonArgv: string[];
}

/** The builds of a run with `--baseline`: figures alternate between them in `rounds` rounds. */
export interface BuildsInfo {
  current: BuildInfo;
  baseline: BuildInfo;
  /** Rounds per build of each figure (`--ab-rounds`); figures that cannot be split run once. */
  rounds: number;
  /** How the builds were interleaved, in words. */
  method: string;
}

/** The whole report. */
export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  command: string;
  options: Record<string, unknown>;
  machine: MachineInfo;
  load: LoadReport;
  figures: FigureResult[];
  /** Output of scripts/leaks.sh after the run, per tenant id created (empty = clean). */
  leaks: Record<string, string>;
  /** Present when the run had `--baseline`. */
  builds?: BuildsInfo;
}

/** Make a row from raw samples. */
export function row(id: string, label: string, unit: string, role: RowRole, samples: number[], extra: { vs?: string; higherIsBetter?: boolean; group?: string } = {}): Row {
  return { id, label, unit, role, samples, summary: summarize(samples), ...extra };
}

/** Format a number for a table: 3 significant-ish digits. */
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(1);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function ratioText(r: Row, base: Row | undefined): string {
  if (!base) return "";
  const ratio = r.summary.p50 / base.summary.p50;
  if (!Number.isFinite(ratio)) return "";
  const diff = r.summary.p50 - base.summary.p50;
  const sign = diff >= 0 ? "+" : "−";
  return r.unit === "ms" ? `${ratio.toFixed(2)}× (${sign}${fmt(Math.abs(diff))} ms)` : `${ratio.toFixed(2)}×`;
}

/**
 * How a row moved from the baseline build to the current one: after ÷ before of the p50s, the
 * difference in the row's unit, and a verdict — `better` / `worse` when the two builds'
 * interquartile ranges do not overlap, `same` when they do (the change is within the spread).
 * undefined when either side has no finite p50.
 */
export function compareRows(after: Row, before: Row): { ratio: number; diff: number; verdict: "better" | "worse" | "same" } | undefined {
  const a = after.summary.p50;
  const b = before.summary.p50;
  if (!Number.isFinite(a) || !Number.isFinite(b)) return undefined;
  const q = (r: Row, p: number): number => (r.samples.length ? percentile(r.samples, p) : r.summary.p50);
  const overlap = q(after, 0.25) <= q(before, 0.75) && q(before, 0.25) <= q(after, 0.75);
  const up = a > b;
  const better = after.higherIsBetter ? up : !up;
  return { ratio: b === 0 ? NaN : a / b, diff: a - b, verdict: overlap || a === b ? "same" : better ? "better" : "worse" };
}

/** {@link compareRows} as table text: `0.82× (−12.0 ms), better`; empty when not comparable. */
export function changeText(after: Row, before: Row | undefined): string {
  if (!before) return "";
  const c = compareRows(after, before);
  if (!c) return "";
  const ratio = Number.isFinite(c.ratio) ? `${c.ratio.toFixed(2)}×` : "–";
  return `${ratio} (${c.diff >= 0 ? "+" : "−"}${fmt(Math.abs(c.diff))} ${after.unit}), ${c.verdict === "same" ? "within spread" : c.verdict}`;
}

/** Escape a Markdown table cell. */
function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** Signed difference for text: `+1.20` / `−0.300`. */
export function signed(v: number): string {
  return `${v >= 0 ? "+" : "−"}${fmt(Math.abs(v))}`;
}

/**
 * One figure as Markdown below its heading: the error when it was not measured, the table of
 * rows (p50 in bold, the ratio to its baseline), targets, notes and the time it took.
 * @returns lines, ending with an empty one.
 */
export function renderFigureBody(f: FigureResult): string[] {
  const out: string[] = [];
  if (f.error) out.push(`**Not measured:** ${f.error}`, "");
  if (f.before?.error) out.push(`**Baseline build not measured:** ${f.before.error}`, "");
  if (f.rows.length) {
    const before = f.before ? new Map(f.before.rows.map((r) => [r.id, r])) : undefined;
    const head = "| measurement | role | n | p50 | p95 | p99 | min–max | stdev | unit | vs floor/peer (p50) |";
    out.push(before ? `${head} before p50 | after ÷ before |` : head, before ? "|---|---|---|---|---|---|---|---|---|---|---|---|" : "|---|---|---|---|---|---|---|---|---|---|");
    const byId = new Map(f.rows.map((r) => [r.id, r]));
    for (const r of f.rows) {
      const s = r.summary;
      const line = `| ${cell(r.label)} | ${r.role} | ${s.n} | **${fmt(s.p50)}** | ${fmt(s.p95)} | ${fmt(s.p99)} | ${fmt(s.min)}–${fmt(s.max)} | ${fmt(s.stdev)} | ${r.unit} | ${ratioText(r, r.vs ? byId.get(r.vs) : undefined)} |`;
      if (!before) out.push(line);
      else {
        const b = before.get(r.id);
        out.push(`${line} ${b ? fmt(b.summary.p50) : ""} | ${changeText(r, b)} |`);
      }
    }
    out.push("");
  }
  for (const t of f.targets) out.push(`- Target ${t.met ? "met" : "**missed**"}: ${t.text} — ${t.measured}${t.cause ? `. Cause: ${t.cause}` : ""}`);
  if (f.before) for (const t of f.before.targets) out.push(`- Before (baseline build): target ${t.met ? "met" : "missed"}: ${t.text} — ${t.measured}`);
  for (const n of f.notes) out.push(`- ${n}`);
  if (f.wallMs !== undefined) out.push(`- Measured in ${(f.wallMs / 1000).toFixed(1)} s${f.before?.wallMs !== undefined ? ` (the baseline build: ${(f.before.wallMs / 1000).toFixed(1)} s)` : ""}.`);
  out.push("");
  return out;
}

/** The builds of a run with `--baseline`, as Markdown lines (none without). */
export function buildsLines(b: BuildsInfo | undefined): string[] {
  if (!b) return [];
  const one = (x: BuildInfo): string => `\`${x.commit.slice(0, 12)}\` (${x.ref}${x.dirty ? ", with uncommitted changes" : ""}: ${x.subject})`;
  return [`Before/after: **after** = ${one(b.current)}, **before** = ${one(b.baseline)}; ${b.method}`];
}

/** Render the report as Markdown (tables per figure, targets summary first). */
export function renderMarkdown(rep: BenchReport, chartFile?: string): string {
  const m = rep.machine;
  const l = rep.load;
  const out: string[] = [
    `# Paddock benchmark — ${rep.startedAt}`,
    "",
    `Machine: **${m.cpuModel}**, ${m.cores} cores, ${m.memGiB} GiB, ${m.distro}, kernel ${m.kernel}, cgroup ${m.cgroup}, node ${m.node}, runc ${m.runc} (host \`${m.hostname}\`).`,
    `Load average (1 min) during the run: start ${l.start.toFixed(2)}, end ${l.end.toFixed(2)}, min ${l.min.toFixed(2)}, max ${l.max.toFixed(2)}, mean ${l.mean.toFixed(2)} (${l.samples} samples; the host is shared with other engineers' test runs).`,
    `Command: \`${rep.command}\`; options ${JSON.stringify(rep.options)}. Finished ${rep.finishedAt}.`,
    ...buildsLines(rep.builds),
    "",
  ];
  if (chartFile) out.push(`Chart: [${chartFile}](${chartFile})`, "");
  out.push("## Targets", "", "| fig | target | measured | met |", "|---|---|---|---|");
  for (const f of rep.figures) for (const t of f.targets) out.push(`| ${f.num} | ${cell(t.text)} | ${cell(t.measured)} | ${t.met ? "✅ met" : "❌ missed"} |`);
  // One line per distinct cause, naming every target it explains.
  const causes = new Map<string, string[]>();
  for (const f of rep.figures) for (const t of f.targets) if (!t.met && t.cause) causes.set(t.cause, [...(causes.get(t.cause) ?? []), `fig ${f.num} ${t.text}`]);
  if (causes.size) out.push("", "Causes of the misses (measured):", "", ...[...causes].map(([cause, which]) => `- ${which.join("; ")}: ${cause}`));
  out.push("");
  for (const f of rep.figures) out.push(`## ${f.num}. ${f.title}`, "", ...renderFigureBody(f));
  out.push("## Leak check (`scripts/leaks.sh --tenant <id>` after the run)", "");
  const leakIds = Object.keys(rep.leaks);
  const dirty = leakIds.filter((id) => rep.leaks[id]);
  out.push(dirty.length === 0 ? `Clean for all ${leakIds.length} tenant ids the run created.` : dirty.map((id) => `- ${id}:\n\n\`\`\`\n${rep.leaks[id]}\n\`\`\``).join("\n"), "");
  return out.join("\n");
}
