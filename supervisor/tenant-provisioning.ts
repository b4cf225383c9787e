/**
 * Provisioning a tenant: its id, template, network blocks, host uid/gid range, rendered
 * config, first token, and the first start of its daemon. A create refused before its
 * record is committed leaves nothing behind; one whose daemon fails to start is kept as
 * `failed` (the operator sees why, and a restart or delete follows).
 */
import { promises as fs } from "node:fs";
import { randomBytes } from "node:crypto";
import { PaddockError } from "../shared/errors.js";
import { DEFAULT_IMAGE_NAME, resolveImage } from "../shared/image-store.js";
import { TENANT_ID_PATTERN } from "../shared/tenant-config.js";
import { checkTenantPidsBudget, readPidMax, type TenantPidsShare } from "../shared/host-pids.js";
import { claimUidRange, releaseUidRange } from "../shared/uid-ranges.js";
import { liveTenantLockOwner, tenantIdHeldError } from "../shared/tenant-id-lock.js";
import { listOwnRanges } from "../shared/nft-cli.js";
import { formatCidr } from "../shared/cidr.js";
import { allocateBlocks } from "./block-allocator.js";
import type { SupervisorConfig } from "./supervisor-config.js";
import type { LimitsRecord, RegistryState, TenantHypervisor, TenantRecord } from "./tenant-registry.js";
import { layerLimits } from "./tenant-limits.js";
import { listTemplateNames, loadTemplate, readOverrides, templateHypervisor, type TenantTemplate } from "./tenant-template.js";
import { RUNSC_INSTALL_HINT, findRunscBinary } from "../shared/runsc-binary.js";
import { issueToken } from "./tokens.js";
import type { Actor, TenantContext } from "./tenant-context.js";
import type { TenantConfigs } from "./tenant-configs.js";
import type { TenantDaemons } from "./tenant-daemons.js";
import type { CreateTenantInput } from "./tenant-inputs.js";

/** A created tenant and its first token (shown once). */
export interface CreatedTenant {
  tenant: TenantRecord;
  /** The secret `pdk_…` token; only its hash is stored. */
  token: string;
  tokenId: string;
}

/** A random tenant id: `t` + 7 characters of [a-z0-9]. */
function newTenantId(): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(7);
  return "t" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
}

/**
 * The host-level pids check: every tenant's host pids together must leave `host_pids_reserve`
 * of pid_max to the host (shared/host-pids.ts). A gVisor tenant counts the host pids its cgroup
 * allows (guest processes scaled for the sentry's, gofer's and stubs' threads: `tenantHostPids`),
 * not its `max_pids`. `state` holds the other tenants' budgets.
 * @param tenant - the tenant being created or changed: its id, runtime and (new) limits.
 * @param gvisorTemplate - at a gVisor create from another template: the template made for gVisor
 *   when the templates dir has it, named in the refusal (shared/host-pids.ts).
 * @throws PaddockError ERR_PIDS_BUDGET_EXCEEDED (507).
 */
export async function checkPidsBudget(config: Pick<SupervisorConfig, "hostPidsReserve">, tenant: { id: string; hypervisor?: TenantHypervisor | undefined; limits: LimitsRecord & { maxPids: number } }, state: RegistryState, gvisorTemplate?: string): Promise<void> {
  const share = (t: { id: string; hypervisor?: TenantHypervisor | undefined; limits: LimitsRecord }): TenantPidsShare => ({ id: t.id, maxPids: t.limits.maxPids, hypervisor: t.hypervisor, maxVms: t.limits.maxVms });
  const others = Object.values(state.tenants).filter((t) => t.id !== tenant.id).map(share);
  checkTenantPidsBudget({ tenant: { ...share(tenant), maxPids: tenant.limits.maxPids }, others, pidMax: await readPidMax(), reservePids: config.hostPidsReserve, gvisorTemplate });
}

/** The template made for gVisor tenants (templates/sandbox-gvisor.yaml): its limits fit a default host's pids. */
export const GVISOR_TEMPLATE = "sandbox-gvisor";

/**
 * The image a tenant's daemon will run its VMs from: the create's `image`, else the template's
 * `config.image`, else the tenant config's default ({@link DEFAULT_IMAGE_NAME}, which shared/tenant-config.ts applies too).
 * @returns the image name; undefined when the template's `config.image` is not a string (the
 *   render refuses that template with ERR_CONFIG_INVALID).
 */
export function tenantImage(template: Pick<TenantTemplate, "tree">, image: string | undefined): string | undefined {
  if (image !== undefined) return image;
  const named = (template.tree.config as Record<string, unknown> | undefined)?.image;
  if (named === undefined || named === null) return DEFAULT_IMAGE_NAME;
  return typeof named === "string" ? named : undefined;
}

/**
 * The host must be able to run the tenant's VMs: `gvisor` needs runsc (searched like the
 * daemon does, shared/runsc-binary.ts), so a host without it refuses the create instead of
 * leaving a tenant whose daemon cannot start. `oci` needs nothing checked here (runc is a
 * prerequisite of every Paddock host, scripts/setup.sh).
 * @throws PaddockError `ERR_RUNTIME_UNAVAILABLE` naming `apt-get install runsc`.
 */
export function checkHypervisorOnHost(hypervisor: TenantHypervisor | undefined, how: string, runsc: () => string | undefined = findRunscBinary): void {
  if (hypervisor === "gvisor" && runsc() === undefined) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `${how} runs the tenant's VMs under gVisor, but runsc is not installed on this host; ${RUNSC_INSTALL_HINT}, or create the tenant with hypervisor oci`, { details: { hypervisor } });
  }
}

/**
 * Provision a tenant: allocate blocks and a host uid/gid range, render and write its config,
 * issue its first token, start its daemon and wait for readiness. Runs under the tenant's lock.
 * @returns the tenant record and the one-time token.
 * The tenant's runtime is the request's `hypervisor`, else its template's; it is recorded and
 * kept on every re-render.
 * @throws PaddockError `ERR_TENANT_INVALID` (bad id or host group overrides),
 *   `ERR_TENANT_EXISTS`, `ERR_TENANT_ID_IN_USE` (a daemon it did not start holds the id),
 *   `ERR_TEMPLATE_NOT_FOUND`, `ERR_IMAGE_NOT_FOUND`, `ERR_IMAGE_CORRUPT` (the image the daemon
 *   would use, named at create or by the template: nothing kept),
 *   `ERR_CONFIG_INVALID` (neither the request nor the template names oci or gvisor: nothing kept),
 *   `ERR_RUNTIME_UNAVAILABLE` (gvisor without runsc: nothing kept),
 *   `ERR_PIDS_BUDGET_EXCEEDED`, `ERR_NETWORK_EXHAUSTED`, `ERR_USERNS_EXHAUSTED` /
 *   `ERR_USERNS_RANGE_TAKEN` (no uid range: nothing kept), `ERR_DAEMON_START_FAILED`
 *   (tenant kept as `failed`).
 */
export async function createTenant(ctx: TenantContext, configs: TenantConfigs, daemons: TenantDaemons, input: CreateTenantInput, who: Actor): Promise<CreatedTenant> {
  const { config, registry, paths, log } = ctx;
  // The id names directories: whoever calls, it is checked here too.
  if (input.id !== undefined && !TENANT_ID_PATTERN.test(input.id)) throw new PaddockError("ERR_TENANT_INVALID", "id: expected 1-12 characters of [a-z0-9] starting with a letter");
  const id = input.id ?? newTenantId();
  const template = await loadTemplate(config.templatesDir, input.template ?? config.defaultTemplate);
  const overrides = readOverrides(template, input.hostGroups);
  const image = input.image;
  // The image the daemon will use, named at create or by the template, must be in the store
  // with a valid image.json before anything is made: the read the daemon makes at its start
  // (shared/image-store.ts resolveImage), so a typo or a corrupt image fails the create.
  const used = tenantImage(template, image);
  if (used !== undefined) await resolveImage(config.imageDir, used);
  const hypervisor = input.hypervisor ?? templateHypervisor(template);
  if (hypervisor === undefined) {
    // Without it the daemon would take Slicer's default (firecracker), which Paddock cannot run,
    // and fail at start, leaving a failed tenant behind.
    const named = (template.tree.config as Record<string, unknown> | undefined)?.hypervisor;
    throw new PaddockError(
      "ERR_CONFIG_INVALID",
      `template ${template.name} ${named === undefined ? "names no config.hypervisor" : `names config.hypervisor ${JSON.stringify(named)}`}, and a tenant's VMs run on oci (runc) or gvisor (runsc): set config.hypervisor in the template, or choose one at create ("hypervisor" in the request, paddock tenant create --hypervisor oci)`,
      { details: { template: template.name } },
    );
  }
  checkHypervisorOnHost(hypervisor, input.hypervisor !== undefined ? "hypervisor gvisor" : `template ${template.name}`);
  // Every limit is set: the request's, else the template's, else the supervisor's default.
  const limits = layerLimits(input.limits ?? {}, template.limits, config.defaultLimits);
  const labels = { ...input.labels };
  const expiresAt = input.tokenExpiresAt;
  const issued = issueToken();

  // Ranges of tenant daemons outside the registry (`paddock daemon up` on this host): their
  // tables' `own_ranges` sets. Read before the registry's lock (one nft run; its cost grows
  // with the host's tables); a range such a daemon takes meanwhile is still refused by the new
  // daemon's own overlap check at its start.
  const hostRanges = await liveTenantRanges(ctx);
  // A gVisor tenant from another template whose pids do not fit is pointed at the one made for gVisor.
  const gvisorTemplate = hypervisor === "gvisor" && template.name !== GVISOR_TEMPLATE && (await listTemplateNames(config.templatesDir).catch((): string[] => [])).includes(GVISOR_TEMPLATE) ? GVISOR_TEMPLATE : undefined;
  return ctx.locks.run(id, async () => {
    const stateDir = paths.stateDir(id);
    let claimed: { stateDirExisted: boolean } | undefined;
    const rendered = await registry.update(async (state) => {
      if (state.tenants[id]) throw new PaddockError("ERR_TENANT_EXISTS", `tenant ${JSON.stringify(id)} already exists`);
      // A daemon outside the registry (`paddock daemon up`) holds this id: its containers, table
      // and state dir are keyed by it, so a tenant of the same id would collide with them.
      const holder = await liveTenantLockOwner(id);
      if (holder !== undefined) throw tenantIdHeldError(id, holder, "tenant not created");
      const used = [...Object.values(state.tenants).flatMap((t) => t.blocks.map((b) => b.cidr)), ...hostRanges];
      const cidrs = allocateBlocks({ pool: config.pool, blockPrefix: config.blockPrefix, used, count: template.hostGroups.length });
      // The host uid/gid range (shared/uid-ranges.ts); claiming creates the state dir.
      const stateDirExisted = await fs.access(stateDir).then(() => true, () => false);
      claimed = { stateDirExisted };
      await checkPidsBudget(config, { id, hypervisor, limits }, state, gvisorTemplate);
      const uidRange = await claimUidRange({ tenantId: id, stateDir });
      const now = new Date().toISOString();
      const record: TenantRecord = {
        id, status: "provisioning", template: template.name, labels, limits, overrides, ...(image !== undefined ? { image } : {}),
        hypervisor,
        blocks: template.hostGroups.map((g, i) => ({ hostGroup: g, cidr: cidrs[i] as string })),
        tokens: [{ id: issued.id, hash: issued.hash, createdAt: now, ...(expiresAt ? { expiresAt } : {}) }],
        uidRange,
        daemon: { state: "stopped", restarts: 0 },
        createdAt: now, updatedAt: now,
      };
      const out = configs.render(template, record); // throws before anything is written
      state.tenants[id] = record;
      return out;
    }).catch(async (err: unknown) => {
      // Nothing of a refused create stays: neither the claim nor the state dir it created.
      if (claimed !== undefined) {
        await releaseUidRange({ tenantId: id, stateDir }).catch((e: unknown) => log.error("could not release the uid range of a failed create", { tenant: id, err: e }));
        if (!claimed.stateDirExisted) await fs.rm(stateDir, { recursive: true, force: true }).catch(() => undefined);
      }
      throw err;
    });
    configs.remember(id, rendered.config);
    ctx.recordAudit(who, "tenant.create", id, { template: template.name, hypervisor });
    try {
      await configs.writeNew(id, rendered.text);
      await daemons.managed(id).start();
    } catch (err) {
      await registry.updateTenant(id, (t) => {
        t.status = "failed";
        t.statusReason = (err as Error).message.split("\n")[0];
      });
      throw err;
    }
    const tenant = await registry.updateTenant(id, (t) => {
      if (t.status === "provisioning") t.status = "active";
      return t;
    });
    return { tenant, token: issued.token, tokenId: issued.id };
  });
}

/**
 * The ranges of every tenant table on the host (each table's `own_ranges` set, written by
 * tenant-daemon/network/nft-ruleset.ts), `a.b.c.d/n`: the supervisor's own tenants and daemons
 * started outside it. Every inet table with such a set counts, whatever its name (prefix ""),
 * as before; read from the tables' range index chains, or their sets when one lacks the index
 * (shared/nft-cli.ts `listOwnRanges`: the set read prints every table's elements, quadratic in
 * the tenants). A failed read is logged and answered with none (a new daemon still refuses an
 * overlapping range at its start).
 */
async function liveTenantRanges(ctx: TenantContext): Promise<string[]> {
  try {
    return [...(await listOwnRanges("")).values()].flat().map(formatCidr);
  } catch (err) {
    ctx.log.warn("cannot read the host's tenant ranges; allocating from the registry alone", { err });
    return [];
  }
}
