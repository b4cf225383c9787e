/**
 * The guest agent's start as a host process (docs/performance.md "Creates, third look"): start
 * `dist/toolbox/agent.cjs` on a Unix socket in a temporary dir (as test/integration/agent-fixture.ts
 * does), wait for its "listening on" line, ask `GET /v1/health` once, then read the CPU time
 * of all its threads (`/proc/<pid>/task/<tid>/schedstat`, ns: finer than the 10 ms ticks of
 * `/proc/<pid>/stat`) and SIGKILL it. Builds: this checkout's, `--baseline <ref>`'s
 * (lib/builds.ts) and a floor (node serving one HTTP route on a Unix socket, nothing else),
 * interleaved with the order alternating every run. Prints per build the median and the
 * 20 %-trimmed mean of the CPU, the ms to "listening on" and to the health answer, and the load
 * average. Take the bench lock:
 *
 *   flock /tmp/paddock-bench.lock node dist/scripts/bench/profile-agent-start.js [--n 60] [--baseline <ref>]
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { PROJECT_ROOT } from "../lib/daemon-harness.js";
import { prepareBaseline } from "./lib/builds.js";

const { values: args } = parseArgs({ options: { n: { type: "string", default: "60" }, baseline: { type: "string" } } });
const n = Number(args.n);

const FLOOR = `const http = require("node:http"), path = require("node:path");
http.createServer((q, r) => r.end("{}")).listen(path.join(process.env.PADDOCK_AGENT_DIR, "agent.sock"), () => process.stdout.write("listening on\\n"));`;

/** One start: ms to listening, ms to the health answer, CPU ms of all threads then. */
interface Sample {
  listenMs: number;
  healthMs: number;
  cpuMs: number;
}

/** CPU time of every live thread of `pid`, ms. */
async function threadsCpuMs(pid: number): Promise<number> {
  let ns = 0;
  for (const tid of await fs.readdir(`/proc/${pid}/task`)) ns += Number((await fs.readFile(`/proc/${pid}/task/${tid}/schedstat`, "utf8")).split(" ")[0]);
  return ns / 1e6;
}

/** Start `argv` (node arguments) as an agent in a fresh dir and measure it. @throws Error when it exits or stays silent for 30 s. */
async function once(argv: readonly string[]): Promise<Sample> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-agent-start-"));
  try {
    await fs.writeFile(path.join(dir, "boot.json"), JSON.stringify({ hostname: "bench", userdata: null, default_user: null, secrets_dir: path.join(dir, "secrets"), agent_version: "bench", agent_proof: "" }));
    const t0 = performance.now();
    const child = spawn(process.execPath, argv, { env: { ...process.env, NODE_OPTIONS: "", PADDOCK_AGENT_DIR: dir, PADDOCK_AGENT_USERDATA_GUARD: path.join(dir, "guard") }, stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        let out = "";
        const timer = setTimeout(() => reject(new Error(`no "listening on" within 30 s: ${out}`)), 30_000);
        child.stdout.on("data", (b: Buffer) => {
          out += b.toString();
          if (out.includes("listening on")) {
            clearTimeout(timer);
            resolve();
          }
        });
        void exited.then(() => reject(new Error(`agent exited: ${out}`)));
      });
      const listenMs = performance.now() - t0;
      await new Promise<void>((resolve, reject) => {
        http.get({ socketPath: path.join(dir, "agent.sock"), path: "/v1/health" }, (res) => {
          res.resume();
          res.on("end", resolve);
        }).on("error", reject);
      });
      const healthMs = performance.now() - t0;
      return { listenMs, healthMs, cpuMs: await threadsCpuMs(child.pid as number) };
    } finally {
      child.kill("SIGKILL");
      await exited;
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const median = (a: readonly number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? Number.NaN;
const trimmedMean = (a: readonly number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  const k = Math.floor(s.length / 5);
  const m = s.slice(k, s.length - k);
  return m.reduce((x, y) => x + y, 0) / m.length;
};

const scratch = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-agent-floor-"));
try {
  const floor = path.join(scratch, "floor.cjs");
  await fs.writeFile(floor, FLOOR);
  const builds: { name: string; argv: string[] }[] = [{ name: "this", argv: [path.join(PROJECT_ROOT, "dist/toolbox/agent.cjs")] }];
  if (args.baseline !== undefined) {
    const b = await prepareBaseline(args.baseline, (m) => process.stderr.write(`${m}\n`));
    builds.push({ name: `baseline ${b.commit.slice(0, 9)}`, argv: [path.join(b.root, "dist/toolbox/agent.cjs")] });
  }
  builds.push({ name: "floor (node + http on a socket)", argv: [floor] });
  const samples = new Map(builds.map((b) => [b.name, [] as Sample[]]));
  const loads = [os.loadavg()[0] as number];
  for (let i = 0; i < n; i++) {
    for (const b of i % 2 === 0 ? builds : [...builds].reverse()) samples.get(b.name)?.push(await once(b.argv));
  }
  loads.push(os.loadavg()[0] as number);
  console.log(`load average (1 min) at start and end: ${loads.map((l) => l.toFixed(1)).join(", ")}; n=${n} per build`);
  for (const [name, s] of samples) {
    const f = (k: keyof Sample): string => `p50 ${median(s.map((x) => x[k])).toFixed(1)} / trimmed mean ${trimmedMean(s.map((x) => x[k])).toFixed(1)}`;
    console.log(`${name}: CPU ms ${f("cpuMs")}; listening ms ${f("listenMs")}; health answered ms ${f("healthMs")}`);
  }
} finally {
  await fs.rm(scratch, { recursive: true, force: true });
}
