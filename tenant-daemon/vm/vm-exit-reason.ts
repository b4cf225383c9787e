/**
 * Why a VM's sandbox ended, and the OOM kills that did not end it, told from the host's side of
 * the VM's memory cgroup (`/paddock/<tenant>/<hostname>`, made by the runtime from the bundle's
 * `cgroupsPath`; tenant-daemon/vm/vm-paths.ts `cgroupPath`). The counter is a kernel file under
 * /sys/fs/cgroup that the guest cannot write (its cgroup namespace shows it its own cgroup
 * read-only), never anything inside the guest's tree:
 * - cgroup v1: `memory.oom_control`, line `oom_kill <n>` (Linux ≥ 4.13; counted in the victim's
 *   own memcg: https://docs.kernel.org/admin-guide/cgroup-v1/memory.html §10);
 * - cgroup v2: `memory.events`, line `oom_kill <n>` (hierarchical:
 *   https://docs.kernel.org/admin-guide/cgroup-v2.html#memory-interface-files).
 *
 * The runtime makes the VM's cgroup at each boot and removes it at teardown, so a boot's counter
 * starts at 0. It outlives the init's exit until the sandbox is deleted (`runc delete`,
 * `runsc delete`), so the reaper reads it before tearing down. A daemon that re-attaches a running
 * VM takes the counter as it finds it (kills while no daemon ran are not reported).
 *
 * Under gVisor a guest that forks up to its pids limit ends the whole sandbox: the sentry cannot
 * make the host thread it needs (docs/gvisor-findings.md §8). Such an exit is told by the same
 * cgroup's fork-failure counter, `pids.events` line `max <n>` (cgroup v1: forks refused in this
 * cgroup by its own or an ancestor's `pids.max`,
 * https://docs.kernel.org/admin-guide/cgroup-v1/pids.html; cgroup v2: times this cgroup's
 * `pids.max` was hit, https://docs.kernel.org/admin-guide/cgroup-v2.html#pid), again a kernel
 * file the guest cannot write. Under runc a refused fork fails in the guest (EAGAIN) and the VM
 * runs on, so a runc VM's exit is never put down to it. The counter tells which limit refused a
 * fork of this VM's sandbox, not whose guest forked: the tenant's budget is shared, so on cgroup
 * v1 a VM ended because another VM filled it reads `pids_limit` too.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { errnoCode } from "../../shared/errors.js";
import { CGROUP_ROOT, detectCgroupLayout, type CgroupLayout } from "../runtime/tenant-cgroup.js";

/**
 * Why a sandbox ended, as far as the host can tell: `oom` when its cgroup counted OOM kills not
 * yet reported, else `pids_limit` when the VM ends with its pids limit (gVisor only, see above)
 * and its cgroup counted refused forks this boot, else `guest_exit`.
 */
export type ExitCause = "oom" | "pids_limit" | "guest_exit";

/**
 * The `oom_kill` count of a flat-keyed cgroup file (v1 `memory.oom_control`, v2 `memory.events`:
 * `<key> <integer>` lines). Pure. @returns undefined when the file has no `oom_kill` line
 * (a kernel older than 4.13).
 */
export function parseOomKillCount(text: string): number | undefined {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * The `max` count of a cgroup `pids.events` file (`max <integer>`, v1 and v2). Pure.
 * @returns undefined when the file has no `max` line.
 */
export function parsePidsMaxCount(text: string): number | undefined {
  const m = /^max (\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** The `pids.events` file of cgroup `cgroupPath` (absolute, relative to each hierarchy root) on `layout`. Pure. */
export function pidsEventsFile(layout: CgroupLayout, cgroupPath: string): string {
  return layout.version === 2 ? path.join(layout.root, cgroupPath, "pids.events") : path.join(layout.pids, cgroupPath, "pids.events");
}

/** The file holding the OOM-kill counter of cgroup `cgroupPath` (absolute, relative to each hierarchy root) on `layout`. Pure. */
export function oomCounterFile(layout: CgroupLayout, cgroupPath: string): string {
  return layout.version === 2 ? path.join(layout.root, cgroupPath, "memory.events") : path.join(layout.memory, cgroupPath, "memory.oom_control");
}

/** Reads one counter of a cgroup (OOM kills, refused forks); undefined when the cgroup (or the counter) is not there. */
export type CgroupCounterReader = (cgroupPath: string) => Promise<number | undefined>;

/**
 * A host reader of one counter of VM cgroups: finds the cgroup layout once (tenant-cgroup.ts
 * `detectCgroupLayout`), reads `file(layout, cgroupPath)` and parses it. A path that is
 * relative, `/` or holds `..` reads as undefined, never another file.
 *
 * The read is synchronous: the file is a few lines the kernel makes on read (no disk, no lock
 * a guest can hold), and the reaper reads it for every running VM every second. Through
 * `fs.promises.readFile` each read was five thread-pool round trips (open, fstat, two reads,
 * close) with their wake-ups; an idle daemon with 10 VMs spent most of its CPU on them
 * (docs/performance.md, "Idle CPU").
 * @throws (from the reader) the file's read errors other than ENOENT.
 */
function hostCounterReader(root: string, file: (layout: CgroupLayout, cgroupPath: string) => string, parse: (text: string) => number | undefined): CgroupCounterReader {
  let layout: Promise<CgroupLayout | undefined> | undefined;
  return async (cgroupPath) => {
    if (!cgroupPath.startsWith("/") || cgroupPath === "/" || cgroupPath.split("/").includes("..")) return undefined;
    layout ??= detectCgroupLayout(root).catch(() => undefined);
    const l = await layout;
    if (l === undefined) return undefined;
    try {
      return parse(readFileSync(file(l, cgroupPath), "utf8"));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  };
}

/**
 * The host's reader of VM OOM counters ({@link oomCounterFile}).
 * @param root - the cgroup file systems' root (default /sys/fs/cgroup).
 */
export function hostOomCounterReader(root: string = CGROUP_ROOT): CgroupCounterReader {
  return hostCounterReader(root, oomCounterFile, parseOomKillCount);
}

/**
 * The host's reader of VM refused-fork counters ({@link pidsEventsFile}, line `max`).
 * @param root - the cgroup file systems' root (default /sys/fs/cgroup).
 */
export function hostPidsMaxReader(root: string = CGROUP_ROOT): CgroupCounterReader {
  return hostCounterReader(root, pidsEventsFile, parsePidsMaxCount);
}

/** A VM as the watch sees it: its hostname and the host pid of this boot's init. */
export interface WatchedVm {
  record: { hostname: string };
  pid: number | undefined;
}

/**
 * OOM kills per VM boot: how many the VM's cgroup counted that were not reported yet; and, for a
 * runtime whose VMs end at their pids limit, whether a boot's cgroup refused forks. A boot is
 * told apart by its init's pid: a new pid is a new boot whose counters start at 0. Holds no
 * timer; the reaper (vm-reconcile.ts) calls it on each pass and before tearing an exited VM down.
 */
export class VmExitWatch {
  private readonly read: CgroupCounterReader;
  private readonly readPidsMax: CgroupCounterReader | undefined;
  private readonly cgroupPath: (hostname: string) => string;
  /** Per hostname: the boot (init pid) and the count already reported for it. */
  private readonly seen = new Map<string, { pid: number | undefined; kills: number }>();
  /** Per hostname re-attached at daemon start: the boot and its refused forks then (earlier boots' are not this boot's). */
  private readonly pidsBase = new Map<string, { pid: number | undefined; max: number }>();

  /**
   * @param deps.cgroupPath - the VM's cgroup path (vm-paths.ts `cgroupPath`).
   * @param deps.read - the OOM counter reader (default {@link hostOomCounterReader}).
   * @param deps.pidsLimitEndsVm - true for a runtime whose VM ends whole when its guest forks up
   *   to its pids limit (runsc): only then is an exit put down to `pids_limit`.
   * @param deps.readPidsMax - the refused-fork counter reader (default {@link hostPidsMaxReader});
   *   used only with `pidsLimitEndsVm`.
   */
  constructor(deps: { cgroupPath: (hostname: string) => string; read?: CgroupCounterReader; pidsLimitEndsVm?: boolean; readPidsMax?: CgroupCounterReader }) {
    this.cgroupPath = deps.cgroupPath;
    this.read = deps.read ?? hostOomCounterReader();
    this.readPidsMax = deps.pidsLimitEndsVm === true ? (deps.readPidsMax ?? hostPidsMaxReader()) : undefined;
  }

  /**
   * Take the VM's counter as it is now as already reported: for a VM re-attached at daemon start,
   * whose earlier kills the previous run reported (or missed while no daemon ran).
   * Never rejects (an unreadable counter counts as 0).
   */
  async adopt(vm: WatchedVm): Promise<void> {
    const kills = (await this.read(this.cgroupPath(vm.record.hostname)).catch(() => undefined)) ?? 0;
    this.seen.set(vm.record.hostname, { pid: vm.pid, kills });
    if (this.readPidsMax === undefined) return;
    const max = (await this.readPidsMax(this.cgroupPath(vm.record.hostname)).catch(() => undefined)) ?? 0;
    this.pidsBase.set(vm.record.hostname, { pid: vm.pid, max });
  }

  /**
   * OOM kills of this boot of `vm` not reported before, now marked reported: 0 when none, or
   * when the cgroup is gone (a teardown raced this read).
   * @param stillRunning - checked after the read: when false (the boot ended meanwhile, maybe by
   *   the kill just counted), nothing is marked and 0 is returned, so {@link exitCause} reports it.
   * @throws the counter file's read errors other than ENOENT.
   */
  async takeNewKills(vm: WatchedVm, stillRunning: () => boolean = () => true): Promise<number> {
    const h = vm.record.hostname;
    const now = await this.read(this.cgroupPath(h));
    if (now === undefined || !stillRunning()) return 0;
    const prev = this.seen.get(h);
    const base = prev !== undefined && prev.pid === vm.pid ? prev.kills : 0;
    this.seen.set(h, { pid: vm.pid, kills: now });
    return Math.max(0, now - base);
  }

  /**
   * Why the exited boot of `vm` ended: `oom` when its cgroup counted OOM kills not reported
   * before (the init, or a process whose death ended it, was OOM-killed); else, for a runtime
   * whose VMs end at their pids limit, `pids_limit` when its cgroup's refused forks rose this
   * boot; else `guest_exit`. Call before the sandbox is deleted (its cgroup goes with it).
   * Forgets the boot. Never rejects (an unreadable counter counts as no change).
   * @returns the cause and the unreported kills.
   */
  async exitCause(vm: WatchedVm): Promise<{ cause: ExitCause; oomKills: number }> {
    const h = vm.record.hostname;
    const oomKills = await this.takeNewKills(vm).catch(() => 0);
    let cause: ExitCause = oomKills > 0 ? "oom" : "guest_exit";
    if (cause === "guest_exit" && this.readPidsMax !== undefined) {
      const now = (await this.readPidsMax(this.cgroupPath(h)).catch(() => undefined)) ?? 0;
      const prev = this.pidsBase.get(h);
      if (now > (prev !== undefined && prev.pid === vm.pid ? prev.max : 0)) cause = "pids_limit";
    }
    this.forget(h);
    return { cause, oomKills };
  }

  /** Hostnames with a count held. */
  hostnames(): string[] {
    return [...this.seen.keys()];
  }

  /** Drop what is known of `hostname` (its VM was torn down). */
  forget(hostname: string): void {
    this.seen.delete(hostname);
    this.pidsBase.delete(hostname);
  }
}
