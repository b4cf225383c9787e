/**
 * Where a VM create's time goes (figures 1 and 8 of scripts/bench/README.md): a tenant daemon
 * with the bench group (lib/context.ts `startDaemon`, debug log on) creates VMs with
 * `wait=agent`, one at a time and `--concurrent` at once, and this prints per build:
 * - the latency of each create and the wall time of the concurrent batch;
 * - the daemon's CPU ms per create (/proc/<pid>/stat around the creates);
 * - the boot's step spans the daemon logs (`vm boot timing`: ms since the boot started when
 *   each step ended) and the wait for the agent (`vm wait timing`), medians;
 * - with `--strace`: the processes the daemon spawned per create (`strace -f -e trace=execve`
 *   on the daemon during one extra create and one extra batch; strace slows the daemon, so
 *   those runs are not timed);
 * - the floor: `runc run` of the same bundle as figure 1 (lib/runc-floor.ts), alone and as many
 *   at once, measured in the same rounds.
 * With `--baseline <ref>` that commit's build (lib/builds.ts) runs a daemon of its own next to
 * this checkout's and the rounds alternate between them. Root only; take the bench lock:
 *
 *   flock /tmp/paddock-bench.lock node dist/scripts/bench/profile-create.js [--n 5] [--rounds 3] [--concurrent 20] [--baseline <ref>] [--strace]
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { BENCH_GROUP, deleteVm, startDaemon } from "./lib/context.js";
import { CURRENT_DAEMON_ARGV, prepareBaseline } from "./lib/builds.js";
import { FloorBundle } from "./lib/runc-floor.js";
import { startChild, stopChild } from "./lib/procs.js";
import { nowMs, summarize, timed } from "./lib/stats.js";
import type { TestDaemon } from "../lib/daemon-harness.js";

const { values: args } = parseArgs({
  options: {
    n: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    concurrent: { type: "string", default: "20" },
    baseline: { type: "string" },
    strace: { type: "boolean", default: false },
    image: { type: "string", default: "/var/lib/paddock/images" },
  },
});
const n = Number(args.n);
const rounds = Number(args.rounds);
const concurrent = Number(args.concurrent);

/** What one build's rounds gathered. */
interface Samples {
  seq: number[];
  /** CPU ms per create: the daemon itself, the processes it spawned and waited for, the VMs (tini, agent, runc init). */
  seqCpu: Cpu[];
  wall: number[];
  each: number[];
  wallCpu: Cpu[];
  spans: Map<string, number[]>;
  execs: Map<string, number>[];
  /** Per batch: how many of its creates formatted their disk inline (`disk created`) rather than taking a spare. */
  inlineMkfs: number[];
}

function newSamples(): Samples {
  return { seq: [], seqCpu: [], wall: [], each: [], wallCpu: [], spans: new Map(), execs: [], inlineMkfs: [] };
}

/** CPU ms: the daemon, its reaped children, its tenant's VMs. */
interface Cpu {
  daemon: number;
  children: number;
  vms: number;
}

/** utime+stime and cutime+cstime of `pid`, ms; zeros when it is gone. */
async function procCpu(pid: number): Promise<{ self: number; children: number }> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (stat === "") return { self: 0, children: 0 };
  // After "(comm) ": utime, stime, cutime, cstime are at indexes 11-14 (clock ticks of 10 ms).
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
  return { self: ((f[11] as number) + (f[12] as number)) * 10, children: ((f[13] as number) + (f[14] as number)) * 10 };
}

/** Children of `pid` whose command name is `comm`. */
async function childrenNamed(pid: number, comm: string): Promise<number[]> {
  const kids = (await fs.readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "")).trim().split(/\s+/).filter(Boolean).map(Number);
  const out: number[] = [];
  for (const k of kids) if ((await fs.readFile(`/proc/${k}/comm`, "utf8").catch(() => "")).trim() === comm) out.push(k);
  return out;
}

/**
 * CPU used so far by the daemon `pid` (self), the processes it and its command helper
 * (paddock-spawnd, tenant-daemon/vm/spawn-server.ts: counted with what it reaped) waited for,
 * and its tenant's VM cgroups, ms. A helper that ended is already in the daemon's children.
 */
async function cpuNow(pid: number, tenantId: string): Promise<Cpu> {
  const d = await procCpu(pid);
  let children = d.children;
  for (const h of await childrenNamed(pid, "paddock-spawnd")) {
    const c = await procCpu(h);
    children += c.self + c.children;
  }
  const usage = await fs.readFile(`/sys/fs/cgroup/cpuacct/paddock/${tenantId}/cpuacct.usage`, "utf8").catch(() => "NaN");
  return { daemon: d.self, children, vms: Number(usage) / 1e6 };
}

function cpuDelta(a: Cpu, b: Cpu, per: number): Cpu {
  return { daemon: (b.daemon - a.daemon) / per, children: (b.children - a.children) / per, vms: (b.vms - a.vms) / per };
}

function cpuText(xs: readonly Cpu[]): string {
  const d = med(xs.map((x) => x.daemon));
  const c = med(xs.map((x) => x.children));
  const v = med(xs.map((x) => x.vms));
  return `CPU per create: daemon ${f(d)} + its processes ${f(c)} + VM ${f(v)} = ${f(d + c + v)} ms`;
}

const med = (xs: readonly number[]): number => (xs.length === 0 ? NaN : summarize(xs).p50);
const f = (x: number): string => (Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1)) : "–");

/** Debug lines of `d` since `from` (an offset in its stderr) with `msg`. */
function logLines(d: TestDaemon, from: number, msg: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of d.stderr.slice(from).split("\n")) {
    if (!line.includes(msg)) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.msg === msg) out.push(o);
    } catch {
      // not a JSON line
    }
  }
  return out;
}

function addSpans(s: Samples, d: TestDaemon, from: number): void {
  for (const l of logLines(d, from, "vm boot timing")) {
    for (const [k, v] of Object.entries((l.atMs ?? {}) as Record<string, number>)) (s.spans.get(k) ?? s.spans.set(k, []).get(k) as number[]).push(v);
    (s.spans.get("boot total") ?? s.spans.set("boot total", []).get("boot total") as number[]).push(l.totalMs as number);
  }
  for (const l of logLines(d, from, "vm wait timing")) {
    (s.spans.get("wait for agent") ?? s.spans.set("wait for agent", []).get("wait for agent") as number[]).push(l.waitMs as number);
    // Since 05716b1's successor: the agent's health answer alone (the rest is the secret delivery).
    if (typeof l.agentMs === "number") (s.spans.get("  agent answered") ?? s.spans.set("  agent answered", []).get("  agent answered") as number[]).push(l.agentMs);
  }
}

async function createOne(d: TestDaemon): Promise<[number, string]> {
  const [ms, r] = await timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=300s`, {}));
  if (r.status !== 201) throw new Error(`create failed (${r.status}): ${r.text.slice(0, 400)}`);
  return [ms, (r.json as { hostname: string }).hostname];
}

async function batch(d: TestDaemon, count: number): Promise<{ wall: number; each: number[]; hosts: string[] }> {
  const t0 = nowMs();
  const res = await Promise.all(Array.from({ length: count }, () => createOne(d)));
  return { wall: nowMs() - t0, each: res.map(([ms]) => ms), hosts: res.map(([, h]) => h) };
}

/**
 * Processes spawned while `fn` ran, from `strace -ff` on the daemon and on its command helper
 * (paddock-spawnd) if one runs: by the daemon's own threads (a process is the daemon's when one
 * of its threads cloned it without CLONE_THREAD), and by the helper (keys `spawnd:<program>`),
 * each by the program it first exec'd. What those processes exec or spawn in turn (runc init,
 * mount) is not counted.
 */
async function spawnsDuring(pid: number, fn: () => Promise<void>): Promise<Map<string, number>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdkstrace-"));
  const helpers = await childrenNamed(pid, "paddock-spawnd");
  const st = startChild(["strace", "-ff", "-qq", "-e", "trace=execve,clone,clone3,vfork,fork", "-e", "signal=none", "-o", path.join(dir, "t"), "-p", String(pid), ...helpers.flatMap((h) => ["-p", String(h)])], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 1000));
  // Threads that exist already (strace -f attaches to each); later ones are found by their clone.
  const threads = (await fs.readdir(`/proc/${pid}/task`)).map(Number);
  try {
    await fn();
  } finally {
    await stopChild(st, "SIGINT");
  }
  const clones = new Map<number, { child: number; thread: boolean }[]>();
  const firstExec = new Map<number, string>();
  for (const file of await fs.readdir(dir)) {
    const tid = Number(file.split(".")[1]);
    for (const line of (await fs.readFile(path.join(dir, file), "utf8")).split("\n")) {
      const c = /^(clone3?|vfork|fork)\((.*)\) = (\d+)$/.exec(line);
      if (c) {
        const list = clones.get(tid) ?? [];
        list.push({ child: Number(c[3]), thread: (c[2] as string).includes("CLONE_THREAD") });
        clones.set(tid, list);
      }
      const e = /^execve\("([^"]+)".* = 0$/.exec(line);
      if (e && !firstExec.has(tid)) firstExec.set(tid, path.basename(e[1] as string));
    }
  }
  await fs.rm(dir, { recursive: true, force: true });
  const counts = new Map<string, number>();
  const count = (k: string): void => {
    counts.set(k, (counts.get(k) ?? 0) + 1);
  };
  const helperPids = new Set(helpers);
  const queue = [...threads];
  while (queue.length > 0) {
    const t = queue.pop() as number;
    for (const c of clones.get(t) ?? []) {
      if (c.thread) {
        queue.push(c.child);
        continue;
      }
      const name = firstExec.get(c.child) ?? "(no exec)";
      count(name);
      if (name === "paddock-spawnd") helperPids.add(c.child);
    }
  }
  for (const h of helperPids) for (const c of clones.get(h) ?? []) if (!c.thread) count(`spawnd:${firstExec.get(c.child) ?? "(no exec)"}`);
  return counts;
}

async function roundOf(d: TestDaemon, s: Samples): Promise<void> {
  const pid = d.child?.pid as number;
  for (let i = 0; i < n; i++) {
    const from = d.stderr.length;
    const c0 = await cpuNow(pid, d.tenantId);
    const [ms, h] = await createOne(d);
    s.seqCpu.push(cpuDelta(c0, await cpuNow(pid, d.tenantId), 1));
    s.seq.push(ms);
    await new Promise((r) => setTimeout(r, 50));
    addSpans(s, d, from);
    await deleteVm(d, h);
    // Let the spare-disk pool refill as a create arriving later would find it.
    await new Promise((r) => setTimeout(r, 500));
  }
  const c0 = await cpuNow(pid, d.tenantId);
  const batchFrom = d.stderr.length;
  const b = await batch(d, concurrent);
  s.inlineMkfs.push(logLines(d, batchFrom, "disk created").length);
  s.wallCpu.push(cpuDelta(c0, await cpuNow(pid, d.tenantId), concurrent));
  s.wall.push(b.wall);
  s.each.push(...b.each);
  await Promise.all(b.hosts.map((h) => deleteVm(d, h)));
  await new Promise((r) => setTimeout(r, 2000));
}

async function main(): Promise<void> {
  process.env.PADDOCK_LOG_LEVEL = "debug";
  const builds: { name: string; argv: readonly string[] }[] = [{ name: "this", argv: CURRENT_DAEMON_ARGV }];
  if (args.baseline !== undefined) {
    const b = await prepareBaseline(args.baseline, (m) => process.stderr.write(`${m}\n`));
    builds.push({ name: `baseline ${b.commit.slice(0, 9)}`, argv: b.daemonArgv });
  }
  const labs: { name: string; d: TestDaemon; s: Samples }[] = [];
  const floor = await FloorBundle.prepare(path.join(args.image, "debian-12", "rootfs"));
  const floorSeq: number[] = [];
  const floorWall: number[] = [];
  const loads: number[] = [];
  try {
    for (const b of builds) {
      const { d } = await startDaemon({}, b.argv);
      labs.push({ name: b.name, d, s: newSamples() });
      // Warm-up: page cache and first-use paths.
      const [, h] = await createOne(d);
      await deleteVm(d, h);
    }
    await floor.runOnce();
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? labs : [...labs].reverse();
      for (const lab of order) {
        loads.push(os.loadavg()[0] as number);
        await roundOf(lab.d, lab.s);
        process.stderr.write(`round ${r + 1}/${rounds} ${lab.name}: seq p50 ${f(med(lab.s.seq))} ms, wall ${f(lab.s.wall.at(-1) as number)} ms\n`);
      }
      for (let i = 0; i < n; i++) floorSeq.push(await floor.runOnce());
      const f0 = nowMs();
      await Promise.all(Array.from({ length: concurrent }, () => floor.runOnce()));
      floorWall.push(nowMs() - f0);
    }
    if (args.strace) {
      for (const lab of labs) {
        const pid = lab.d.child?.pid as number;
        let host = "";
        lab.s.execs.push(await spawnsDuring(pid, async () => {
          [, host] = await createOne(lab.d);
        }));
        await deleteVm(lab.d, host);
        await new Promise((r) => setTimeout(r, 500));
        let hosts: string[] = [];
        lab.s.execs.push(await spawnsDuring(pid, async () => {
          hosts = (await batch(lab.d, concurrent)).hosts;
        }));
        await Promise.all(hosts.map((h) => deleteVm(lab.d, h)));
      }
    }
  } finally {
    for (const lab of labs) await lab.d.destroy();
    await floor.dispose();
  }
  const fs50 = med(floorSeq);
  const fw50 = med(floorWall);
  console.log(`load average (1 min) at round starts: ${loads.map((l) => l.toFixed(1)).join(", ")}`);
  console.log(`floor: runc run ${f(fs50)} ms (n=${floorSeq.length}); ${concurrent} concurrent runc run wall ${f(fw50)} ms (n=${floorWall.length})`);
  for (const { name, s } of labs) {
    console.log(`\n== ${name}`);
    console.log(`create wait=agent, one at a time: p50 ${f(med(s.seq))} ms (${(med(s.seq) / fs50).toFixed(2)}× floor), ${cpuText(s.seqCpu)} (n=${s.seq.length})`);
    console.log(`${concurrent} concurrent: wall p50 ${f(med(s.wall))} ms (${(med(s.wall) / fw50).toFixed(2)}× floor; ${s.wall.map(f).join(", ")}), each p50 ${f(med(s.each))} ms, ${cpuText(s.wallCpu)}; disks formatted inline per batch: ${s.inlineMkfs.join(", ")}`);
    console.log("boot steps (ms since the boot began when the step ended, p50 of the one-at-a-time creates):");
    for (const [k, v] of s.spans) console.log(`  ${k.padEnd(16)} ${f(med(v))}`);
    for (const [i, e] of s.execs.entries()) {
      const per = i === 0 ? 1 : concurrent;
      const own = [...e].filter(([k]) => !k.startsWith("spawnd:")).reduce((a, [, v]) => a + v, 0);
      const viaHelper = [...e].filter(([k]) => k.startsWith("spawnd:")).reduce((a, [, v]) => a + v, 0);
      console.log(`processes spawned, ${i === 0 ? "one create" : `${concurrent} concurrent creates`}: by the daemon ${own} (${(own / per).toFixed(1)} per create), by its helper ${viaHelper} (${(viaHelper / per).toFixed(1)} per create): ${[...e].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ")}`);
    }
  }
}

await main();
