/**
 * The life of a tenant's daemon after provisioning: restart, delete (stop, purge, remove),
 * and the start-up reconciliation that finishes interrupted work, adopts live daemons and
 * removes what no registry entry owns.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../shared/errors.js";
import { readdirOrEmpty } from "../shared/read-dir.js";
import { run } from "../shared/exec.js";
import { TENANT_ID_PATTERN } from "../shared/tenant-config.js";
import { releaseUidRange } from "../shared/uid-ranges.js";
import { liveTenantLockOwner, tenantIdHeldError, type TenantLockOwner } from "../shared/tenant-id-lock.js";
import { DAEMON_NODE_FLAGS } from "../shared/daemon-node-flags.js";
import type { TenantRecord } from "./tenant-registry.js";
import type { Actor, TenantContext } from "./tenant-context.js";
import type { TenantConfigs } from "./tenant-configs.js";
import type { TenantDaemons } from "./tenant-daemons.js";

/**
 * Restart the daemon gracefully under the tenant's lock (applies pending limits, clears
 * `failed`; a tenant without a uid range gets one first).
 * @returns the updated record.
 * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (being deleted),
 *   `ERR_DAEMON_START_FAILED` with the daemon's output (tenant left `failed` unless suspended).
 */
export async function restartTenant(ctx: TenantContext, configs: TenantConfigs, daemons: TenantDaemons, id: string, who: Actor): Promise<TenantRecord> {
  const { registry } = ctx;
  return ctx.locks.run(id, async () => {
    const t0 = registry.get(id);
    if (t0.status === "deleting") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is being deleted`);
    await configs.ensureUidRange(id);
    const d = daemons.managed(id, t0.daemon.restarts);
    await d.stop();
    ctx.recordAudit(who, "tenant.restart", id);
    try {
      await d.start();
    } catch (err) {
      await registry.updateTenant(id, (t) => {
        if (t.status !== "suspended") {
          t.status = "failed";
          t.statusReason = (err as Error).message.split("\n")[0];
        }
      });
      throw err;
    }
    return registry.updateTenant(id, (t) => {
      if (t.status === "failed") {
        t.status = "active";
        delete t.statusReason;
      }
      delete t.pendingRestart;
      delete t.appliedLimits;
      return t;
    });
  });
}

/**
 * Delete a tenant under its lock: mark it `deleting`, end its gateway sessions, stop its
 * daemon, purge its VMs, disks, links, netns and nft table (`main.js purge`), remove its
 * directories and free its blocks. Idempotent.
 * @returns false when there was no such tenant.
 * @throws PaddockError `ERR_EXEC_FAILED` when the purge fails (tenant stays `deleting`;
 *   retry the DELETE).
 */
export async function deleteTenant(ctx: TenantContext, configs: TenantConfigs, daemons: TenantDaemons, id: string, who: Actor): Promise<boolean> {
  const { registry } = ctx;
  if (!TENANT_ID_PATTERN.test(id)) return false;
  return ctx.locks.run(id, async () => {
    if (!registry.find(id)) return false;
    await registry.updateTenant(id, (t) => {
      t.status = "deleting";
    });
    ctx.endSessions(id, undefined, new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${id} was deleted`));
    ctx.recordAudit(who, "tenant.delete", id);
    const rec = registry.get(id);
    const d = daemons.managed(id, rec.daemon.restarts);
    if (d.state !== "running" && rec.daemon.pid !== undefined) await d.adopt(rec.daemon.pid, rec.daemon.procStartTicks);
    await d.stop();
    daemons.forget(id);
    await purgeTenantFiles(ctx, daemons, id);
    await registry.update((state) => {
      delete state.tenants[id];
    });
    configs.forget(id);
    return true;
  });
}

/**
 * The live holder of tenant id `id`'s host-global lock (shared/tenant-id-lock.ts) when it is
 * not a daemon of this supervisor (one that serves or purges the supervisor's config of `id`).
 */
async function foreignHolder(ctx: TenantContext, id: string): Promise<TenantLockOwner | undefined> {
  const holder = await liveTenantLockOwner(id);
  return holder !== undefined && holder.config !== path.resolve(ctx.paths.configPath(id)) ? holder : undefined;
}

/**
 * Kill stray daemons of this config, run the daemon's purge, remove the tenant's dirs.
 * @throws PaddockError ERR_TENANT_ID_IN_USE (nothing removed) when a daemon this supervisor did
 *   not start holds the id; the purge's errors.
 */
async function purgeTenantFiles(ctx: TenantContext, daemons: TenantDaemons, id: string): Promise<void> {
  const { config, paths, log } = ctx;
  const configPath = paths.configPath(id);
  const holder = await foreignHolder(ctx, id);
  if (holder !== undefined) throw tenantIdHeldError(id, holder, `not removing ${paths.stateDir(id)}`);
  await daemons.killUnrecorded(id, (pid) => log.warn("killing stray daemon of tenant", { tenant: id, pid }));
  const hasConfig = await fs.access(configPath).then(() => true, () => false);
  if (hasConfig) {
    await run(process.execPath, [...DAEMON_NODE_FLAGS, config.daemonEntry, "purge", configPath], { timeoutMs: 180_000, env: paths.daemonEnv() });
  }
  await fs.rm(paths.stateDir(id), { recursive: true, force: true });
  await fs.rm(paths.runDir(id), { recursive: true, force: true });
  // The daemon's purge released it already when it ran; this covers a tenant without config.
  await releaseUidRange({ tenantId: id, stateDir: paths.stateDir(id) });
}

/**
 * Reconcile after a (re)start of the supervisor: finish interrupted deletions, roll back
 * interrupted creates, adopt live daemons that are provably ours, start the dead ones of
 * active/suspended tenants (failed ones stay failed), and purge tenant directories no
 * registry entry owns. A tenant whose reconcile fails is marked `failed` and the others go on.
 * @throws when a tenants directory exists but cannot be read.
 */
export async function reconcileTenants(ctx: TenantContext, configs: TenantConfigs, daemons: TenantDaemons): Promise<void> {
  const { registry } = ctx;
  const tenants = Object.values(registry.snapshot().tenants);
  await Promise.allSettled(tenants.map(async (t) => {
    const log = ctx.log.child({ tenant: t.id });
    try {
      if (t.status === "deleting") {
        await deleteTenant(ctx, configs, daemons, t.id, { actor: "supervisor" });
        return;
      }
      if (t.status === "provisioning") {
        // The create was interrupted (supervisor killed): its caller never received the
        // tenant's only token, and the config or the daemon may be missing or half started.
        // Roll it back entirely, so the tenant is fully absent and a retry can succeed.
        log.warn("rolling back a tenant whose create was interrupted");
        await deleteTenant(ctx, configs, daemons, t.id, { actor: "supervisor" });
        return;
      }
      await configs.ensureUidRange(t.id);
      const d = daemons.managed(t.id, t.daemon.restarts);
      if (t.daemon.pid !== undefined && (await d.adopt(t.daemon.pid, t.daemon.procStartTicks))) return;
      // A daemon spawned by a supervisor killed before it recorded the pid (start or
      // restart in progress) is still ours: stop it, or a second daemon would be started.
      await daemons.killUnrecorded(t.id, (pid) => log.warn("killing an unrecorded daemon of the tenant", { pid }));
      if (t.status === "failed") return;
      log.info("daemon not running; starting it");
      await d.start();
    } catch (err) {
      log.error("reconcile of tenant failed", { err });
      await registry.updateTenant(t.id, (r) => {
        if (r.status === "active" || r.status === "provisioning") {
          r.status = "failed";
          r.statusReason = (err as Error).message.split("\n")[0];
        }
      }).catch(() => undefined);
    }
  }));
  await removeLeftovers(ctx, daemons);
}

/** Purge the state and run dirs named like tenants that the registry does not know (errors logged). */
async function removeLeftovers(ctx: TenantContext, daemons: TenantDaemons): Promise<void> {
  const { registry, paths, log } = ctx;
  const known = new Set(Object.keys(registry.snapshot().tenants));
  for (const base of paths.tenantsRoots()) {
    for (const name of await readdirOrEmpty(base)) {
      // Only directories named like our tenants are ours to remove.
      if (known.has(name) || !TENANT_ID_PATTERN.test(name)) continue;
      // A standalone daemon (`paddock daemon up`) with this tenant id may keep its state here
      // (the two share the default state root): its files are not leftovers.
      const holder = await foreignHolder(ctx, name);
      if (holder !== undefined) {
        log.warn("leaving alone the directory of a tenant id another daemon holds", { tenant: name, dir: path.join(base, name), pid: holder.pid, config: holder.config });
        continue;
      }
      log.warn("removing leftovers of a tenant the registry does not know", { tenant: name, dir: path.join(base, name) });
      try {
        await purgeTenantFiles(ctx, daemons, name);
      } catch (err) {
        log.error("could not remove leftovers", { tenant: name, err });
      }
    }
  }
}
