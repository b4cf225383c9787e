/**
 * Where the gateway's CPU goes (figure 3 of scripts/bench/README.md): a real supervisor (`paddock up`, the bench's
 * supervisor lab) started under `node --cpu-prof`, one tenant, and a bare Node reverse proxy
 * (`http.createServer` + `http.request` on a keep-alive agent, the floor of Node itself) on the
 * same tenant socket. autocannon (the figure's load client) sends `GET /nodes` directly on the
 * socket, through the bare proxy and through the gateway, interleaved, `--repeats` times; the
 * CPU ms per request of each proxy process and of the daemon (/proc/<pid>/stat) are printed
 * (medians), then the supervisor is stopped so V8 writes its .cpuprofile, and the top frames
 * by self time (and a few inclusive totals) of the gateway runs only (samples outside them —
 * start-up, tenant create, the other targets' runs — are dropped) are printed.
 * Root only (the tenant daemon needs it); loopback and Unix sockets only. Take the bench lock:
 *
 *   flock /tmp/paddock-bench.lock node dist/scripts/bench/profile-gateway.js [--seconds 10] [--connections 16] [--repeats 3] [--top 40] [--path /nodes] [--keep] [--cpu-only] [--warmup 6]
 *
 * `--warmup` seconds of load at `--connections` on each target before the measured runs (not
 * measured; default 6: a cold Node proxy spends up to 2.5× its settled CPU per request over its
 * first several thousand requests, while V8 compiles its request path).
 *
 * The profiler itself costs the supervisor CPU (a sample every 100 µs): compare CPU per
 * request across processes with `--cpu-only` (no profiler; the table only).
 * `--keep` leaves the .cpuprofile in the printed directory (open it in Chrome DevTools).
 * `--strace` (with `--cpu-only`): `strace -c -f -p <pid>` over each gateway run (the supervisor)
 * and each bare proxy run (its process), and the syscalls per request of each by name (summed
 * over the runs) are printed; strace slows the
 * traced process a lot, so that run's CPU figures are not comparable with others.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import crypto from "node:crypto";
import { SupervisorLab } from "./lib/supervisor-lab.js";
import { LoadClient, type HttpTarget } from "./lib/http-load.js";
import { cpuMs } from "./lib/procs.js";
import { BareNodeProxy } from "./lib/bare-proxy.js";
import { summarize } from "./lib/stats.js";
import { spawn } from "node:child_process";

/**
 * Start `strace -c -f -p pid -o file`; the returned stop() SIGINTs it (it then writes its
 * summary) and resolves with syscall name → calls. `strace -c` output: a header, then
 * `% time  seconds  usecs/call  calls  [errors]  syscall` rows.
 */
async function straceCount(pid: number, file: string): Promise<() => Promise<Map<string, number>>> {
  const child = spawn("strace", ["-c", "-f", "-p", String(pid), "-o", file], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  // strace prints "Process N attached" once it is in.
  for (let i = 0; !err.includes("attached"); i++) {
    if (child.exitCode !== null || i > 200) throw new Error(`strace did not attach: ${err}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return async () => {
    const done = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    process.kill(child.pid as number, "SIGINT");
    await done;
    const out = new Map<string, number>();
    for (const line of (await fs.readFile(file, "utf8")).split("\n")) {
      const f = line.trim().split(/\s+/);
      if (f.length < 5 || !/^[\d.]+$/.test(f[0] as string) || f[f.length - 1] === "total") continue;
      const calls = Number(f[3]);
      if (Number.isFinite(calls)) out.set(f[f.length - 1] as string, calls);
    }
    return out;
  };
}

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
 * counted once per sample. With `windows` (CLOCK_MONOTONIC µs, the clock of V8's sample
 * timestamps) only samples inside one of them count, and the span is theirs.
 * @returns frames sorted by self time, and the profile's (or the windows') span, ms.
 */
export function frameTimes(p: CpuProfile, windows?: ReadonlyArray<readonly [number, number]>): { frames: FrameTime[]; spanMs: number; idleMs: number } {
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
  let at = p.startTime;
  let spanMs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    at += p.timeDeltas[i] ?? 0;
    const dt = (p.timeDeltas[i + 1] ?? 0) / 1000;
    if (windows && !windows.some(([a, b]) => at >= a && at < b)) continue;
    spanMs += dt;
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
  return { frames, spanMs: windows ? spanMs : (p.endTime - p.startTime) / 1000, idleMs: self.get("(idle)") ?? 0 };
}


/** Per-target CPU of one measured run: requests, and CPU ms of each watched process. */
interface Cell {
  requests: number;
  rps: number;
  cpuMs: Record<string, number>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: "string", default: "10" }, connections: { type: "string", default: "16" }, repeats: { type: "string", default: "3" }, top: { type: "string", default: "40" }, "cpu-only": { type: "boolean", default: false }, path: { type: "string", default: "/nodes" }, keep: { type: "boolean", default: false }, strace: { type: "boolean", default: false }, warmup: { type: "string", default: "6" } } });
  if (values.strace && !values["cpu-only"]) throw new Error("--strace needs --cpu-only (the profiler's own syscalls would be counted)");
  if (process.getuid?.() !== 0) throw new Error("needs root (the tenant daemon)");
  const profDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdkprof-"));
  // The profiler's own cost lands in the supervisor's CPU: `--cpu-only` runs it without (no profile printed).
  const lab = await SupervisorLab.start(process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images", { nodeArgs: values["cpu-only"] ? [] : ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=100"] });
  let client: LoadClient | undefined;
  let bare: BareNodeProxy | undefined;
  let requests = 0;
  /** CLOCK_MONOTONIC µs windows of the measured gateway runs (the clock of V8's profile timestamps). */
  const windows: Array<[number, number]> = [];
  const cells: Record<string, Cell[]> = { direct: [], bare: [], gateway: [] };
  /** Syscalls by name summed over the runs, per traced proxy (`--strace`). */
  const syscalls: Record<string, Map<string, number>> = { gateway: new Map(), bare: new Map() };
  const served: Record<string, number> = { gateway: 0, bare: 0 };
  try {
    const t = (await lab.createTenant(`pf${crypto.randomBytes(3).toString("hex")}`)).tenant;
    const daemon = await lab.daemonPid(t.id);
    bare = await BareNodeProxy.start(t.socketPath);
    const barePid = bare.pid;
    client = await LoadClient.start();
    const targets: Record<string, HttpTarget> = { direct: { name: "direct", socketPath: t.socketPath }, bare: { ...bare.target(lab.gateway(t.token).headers), name: "bare" }, gateway: lab.gateway(t.token) };
    const watched: Record<string, number> = { supervisor: lab.pid, bare: barePid, daemon };
    const job = { method: "GET", path: values.path as string, connections: Number(values.connections) };
    // Warm-up (JIT) of every target at the measured concurrency, then the measured runs, targets
    // interleaved: cold, a Node proxy needs several thousand requests before its CPU per request
    // settles, and a warm-up at 16 clients leaves the 1-client path compiling (docs/performance.md,
    // "Gateway, fourth look: one client").
    for (const target of Object.values(targets)) await client.run({ ...job, target, durationMs: Number(values.warmup) * 1000 });
    for (let rep = 0; rep < Number(values.repeats); rep++) {
      for (const [name, target] of Object.entries(targets)) {
        const before = await Promise.all(Object.values(watched).map(cpuMs));
        const tracedPid = name === "gateway" ? lab.pid : name === "bare" ? barePid : undefined;
        const stopTrace = values.strace && tracedPid !== undefined ? await straceCount(tracedPid, path.join(profDir, `strace-${name}.txt`)) : undefined;
        const t0 = Number(process.hrtime.bigint() / 1000n);
        const r = await client.run({ ...job, target, durationMs: Number(values.seconds) * 1000 });
        const t1 = Number(process.hrtime.bigint() / 1000n);
        const tally = syscalls[name];
        if (stopTrace && tally) {
          for (const [k, n] of await stopTrace()) tally.set(k, (tally.get(k) ?? 0) + n);
          served[name] = (served[name] ?? 0) + r.requests;
        }
        const after = await Promise.all(Object.values(watched).map(cpuMs));
        const cpu: Record<string, number> = {};
        Object.keys(watched).forEach((k, i) => (cpu[k] = (after[i] as number) - (before[i] as number)));
        cells[name]?.push({ requests: r.requests, rps: r.rps, cpuMs: cpu });
        if (r.errors) process.stdout.write(`${name}: ${r.errors} errors ${JSON.stringify(r.failures)}\n`);
        if (name === "gateway") {
          windows.push([t0, t1]);
          requests += r.requests;
        }
      }
    }
  } finally {
    await client?.close();
    if (bare) await bare.stop();
    await lab.stop();
  }
  const med = (xs: number[]): number => summarize(xs).p50;
  process.stdout.write(`GET ${values.path as string}, ${values.connections as string} connections, ${values.seconds as string} s × ${values.repeats as string} repeats interleaved; load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}\n`);
  process.stdout.write("target    req/s   CPU ms/request (median): proxy process | tenant daemon\n");
  for (const [name, cs] of Object.entries(cells)) {
    const proc = name === "gateway" ? "supervisor" : name === "bare" ? "bare" : undefined;
    const per = (k: string): number => med(cs.map((c) => (c.cpuMs[k] ?? 0) / Math.max(1, c.requests)));
    process.stdout.write(`${name.padEnd(8)} ${med(cs.map((c) => c.rps)).toFixed(0).padStart(6)}   ${proc ? `${proc} ${per(proc).toFixed(3)}` : "-"} | daemon ${per("daemon").toFixed(3)}\n`);
  }
  if (values.strace) {
    for (const [name, tally] of Object.entries(syscalls)) {
      const n = served[name] ?? 0;
      process.stdout.write(`\n${name === "gateway" ? "supervisor" : "bare proxy"} syscalls per ${name} request (strace -c -f, ${n} requests):\n`);
      let all = 0;
      for (const [k, c] of [...tally].sort((a, b) => b[1] - a[1])) {
        all += c;
        process.stdout.write(`${(c / Math.max(1, n)).toFixed(3).padStart(9)}  ${k}\n`);
      }
      process.stdout.write(`${(all / Math.max(1, n)).toFixed(3).padStart(9)}  total\n`);
    }
  }
  if (values["cpu-only"]) {
    await fs.rm(profDir, { recursive: true, force: true });
    return;
  }
  const file = (await fs.readdir(profDir)).find((f) => f.endsWith(".cpuprofile"));
  if (!file) throw new Error(`no .cpuprofile in ${profDir}`);
  const { frames, spanMs, idleMs } = frameTimes(JSON.parse(await fs.readFile(path.join(profDir, file), "utf8")) as CpuProfile, windows);
  const busy = spanMs - idleMs;
  process.stdout.write(`\nsupervisor profile, gateway runs only: ${spanMs.toFixed(0)} ms, ${busy.toFixed(0)} ms not idle; ${((busy * 1000) / Math.max(1, requests)).toFixed(1)} µs busy per request (${requests} requests)\n`);
  process.stdout.write(`\n${"self ms".padStart(9)} ${"self %".padStart(7)} ${"total ms".padStart(9)}  frame\n`);
  for (const f of frames.filter((x) => x.frame !== "(idle)").slice(0, Number(values.top))) {
    process.stdout.write(`${f.selfMs.toFixed(1).padStart(9)} ${((f.selfMs / busy) * 100).toFixed(1).padStart(6)}% ${f.totalMs.toFixed(1).padStart(9)}  ${f.frame}\n`);
  }
  const interesting = /^(route|routeRequest|admitRoute|admit|forward|finish|authenticate|verify|hashToken|randomUUID|info|write|observeRequest|parserOnIncoming|parserOnHeadersComplete|ClientRequest|dispatch|onHeaders|onData|onComplete|writeH1|writeHead|end|emit|socketOnData|onSocketNT|addRequest) /;
  process.stdout.write("\ninclusive totals of gateway-related functions:\n");
  for (const f of frames.filter((x) => interesting.test(x.frame)).sort((a, b) => b.totalMs - a.totalMs).slice(0, 30)) {
    process.stdout.write(`${f.totalMs.toFixed(1).padStart(9)} ms (${((f.totalMs / busy) * 100).toFixed(1)}%)  ${f.frame}\n`);
  }
  if (values.keep) process.stdout.write(`\nprofile kept: ${path.join(profDir, file)}\n`);
  else await fs.rm(profDir, { recursive: true, force: true });
}

await main();
