/**
 * A self-contained SVG chart of a {@link BenchReport}: one panel per figure and unit, one
 * horizontal bar per row at its p50, a whisker to its p95 (latency, memory) or across min–max
 * of the repeats (throughput), Paddock in blue, baselines in grey, measured causes in amber,
 * and dashed reference lines for numeric targets. No browser or library needed.
 */
import type { BenchReport, Row, RowRole } from "./report.js";
import { fmt } from "./report.js";

const WIDTH = 1000;
const LABEL_W = 420;
const BAR_W = 430;
const ROW_H = 18;
const COLORS: Record<RowRole, string> = { paddock: "#2b6cb0", baseline: "#a0aec0", cause: "#d69e2e", info: "#68d391" };

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

interface Panel {
  title: string;
  unit: string;
  rows: Row[];
  lines: Array<{ value: number; label: string }>;
  /** The baseline build's rows of the figure by id (`--baseline`), drawn under each bar. */
  before: Map<string, Row>;
}

/** Colour of the baseline build's bars (before), drawn thin under the current build's. */
const BEFORE_COLOR = "#805ad5";
const BEFORE_H = 7;

/** Render the chart. @returns the SVG document text. */
export function renderSvgChart(rep: BenchReport): string {
  const panels: Panel[] = [];
  for (const f of rep.figures) {
    const keys = [...new Set(f.rows.map((r) => `${r.unit}\u0000${r.group ?? ""}`))];
    for (const key of keys) {
      const [unit, group] = key.split("\u0000") as [string, string];
      const rows = f.rows.filter((r) => r.unit === unit && (r.group ?? "") === group && Number.isFinite(r.summary.p50));
      if (!rows.length) continue;
      const suffix = [keys.length > 1 ? group : "", keys.length > 1 && !group ? unit : ""].filter(Boolean).join(" ");
      const before = new Map((f.before?.rows ?? []).filter((r) => Number.isFinite(r.summary.p50)).map((r) => [r.id, r]));
      panels.push({ title: `${f.num}. ${f.title}${suffix ? ` — ${suffix}` : ""}`, unit, rows, lines: (f.chartLines ?? []).filter((l) => l.unit === unit), before });
    }
  }
  const parts: string[] = [];
  let y = 84;
  for (const p of panels) {
    const hi = (r: Row): number => (r.higherIsBetter ? r.summary.max : r.summary.p95);
    const befores = p.rows.flatMap((r) => { const b = p.before.get(r.id); return b ? [b.summary.p50] : []; });
    const maxV = Math.max(...p.rows.map((r) => (Number.isFinite(hi(r)) ? hi(r) : r.summary.p50)), ...befores, ...p.lines.map((l) => l.value)) * 1.05 || 1;
    const x = (v: number): number => LABEL_W + Math.max(0, Math.min(1, v / maxV)) * BAR_W;
    parts.push(`<text x="10" y="${y}" class="pt">${esc(p.title)} (${esc(p.unit)}${p.rows.some((r) => r.higherIsBetter) ? ", higher is better" : ", lower is better"})</text>`);
    y += 8;
    const top = y;
    for (const r of p.rows) {
      const s = r.summary;
      const w = Math.max(1, x(s.p50) - LABEL_W);
      parts.push(`<text x="${LABEL_W - 6}" y="${y + 13}" class="lb" text-anchor="end">${esc(r.label.length > 62 ? r.label.slice(0, 61) + "…" : r.label)}</text>`);
      parts.push(`<rect x="${LABEL_W}" y="${y + 3}" width="${w.toFixed(1)}" height="${ROW_H - 6}" fill="${COLORS[r.role]}"><title>${esc(`${r.label}: p50 ${fmt(s.p50)} p95 ${fmt(s.p95)} min ${fmt(s.min)} max ${fmt(s.max)} ${r.unit} (n=${s.n})`)}</title></rect>`);
      const [a, b] = r.higherIsBetter ? [s.min, s.max] : [s.p50, s.p95];
      if (Number.isFinite(a) && Number.isFinite(b) && s.n > 1) {
        const ym = y + ROW_H / 2;
        parts.push(`<line x1="${x(a).toFixed(1)}" y1="${ym}" x2="${x(b).toFixed(1)}" y2="${ym}" class="wh"/><line x1="${x(b).toFixed(1)}" y1="${ym - 4}" x2="${x(b).toFixed(1)}" y2="${ym + 4}" class="wh"/>`);
      }
      parts.push(`<text x="${LABEL_W + BAR_W + 8}" y="${y + 13}" class="vl">${esc(fmt(s.p50))}${r.higherIsBetter ? "" : ` / ${esc(fmt(s.p95))}`} ${esc(r.unit)}</text>`);
      y += ROW_H;
      const old = p.before.get(r.id);
      if (old) {
        const bw = Math.max(1, x(old.summary.p50) - LABEL_W);
        parts.push(`<rect x="${LABEL_W}" y="${y - 3}" width="${bw.toFixed(1)}" height="${BEFORE_H}" fill="${BEFORE_COLOR}" opacity="0.75"><title>${esc(`before (baseline build): p50 ${fmt(old.summary.p50)} ${old.unit} (n=${old.summary.n})`)}</title></rect>`);
        parts.push(`<text x="${LABEL_W + BAR_W + 8}" y="${y + 4}" class="bf">before ${esc(fmt(old.summary.p50))} ${esc(old.unit)}</text>`);
        y += BEFORE_H + 2;
      }
    }
    p.lines.forEach((l, i) => {
      const lx = x(l.value).toFixed(1);
      // Stagger the labels so two close targets stay legible.
      parts.push(`<line x1="${lx}" y1="${top}" x2="${lx}" y2="${y + i * 11}" class="tg"/><text x="${lx}" y="${y + 11 + i * 11}" class="tl" text-anchor="middle">${esc(l.label)}</text>`);
    });
    y += Math.max(0, p.lines.length - 1) * 11;
    parts.push(`<line x1="${LABEL_W}" y1="${top}" x2="${LABEL_W}" y2="${y}" class="ax"/>`);
    y += 34;
  }
  const m = rep.machine;
  const head = [
    `<text x="10" y="24" class="h1">Paddock benchmark ${esc(rep.startedAt)}</text>`,
    `<text x="10" y="44" class="sub">${esc(`${m.cpuModel}, ${m.cores} cores, ${m.memGiB} GiB, kernel ${m.kernel}, node ${m.node}, runc ${m.runc}; load avg ${rep.load.min.toFixed(1)}–${rep.load.max.toFixed(1)} (mean ${rep.load.mean.toFixed(1)})`)}</text>`,
    `<text x="10" y="60" class="sub">bar = p50, whisker = p50→p95 (throughput: min–max of repeats); ` +
      `<tspan fill="${COLORS.paddock}">■ Paddock</tspan> <tspan fill="${COLORS.baseline}">■ baseline/floor</tspan> ` +
      `<tspan fill="${COLORS.cause}">■ measured cause</tspan> <tspan fill="${COLORS.info}">■ context</tspan>; <tspan fill="#e53e3e">dashed = target</tspan>` +
      (rep.builds ? `; <tspan fill="${BEFORE_COLOR}">▬ before: ${esc(rep.builds.baseline.commit.slice(0, 12))} (${esc(rep.builds.baseline.ref)})</tspan>, bars = after: ${esc(rep.builds.current.commit.slice(0, 12))}${rep.builds.current.dirty ? "+changes" : ""}` : "") +
      `</text>`,
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y + 10}" viewBox="0 0 ${WIDTH} ${y + 10}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<style>.h1{font-size:18px;font-weight:bold}.sub{font-size:11px;fill:#4a5568}.pt{font-size:13px;font-weight:bold}.lb{font-size:11px}.vl{font-size:11px;fill:#2d3748}.wh{stroke:#1a202c;stroke-width:1.2}.ax{stroke:#4a5568}.tg{stroke:#e53e3e;stroke-dasharray:4 3;stroke-width:1.5}.tl{font-size:10px;fill:#e53e3e}.bf{font-size:9px;fill:${BEFORE_COLOR}}</style>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...head,
    ...parts,
    `</svg>`,
  ].join("\n");
}

/** One line of {@link renderLineChart}. */
export interface LineSeries {
  name: string;
  /** One value per x label (NaN = not measured). */
  values: number[];
}

/** One panel of {@link renderLineChart}: its own y scale. */
export interface LinePanel {
  title: string;
  unit: string;
  series: LineSeries[];
}

const LINE_COLORS = ["#2b6cb0", "#d69e2e", "#38a169", "#e53e3e", "#805ad5", "#718096"];

/**
 * A self-contained SVG line chart: one panel per unit, x = the given labels (equally spaced),
 * one polyline with dots and values per series (docs/benchmarks-density.svg).
 * @returns the SVG document text.
 */
export function renderLineChart(title: string, subtitle: string, xLabel: string, xLabels: readonly string[], panels: readonly LinePanel[]): string {
  const width = 760;
  const left = 70;
  const plotW = 430;
  const plotH = 170;
  const parts: string[] = [];
  let y = 70;
  const xAt = (i: number): number => left + (xLabels.length === 1 ? plotW / 2 : (i / (xLabels.length - 1)) * plotW);
  for (const p of panels) {
    const all = p.series.flatMap((s) => s.values.filter(Number.isFinite));
    const maxV = (Math.max(0, ...all) * 1.1) || 1;
    const yAt = (v: number): number => y + 20 + plotH - (v / maxV) * plotH;
    parts.push(`<text x="10" y="${y + 10}" class="pt">${esc(p.title)} (${esc(p.unit)})</text>`);
    const top = y + 20;
    for (let k = 0; k <= 4; k++) {
      const v = (maxV * k) / 4;
      const gy = yAt(v).toFixed(1);
      parts.push(`<line x1="${left}" y1="${gy}" x2="${left + plotW}" y2="${gy}" class="gr"/><text x="${left - 6}" y="${Number(gy) + 4}" class="ax" text-anchor="end">${esc(fmt(v))}</text>`);
    }
    xLabels.forEach((l, i) => parts.push(`<text x="${xAt(i).toFixed(1)}" y="${top + plotH + 16}" class="ax" text-anchor="middle">${esc(l)}</text>`));
    parts.push(`<text x="${left + plotW / 2}" y="${top + plotH + 32}" class="ax" text-anchor="middle">${esc(xLabel)}</text>`);
    p.series.forEach((s, si) => {
      const color = LINE_COLORS[si % LINE_COLORS.length] as string;
      const pts = s.values.map((v, i) => (Number.isFinite(v) ? `${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}` : "")).filter(Boolean);
      parts.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="2"/>`);
      s.values.forEach((v, i) => {
        if (!Number.isFinite(v)) return;
        parts.push(`<circle cx="${xAt(i).toFixed(1)}" cy="${yAt(v).toFixed(1)}" r="3" fill="${color}"><title>${esc(`${s.name} at ${xLabels[i] ?? ""}: ${fmt(v)} ${p.unit}`)}</title></circle>`);
      });
      const last = [...s.values].reverse().find(Number.isFinite);
      parts.push(`<text x="${left + plotW + 14}" y="${top + 12 + si * 15}" class="lg" fill="${color}">■ ${esc(s.name)}${last !== undefined ? ` (${esc(fmt(last))})` : ""}</text>`);
    });
    parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" class="ax2"/>`);
    y = top + plotH + 56;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y}" viewBox="0 0 ${width} ${y}" font-family="DejaVu Sans, Arial, sans-serif">`,
    `<style>.h1{font-size:17px;font-weight:bold}.sub{font-size:11px;fill:#4a5568}.pt{font-size:13px;font-weight:bold}.ax{font-size:10px;fill:#4a5568}.lg{font-size:11px}.gr{stroke:#e2e8f0}.ax2{stroke:#4a5568}</style>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="24" class="h1">${esc(title)}</text>`,
    `<text x="10" y="44" class="sub">${esc(subtitle)}</text>`,
    ...parts,
    `</svg>`,
  ].join("\n");
}
