/**
 * `npm run bench`: latency and footprint of a real tenant daemon with real runc VMs (issues 2,
 * 3, 6). Repeated runs, p50/p95, the machine named; writes bench-results/<date>.json and .md.
 * Never part of `npm test`. Root only. Loopback and Unix sockets only.
 *
 *   node dist/scripts/bench/run.js [--n 10] [--network]
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { spawn } from "node:child_process";
import { TestDaemon, PROJECT_ROOT, randomIsolatedRange } from "../../test/helpers/daemon.js";

interface Figure { name: string; unit: string; samples: number[]; p50: number; p95: number; target?: string }

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}
function figure(name: string, unit: string, samples: number[], target?: string): Figure {
  return { name, unit, samples, p50: pct(samples, 0.5), p95: pct(samples, 0.95), ...(target ? { target } : {}) };
}
async function rssBytes(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}
async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t) / 1e6, v];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { n: { type: "string", default: "10" }, network: { type: "boolean", default: false } } });
  const n = Number(values.n);
  const figures: Figure[] = [];
  const d = await TestDaemon.create({ hostGroups: [{ name: "bench", count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }] });
  try {
    await d.start();
    await new Promise((r) => setTimeout(r, 1000));
    const idleRss = await rssBytes(d.child?.pid as number);
    const create: number[] = [], createWait: number[] = [], del: number[] = [], exec: number[] = [];
    for (let i = 0; i < n; i++) {
      const [ms, r] = await timed(() => d.post("/hostgroup/bench/nodes", {}));
      if (r.status !== 201) throw new Error(`create failed: ${r.text}`);
      create.push(ms);
      const h = (r.json as { hostname: string }).hostname;
      const [dms] = await timed(() => d.del(`/hostgroup/bench/nodes/${h}`));
      del.push(dms);
    }
    const agentRss: number[] = [];
    let keep = "";
    for (let i = 0; i < n; i++) {
      const [ms, r] = await timed(() => d.post("/hostgroup/bench/nodes?wait=agent&timeout=60s", {}));
      if (r.status !== 201) throw new Error(`create wait=agent failed: ${r.text}`);
      createWait.push(ms);
      const h = (r.json as { hostname: string }).hostname;
      const pids = await d.post(`/vm/${h}/exec?cmd=/bin/cat&args=/proc/1/status&buffered=true&uid=0`);
      void pids;
      if (i < n - 1) await d.del(`/hostgroup/bench/nodes/${h}`);
      else keep = h;
    }
    for (let i = 0; i < 3 * n; i++) {
      const [ms, r] = await timed(() => d.post(`/vm/${keep}/exec?cmd=/bin/true&buffered=true`));
      if (r.status !== 200) throw new Error(`exec failed: ${r.text}`);
      exec.push(ms);
    }
    const agent = await d.post(`/vm/${keep}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent("grep VmRSS /proc/[0-9]*/status | sort -k2 -n | tail -1")}&buffered=true&uid=0`);
    const kb = Number(/VmRSS:\s+(\d+)/.exec(String((agent.json as { stdout?: string }).stdout))?.[1] ?? NaN);
    agentRss.push(kb * 1024);
    figures.push(
      figure("create (no wait) → Running", "ms", create),
      figure("create wait=agent → ready", "ms", createWait, "p50 ≤ 150 ms (issue 6)"),
      figure("delete", "ms", del),
      figure("buffered exec /bin/true via socket", "ms", exec, "p50 < 15 ms (issue 6)"),
      figure("daemon idle RSS", "MiB", [idleRss / 2 ** 20]),
      figure("agent RSS per VM", "MiB", agentRss.map((b) => b / 2 ** 20)),
    );
  } finally {
    await d.destroy();
  }
  const machine = { cpu: os.cpus()[0]?.model ?? "?", cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version, load1: os.loadavg()[0] ?? 0 };
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const outDir = path.join(PROJECT_ROOT, "bench-results");
  await fs.mkdir(outDir, { recursive: true });
  const md = [
    `# Paddock benchmark ${new Date().toISOString()}`,
    "",
    `Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memGiB} GiB, kernel ${machine.kernel}, node ${machine.node}, load1 at end ${machine.load1.toFixed(2)}. n=${n}.`,
    "",
    "| figure | p50 | p95 | unit | target |",
    "|---|---|---|---|---|",
    ...figures.map((f) => `| ${f.name} | ${f.p50.toFixed(1)} | ${f.p95.toFixed(1)} | ${f.unit} | ${f.target ?? ""} |`),
    "",
  ].join("\n");
  await fs.writeFile(path.join(outDir, `${stamp}.json`), JSON.stringify({ machine, figures }, null, 2));
  await fs.writeFile(path.join(outDir, `${stamp}.md`), md);
  process.stdout.write(md);
  if (values.network) {
    await new Promise<void>((resolve) => spawn(process.execPath, [path.join(PROJECT_ROOT, "dist/scripts/bench/network-bench.js")], { stdio: "inherit" }).once("exit", () => resolve()));
  }
}

await main();
