/**
 * Figure 7, VM half: the tenant daemon's RSS and each VM's own memory (agent + tini, every
 * process of the sandbox from `runc ps`; RSS and PSS — PSS divides the node binary's shared
 * pages among the VMs, RSS counts them in every VM) at 1 and 10 VMs (and 50 with `--full`),
 * and how each grows per VM. There is no runtime process per VM: runc exits after start
 * (no shim), so "runtime" memory is only the kernel's.
 */
import { createVm, deleteVm, type BenchOptions, type DaemonLab } from "../lib/context.js";
import { memoryOf, mib, rssBytes } from "../lib/procs.js";
import { sandboxPids } from "../lib/runc-floor.js";
import { fmt, row, type Row } from "../lib/report.js";

/** Rows and notes for the VM half of figure 7. `idleDaemonRss`: the daemon's RSS before any VM, bytes. */
export async function vmFootprint(lab: DaemonLab, opts: BenchOptions, idleDaemonRss: number): Promise<{ rows: Row[]; notes: string[] }> {
  const levels = opts.full ? [1, 10, 50] : [1, 10];
  const vms = [lab.probe];
  const extra: string[] = [];
  const rows: Row[] = [row("f7.daemon-0", "tenant daemon RSS, 0 VMs (idle)", "MiB", "paddock", [mib(idleDaemonRss)])];
  const daemonAt: Record<number, number> = {};
  try {
    for (const level of levels) {
      while (vms.length < level) {
        const h = await createVm(lab.d);
        vms.push(h);
        extra.push(h);
      }
      await new Promise((r) => setTimeout(r, 1500)); // let the agents settle
      const rss: number[] = [];
      const pss: number[] = [];
      for (const h of vms) {
        const m = await memoryOf(await sandboxPids(`pdk-${lab.d.tenantId}-${h}`));
        rss.push(mib(m.rssBytes));
        pss.push(mib(m.pssBytes));
      }
      const daemon = await rssBytes(lab.d.child?.pid as number);
      daemonAt[level] = mib(daemon);
      rows.push(
        row(`f7.daemon-${level}`, `tenant daemon RSS, ${level} VM${level > 1 ? "s" : ""}`, "MiB", "paddock", [mib(daemon)], { vs: "f7.daemon-0" }),
        row(`f7.vm-rss-${level}`, `per-VM RSS (agent + tini), ${level} VM${level > 1 ? "s" : ""}`, "MiB", "paddock", rss),
        row(`f7.vm-pss-${level}`, `per-VM PSS (agent + tini), ${level} VM${level > 1 ? "s" : ""}`, "MiB", "paddock", pss),
      );
    }
  } finally {
    for (const h of extra) await deleteVm(lab.d, h).catch(() => undefined);
  }
  const first = levels[0] as number;
  const last = levels[levels.length - 1] as number;
  const slope = ((daemonAt[last] ?? NaN) - (daemonAt[first] ?? NaN)) / (last - first);
  const pssAt = (l: number): number => rows.find((r) => r.id === `f7.vm-pss-${l}`)?.summary.p50 ?? NaN;
  return {
    rows,
    notes: [
      `Daemon grows ${fmt(slope)} MiB per VM between ${first} and ${last} VMs; per-VM PSS p50 goes ${levels.map((l) => `${fmt(pssAt(l))}`).join(" → ")} MiB at ${levels.join(" / ")} VMs (shared node pages spread over more VMs).`,
      "No runtime process stays per VM (runc exits after start; no shim), so per-VM overhead = the sandbox's own processes.",
    ],
  };
}
