/**
 * The committed docs/benchmarks.md read back, so that `npm run bench:docs` keeps the figures it
 * has no local run for. `bench-results/` is gitignored and a clone starts without it; without
 * this, regenerating the page after a run of some figures (or on another clone) dropped every
 * other figure the page held. The page is this harness's own output (write-docs.ts), so its
 * parts are found by the lines write-docs.ts writes:
 *
 * - a figure's section: from `## <n>. <title>` up to the next `## ` heading or the end;
 * - its row in the "Figures" index: `| <n> | <title> | <run started> | <floor> |`;
 * - its run's row in "Machines and runs" (`| <run started> | ...`) and `Run <run started>: ...` lines;
 * - its rows in "Goals" (`| <n> | <goal> | ...`).
 */

/** One figure of the committed page, as written there. */
export interface CommittedFigure {
  /** Figure number. */
  num: number;
  /** The `startedAt` of the run that measured it (ISO 8601), from the Figures index. */
  startedAt: string;
  /** The command of that run, from the section's "Measured ... by `cmd`" line ("" if absent). */
  command: string;
  /** The section, heading included, without trailing blank lines. */
  section: string[];
  /** Its row of the Figures index. */
  indexRow: string;
  /** Its rows of the Goals table (cells as written: 6 cells, or 8 with before/after columns). */
  goalRows: string[];
}

/** What the committed page holds: its figures and, per run, its machine row and `Run …:` lines. */
export interface CommittedDoc {
  figures: Map<number, CommittedFigure>;
  /** run startedAt → its row of "Machines and runs". */
  machineRows: Map<string, string>;
  /** run startedAt → its `Run <startedAt>: …` lines. */
  runLines: Map<string, string[]>;
}

/** The `##` part of the page named `title` (heading excluded), or [] when the page has none. */
function part(lines: readonly string[], title: string): string[] {
  const start = lines.indexOf(`## ${title}`);
  if (start < 0) return [];
  const end = lines.findIndex((l, i) => i > start && l.startsWith("## "));
  return lines.slice(start + 1, end < 0 ? lines.length : end);
}

/** A table row's first cell, trimmed ("" for a line that is not a table row). */
function firstCell(line: string): string {
  const m = /^\|([^|]*)\|/.exec(line);
  return m ? (m[1] ?? "").trim() : "";
}

/**
 * Read a committed docs/benchmarks.md. Lines this parser does not recognise are skipped; a
 * figure whose section or index row is missing is not returned (it cannot be carried whole).
 * @param md - the page's text ("" when there is none).
 */
export function parseCommittedDoc(md: string): CommittedDoc {
  const lines = md.split("\n");
  const doc: CommittedDoc = { figures: new Map(), machineRows: new Map(), runLines: new Map() };
  for (const l of part(lines, "Machines and runs")) {
    const stamp = firstCell(l);
    if (/^\d{4}-\d\d-\d\dT/.test(stamp)) doc.machineRows.set(stamp, l);
    const run = /^Run (\d{4}-\d\d-\d\dT[\d:.]+Z):/.exec(l);
    if (run?.[1]) doc.runLines.set(run[1], [...(doc.runLines.get(run[1]) ?? []), l]);
  }
  const goals = part(lines, "Goals").filter((l) => /^\d+$/.test(firstCell(l)));
  for (const l of part(lines, "Figures")) {
    const cells = l.split("|").map((c) => c.trim());
    const num = Number(cells[1]);
    const startedAt = cells[3] ?? "";
    if (!/^\d+$/.test(cells[1] ?? "") || !/^\d{4}-\d\d-\d\dT/.test(startedAt)) continue;
    const headAt = lines.findIndex((x) => x.startsWith(`## ${num}. `));
    if (headAt < 0) continue;
    const endAt = lines.findIndex((x, i) => i > headAt && x.startsWith("## "));
    const section = lines.slice(headAt, endAt < 0 ? lines.length : endAt);
    while (section.length > 0 && section[section.length - 1]?.trim() === "") section.pop();
    const command = /^Measured \S+ by `([^`]*)`/.exec(section.find((x) => x.startsWith("Measured ")) ?? "")?.[1] ?? "";
    doc.figures.set(num, { num, startedAt, command, section, indexRow: l, goalRows: goals.filter((g) => firstCell(g) === String(num)) });
  }
  return doc;
}

/** The largest tenant count a run command asked figure 13 for (`--density-steps`, `--full` = 200, else 10). */
export function densityTopOfCommand(command: string): number {
  const steps = /--density-steps[ =]([\d,]+)/.exec(command)?.[1];
  if (steps) return Math.max(...steps.split(",").filter(Boolean).map(Number));
  return /(^| )--full( |$)/.test(command) ? 200 : 10;
}

/** A Goals row's cells as written (an escaped `\|` kept inside its cell; outer pipes dropped). */
export function goalRowCells(row: string): string[] {
  return row.replace(/^\|/, "").replace(/\|\s*$/, "").split(/(?<!\\)\|/);
}

/**
 * A committed Goals row fitted to the new table's columns: with `withBefore` a 6-cell row gets
 * "–" before/after cells, without it an 8-cell row loses them.
 */
export function fitGoalRow(row: string, withBefore: boolean): string {
  const cells = goalRowCells(row);
  if (withBefore && cells.length === 6) cells.push(" – ", " – ");
  if (!withBefore && cells.length === 8) cells.splice(6, 2);
  return `|${cells.join("|")}|`;
}
