/**
 * Figure 7, VM half: the tenant daemon's RSS and each fresh VM's own memory (agent + tini,
 * every process of the sandbox from `runc ps`): RSS, which counts the shared node binary and
 * libraries in every VM, and private anonymous memory (RssAnon), what one more VM really
 * costs — at 1 and 10 VMs (and 50 with `--full`), and how each grows per VM. Measured before
 * any other figure touched the daemon (no probe VM yet). There is no runtime process per VM: runc exits after start
 * (no shim), so "runtime" memory is only the kernel's.
 *
 * At the top level it also samples idle CPU: the daemon's and the VMs' user + system time over
 * {@link IDLE_WINDOWS} windows of {@link IDLE_WINDOW_MS} with nothing asked of them — what each
 * idle tenant and VM costs the host's cores whatever its size (figure 13 multiplies it by 200).
 */
import { createVm, deleteVm, type BareDaemon, type BenchOptions } from "../lib/context.js";
import { anonBytes, cpuMs, memoryOf, mib, rssBytes } from "../lib/procs.js";
import { sandboxPids } from "../lib/runc-floor.js";
import { fmt, row, type Row } from "../lib/report.js";

/** Idle-CPU windows sampled at the top level, and each one's length, ms (clock ticks are 10 ms: 10 s resolves 1 ms/s). */
const IDLE_WINDOWS = 3;
const IDLE_WINDOW_MS = 10_000;

/**
 * CPU time `pids` used per second of wall time over each of `windows` back-to-back windows of
 * `windowMs`, ms/s; a process gone meanwhile counts what it had used at the window's start.
 */
export async function idleCpuMsPerS(pids: readonly number[], windows = IDLE_WINDOWS, windowMs = IDLE_WINDOW_MS): Promise<number[]> {
  const total = async (): Promise<number> => (await Promise.all(pids.map((p) => cpuMs(p).then((ms) => (Number.isFinite(ms) ? ms : 0))))).reduce((a, b) => a + b, 0);
  const out: number[] = [];
  let before = await total();
  for (let i = 0; i < windows; i++) {
    await new Promise((r) => setTimeout(r, windowMs));
    const after = await total();
    out.push(Math.max(0, after - before) / (windowMs / 1000));
    before = after;
  }
  return out;
}

/** Rows and notes for the VM half of figure 7. `idleDaemonRss`: the daemon's RSS before any VM, bytes. */
export async function vmFootprint(lab: BareDaemon, opts: BenchOptions): Promise<{ rows: Row[]; notes: string[] }> {
  const levels = opts.full ? [1, 10, 50] : [1, 10];
  const vms: string[] = [];
  const rows: Row[] = [row("f7.daemon-0", "tenant daemon RSS, 0 VMs (idle)", "MiB", "paddock", [mib(lab.idleRssBytes)], { group: "daemon" })];
  const daemonAt: Record<number, number> = {};
  try {
    for (const level of levels) {
      while (vms.length < level) {
        vms.push(await createVm(lab.d));
      }
      await new Promise((r) => setTimeout(r, 1500)); // let the agents settle
      const rss: number[] = [];
      const anon: number[] = [];
      for (const h of vms) {
        const m = await memoryOf(await sandboxPids(`pdk-${lab.d.tenantId}-${h}`));
        rss.push(mib(m.rssBytes));
        anon.push(mib(m.anonBytes));
      }
      const pid = lab.d.child?.pid as number;
      const daemon = await rssBytes(pid);
      if (level === levels[levels.length - 1]) {
        // Idle CPU with every VM running and nothing asked: the daemon's periodic work (the
        // guest-exit reaper and OOM pass, tenant-daemon/vm/vm-reconcile.ts) and the VMs' own.
        await new Promise((r) => setTimeout(r, 5000)); // the agents' start-up GC and JIT done
        const vmPids = (await Promise.all(vms.map((h) => sandboxPids(`pdk-${lab.d.tenantId}-${h}`)))).flat();
        const [daemonCpu, vmCpu] = await Promise.all([idleCpuMsPerS([pid]), idleCpuMsPerS(vmPids)]);
        rows.push(
          row(`f7.daemon-cpu-${level}`, `tenant daemon idle CPU, ${level} VMs running (${IDLE_WINDOWS} windows of ${IDLE_WINDOW_MS / 1000} s)`, "ms/s", "paddock", daemonCpu, { group: "idle CPU" }),
          row(`f7.vm-cpu-${level}`, `idle CPU of all ${level} VMs' processes together (agent + tini), same windows`, "ms/s", "paddock", vmCpu, { group: "idle CPU" }),
        );
      }
      daemonAt[level] = mib(daemon);
      const s = level > 1 ? "s" : "";
      rows.push(
        row(`f7.daemon-${level}`, `tenant daemon RSS, ${level} VM${s}`, "MiB", "paddock", [mib(daemon)], { vs: "f7.daemon-0", group: "daemon" }),
        row(`f7.daemon-anon-${level}`, `tenant daemon private (RssAnon), ${level} VM${s}`, "MiB", "paddock", [mib(await anonBytes(pid))], { group: "daemon" }),
        row(`f7.vm-rss-${level}`, `per-VM RSS (agent + tini), ${level} VM${s}`, "MiB", "paddock", rss, { group: "per VM" }),
        row(`f7.vm-anon-${level}`, `per-VM private (RssAnon), ${level} VM${s}`, "MiB", "paddock", anon, { group: "per VM" }),
      );
    }
  } finally {
    for (const h of vms) await deleteVm(lab.d, h).catch(() => undefined);
  }
  const first = levels[0] as number;
  const last = levels[levels.length - 1] as number;
  const slope = ((daemonAt[last] ?? NaN) - (daemonAt[first] ?? NaN)) / (last - first);
  const anonAt = (l: number): number => rows.find((r) => r.id === `f7.vm-anon-${l}`)?.summary.p50 ?? NaN;
  return {
    rows,
    notes: [
      `Daemon RSS grows ${fmt(slope)} MiB per VM between ${first} and ${last} VMs; each VM costs ${levels.map((l) => `${fmt(anonAt(l))}`).join(" → ")} MiB private memory (p50) at ${levels.join(" / ")} VMs — flat means linear growth of ≈ that much per VM; the rest of its RSS is the shared node binary.`,
      "No runtime process stays per VM (runc exits after start; no shim), so per-VM overhead = the sandbox's own processes.",
    ],
  };
}
