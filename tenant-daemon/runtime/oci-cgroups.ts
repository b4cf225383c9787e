/**
 * The cgroup directories a sandbox leaves behind. runc and crun remove the leaf cgroup they made
 * on delete, but not always (a killed runtime, a v1 hierarchy they did not know about), and
 * never its parents; these helpers find and remove them in every hierarchy with rmdir(2) only
 * (a cgroup's files are kernel interfaces, never `rm -r`).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { readMounts } from "../storage/vm-disk.js";

/** Mount points of every cgroup hierarchy (v1 controllers and v2), from /proc/self/mountinfo. */
export async function cgroupMountPoints(): Promise<string[]> {
  return (await readMounts()).filter((m) => m.fsType === "cgroup" || m.fsType === "cgroup2").map((m) => m.mountPoint);
}

/** True for an absolute cgroup path other than `/` without `..` (relative to each hierarchy root). Pure. */
export function validCgroupPath(cgroupPath: string): boolean {
  return cgroupPath.startsWith("/") && cgroupPath !== "/" && !cgroupPath.split("/").includes("..");
}

/**
 * True when `cgroupPath` is a cgroup strictly below `cgroupParent` (both absolute, relative to
 * each hierarchy root): `/paddock/t1/sbox-1` is within `/paddock/t1`; `/paddock/t1`,
 * `/paddock/t10/x`, `/system.slice`, `/paddock/t1/../t2/x`, `/paddock/t1//x`,
 * `/paddock/t1/./x` and `/paddock/t1/x/` are not. What a sandbox's cgroup must be before a
 * driver freezes, kills in, sets limits on or removes it: the path comes from the bundle's
 * config.json, and nothing outside the tenant's own cgroups (`/paddock/<tenant>`,
 * tenant-cgroup.ts `tenantCgroupPath`) may be touched because of what a file says. Pure.
 */
export function cgroupPathWithin(cgroupParent: string, cgroupPath: string): boolean {
  if (!validCgroupPath(cgroupParent) || !validCgroupPath(cgroupPath)) return false;
  const parent = cgroupParent.split("/").slice(1);
  const parts = cgroupPath.split("/").slice(1);
  if (parent.some((s) => s === "" || s === ".") || parts.some((s) => s === "" || s === ".")) return false;
  return parts.length > parent.length && parent.every((s, i) => parts[i] === s);
}

/** What a driver passes down to act only on its tenant's cgroups: the parent and where refusals are logged. */
export interface CgroupGuard {
  /** The tenant's cgroup parent, `/paddock/<tenant>` (tenant-cgroup.ts `tenantCgroupPath`). */
  cgroupParent: string;
  logger: Logger;
}

/**
 * Check a driver's `cgroupParent` option: absolute, not `/`, no empty, `.` or `..` segment
 * (exactly when a child of it is {@link cgroupPathWithin} it).
 * @throws RangeError otherwise.
 */
export function assertCgroupParent(cgroupParent: string): void {
  if (!cgroupPathWithin(cgroupParent, `${cgroupParent}/x`)) {
    throw new RangeError(`cgroupParent must be an absolute cgroup path below the hierarchy root, got ${JSON.stringify(cgroupParent)}`);
  }
}

/**
 * The one gate before a driver acts on a cgroup path read from a bundle's config.json (or
 * remembered from a launch): `cgroupPath` when {@link cgroupPathWithin} `cgroupParent`;
 * otherwise undefined, with an error logged (`fields` plus the two paths), so the caller leaves
 * that cgroup untouched. undefined in, undefined out (nothing logged).
 */
export function ownCgroupPath(cgroupParent: string, cgroupPath: string | undefined, logger: Logger, fields: Record<string, unknown>): string | undefined {
  if (cgroupPath === undefined || cgroupPathWithin(cgroupParent, cgroupPath)) return cgroupPath;
  logger.error("refusing to touch a cgroup outside the tenant's cgroups; it is left untouched", { ...fields, cgroupPath, cgroupParent });
  return undefined;
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
  if (!validCgroupPath(cgroupPath)) return;
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
