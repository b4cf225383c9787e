/**
 * Suspending and resuming a tenant. While suspended the gateway answers 403
 * ERR_TENANT_SUSPENDED, its open sessions are ended, and its running VMs are paused through
 * its daemon (and paused again if the daemon restarts: supervisor/tenant-daemons.ts); resume
 * resumes exactly the VMs paused at suspension.
 */
import { PaddockError } from "../shared/errors.js";
import { setVmPaused } from "./daemon-client.js";
import type { TenantRecord } from "./tenant-registry.js";
import type { Actor, TenantContext } from "./tenant-context.js";
import type { TenantDaemons } from "./tenant-daemons.js";

/**
 * Suspend a tenant under its lock, with `reason` recorded as its status reason.
 * A suspended tenant is answered as it is (nothing paused, its reason kept, nothing audited,
 * `alreadySuspended`), as {@link resumeTenant} answers an active one.
 * @returns the tenant and what was paused (pause errors do not undo the suspension).
 * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (failed, being provisioned or
 *   deleted; the record is left as it was).
 */
export async function suspendTenant(ctx: TenantContext, daemons: TenantDaemons, id: string, reason: string, who: Actor): Promise<{ tenant: TenantRecord; paused: string[]; errors: string[]; alreadySuspended: boolean }> {
  const { registry } = ctx;
  return ctx.locks.run(id, async () => {
    const t0 = registry.get(id);
    if (t0.status === "suspended") return { tenant: t0, paused: [], errors: [], alreadySuspended: true };
    await registry.updateTenant(id, (t) => {
      if (t.status === "deleting" || t.status === "provisioning") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is ${t.status} and cannot be suspended`);
      // A failed tenant has no daemon to pause, and resume could not tell its failure from a
      // suspension (it would come back `active` with no daemon): restart or delete it instead.
      if (t.status === "failed") {
        throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is failed${t.statusReason ? ` (${t.statusReason})` : ""} and cannot be suspended: it has no daemon to pause and the gateway already refuses it (503); restart or delete it`);
      }
      t.status = "suspended";
      t.statusReason = reason;
    });
    // The gateway refuses new requests from now on; what is open (exec, shell, forward) ends.
    ctx.endSessions(id, undefined, new PaddockError("ERR_TENANT_SUSPENDED", `tenant ${id} is suspended`));
    let result = { paused: [] as string[], errors: [] as string[] };
    if (daemons.isRunning(id)) {
      result = await daemons.pauseAll(id).catch((err: unknown) => ({ paused: [], errors: [(err as Error).message] }));
    }
    ctx.recordAudit(who, "tenant.suspend", id, { reason, paused: result.paused.length });
    return { tenant: registry.get(id), ...result, alreadySuspended: false };
  });
}

/**
 * Resume a suspended tenant under its lock: resume the VMs paused at suspension and let the
 * gateway through again (`active`, or `failed` when its daemon failed meanwhile).
 * An active tenant is answered as it is (nothing resumed, nothing audited, `alreadyActive`).
 * @returns the tenant, the VMs resumed, the messages of the resumes that failed, and whether the
 *   tenant was already active (a no-op).
 * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (failed, being provisioned or deleted).
 */
export async function resumeTenant(ctx: TenantContext, daemons: TenantDaemons, id: string, who: Actor): Promise<{ tenant: TenantRecord; resumed: string[]; errors: string[]; alreadyActive: boolean }> {
  const { registry, paths } = ctx;
  return ctx.locks.run(id, async () => {
    const t0 = registry.get(id);
    // Resuming an active tenant is a no-op, as suspending a suspended one is not an error.
    if (t0.status === "active") return { tenant: t0, resumed: [], errors: [], alreadyActive: true };
    if (t0.status !== "suspended") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is ${t0.status}, not suspended`);
    const resumed: string[] = [];
    const errors: string[] = [];
    if (daemons.isRunning(id)) {
      for (const h of t0.pausedVms ?? []) {
        try {
          await setVmPaused(paths.socketPath(id), h, false);
          resumed.push(h);
        } catch (err) {
          errors.push((err as Error).message);
        }
      }
    }
    const failed = daemons.get(id)?.state === "failed";
    const tenant = await registry.updateTenant(id, (t) => {
      t.status = failed ? "failed" : "active";
      delete t.statusReason;
      delete t.pausedVms;
      return t;
    });
    ctx.recordAudit(who, "tenant.resume", id, { resumed: resumed.length });
    return { tenant, resumed, errors, alreadyActive: false };
  });
}
