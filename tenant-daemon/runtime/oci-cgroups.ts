/**
 * The cgroup directories a sandbox leaves behind. runc and crun remove the leaf cgroup they made
 * on delete, but not always (a killed runtime, a v1 hierarchy they did not know about), and
 * never its parents; these helpers find and remove them in every hierarchy with rmdir(2) only
 * (a cgroup's files are kernel interfaces, never `rm -r`).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { readMounts } from "../storage/vm-disk.js";

/** Mount points of every cgroup hierarchy (v1 controllers and v2), from /proc/self/mountinfo. */
export async function cgroupMountPoints(): Promise<string[]> {
  return (await readMounts()).filter((m) => m.fsType === "cgroup" || m.fsType === "cgroup2").map((m) => m.mountPoint);
}

/**
 * The sandbox's cgroup path (`linux.cgroupsPath`, absolute, relative to each hierarchy root) as
 * written in `<bundleDir>/config.json`; undefined when the file is missing, unreadable or holds
 * no absolute path.
 */
export async function readCgroupPath(bundleDir: string): Promise<string | undefined> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(bundleDir, "config.json"), "utf8")) as { linux?: { cgroupsPath?: unknown } };
    const p = config.linux?.cgroupsPath;
    return typeof p === "string" && p.startsWith("/") ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * rmdir `<hierarchy><cgroupPath>` in every cgroup hierarchy (only the leaf: parents may hold
 * other sandboxes). A cgroup directory is removed with rmdir, never rm -r (its files are
 * kernel interfaces). Missing directories are fine; a busy one (processes left) is logged by
 * the caller's error. A relative path, `/` or one with `..` is ignored.
 * @throws PaddockError ERR_RUNTIME_FAILED when a directory exists and cannot be removed.
 */
export async function removeCgroupDirs(cgroupPath: string): Promise<void> {
  if (!cgroupPath.startsWith("/") || cgroupPath.split("/").includes("..") || cgroupPath === "/") return;
  for (const mount of await cgroupMountPoints()) {
    try {
      await fs.rmdir(path.join(mount, cgroupPath));
    } catch (err) {
      const code = errnoCode(err);
      if (code !== "ENOENT") {
        throw new PaddockError("ERR_RUNTIME_FAILED", `cannot remove cgroup ${path.join(mount, cgroupPath)}: ${(err as Error).message}`, { cause: err });
      }
    }
  }
}

/**
 * rmdir the cgroup directory `cgroupParent` (e.g. `/paddock/<tenant>`) in every hierarchy where
 * it is empty; a busy one is left alone and nothing is thrown. Never removes a hierarchy root
 * (a relative path, `/` or one with `..` is ignored).
 */
export async function pruneCgroupParent(cgroupParent: string): Promise<void> {
  if (!cgroupParent.startsWith("/") || cgroupParent === "/" || cgroupParent.split("/").includes("..")) return;
  for (const mount of await cgroupMountPoints()) {
    // rmdir(2) of a cgroup fails with EBUSY while it has children or tasks: that is the "busy, leave it" case.
    await fs.rmdir(path.join(mount, cgroupParent)).catch(() => undefined);
  }
}
