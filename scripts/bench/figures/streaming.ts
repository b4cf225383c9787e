/**
 * Figure 4: a streamed exec writing `--mb` MiB (default 100) of text to stdout — payload MB/s
 * and time to the first stdout frame, read as a client does (every NDJSON frame parsed),
 * directly on the tenant socket, through the gateway and through nginx; the floor is the same
 * command through `runc exec` with its stdout piped straight to this process. MB = 10^6 bytes.
 * The causes, which load moves much less than MB/s: CPU per 100 MiB of the tenant daemon and
 * the VM's agent (/proc/<pid>/stat) and of this process's client (`process.cpuUsage`), on the
 * direct path.
 */
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import type { BenchOptions } from "../lib/context.js";
import { streamExec, type HttpTarget } from "../lib/http-load.js";
import { cpuMs } from "../lib/procs.js";
import { fmt, row, type FigureResult } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

const REPEATS = 3;

function producer(bytes: number): string[] {
  // No newlines or bytes JSON must escape: payload ≈ wire bytes in text mode.
  return ["/bin/sh", "-c", `head -c ${bytes} /dev/zero | tr '\\0' a`];
}

function runcStream(id: string, argv: string[]): Promise<{ ms: number; ttfbMs: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    let ttfb = NaN;
    let bytes = 0;
    const c = spawn("runc", ["exec", id, ...argv], { stdio: ["ignore", "pipe", "ignore"] });
    c.stdout.on("data", (b: Buffer) => {
      if (Number.isNaN(ttfb)) ttfb = nowMs() - t0;
      bytes += b.length;
    });
    c.once("error", reject);
    c.once("close", (code) => (code === 0 ? resolve({ ms: nowMs() - t0, ttfbMs: ttfb, bytes }) : reject(new Error(`runc exec exited ${code}`))));
  });
}

/** Pid of the process listening on the Unix socket `socketPath` (`ss -xlp`), or NaN. */
function listenerPid(socketPath: string): number {
  const out = execFileSync("ss", ["-xlpnH"], { encoding: "utf8" });
  const line = out.split("\n").find((l) => l.includes(` ${socketPath} `));
  const m = line ? /pid=(\d+)/.exec(line) : null;
  return m ? Number(m[1]) : NaN;
}

/** Host pid of the VM's guest agent: the `node` process among the container's (`runc ps`), or NaN. */
function agentPid(container: string): number {
  const pids = JSON.parse(execFileSync("runc", ["ps", "--format", "json", container], { encoding: "utf8" })) as number[];
  const comm = (pid: number): string => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    } catch {
      return "";
    }
  };
  return pids.find((p) => comm(p) === "node") ?? NaN;
}

export async function figureStreaming(targets: { direct: HttpTarget; gateway: HttpTarget; nginx: HttpTarget }, vm: string, container: string, opts: BenchOptions): Promise<FigureResult> {
  const bytes = opts.mb * 2 ** 20;
  const argv = producer(bytes);
  const q = new URLSearchParams([["cmd", argv[0] as string], ...argv.slice(1).map((a) => ["args", a])]);
  const path = `/vm/${vm}/exec?${q}`;
  const mbps: Record<string, number[]> = { direct: [], gateway: [], nginx: [], runc: [] };
  const ttfb: Record<string, number[]> = { direct: [], gateway: [], nginx: [], runc: [] };
  const cpu: Record<string, number[]> = { daemon: [], agent: [], client: [] };
  const daemon = targets.direct.socketPath ? listenerPid(targets.direct.socketPath) : NaN;
  const agent = agentPid(container);
  const per100 = (100 * 2 ** 20) / bytes;
  for (let i = 0; i < REPEATS; i++) {
    for (const name of ["direct", "gateway", "nginx"] as const) {
      const d0 = await cpuMs(daemon), a0 = await cpuMs(agent), c0 = process.cpuUsage();
      const r = await streamExec(targets[name], path);
      if (name === "direct") {
        const c = process.cpuUsage(c0);
        cpu.daemon?.push(((await cpuMs(daemon)) - d0) * per100);
        cpu.agent?.push(((await cpuMs(agent)) - a0) * per100);
        cpu.client?.push(((c.user + c.system) / 1000) * per100);
      }
      if (r.status !== 200 || r.payloadBytes !== bytes || r.exitCode !== 0) throw new Error(`stream via ${name}: status ${r.status}, ${r.payloadBytes}/${bytes} bytes, exit ${r.exitCode}`);
      mbps[name]?.push(bytes / 1e6 / (r.totalMs / 1000));
      ttfb[name]?.push(r.ttfbMs);
    }
    const f = await runcStream(container, argv);
    if (f.bytes !== bytes) throw new Error(`runc exec stream read ${f.bytes}/${bytes} bytes`);
    mbps.runc?.push(bytes / 1e6 / (f.ms / 1000));
    ttfb.runc?.push(f.ttfbMs);
  }
  const hb = { higherIsBetter: true };
  const rows = [
    row("f4.direct", "Paddock: streamed exec, direct socket", "MB/s", "paddock", mbps.direct ?? [], { ...hb, vs: "f4.runc" }),
    row("f4.gateway", "Paddock: streamed exec, through the gateway", "MB/s", "paddock", mbps.gateway ?? [], { ...hb, vs: "f4.direct" }),
    row("f4.nginx", "peer: streamed exec through nginx", "MB/s", "baseline", mbps.nginx ?? [], { ...hb, vs: "f4.direct" }),
    row("f4.runc", "floor: runc exec, stdout piped", "MB/s", "baseline", mbps.runc ?? [], hb),
    row("f4.ttfb-direct", "time to first stdout byte, direct socket", "ms", "paddock", ttfb.direct ?? [], { vs: "f4.ttfb-runc" }),
    row("f4.ttfb-gateway", "time to first stdout byte, gateway", "ms", "paddock", ttfb.gateway ?? [], { vs: "f4.ttfb-direct" }),
    row("f4.ttfb-nginx", "time to first stdout byte, nginx", "ms", "baseline", ttfb.nginx ?? [], { vs: "f4.ttfb-direct" }),
    row("f4.ttfb-runc", "time to first stdout byte, runc exec", "ms", "baseline", ttfb.runc ?? []),
    row("f4.cpu-daemon", "cause: tenant daemon CPU per 100 MiB, direct", "ms", "cause", cpu.daemon ?? [], { group: "cpu" }),
    row("f4.cpu-agent", "cause: guest agent CPU per 100 MiB, direct", "ms", "cause", cpu.agent ?? [], { group: "cpu" }),
    row("f4.cpu-client", "cause: bench client CPU per 100 MiB (every frame parsed), direct", "ms", "cause", cpu.client ?? [], { group: "cpu" }),
  ];
  const p = (id: string): number => rows.find((r) => r.id === id)?.summary.p50 ?? NaN;
  return {
    num: 4,
    title: `Streaming: exec writing ${opts.mb} MiB to stdout`,
    rows,
    targets: [],
    notes: [
      `${REPEATS} repeats each, interleaved; payload counted from parsed NDJSON stdout frames (text mode, no escapes). Gateway keeps ${Math.round((p("f4.gateway") / p("f4.direct")) * 100)}% of direct throughput; direct keeps ${Math.round((p("f4.direct") / p("f4.runc")) * 100)}% of the runc exec pipe (${fmt(p("f4.runc"))} MB/s).`,
      `CPU from /proc/<pid>/stat (10 ms ticks) of the tenant daemon (host pid ${daemon}) and of the VM's agent (host pid ${agent}), and process.cpuUsage() of this process around each direct stream.`,
    ],
  };
}
