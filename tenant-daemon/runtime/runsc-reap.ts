/**
 * Teardown of a gVisor sandbox that runsc no longer tracks. A `runsc create`/`run` killed on its
 * timeout before it saved the container's state (e.g. a sentry spinning in a platform that never
 * starts) leaves the sandbox, the gofer and their children running in the VM's cgroup while
 * `runsc state`/`delete` answer "not found" (measured on runsc 0.0~20221219, docs/gvisor-status.md).
 * Such processes are found by the kernel's own list, the `cgroup.procs` of the VM's cgroup in every
 * hierarchy, never by process name, and killed by pid; then the cgroup directories go (rmdir only).
 *
 * The cgroup is frozen around the kill where a freezer is mounted (v1 `freezer.state`, v2
 * `cgroup.freeze`, https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html), as runc
 * does for `kill --all`: a frozen task neither exits (so its pid cannot be reused before the
 * signal lands) nor forks. The files touched are kernel interfaces under the cgroup mounts, never
 * a guest-writable tree. The console reader (`paddock-nsutil logcap`, nsutil.ts) is not in the VM's
 * cgroup: it exits by itself once the last process holding its pipe (the sandbox) is gone.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { sleep } from "../../shared/time.js";
import { cgroupMountPoints, validCgroupPath } from "./oci-cgroups.js";

/** How long {@link reapCgroup} waits for the killed processes to leave the cgroup, ms. */
const REAP_WAIT_MS = 10_000;
/** How long to wait for a v1 freezer to report FROZEN before killing anyway, ms. */
const FREEZE_WAIT_MS = 1_000;

/** `dir` and every cgroup directory below it, parents before children; [] when `dir` does not exist. */
async function cgroupTree(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
  const out = [dir];
  for (const e of entries) if (e.isDirectory()) out.push(...(await cgroupTree(path.join(dir, e.name))));
  return out;
}

/** The pids listed in `<dir>/cgroup.procs` (the kernel's list of the cgroup's processes); [] when gone. */
async function cgroupProcs(dir: string): Promise<number[]> {
  const text = await fs.readFile(path.join(dir, "cgroup.procs"), "utf8").catch(() => "");
  return text.split("\n").map((l) => Number.parseInt(l, 10)).filter((n) => n > 0);
}

/**
 * Pids of every process in cgroup `cgroupPath` or below it, in any mounted hierarchy, sorted
 * and unique; [] when none (or the cgroup does not exist). A relative path, `/` or one with `..`
 * yields [].
 */
export async function cgroupPids(cgroupPath: string): Promise<number[]> {
  if (!validCgroupPath(cgroupPath)) return [];
  const pids = new Set<number>();
  for (const mount of await cgroupMountPoints()) {
    for (const dir of await cgroupTree(path.join(mount, cgroupPath))) for (const pid of await cgroupProcs(dir)) pids.add(pid);
  }
  return [...pids].sort((a, b) => a - b);
}

/** Write `value` to the freeze file of `cgroupPath` in each hierarchy that has one; the files written. */
async function setFrozen(mounts: string[], cgroupPath: string, frozen: boolean): Promise<string[]> {
  const written: string[] = [];
  for (const mount of mounts) {
    const dir = path.join(mount, cgroupPath);
    for (const [file, value] of [["freezer.state", frozen ? "FROZEN" : "THAWED"], ["cgroup.freeze", frozen ? "1" : "0"]] as const) {
      const f = path.join(dir, file);
      try {
        await fs.writeFile(f, value);
        written.push(f);
      } catch {
        // no such controller here, or the cgroup is gone
      }
    }
  }
  if (frozen) {
    // v1 reports FREEZING until every task has stopped; v2 sets `frozen 1` in cgroup.events.
    const deadline = Date.now() + FREEZE_WAIT_MS;
    for (const f of written) {
      const settled = async (): Promise<boolean> => f.endsWith("freezer.state")
        ? (await fs.readFile(f, "utf8").catch(() => "FROZEN")).trim() === "FROZEN"
        : /^frozen 1$/m.test(await fs.readFile(path.join(path.dirname(f), "cgroup.events"), "utf8").catch(() => "frozen 1"));
      while (!(await settled()) && Date.now() < deadline) await sleep(10);
    }
  }
  return written;
}

/**
 * SIGKILL every process in cgroup `cgroupPath` and below it (every hierarchy), wait until the
 * kernel lists none, then rmdir the cgroup directories, children first. Used when a sandbox
 * failed to boot or runsc no longer knows it: whatever still runs there is a leak. A missing
 * cgroup is fine; a relative path, `/` or one with `..` is ignored.
 * @param options.keepSelf - rmdir only the directories below `cgroupPath`, not itself.
 * @returns the pids that were killed (for the caller's log).
 * @throws PaddockError ERR_RUNTIME_FAILED when a process is still there after
 *   {@link REAP_WAIT_MS} ms, or a directory cannot be removed (its message names it).
 */
export async function reapCgroup(cgroupPath: string, options: { keepSelf?: boolean } = {}): Promise<number[]> {
  if (!validCgroupPath(cgroupPath)) return [];
  const mounts = await cgroupMountPoints();
  const killed = new Set<number>();
  const deadline = Date.now() + REAP_WAIT_MS;
  for (;;) {
    if ((await cgroupPids(cgroupPath)).length === 0) break;
    const frozen = await setFrozen(mounts, cgroupPath, true);
    try {
      for (const pid of await cgroupPids(cgroupPath)) {
        try {
          process.kill(pid, "SIGKILL");
          killed.add(pid);
        } catch {
          // already gone (ESRCH)
        }
      }
    } finally {
      // A frozen task dies only once thawed (cgroup v1).
      if (frozen.length > 0) await setFrozen(mounts, cgroupPath, false);
    }
    if (Date.now() >= deadline) {
      const left = await cgroupPids(cgroupPath);
      if (left.length > 0) throw new PaddockError("ERR_RUNTIME_FAILED", `processes ${left.join(", ")} of cgroup ${cgroupPath} are still there ${REAP_WAIT_MS} ms after SIGKILL`);
      break;
    }
    await sleep(20);
  }
  for (const mount of mounts) {
    const dirs = (await cgroupTree(path.join(mount, cgroupPath))).reverse();
    for (const dir of options.keepSelf === true ? dirs.slice(0, -1) : dirs) {
      try {
        await fs.rmdir(dir);
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw new PaddockError("ERR_RUNTIME_FAILED", `cannot remove cgroup ${dir}: ${(err as Error).message}`, { cause: err });
      }
    }
  }
  return [...killed].sort((a, b) => a - b);
}
