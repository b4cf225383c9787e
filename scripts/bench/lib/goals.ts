/**
 * The goals of the data-path work ("data paths near the floor"), checked against a figure's
 * rows: each goal is a ratio of a Paddock row to its floor (or peer), or an absolute bound,
 * evaluated on the p50s. Pure functions: the docs generator (write-docs.ts) and the tests use
 * them on stored results. A goal whose rows are missing is "not measured", never met.
 */
import { fmt, type FigureResult, type Row } from "./report.js";

/** One goal checked against one figure's rows. */
export interface GoalCheck {
  /** Stable id, e.g. `f5.cp-in` or `f3.exec.c16`. */
  id: string;
  fig: number;
  /** The goal in words, with its bound: "streamed exec ≥ 60 % of the runc exec pipe". */
  text: string;
  /** What the goal is measured against. */
  floor: string;
  /** Measured value of the goal: a ratio (×) or an absolute value in `unit`. */
  value: number;
  unit: string;
  /** The bound `value` is compared with, and how. */
  bound: number;
  cmp: "≥" | "≤";
  met: boolean;
  /** The numbers behind `value`, in words. */
  measured: string;
}

/** p50 of row `id` in `rows`, NaN when missing. */
function p50(rows: ReadonlyMap<string, Row>, id: string): number {
  return rows.get(id)?.summary.p50 ?? NaN;
}

function check(c: Omit<GoalCheck, "met">): GoalCheck {
  const met = Number.isFinite(c.value) && (c.cmp === "≥" ? c.value >= c.bound : c.value <= c.bound);
  return { ...c, met };
}

/** A ratio goal: row `a` ÷ row `b` (p50s) against `bound`. */
function ratioGoal(rows: ReadonlyMap<string, Row>, g: { id: string; fig: number; text: string; floor: string; a: string; b: string; bound: number; cmp: "≥" | "≤"; also?: { id: string; label: string } }): GoalCheck | undefined {
  const ra = rows.get(g.a);
  const rb = rows.get(g.b);
  if (!ra || !rb) return undefined;
  const va = ra.summary.p50;
  const vb = rb.summary.p50;
  // A second floor measured beside the first (absent from older runs): named with its own ratio to the first.
  const vc = g.also ? rows.get(g.also.id)?.summary.p50 : undefined;
  const also = g.also && vc !== undefined ? `; ${g.also.label} ${fmt(vc)} ${ra.unit} = ${(vc / vb).toFixed(2)}×` : "";
  return check({ id: g.id, fig: g.fig, text: g.text, floor: g.floor, value: va / vb, unit: "×", bound: g.bound, cmp: g.cmp, measured: `${fmt(va)} vs ${fmt(vb)} ${ra.unit} = ${(va / vb).toFixed(2)}×${also}` });
}

/** An absolute goal on row `a`'s p50 (the first of `ids` that exists). */
function absGoal(rows: ReadonlyMap<string, Row>, g: { id: string; fig: number; text: string; floor: string; ids: string[]; bound: number; cmp: "≥" | "≤" }): GoalCheck | undefined {
  const r = g.ids.map((i) => rows.get(i)).find((x) => x !== undefined);
  if (!r) return undefined;
  const v = r.summary.p50;
  return check({ id: g.id, fig: g.fig, text: g.text, floor: g.floor, value: v, unit: r.unit, bound: g.bound, cmp: g.cmp, measured: `${fmt(v)} ${r.unit} (${r.label}, p50)` });
}

/**
 * The goals one figure's rows answer (figures without goals give none). Figure 5: every
 * Paddock throughput row compared with a `cat` row (binary and tar, in and out) must keep 70 %
 * of it; figure 3: at every concurrency and request kind, the gateway's share of direct req/s
 * must be at least nginx's.
 */
export function figureGoals(fig: number, rowList: readonly Row[]): GoalCheck[] {
  const rows = new Map(rowList.map((r) => [r.id, r]));
  const out: Array<GoalCheck | undefined> = [];
  switch (fig) {
    case 1:
      out.push(ratioGoal(rows, { id: "f1.no-pool", fig, text: "create without a warm pool (wait=agent) ≤ 2× runc run", floor: "runc run of the same bundle", a: "f1.wait-agent", b: "f1.floor", bound: 2, cmp: "≤", also: { id: "f1.floor-node", label: "runc run to a bare node listening (any node agent's floor)" } }));
      break;
    case 4:
      out.push(ratioGoal(rows, { id: "f4.stream", fig, text: "streamed exec ≥ 60 % of the runc exec pipe", floor: "runc exec, stdout piped", a: "f4.direct", b: "f4.runc", bound: 0.6, cmp: "≥" }));
      break;
    case 5:
      for (const r of rowList) {
        if (r.role !== "paddock" || !r.higherIsBetter || !r.vs) continue;
        out.push(ratioGoal(rows, { id: r.id, fig, text: `${r.label} ≥ 70 % of cat`, floor: rows.get(r.vs)?.label ?? r.vs, a: r.id, b: r.vs, bound: 0.7, cmp: "≥" }));
      }
      break;
    case 6:
      out.push(absGoal(rows, { id: "f6.spawn", fig, text: "daemon spawn → ready ≤ 250 ms", floor: "node -e 0 (process start)", ids: ["f6.daemon-alone"], bound: 250, cmp: "≤" }));
      break;
    case 7:
      out.push(absGoal(rows, { id: "f7.idle-private", fig, text: "idle daemon private memory ≤ 20 MiB", floor: "node's own heap", ids: ["f7.daemon-settled-anon", "f7.daemon-idle-anon", "f7.alone-anon"], bound: 20, cmp: "≤" }));
      break;
    case 8:
      out.push(ratioGoal(rows, { id: "f8.concurrent", fig, text: "20 concurrent creates ≤ 1.5× as many concurrent runc run (wall)", floor: "concurrent runc run", a: "f8.wall", b: "f8.floor-wall", bound: 1.5, cmp: "≤", also: { id: "f8.floor-node-wall", label: "as many concurrent runc run to a bare node listening (any node agent's floor)" } }));
      break;
    case 3:
      for (const r of rowList) {
        const m = /^f3\.([^.]+)\.c(\d+)\.gateway\.rps$/.exec(r.id);
        if (!m) continue;
        const [, ep, c] = m as unknown as [string, string, string];
        const direct = p50(rows, `f3.${ep}.c${c}.direct.rps`);
        const nginx = p50(rows, `f3.${ep}.c${c}.nginx.rps`);
        if (!Number.isFinite(direct) || !Number.isFinite(nginx)) continue;
        const g = r.summary.p50 / direct;
        const n = nginx / direct;
        // The bare Node proxy (absent from runs before it was added): Node's own floor for a proxy.
        const node = p50(rows, `f3.${ep}.c${c}.node.rps`) / direct;
        const nodeText = Number.isFinite(node) ? `, bare Node proxy ${Math.round(node * 100)} %` : "";
        out.push(check({ id: `f3.${ep}.c${c}`, fig, text: `gateway ≥ nginx's share of direct req/s, ${ep} @${c}`, floor: "nginx in front of the same socket", value: g / n, unit: "×", bound: 1, cmp: "≥", measured: `gateway ${Math.round(g * 100)} %${nodeText}, nginx ${Math.round(n * 100)} % of direct (${fmt(direct)} req/s)` }));
      }
      break;
    default:
      break;
  }
  return out.filter((x): x is GoalCheck => x !== undefined);
}

/** A goal checked on the current build's rows, and on the baseline's when the run had one. */
export interface GoalRow {
  after: GoalCheck;
  before?: GoalCheck;
}

/** Every goal of `figures`, each with the baseline build's check when the figure has `before`. */
export function evaluateGoals(figures: readonly FigureResult[]): GoalRow[] {
  const out: GoalRow[] = [];
  for (const f of figures) {
    const before = f.before ? new Map(figureGoals(f.num, f.before.rows).map((g) => [g.id, g])) : undefined;
    for (const after of figureGoals(f.num, f.rows)) {
      const b = before?.get(after.id);
      out.push(b ? { after, before: b } : { after });
    }
  }
  return out;
}

/** The goals as a Markdown table (fig, goal, floor, measured, value vs bound, met, and before). */
/** The Goals table's two header lines, with the before/after columns of a `--baseline` run or without. */
export function goalsTableHeader(withBefore: boolean): string[] {
  return [
    `| fig | goal | floor | measured (p50) | value | met |${withBefore ? " before | before met |" : ""}`,
    `|---|---|---|---|---|---|${withBefore ? "---|---|" : ""}`,
  ];
}

export function renderGoalsTable(goals: readonly GoalRow[]): string[] {
  if (goals.length === 0) return ["No goal was measured."];
  const withBefore = goals.some((g) => g.before);
  const val = (g: GoalCheck): string => `${g.unit === "×" ? `${g.value.toFixed(2)}×` : `${fmt(g.value)} ${g.unit}`} (${g.cmp} ${g.unit === "×" ? `${g.bound}×` : `${g.bound} ${g.unit}`})`;
  const out = goalsTableHeader(withBefore);
  const esc = (s: string): string => s.replace(/\|/g, "\\|");
  for (const { after: g, before: b } of goals) {
    const line = `| ${g.fig} | ${esc(g.text)} | ${esc(g.floor)} | ${esc(g.measured)} | ${val(g)} | ${g.met ? "✅ met" : "❌ missed"} |`;
    out.push(withBefore ? `${line} ${b ? val(b) : "–"} | ${b ? (b.met ? "met" : "missed") : "–"} |` : line);
  }
  return out;
}
