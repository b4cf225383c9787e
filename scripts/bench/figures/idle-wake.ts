/**
 * Figure 12: idle wake latency (tenant-daemon/vm/vm-idle.ts). One tenant daemon per runtime, each
 * with a group that idles VMs out after 1 s: under runc `idle_action: pause` (cgroup freezer),
 * under gVisor `idle_action: suspend` (runsc checkpoint to disk). Per sample: poll GET /vm/{h}
 * (which never wakes) until the VM is Paused or Suspended, time a buffered exec of /bin/true
 * (the request waits for the wake: thaw, or restore plus the agent's first answer), then time the
 * same exec right away on the now running VM, the baseline.
 */
import { TestDaemon, randomIsolatedRange } from "../../lib/daemon-harness.js";
import { execBuffered, type BenchOptions } from "../lib/context.js";
import { row, type FigureResult, type Row } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

const GROUP = "idle";

interface Lab {
  runtime: "oci" | "gvisor";
  label: string;
  idledStatus: "Paused" | "Suspended";
  d: TestDaemon;
  h: string;
}

async function startLab(runtime: Lab["runtime"], onTenant: (id: string, dir: string) => void): Promise<Lab> {
  const action = runtime === "gvisor" ? "suspend" : "pause";
  const d = await TestDaemon.create({
    hostGroups: [{ name: GROUP, count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", idle_pause_after: "1s", idle_action: action, network: { mode: "isolated", range: randomIsolatedRange() } }],
    config: { hypervisor: runtime },
  });
  onTenant(d.tenantId, d.dir);
  await d.start(120_000);
  const r = await d.post(`/hostgroup/${GROUP}/nodes?wait=agent&timeout=120s`, {});
  if (r.status !== 201) throw new Error(`create on ${runtime} failed (${r.status}): ${r.text}`);
  return { runtime, label: runtime === "gvisor" ? "gVisor, suspend" : "runc, pause", idledStatus: runtime === "gvisor" ? "Suspended" : "Paused", d, h: (r.json as { hostname: string }).hostname };
}

/** Poll GET /vm/{h} every 50 ms until the VM shows `status`. @throws Error after 60 s. */
async function untilStatus(lab: Lab, status: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = await lab.d.get(`/vm/${lab.h}`);
    if ((r.json as { status?: string } | undefined)?.status === status) return;
    if (Date.now() > deadline) throw new Error(`${lab.label}: VM not ${status} after 60 s (last ${r.status} ${r.text.slice(0, 200)})`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

async function timedTrue(lab: Lab): Promise<number> {
  const t0 = nowMs();
  await execBuffered(lab.d, lab.h, ["/bin/true"]);
  return nowMs() - t0;
}

/** Figure 12. `onTenant` is told every tenant id and temp dir made (for the leak check). */
export async function figureIdleWake(opts: BenchOptions, onTenant: (id: string, dir: string) => void): Promise<FigureResult> {
  const n = Math.max(3, Math.min(opts.n, 10));
  const labs: Lab[] = [];
  const rows: Row[] = [];
  try {
    for (const runtime of ["oci", "gvisor"] as const) labs.push(await startLab(runtime, onTenant));
    for (const lab of labs) {
      const wake: number[] = [];
      const running: number[] = [];
      for (let i = 0; i < n; i++) {
        await untilStatus(lab, lab.idledStatus);
        wake.push(await timedTrue(lab));
        running.push(await timedTrue(lab));
      }
      const id = `f12.${lab.runtime}`;
      rows.push(
        row(`${id}.running`, `${lab.label}: exec /bin/true on the running VM`, "ms", "baseline", running),
        row(`${id}.wake`, `${lab.label}: exec /bin/true that wakes the idled VM (${lab.idledStatus === "Paused" ? "thaw" : "restore + agent"}, then exec)`, "ms", "paddock", wake, { vs: `${id}.running` }),
      );
    }
  } finally {
    for (const lab of labs) await lab.d.destroy().catch(() => undefined);
  }
  return {
    num: 12,
    title: "Idle wake latency",
    rows,
    targets: [],
    notes: [
      `${n} samples per runtime; idle_pause_after 1s; between samples the VM is left to idle out again (GET /vm/{h} polled every 50 ms, which never wakes it). The wake exec is the whole request as a client sees it: the wait for the wake plus the exec.`,
      "gVisor runs on the ptrace platform here (no /dev/kvm); a restore loads the VM's memory image from disk and waits for its agent to dial back in.",
    ],
  };
}
