/**
 * Reading a `/metrics` answer in tests: a strict parser of the Prometheus text exposition
 * format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/#text-format-details).
 * It refuses what a Prometheus scraper would: a sample of an undeclared family, a malformed
 * label set or value, a family declared twice, a histogram whose buckets are not cumulative or
 * lack `+Inf`. (The npm parse-prometheus-text-format drops the labels of labelled histograms.)
 */

/** One series: a counter/gauge sample (`value`), or a histogram series (buckets by `le`, sum, count). */
export interface ParsedSample {
  labels: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
  sum?: string;
  count?: string;
}

/** One metric family. */
export interface ParsedFamily {
  name: string;
  help: string;
  type: "COUNTER" | "GAUGE" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
  metrics: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const VALUE = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)$/;

/** Parse `{a="x",b="y"}` starting at `s[i] === "{"`; returns the labels and the index after `}`. */
function parseLabels(s: string, i: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  i++;
  for (;;) {
    if (s[i] === "}") return [labels, i + 1];
    const eq = s.indexOf("=", i);
    const key = s.slice(i, eq);
    if (eq < 0 || !/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(key) || s[eq + 1] !== '"') throw new Error(`bad label at ${i}: ${s}`);
    if (key in labels) throw new Error(`label ${key} twice: ${s}`);
    let v = "";
    let j = eq + 2;
    for (;; j++) {
      const c = s[j];
      if (c === undefined) throw new Error(`unterminated label value: ${s}`);
      if (c === '"') break;
      if (c === "\\") {
        const n = s[++j];
        if (n === "n") v += "\n";
        else if (n === "\\" || n === '"') v += n;
        else throw new Error(`bad escape \\${n}: ${s}`);
      } else v += c;
    }
    labels[key] = v;
    i = j + 1;
    if (s[i] === ",") i++;
    else if (s[i] !== "}") throw new Error(`expected , or } at ${i}: ${s}`);
  }
}

/** The families of an exposition text by name. @throws Error on anything a scraper would refuse. */
export function parseExposition(text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>();
  const typed = (name: string): ParsedFamily => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { name, help: "", type: "UNTYPED", metrics: [] }));
    return f;
  };
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      if (!NAME.test(name)) throw new Error(`bad family name ${name}`);
      const f = typed(name);
      if (kind === "HELP") f.help = rest.replace(/\\n/g, "\n").replace(/\\\\/g, "\\");
      else {
        if (f.type !== "UNTYPED" || f.metrics.length > 0) throw new Error(`TYPE of ${name} twice or after its samples`);
        const t = rest.toUpperCase();
        if (!["COUNTER", "GAUGE", "HISTOGRAM", "SUMMARY", "UNTYPED"].includes(t)) throw new Error(`bad type ${rest}`);
        f.type = t as ParsedFamily["type"];
      }
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const sampleName = m[1] as string;
    const parsed: [Record<string, string>, number] = line[sampleName.length] === "{" ? parseLabels(line, sampleName.length) : [{}, sampleName.length];
    let labels = parsed[0];
    const i = parsed[1];
    if (line[i] !== " ") throw new Error(`expected a space before the value: ${line}`);
    const rest = line.slice(i + 1).split(" ");
    const value = rest[0] as string;
    if (!VALUE.test(value) || rest.length > 2) throw new Error(`bad value: ${line}`);
    // Which family: the name itself, or a histogram's _bucket/_sum/_count.
    const suffix = /_(bucket|sum|count)$/.exec(sampleName);
    const base = suffix ? sampleName.slice(0, -suffix[0].length) : sampleName;
    const hist = suffix && families.get(base)?.type === "HISTOGRAM" ? families.get(base) : undefined;
    if (!hist) {
      const f = families.get(sampleName);
      if (!f || f.type === "UNTYPED") throw new Error(`sample of an undeclared family: ${line}`);
      f.metrics.push({ labels, value });
      continue;
    }
    let le: string | undefined;
    if (suffix?.[1] === "bucket") {
      le = labels.le;
      if (le === undefined) throw new Error(`bucket without le: ${line}`);
      labels = Object.fromEntries(Object.entries(labels).filter(([k]) => k !== "le"));
    }
    const key = JSON.stringify(Object.entries(labels).sort());
    let s = hist.metrics.find((x) => JSON.stringify(Object.entries(x.labels).sort()) === key);
    if (!s) hist.metrics.push((s = { labels, buckets: {} }));
    if (le !== undefined) (s.buckets as Record<string, string>)[le] = value;
    else if (suffix?.[1] === "sum") s.sum = value;
    else s.count = value;
  }
  for (const f of families.values()) {
    if (f.type !== "HISTOGRAM") continue;
    for (const s of f.metrics) {
      const b = Object.entries(s.buckets ?? {}).map(([le, v]) => [le === "+Inf" ? Infinity : Number(le), Number(v)] as const).sort((x, y) => x[0] - y[0]);
      if (b.at(-1)?.[0] !== Infinity || String(b.at(-1)?.[1]) !== s.count || s.sum === undefined) throw new Error(`${f.name}: +Inf bucket, count or sum missing`);
      for (let k = 1; k < b.length; k++) if ((b[k] as readonly [number, number])[1] < (b[k - 1] as readonly [number, number])[1]) throw new Error(`${f.name}: buckets not cumulative`);
    }
  }
  return families;
}

/**
 * The series of family `name` whose labels include every pair of `labels`.
 * @throws Error when the family is missing or no series (or more than one) matches.
 */
export function series(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): ParsedSample {
  const f = families.get(name);
  if (!f) throw new Error(`no family ${name}; have ${[...families.keys()].join(", ")}`);
  const hits = f.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels[k] === v));
  if (hits.length !== 1) throw new Error(`${hits.length} series of ${name} match ${JSON.stringify(labels)}`);
  return hits[0] as ParsedSample;
}

/** The value of the one series of a counter/gauge `name` matching `labels`, as a number. */
export function sampleValue(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  return Number(series(families, name, labels).value);
}
