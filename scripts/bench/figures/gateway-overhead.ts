/**
 * Figure 3: the supervisor gateway's overhead — `GET /nodes` and a buffered exec of /bin/true
 * sent directly on the tenant's Unix socket, through the gateway (loopback TCP, Bearer token),
 * through nginx proxying to the same socket, and through a bare Node proxy (lib/bare-proxy.ts:
 * Node's own HTTP server and client with none of the gateway's work, the floor of a proxy
 * written in Node); requests/s and p50/p99 latency at 1, 16 and
 * 64 concurrent clients (autocannon in a child process, closed loop — lib/http-load.ts
 * LoadClient), repeated, the three targets interleaved. CPU used by the client (autocannon's
 * process), the supervisor, the tenant daemon, nginx and the bare Node proxy during each cell is recorded so a miss
 * can be traced to the process that ran out of CPU; CPU ms per request of the proxy (supervisor
 * or nginx) and of the daemon are rows of their own (one sample per repeat), so a change in
 * the gateway's cost shows even when the machine's load moves req/s.
 * Targets: gateway ≥ 80 % of direct throughput, ≤ 1 ms added p50, and a share of direct req/s
 * at least nginx's.
 */
import type { BenchOptions } from "../lib/context.js";
import { LoadClient, type HttpTarget } from "../lib/http-load.js";
import { cpuMs } from "../lib/procs.js";
import { fmt, row, signed, type FigureResult, type Row, type TargetResult } from "../lib/report.js";
import { nowMs, summarize } from "../lib/stats.js";
import { createRequire } from "node:module";

const AUTOCANNON_VERSION = (createRequire(import.meta.url)("autocannon/package.json") as { version: string }).version;

/** The processes whose CPU is watched, by role. */
export interface WatchedPids {
  supervisor: number;
  daemon: number;
  nginx: () => Promise<number[]>;
  /** The bare Node proxy's process. */
  node: number;
}

const CONCURRENCY = [1, 16, 64];
/**
 * Warm-up of every target on every endpoint before its first measured cell: load steps of
 * (clients, ms), results dropped. Why: the processes written in Node (the supervisor, the bare
 * proxy, the tenant daemon) run their request path interpreted and compile it on V8's worker
 * threads during their first several thousand requests, and the 1-client path compiles again
 * after a warm-up at 16 clients only. Cold, the supervisor spent 0.64 and 0.46 ms of CPU per
 * `GET /nodes` over its first two 2 s runs at 1 client and 0.23–0.25 ms from the third on (its
 * other threads 0.17 → 0.00 ms: the compiles), the bare proxy 0.42, 0.31 → 0.23 ms; after these
 * steps the first 1-client run was already settled (docs/performance.md, "Gateway, fourth look:
 * one client"). Without a warm-up the first cell (1 client) charged that one-time cost to the
 * per-request figures of the Node targets, not to nginx's. Once per target process: later
 * rounds of `--baseline` runs reuse the same processes.
 */
const WARMUP_STEPS: ReadonlyArray<{ connections: number; ms: number }> = [
  { connections: 1, ms: 6_000 },
  { connections: 16, ms: 2_000 },
];
/** Targets (address + endpoint) already warmed in this bench process. */
const warmed = new Set<string>();
/** The targets of each cell, interleaved in this order. */
const TARGETS = ["direct", "gateway", "nginx", "node"] as const;
/** The proxy process in each target's path (none for direct). */
const PROXY_OF: Record<string, string | undefined> = { gateway: "supervisor", nginx: "nginx", node: "node" };
/** Row labels of the targets. */
const LABEL_OF: Record<string, string> = { direct: "direct socket", gateway: "gateway", nginx: "nginx", node: "bare Node proxy" };

export async function figureGateway(targets: { direct: HttpTarget; gateway: HttpTarget; nginx: HttpTarget; node: HttpTarget }, vm: string, pids: WatchedPids, opts: BenchOptions): Promise<FigureResult> {
  const endpoints = [
    { key: "nodes", label: "GET /nodes", method: "GET", path: "/nodes" },
    { key: "exec", label: "exec /bin/true", method: "POST", path: `/vm/${vm}/exec?cmd=%2Fbin%2Ftrue&buffered=true` },
  ];
  const rows: Row[] = [];
  const latencyRows: Row[] = [];
  const cpuRows: Row[] = [];
  const targetsOut: TargetResult[] = [];
  const notes: string[] = [];
  const durationMs = opts.loadSeconds * 1000;
  const client = await LoadClient.start();
  try {
    for (const ep of endpoints) {
      for (const name of TARGETS) {
        const t = targets[name];
        const key = `${t.socketPath ?? ""} ${t.host ?? ""}:${t.port ?? ""} ${ep.method} ${ep.path}`;
        if (warmed.has(key)) continue;
        warmed.add(key);
        for (const step of WARMUP_STEPS) await client.run({ target: t, method: ep.method, path: ep.path, connections: step.connections, durationMs: step.ms });
      }
    }
    for (const ep of endpoints) {
      for (const c of CONCURRENCY) {
        const rps: Record<string, number[]> = { direct: [], gateway: [], nginx: [], node: [] };
        const lat: Record<string, number[]> = { direct: [], gateway: [], nginx: [], node: [] };
        const errs: Record<string, number> = { direct: 0, gateway: 0, nginx: 0, node: 0 };
        const cpu: Record<string, Record<string, number[]>> = {};
        /** CPU ms per request of each process, one sample per repeat (share of a core × 1000 / req/s). */
        const cpuPerReq: Record<string, Record<string, number[]>> = {};
        for (let rep = 0; rep < opts.loadRepeats; rep++) {
          for (const name of TARGETS) {
            const ng = await pids.nginx();
            const watched: Record<string, number[]> = { supervisor: [pids.supervisor], daemon: [pids.daemon], nginx: ng, node: [pids.node] };
            const before: Record<string, number> = {};
            for (const [k, ps] of Object.entries(watched)) before[k] = (await Promise.all(ps.map(cpuMs))).reduce((a, b) => a + b, 0);
            const t0 = nowMs();
            // An exec takes tens of ms (hundreds on a loaded host): a 2 s cell at 64 clients can end
            // with no answer at all, so exec cells run at least 5 s.
            const r = await client.run({ target: targets[name], method: ep.method, path: ep.path, connections: c, durationMs: ep.key === "exec" ? Math.max(durationMs, 5000) : durationMs });
            const wall = nowMs() - t0;
            const cpuCell: Record<string, number> = { client: r.clientCpu };
            for (const [k, ps] of Object.entries(watched)) cpuCell[k] = ((await Promise.all(ps.map(cpuMs))).reduce((a, b) => a + b, 0) - (before[k] ?? 0)) / wall;
            rps[name]?.push(r.rps);
            lat[name]?.push(...r.latenciesMs);
            errs[name] = (errs[name] ?? 0) + r.errors;
            if (r.errors) notes.push(`${ep.label} c=${c} ${name}: ${r.errors} non-200 (${JSON.stringify(r.failures)})`);
          if (!r.latencyValid) notes.push(`${ep.label} c=${c} ${name} (repeat ${rep + 1}): latencies INVALID — they add up to more than the run (the server closed keep-alive connections; autocannon timed responses from stale starts)`);
            cpu[name] ??= {};
            cpuPerReq[name] ??= {};
            for (const [k, v] of Object.entries(cpuCell)) {
              ((cpu[name] as Record<string, number[]>)[k] ??= []).push(v);
              if (r.rps > 0) ((cpuPerReq[name] as Record<string, number[]>)[k] ??= []).push((v * 1000) / r.rps);
            }
          }
        }
        for (const name of TARGETS) {
          const id = `f3.${ep.key}.c${c}.${name}`;
          const role = name === "gateway" ? "paddock" : "baseline";
          const label = `${ep.label}, ${c} client${c > 1 ? "s" : ""}, ${LABEL_OF[name]}`;
          rows.push(row(`${id}.rps`, label, "req/s", role, rps[name] ?? [], { higherIsBetter: true, group: `${ep.label}, throughput`, ...(name === "direct" ? {} : { vs: `f3.${ep.key}.c${c}.direct.rps` }) }));
          latencyRows.push(row(`${id}.lat`, label, "ms", role, lat[name] ?? [], { group: `${ep.label}, latency`, ...(name === "direct" ? {} : { vs: `f3.${ep.key}.c${c}.direct.lat` }) }));
          // CPU per request of the proxy in the path (none for direct) and of the daemon behind it.
          const proxy = PROXY_OF[name];
          if (proxy) cpuRows.push(row(`${id}.cpu.proxy`, `${label}: ${proxy} CPU per request`, "ms", role, cpuPerReq[name]?.[proxy] ?? [], { group: `${ep.label}, CPU per request (ms of one core)`, ...(name === "gateway" ? { vs: `f3.${ep.key}.c${c}.nginx.cpu.proxy` } : {}) }));
          cpuRows.push(row(`${id}.cpu.daemon`, `${label}: tenant daemon CPU per request`, "ms", "baseline", cpuPerReq[name]?.daemon ?? [], { group: `${ep.label}, CPU per request (ms of one core)` }));
        }
        const med = (xs: number[] | undefined): number => summarize(xs ?? []).p50;
        const dR = med(rps.direct), gR = med(rps.gateway);
        const dL = summarize(lat.direct ?? []).p50, gL = summarize(lat.gateway ?? []).p50, nL = summarize(lat.nginx ?? []).p50;
        // CPU per request, ms: share of a core × 1000 / req/s (medians over the repeats).
        const cpuText = (name: string): string => Object.entries(cpu[name] ?? {}).filter(([, v]) => med(v) > 0).map(([k, v]) => `${k} ${Math.round(med(v) * 100)}% = ${fmt((med(v) * 1000) / med(rps[name]))} ms/req`).join(", ");
        notes.push(`${ep.label}, ${c} clients — CPU (share of one core; 2 cores in all) and CPU per request: ${TARGETS.map((t) => `${LABEL_OF[t]} [${cpuText(t)}]`).join("; ")}`);
        const rpsMet = gR >= 0.8 * dR;
        const nR = med(rps.nginx);
        const peerMet = gR >= nR;
        const latMet = gL - dL <= 1;
        const perReq = (name: string, proc: string): number => (med(cpu[name]?.[proc]) * 1000) / med(rps[name]);
        const cause =
          `the gateway process spends ${fmt(perReq("gateway", "supervisor"))} ms of CPU per request (nginx ${fmt(perReq("nginx", "nginx"))} ms; ` +
          `the daemon ${fmt(perReq("direct", "daemon"))} ms direct); during the gateway cell the supervisor used ${Math.round(med(cpu.gateway?.supervisor) * 100)}% of a core, ` +
          `the daemon ${Math.round(med(cpu.gateway?.daemon) * 100)}%, the client ${Math.round(med(cpu.gateway?.client) * 100)}% (2 cores, shared with other users); ` +
          `nginx on the same path changes p50 by ${signed(nL - dL)} ms and reaches ${Math.round((med(rps.nginx) / dR) * 100)}% of direct; ` +
          `a bare Node proxy (Node's HTTP server and client alone) spends ${fmt(perReq("node", "node"))} ms of CPU per request and reaches ${Math.round((med(rps.node) / dR) * 100)}% of direct`;
        targetsOut.push(
          { text: `${ep.label} @${c}: gateway ≥ 80% of direct req/s`, met: rpsMet, measured: `${fmt(gR)} vs ${fmt(dR)} req/s (${Math.round((gR / dR) * 100)}%)`, ...(rpsMet ? {} : { cause }) },
          { text: `${ep.label} @${c}: gateway adds ≤ 1 ms p50`, met: latMet, measured: `${signed(gL - dL)} ms (${fmt(gL)} vs ${fmt(dL)} ms)`, ...(latMet ? {} : { cause }) },
          { text: `${ep.label} @${c}: gateway's share of direct req/s ≥ nginx's`, met: peerMet, measured: `gateway ${Math.round((gR / dR) * 100)}%, nginx ${Math.round((nR / dR) * 100)}% of direct`, ...(peerMet ? {} : { cause }) },
        );
      }
    }
  } finally {
    await client.close();
  }
  return {
    num: 3,
    title: "Gateway overhead: direct socket vs supervisor gateway vs nginx",
    rows: [...rows, ...latencyRows, ...cpuRows],
    targets: targetsOut,
    notes: [
      `autocannon ${AUTOCANNON_VERSION} in its own process (the client), closed loop: each connection sends its next request when the previous answer is read (pipelining 1), keep-alive connections, every target warmed once per endpoint before its first cell (${WARMUP_STEPS.map((w) => `${w.ms / 1000} s at ${w.connections} client(s)`).join(", then ")}, not measured: the Node processes' JIT compiles), ${opts.loadSeconds} s per cell (exec cells at least 5 s; autocannon ends at its next 1 s sample tick) × ${opts.loadRepeats} repeats, targets interleaved; req/s = 200 answers / the client's wall time; latency = each response's time from autocannon's response event (fractional ms; its own histogram keeps integer ms), rows pool every request. nginx: 1 worker, no upstream keep-alive, no buffering. The bare Node proxy (scripts/bench/lib/bare-proxy.ts): one node process, \`http.createServer\` + \`http.request\` on a keep-alive agent, answer piped, nothing else — what any proxy written in Node pays.`,
      ...notes,
    ],
  };
}
