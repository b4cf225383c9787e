/**
 * One daemon per tenant id on a host. Container ids (`pdk-<tenant>-<hostname>`), the nftables
 * table, links and cgroups (`/paddock/<tenant>`) are all keyed by the tenant id, so two daemons
 * with the same id would tear down each other's VMs even with different config files, sockets
 * and state dirs. The lock lives in a fixed host-global directory, independent of
 * `paddock.run_dir` and `PADDOCK_RUN_DIR`, and is taken before the daemon touches anything.
 *
 * `<dir>/<tenant>.lock` holds the owner as JSON (`{pid, config, purpose, started_at}`); the
 * mutual exclusion itself is proper-lockfile's directory `<dir>/<tenant>.lock.mutex` (mkdir is
 * atomic; its mtime is refreshed while held), as in shared/state-store.ts acquireOwnership. A
 * lock whose owner pid is gone (SIGKILL) is taken over at once.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import lockfile from "proper-lockfile";
import { PaddockError } from "./errors.js";
import { writeFileAtomic } from "./state-store.js";
import { pidAlive } from "./proc.js";

/** The host-global directory of tenant id locks. */
export const TENANT_LOCK_DIR = "/run/paddock/tenant-locks";

/** Who holds a tenant id (the content of `<dir>/<tenant>.lock`). */
export interface TenantLockOwner {
  pid: number;
  /** Absolute path of the holder's config file. */
  config: string;
  /** `serve` (a running daemon) or `purge` (a tenant delete in progress). */
  purpose: "serve" | "purge";
  /** RFC 3339 time the lock was taken. */
  started_at: string;
  /**
   * The holder's own dirs (absolute; a serving daemon's state and run dir), so that a purge of
   * another tenant never removes a dir inside or around them (tenant-daemon/purge-dirs.ts
   * `liveTenantDirConflict`). Absent in records written before this field existed.
   */
  dirs?: string[];
}

/** Read the recorded owner of `tenantId`'s lock; undefined when absent or unreadable. */
export async function readTenantLockOwner(tenantId: string, dir: string = TENANT_LOCK_DIR): Promise<TenantLockOwner | undefined> {
  try {
    const v = JSON.parse(await fs.readFile(path.join(dir, `${tenantId}.lock`), "utf8")) as Partial<TenantLockOwner>;
    if (typeof v.pid !== "number" || typeof v.config !== "string") return undefined;
    const dirs = Array.isArray(v.dirs) ? v.dirs.filter((d): d is string => typeof d === "string" && path.isAbsolute(d)) : undefined;
    return { pid: v.pid, config: v.config, purpose: v.purpose === "purge" ? "purge" : "serve", started_at: String(v.started_at ?? ""), ...(dirs !== undefined ? { dirs } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * The owner of `tenantId`'s lock while its pid lives (a standalone daemon, a supervisor's
 * daemon, or a purge in progress); undefined when the lock is free or its holder is gone.
 * @param dir - lock directory; default {@link TENANT_LOCK_DIR}.
 */
export async function liveTenantLockOwner(tenantId: string, dir: string = TENANT_LOCK_DIR): Promise<TenantLockOwner | undefined> {
  const owner = await readTenantLockOwner(tenantId, dir);
  return owner !== undefined && pidAlive(owner.pid) ? owner : undefined;
}

/**
 * Every tenant id whose lock is held by a live process, with its owner record; ids are the
 * `<id>.lock` file names that match `idPattern`.
 * @param dir - lock directory; default {@link TENANT_LOCK_DIR}. A missing directory yields [].
 */
export async function liveTenantLockOwners(idPattern: RegExp, dir: string = TENANT_LOCK_DIR): Promise<{ tenantId: string; owner: TenantLockOwner }[]> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  const out: { tenantId: string; owner: TenantLockOwner }[] = [];
  for (const name of names.sort()) {
    if (!name.endsWith(".lock")) continue;
    const tenantId = name.slice(0, -".lock".length);
    if (!idPattern.test(tenantId)) continue;
    const owner = await liveTenantLockOwner(tenantId, dir);
    if (owner !== undefined) out.push({ tenantId, owner });
  }
  return out;
}

/**
 * 409 `ERR_TENANT_ID_IN_USE` for an act a supervisor refuses because `holder`, a daemon it did
 * not start (e.g. `paddock daemon up`), holds `tenantId`.
 * @param what - what was refused, e.g. `not removing /var/lib/paddock/tenants/t1`.
 */
export function tenantIdHeldError(tenantId: string, holder: TenantLockOwner, what: string): PaddockError {
  return new PaddockError("ERR_TENANT_ID_IN_USE", `${what}: tenant id ${tenantId} is held by a daemon this supervisor did not start (pid ${holder.pid}, config ${holder.config}); stop it or choose another id`, {
    details: { tenant_id: tenantId, holder_pid: holder.pid, holder_config: holder.config },
  });
}

/**
 * Why a purge (`paddock daemon purge FILE`, tenant-daemon/main.ts `purgeTenant`) of `tenantId`
 * cannot take its lock, and what to do: a purge removes what the running daemon uses, so the
 * daemon is stopped first (the CLI has no `daemon down`: SIGTERM or Ctrl-C ends
 * `paddock daemon up`; a supervisor's tenant is deleted with `paddock tenant delete`, which
 * purges it). Another tenant id would not help: the purge is of this tenant.
 */
function purgeRefusal(tenantId: string, owner: TenantLockOwner | undefined, mutex: string, purging: { tenantId: string; configPath: string } | undefined): string {
  if (purging !== undefined && purging.tenantId !== tenantId) {
    // The id of a dir the purge would remove (`…/tenants/<id>`, or inside it), not the purged tenant's.
    const holder = owner === undefined ? `locked by another process (${mutex})` : `held by a running daemon (pid ${owner.pid}, config ${owner.config})`;
    return `cannot purge tenant ${purging.tenantId}: a dir it would remove is, or is inside, tenant ${tenantId}'s dir (…/tenants/${tenantId}), and tenant id ${tenantId} is ${holder}; point paddock.state_dir and paddock.run_dir of ${purging.configPath} at the tenant's own dirs, or stop that daemon first`;
  }
  if (owner === undefined) return `cannot purge tenant ${tenantId}: its id is locked by another process (${mutex}); wait for that process to end, then run the purge again`;
  if (owner.purpose === "purge") return `cannot purge tenant ${tenantId}: a purge of it is already running (pid ${owner.pid}, config ${owner.config}); wait for it to end`;
  return `cannot purge tenant ${tenantId} while its daemon is running (pid ${owner.pid}, config ${owner.config}): stop the daemon first (Ctrl-C where \`paddock daemon up\` runs, or \`kill ${owner.pid}\`; a tenant of a supervisor is removed with \`paddock tenant delete ${tenantId}\` instead), then run the purge again`;
}

/**
 * Take the host-global lock of `tenantId` for this process.
 * @param opts.configPath - the config file this process serves (recorded for refusals).
 * @param opts.purging - for a purge that locks the id of a dir it would remove: the tenant
 *   being purged and its config (named in the refusal).
 * @param opts.dirs - the dirs this process owns (a daemon's state and run dir), recorded so a
 *   purge of another tenant leaves them alone.
 * @param opts.dir - lock directory; default {@link TENANT_LOCK_DIR} (unit tests pass a temp dir).
 * @param opts.onCompromised - called when the lock was lost while held (its mtime went stale).
 * @returns release(): removes the owner record and the lock (idempotent).
 * @throws PaddockError `ERR_TENANT_ID_IN_USE` (409) naming the live holder's pid, config and
 *   purpose, and what to do (for a purge: stop the running daemon first); nothing of the holder
 *   is touched.
 */
export async function acquireTenantIdLock(opts: { tenantId: string; configPath: string; purpose: "serve" | "purge"; purging?: { tenantId: string; configPath: string }; dirs?: readonly string[]; dir?: string; onCompromised?: (err: Error) => void }): Promise<() => Promise<void>> {
  const dir = opts.dir ?? TENANT_LOCK_DIR;
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const ownerFile = path.join(dir, `${opts.tenantId}.lock`);
  const mutex = `${ownerFile}.mutex`;
  const take = (): Promise<() => Promise<void>> => lockfile.lock(ownerFile, {
    stale: 15_000, update: 5_000, realpath: false, lockfilePath: mutex,
    onCompromised: (err) => opts.onCompromised?.(err),
  });
  const refuse = (owner: TenantLockOwner | undefined, cause: unknown): PaddockError => new PaddockError(
    "ERR_TENANT_ID_IN_USE",
    opts.purpose === "purge" ? purgeRefusal(opts.tenantId, owner, mutex, opts.purging) : owner !== undefined
      ? `tenant id ${opts.tenantId} is held by a running daemon (pid ${owner.pid}, config ${owner.config}${owner.purpose === "purge" ? ", purging" : ""}); container ids, the nftables table, links and cgroups are keyed by the tenant id, so a second daemon for it would tear down the first's VMs. Stop that daemon or give this config (${opts.configPath}) another paddock.tenant_id`
      : `tenant id ${opts.tenantId} is locked by another process (${mutex}); stop it or give this config (${opts.configPath}) another paddock.tenant_id`,
    { cause, details: { tenant_id: opts.tenantId, ...(owner !== undefined ? { holder_pid: owner.pid, holder_config: owner.config } : {}) } },
  );
  let release: () => Promise<void>;
  try {
    release = await take();
  } catch (err) {
    const owner = await readTenantLockOwner(opts.tenantId, dir);
    if (owner === undefined || owner.pid === process.pid || pidAlive(owner.pid)) throw refuse(owner, err);
    // The recorded holder is gone (killed before it could release): the lock is stale.
    await fs.rm(mutex, { recursive: true, force: true });
    try {
      release = await take();
    } catch (err2) {
      throw refuse(await readTenantLockOwner(opts.tenantId, dir), err2);
    }
  }
  const owner: TenantLockOwner = {
    pid: process.pid, config: path.resolve(opts.configPath), purpose: opts.purpose, started_at: new Date().toISOString(),
    ...(opts.dirs !== undefined ? { dirs: opts.dirs.map((d) => path.resolve(d)) } : {}),
  };
  await writeFileAtomic(ownerFile, JSON.stringify(owner) + "\n", 0o600);
  let released: Promise<void> | undefined;
  return () => (released ??= (async () => {
    await fs.rm(ownerFile, { force: true });
    await release().catch(() => undefined);
  })());
}
