/**
 * The last step of `paddock daemon purge` (tenant-daemon/main.ts purgeTenant): remove the
 * tenant's state dir and run dir, the way the supervisor's tenant delete removes
 * `<state>/tenants/<id>` and `<run>/tenants/<id>` (supervisor/tenant-lifecycle.ts
 * purgeTenantFiles), so a purge leaves nothing of the tenant on the host.
 *
 * A dir is left in place, and named in the result with the reason, when removing it could reach
 * past the tenant's own files:
 * - it is a symlink (not followed: its target is not Paddock's to remove) or not a directory;
 * - it is `/` or holds one of Paddock's shared dirs (state and run roots, `tenants/`, the image
 *   store, the tenant-id locks, the uid-range claims), e.g. a config with `state_dir: /var/lib/paddock`;
 * - something is mounted at or below it (a recursive remove would descend into the mount).
 * The recursive remove itself never follows symlinks (node's `fs.rm` unlinks them; checked in
 * test/unit/purge-dirs.test.ts). Dirs named after another tenant id, or inside such a dir, are
 * guarded by that id's lock in purgeTenant, and a dir inside or around a live tenant's recorded
 * dirs, as given or as real paths, is refused ({@link liveTenantDirConflictReal}), before
 * anything is touched.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, TENANT_ID_PATTERN } from "../shared/tenant-config-defaults.js";
import { defaultImageDir } from "../shared/image-store.js";
import { TENANT_LOCK_DIR, liveTenantLockOwners } from "../shared/tenant-id-lock.js";
import { uidClaimsDir } from "../shared/uid-ranges.js";
import { isPathUnder, readMounts } from "./storage/vm-disk.js";
import { envValue } from "../shared/env.js";

/** A dir the purge did not remove, and why. */
export interface LeftDir {
  dir: string;
  reason: string;
}

/**
 * Paddock's shared dirs for an environment: a tenant dir that is one of them or holds one is
 * never removed. Absolute paths.
 */
export function sharedPaddockDirs(env: NodeJS.ProcessEnv = process.env, imageDir: string = defaultImageDir(env)): string[] {
  const stateRoot = path.resolve(envValue(env.PADDOCK_STATE_DIR) ?? DEFAULT_STATE_DIR);
  const runRoot = path.resolve(envValue(env.PADDOCK_RUN_DIR) ?? DEFAULT_RUN_DIR);
  return [stateRoot, runRoot, path.join(stateRoot, "tenants"), path.join(runRoot, "tenants"), path.resolve(imageDir), TENANT_LOCK_DIR, uidClaimsDir(undefined, env)];
}

/**
 * Tenant ids other than `tenantId` that `dirs` belong to by Paddock's layout
 * `<root>/tenants/<id>`, the dir itself or any dir it is inside (e.g. a config of tenant `a` with
 * `run_dir: /run/paddock/tenants/b`, or `state_dir: /var/lib/paddock/tenants/b/a-state`):
 * purgeTenant holds their locks while it removes, so it never removes a dir whose tenant id a
 * live process holds, nor one nested in that tenant's dir. Dirs outside that layout name no tenant.
 */
export function otherTenantIdsOf(tenantId: string, dirs: readonly string[]): string[] {
  const ids: string[] = [];
  for (const d of dirs) {
    for (let p = path.resolve(d); p !== path.dirname(p); p = path.dirname(p)) {
      if (path.basename(path.dirname(p)) === "tenants") ids.push(path.basename(p));
    }
  }
  return [...new Set(ids.filter((n) => n !== tenantId && TENANT_ID_PATTERN.test(n)))];
}

/** A live tenant's own dirs, as its id lock records them (shared/tenant-id-lock.ts `TenantLockOwner.dirs`). */
export interface LiveTenantDirs {
  tenantId: string;
  pid: number;
  dirs: readonly string[];
}

/**
 * Why removing `dirs` would reach into a live tenant's files, or undefined when it would not: a
 * dir to remove that is a live tenant's dir, inside one, or holds one (pure; lexical, on
 * resolved absolute paths; {@link liveTenantDirConflictReal} also compares real paths, so a
 * symlinked ancestor does not hide a conflict).
 * @param live - the other live tenants' dirs; entries of `tenantId` itself are ignored.
 */
export function liveTenantDirConflict(tenantId: string, dirs: readonly string[], live: readonly LiveTenantDirs[]): string | undefined {
  for (const d of dirs.map((x) => path.resolve(x))) {
    for (const t of live) {
      if (t.tenantId === tenantId) continue;
      for (const o of t.dirs.map((x) => path.resolve(x))) {
        const where = d === o ? "is" : isPathUnder(d, o) ? `is inside ${o},` : isPathUnder(o, d) ? `holds ${o},` : undefined;
        if (where !== undefined) return `${d} ${where} a dir of tenant ${t.tenantId} whose daemon is running (pid ${t.pid})`;
      }
    }
  }
  return undefined;
}

/**
 * `p` (absolute) with symlinks resolved: the real path of its nearest existing ancestor (itself
 * when it exists) joined with the part below that does not exist yet. A path through a
 * symlinked ancestor thus names where it really is.
 * @throws Node's errno error other than ENOENT / ENOTDIR from realpath(3).
 */
export async function realPathOf(p: string): Promise<string> {
  const abs = path.resolve(p);
  const rest: string[] = [];
  for (let cur = abs; ; cur = path.dirname(cur)) {
    try {
      return path.join(await fs.realpath(cur), ...rest.reverse());
    } catch (err) {
      const code = errnoCode(err);
      if ((code !== "ENOENT" && code !== "ENOTDIR") || cur === path.dirname(cur)) throw err;
      rest.push(path.basename(cur));
    }
  }
}

/**
 * {@link liveTenantDirConflict} on the paths as given, then on their real paths
 * ({@link realPathOf}, both the dirs to remove and the live tenants' dirs): a dir reached through
 * a symlinked ancestor (`/srv/x/state` where `/srv/x` → a live tenant's dir) is caught too.
 * @returns the conflict (real paths named with what they were given as), or undefined.
 */
export async function liveTenantDirConflictReal(tenantId: string, dirs: readonly string[], live: readonly LiveTenantDirs[]): Promise<string | undefined> {
  const lexical = liveTenantDirConflict(tenantId, dirs, live);
  if (lexical !== undefined) return lexical;
  const realDirs = await Promise.all(dirs.map((d) => realPathOf(d)));
  const realLive = await Promise.all(live.map(async (t) => ({ ...t, dirs: await Promise.all(t.dirs.map((d) => realPathOf(d))) })));
  const real = liveTenantDirConflict(tenantId, realDirs, realLive);
  return real === undefined ? undefined : `following symlinks (${dirs.map((d, i) => `${path.resolve(d)} is really ${realDirs[i]}`).join(", ")}), ${real}`;
}

/**
 * Refuse a purge (or a start) of `tenantId` whose `dirs` are, are inside, or hold a dir that a
 * live daemon of another tenant recorded in its id lock (shared/tenant-id-lock.ts
 * `TenantLockOwner.dirs`; a purge's own locks record none), compared as given and as real paths
 * ({@link liveTenantDirConflictReal}). A start checks it too: two daemons sharing a run dir
 * would share their VMs' bundle and mount dirs, and one's delete would break the other's VM.
 * @param configSource - the tenant's config file, named in the advice.
 * The id locks are those of {@link TENANT_LOCK_DIR}.
 * @param verb - what is refused, for the message: "purge" (default) or "start".
 * @throws PaddockError ERR_TENANT_ID_IN_USE naming both dirs and the live daemon's pid.
 */
export async function assertNoLiveTenantDirs(tenantId: string, dirs: readonly string[], configSource: string, verb: "purge" | "start" = "purge"): Promise<void> {
  const live = (await liveTenantLockOwners(TENANT_ID_PATTERN, TENANT_LOCK_DIR)).map((o) => ({ tenantId: o.tenantId, pid: o.owner.pid, dirs: o.owner.dirs ?? [] }));
  const conflict = await liveTenantDirConflictReal(tenantId, dirs, live);
  if (conflict !== undefined) {
    throw new PaddockError("ERR_TENANT_ID_IN_USE", `cannot ${verb} tenant ${tenantId}: ${conflict}; nothing was touched. Point paddock.state_dir and paddock.run_dir of ${configSource} at the tenant's own dirs, or stop that daemon first`);
  }
}

/**
 * Why `dir` must not be removed, or undefined when it may be (see the file comment).
 * @param shared - {@link sharedPaddockDirs}.
 * @param mountPoints - the mount points of this mount namespace (absolute).
 * @throws Node's errno error when `dir` cannot be inspected (other than ENOENT: undefined).
 */
async function refusal(dir: string, shared: readonly string[], mountPoints: readonly string[]): Promise<string | undefined> {
  const st = await fs.lstat(dir);
  if (st.isSymbolicLink()) return "it is a symlink (not followed; remove it and its target by hand)";
  if (!st.isDirectory()) return "it is not a directory";
  if (dir === "/") return "it is /";
  const holds = shared.find((s) => isPathUnder(s, dir));
  if (holds !== undefined) return `it holds ${holds}, which other tenants or Paddock itself use`;
  const real = await fs.realpath(dir);
  const mounted = mountPoints.find((m) => isPathUnder(m, dir) || isPathUnder(m, real));
  if (mounted !== undefined) return `${mounted} is mounted there (unmount it, then purge again)`;
  return undefined;
}

/**
 * Remove `dir` recursively (symlinks inside are unlinked, never followed) unless it is refused.
 * `keep` names entries directly in `dir` to leave (e.g. the state dir's ownership lock, still
 * held); `dir` itself is then left too, holding only them.
 * @param opts.shared - {@link sharedPaddockDirs}.
 * @returns undefined when removed (or absent), else what was left and why.
 * @throws Node's errno error when an entry cannot be removed.
 */
export async function removeTenantDir(dir: string, opts: { shared: readonly string[]; keep?: readonly string[]; mountPoints?: readonly string[] }): Promise<LeftDir | undefined> {
  const abs = path.resolve(dir);
  const mountPoints = opts.mountPoints ?? (await readMounts()).map((m) => m.mountPoint);
  let reason: string | undefined;
  try {
    reason = await refusal(abs, opts.shared, mountPoints);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
  if (reason !== undefined) return { dir: abs, reason };
  const keep = new Set(opts.keep ?? []);
  if (keep.size === 0) {
    await fs.rm(abs, { recursive: true, force: true });
    return undefined;
  }
  for (const name of await fs.readdir(abs)) {
    if (!keep.has(name)) await fs.rm(path.join(abs, name), { recursive: true, force: true });
  }
  return undefined;
}

/**
 * Remove `dir` when it is empty (after its kept entries went with the lock they held); a dir
 * some other process wrote into meanwhile stays.
 * @returns true when removed or absent.
 * @throws Node's errno error other than ENOENT / ENOTEMPTY / EEXIST.
 */
export async function removeIfEmpty(dir: string): Promise<boolean> {
  try {
    await fs.rmdir(dir);
    return true;
  } catch (err) {
    const code = errnoCode(err);
    if (code === "ENOENT") return true;
    if (code === "ENOTEMPTY" || code === "EEXIST") return false;
    throw err;
  }
}
