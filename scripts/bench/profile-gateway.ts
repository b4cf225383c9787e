/**
 * Where the gateway's CPU goes (figure 3 of scripts/bench/README.md): a real supervisor (`paddock up`, the bench's
 * supervisor lab) started under `node --cpu-prof`, one tenant, then autocannon (the figure's
 * load client) on `GET /nodes` through the gateway; the supervisor is stopped so V8 writes its
 * .cpuprofile, and the top frames by self time (and a few inclusive totals) are printed.
 * Root only (the tenant daemon needs it); loopback and Unix sockets only. Take the bench lock:
 *
 *   flock /tmp/paddock-bench.lock node dist/scripts/bench/profile-gateway.js [--seconds 10] [--connections 16] [--top 40] [--keep]
 *
 * `--keep` leaves the .cpuprofile in the printed directory (open it in Chrome DevTools).
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import crypto from "node:crypto";
import { SupervisorLab } from "./lib/supervisor-lab.js";
import { LoadClient } from "./lib/http-load.js";
import { summarize } from "./lib/stats.js";

/** The parts of a V8 .cpuprofile read here. */
interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One function's share of the profile, ms. */
export interface FrameTime {
  frame: string;
  selfMs: number;
  totalMs: number;
}

/**
 * Self and inclusive time per function (name + file:line; `(program)`, `(garbage collector)`
 * and `(idle)` as V8 names them) of a .cpuprofile. A recursive function's inclusive time is
 * counted once per sample. @returns frames sorted by self time, and the profile's span, ms.
 */
export function frameTimes(p: CpuProfile): { frames: FrameTime[]; spanMs: number; idleMs: number } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (id: number): string => {
    const f = (byId.get(id) as CpuProfile["nodes"][number]).callFrame;
    const file = f.url ? `${f.url.replace(/^file:\/\//, "").replace(/^.*\/(node_modules|dist)\//, "$1/")}:${f.lineNumber + 1}` : "";
    return `${f.functionName || "(anonymous)"} ${file}`.trim();
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    const k = key(id);
    self.set(k, (self.get(k) ?? 0) + dt);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const kk = key(n);
      if (seen.has(kk)) continue;
      seen.add(kk);
      total.set(kk, (total.get(kk) ?? 0) + dt);
    }
  }
  const frames = [...self.keys(), ...[...total.keys()].filter((k) => !self.has(k))].map((frame) => ({ frame, selfMs: self.get(frame) ?? 0, totalMs: total.get(frame) ?? 0 }));
  frames.sort((a, b) => b.selfMs - a.selfMs);
  return { frames, spanMs: (p.endTime - p.startTime) / 1000, idleMs: self.get("(idle)") ?? 0 };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: "string", default: "10" }, connections: { type: "string", default: "16" }, top: { type: "string", default: "40" }, keep: { type: "boolean", default: false } } });
  if (process.getuid?.() !== 0) throw new Error("needs root (the tenant daemon)");
  const profDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdkprof-"));
  const lab = await SupervisorLab.start(process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images", { nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=100"] });
  let client: LoadClient | undefined;
  let requests = 0;
  try {
    const t = (await lab.createTenant(`pf${crypto.randomBytes(3).toString("hex")}`)).tenant;
    client = await LoadClient.start();
    // Warm-up (JIT), then the measured run.
    await client.run({ target: lab.gateway(t.token), method: "GET", path: "/nodes", connections: Number(values.connections), durationMs: 1000 });
    const r = await client.run({ target: lab.gateway(t.token), method: "GET", path: "/nodes", connections: Number(values.connections), durationMs: Number(values.seconds) * 1000 });
    requests = r.requests;
    const lat = summarize(r.latenciesMs);
    process.stdout.write(`load: ${r.requests} requests (${r.errors} errors) in ${r.wallMs.toFixed(0)} ms = ${r.rps.toFixed(0)} req/s, p50 ${lat.p50.toFixed(3)} ms, p99 ${lat.p99.toFixed(3)} ms, client CPU ${(r.clientCpu * 100).toFixed(0)}%; load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  } finally {
    await client?.close();
    await lab.stop();
  }
  const file = (await fs.readdir(profDir)).find((f) => f.endsWith(".cpuprofile"));
  if (!file) throw new Error(`no .cpuprofile in ${profDir}`);
  const { frames, spanMs, idleMs } = frameTimes(JSON.parse(await fs.readFile(path.join(profDir, file), "utf8")) as CpuProfile);
  const busy = spanMs - idleMs;
  process.stdout.write(`supervisor profile: ${spanMs.toFixed(0)} ms span, ${busy.toFixed(0)} ms not idle (includes start-up, tenant create and warm-up); ≈ ${((busy * 1000) / Math.max(1, requests)).toFixed(1)} µs busy per measured request (upper bound)\n`);
  process.stdout.write(`\n${"self ms".padStart(9)} ${"self %".padStart(7)} ${"total ms".padStart(9)}  frame\n`);
  for (const f of frames.filter((x) => x.frame !== "(idle)").slice(0, Number(values.top))) {
    process.stdout.write(`${f.selfMs.toFixed(1).padStart(9)} ${((f.selfMs / busy) * 100).toFixed(1).padStart(6)}% ${f.totalMs.toFixed(1).padStart(9)}  ${f.frame}\n`);
  }
  const interesting = /^(route|prepareHeaders|authenticate|verify|hashToken|randomUUID|child|info|write|observeRequest|web|ws|stream|createServer|setupOutgoing|ClientRequest|parserOnIncoming|emit) /;
  process.stdout.write("\ninclusive totals of gateway-related functions:\n");
  for (const f of frames.filter((x) => interesting.test(x.frame)).sort((a, b) => b.totalMs - a.totalMs).slice(0, 30)) {
    process.stdout.write(`${f.totalMs.toFixed(1).padStart(9)} ms (${((f.totalMs / busy) * 100).toFixed(1)}%)  ${f.frame}\n`);
  }
  if (values.keep) process.stdout.write(`\nprofile kept: ${path.join(profDir, file)}\n`);
  else await fs.rm(profDir, { recursive: true, force: true });
}

await main();
