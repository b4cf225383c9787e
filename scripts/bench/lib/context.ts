/**
 * What the figures share: the run's options and the "daemon lab" — one real tenant daemon
 * (scripts/lib/daemon-harness.ts TestDaemon: `node dist/tenant-daemon/main.js up` on a temp dir) with a
 * `bench` host group and one long-lived probe VM that exec, cp and the floors run against.
 */
import path from "node:path";
import { TestDaemon, randomIsolatedRange } from "../../lib/daemon-harness.js";
import { CURRENT_DAEMON_ARGV } from "./builds.js";
import type { TestResponse } from "../../lib/http-client.js";
import type { HttpTarget } from "./http-load.js";
import { rssBytes } from "./procs.js";

/** Options of one `npm run bench` run. */
export interface BenchOptions {
  /** Samples per latency figure. */
  n: number;
  /** `--full`: the 50-tenant / 50-VM sizes. */
  full: boolean;
  /** Seconds per load cell (figure 3) and repeats of each cell. */
  loadSeconds: number;
  loadRepeats: number;
  /** Payload of the streaming and cp figures, MiB. */
  mb: number;
  /** Figures to run (all when undefined). */
  only: Set<number> | undefined;
  imageDir: string;
  /** Figure 13's tenant counts (`--density-steps 10,50`); default 10, 50 (`--full`: 10, 50, 100, 200). */
  densitySteps?: number[];
}

/** A host group for the benchmark's VMs. */
export const BENCH_GROUP = "bench";

/** The daemon lab. */
export interface DaemonLab extends BareDaemon {
  /** The probe VM's hostname and runc container id. */
  probe: string;
  probeContainer: string;
  target: HttpTarget;
  /** The probe VM's agent socket on the host. */
  agentSocket: string;
}

/** A started daemon without the probe VM yet (figure 7 measures fresh VMs before it exists). */
export interface BareDaemon {
  d: TestDaemon;
  /** The daemon's RSS before any VM existed (1 s after it answered /healthz), bytes. */
  idleRssBytes: number;
}

/**
 * Start a TestDaemon with the bench group (1 vCPU, 512 MiB, 1 GiB sparse disk, isolated).
 * `paddock` adds keys to the config's `paddock:` (e.g. `{ warm_pool: { bench: 1 } }`).
 * `daemonArgv`: which build runs it and how (lib/builds.ts; default this checkout's, as its
 * supervisor spawns it) — a figure starting a second daemon passes its lab's `d.daemonArgv`.
 */
export async function startDaemon(paddock: Record<string, unknown> = {}, daemonArgv: readonly string[] = CURRENT_DAEMON_ARGV): Promise<BareDaemon> {
  const d = await TestDaemon.create({
    daemonArgv,
    hostGroups: [{ name: BENCH_GROUP, count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "1G", network: { mode: "isolated", range: randomIsolatedRange() } }],
    paddock,
  });
  try {
    await d.start();
    await new Promise((r) => setTimeout(r, 1000));
    return { d, idleRssBytes: await rssBytes(d.child?.pid as number) };
  } catch (err) {
    await d.destroy();
    throw err;
  }
}

/** Create the probe VM. @throws Error when the create fails (the caller destroys the daemon). */
export async function addProbe(base: BareDaemon): Promise<DaemonLab> {
  const { d } = base;
  const probe = await createVm(d);
  return { ...base, probe, probeContainer: `pdk-${d.tenantId}-${probe}`, target: { name: "socket", socketPath: d.socketPath }, agentSocket: path.join(d.runDir, "vms", probe, "agent.sock") };
}

/** Create one VM with `wait=agent`. @returns its hostname. @throws Error on a non-201. */
export async function createVm(d: TestDaemon): Promise<string> {
  const r: TestResponse = await d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=120s`, {});
  if (r.status !== 201) throw new Error(`create failed (${r.status}): ${r.text}`);
  return (r.json as { hostname: string }).hostname;
}

/** Delete a VM. @throws Error unless 2xx. */
export async function deleteVm(d: TestDaemon, hostname: string): Promise<void> {
  const r = await d.del(`/hostgroup/${BENCH_GROUP}/nodes/${hostname}`);
  if (r.status >= 300) throw new Error(`delete ${hostname} failed (${r.status}): ${r.text}`);
}

/** Buffered exec on the daemon socket. @throws Error unless 200 and exit 0. */
export async function execBuffered(d: TestDaemon, hostname: string, argv: readonly string[]): Promise<string> {
  const q = new URLSearchParams([["cmd", argv[0] as string], ...argv.slice(1).map((a) => ["args", a]), ["buffered", "true"], ["uid", "0"]]);
  const r = await d.post(`/vm/${hostname}/exec?${q}`);
  const body = r.json as { stdout?: string; stderr?: string; exit_code?: number } | undefined;
  if (r.status !== 200 || body?.exit_code !== 0) throw new Error(`exec ${argv.join(" ")} failed (${r.status}): ${r.text.slice(0, 500)}`);
  return body.stdout ?? "";
}
