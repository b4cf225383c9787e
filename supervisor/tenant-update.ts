/**
 * Changing a tenant's labels and limits. New limits are rendered into the tenant's config at
 * once and applied by its daemon at the next start (`pending_restart`; `POST …/restart`).
 */
import { LIMIT_KEYS, layerLimits } from "./tenant-limits.js";
import type { LimitsRecord, TenantRecord } from "./tenant-registry.js";
import { loadTemplate } from "./tenant-template.js";
import { checkPidsBudget } from "./tenant-provisioning.js";
import type { Actor, TenantContext } from "./tenant-context.js";
import type { TenantConfigs } from "./tenant-configs.js";
import type { LabelsPatch, UpdateTenantInput } from "./tenant-inputs.js";
import type { LimitsPatch } from "./tenant-limits.js";

/** `base` with `patch` applied (pure): a string sets a label, `null` removes it. */
function applyLabels(base: Record<string, string>, patch: LabelsPatch | undefined): Record<string, string> {
  const out = { ...base };
  for (const [k, v] of Object.entries(patch ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** `base` with `patch` applied (pure): a number sets a limit, `null` resets it to `defaults`. */
function applyLimits(base: LimitsRecord, patch: LimitsPatch, defaults: Required<LimitsRecord>): LimitsRecord {
  const out: LimitsRecord = { ...base };
  for (const [, field] of LIMIT_KEYS) {
    const v = patch[field];
    if (v === null) out[field] = defaults[field];
    else if (v !== undefined) out[field] = v;
  }
  return out;
}

/**
 * Change labels and/or limits under the tenant's lock. A `null` limit goes back to the
 * template's, else the supervisor's `default_limits`.
 * @returns the updated record.
 * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_PIDS_BUDGET_EXCEEDED` (a raised max_pids
 *   the host cannot carry), `ERR_TEMPLATE_NOT_FOUND` (the tenant's template went away).
 */
export async function updateTenant(ctx: TenantContext, configs: TenantConfigs, id: string, input: UpdateTenantInput, who: Actor): Promise<TenantRecord> {
  const { config, registry } = ctx;
  return ctx.locks.run(id, async () => {
    const current = registry.get(id);
    const labels = applyLabels(current.labels, input.labels);
    const defaults = input.limits === undefined ? undefined : layerLimits((await loadTemplate(config.templatesDir, current.template)).limits, config.defaultLimits);
    const limits = defaults === undefined || input.limits === undefined ? current.limits : applyLimits(current.limits, input.limits, defaults);
    // A gVisor tenant's host pids follow max_vms too (shared/host-pids.ts tenantHostPids).
    const hostPidsChanged = limits.maxPids !== current.limits.maxPids || (current.hypervisor === "gvisor" && limits.maxVms !== current.limits.maxVms);
    if (limits.maxPids !== undefined && hostPidsChanged) await checkPidsBudget(config, { id, hypervisor: current.hypervisor, limits: { ...limits, maxPids: limits.maxPids } }, registry.snapshot());
    const limitsChanged = JSON.stringify(limits) !== JSON.stringify(current.limits);
    let text: string | undefined;
    if (limitsChanged) {
      const template = await loadTemplate(config.templatesDir, current.template);
      const rendered = configs.render(template, { ...current, limits });
      text = rendered.text;
      configs.remember(id, rendered.config);
    }
    if (text !== undefined) await configs.rewrite(id, text);
    const t = await registry.updateTenant(id, (t) => {
      t.labels = labels;
      t.limits = limits;
      if (limitsChanged) {
        // Pending only while the limits differ from those the daemon runs with.
        const applied = t.appliedLimits ?? (t.pendingRestart === true ? undefined : current.limits);
        if (applied !== undefined && JSON.stringify(limits) === JSON.stringify(applied)) {
          delete t.pendingRestart;
          delete t.appliedLimits;
        } else {
          t.pendingRestart = true;
          if (applied !== undefined) t.appliedLimits = applied;
        }
      }
      return t;
    });
    ctx.recordAudit(who, "tenant.update", id, { labels: input.labels !== undefined, limits: limitsChanged });
    return t;
  });
}
