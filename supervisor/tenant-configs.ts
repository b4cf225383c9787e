/**
 * The tenants' rendered daemon configs: rendering a record through its template
 * (supervisor/tenant-template.ts), writing `<state>/tenants/<id>/config.yaml`, and a cache of
 * the parsed configs (the admin API's usage figures read host group sizes from it).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "../shared/state-store.js";
import { loadTenantConfig, type TenantConfig } from "../shared/tenant-config.js";
import { claimUidRange } from "../shared/uid-ranges.js";
import { tenantForeignRanges } from "./block-allocator.js";
import type { TenantRecord } from "./tenant-registry.js";
import { loadTemplate, renderTenantConfig, type TenantTemplate } from "./tenant-template.js";
import type { TenantContext } from "./tenant-context.js";

/** The record fields a rendering reads. */
export type RenderableTenant = Pick<TenantRecord, "id" | "blocks" | "limits" | "overrides" | "image" | "hypervisor" | "uidRange">;

/** Rendered tenant configs: render, write, and the parsed form by tenant id. */
export class TenantConfigs {
  private readonly ctx: TenantContext;
  private readonly parsed = new Map<string, TenantConfig>();

  constructor(ctx: TenantContext) {
    this.ctx = ctx;
  }

  /**
   * Render a tenant's config (writes nothing): its blocks, limits, overrides, image, hypervisor and uid range into
   * `template`, with the supervisor's image dir, deny list, foreign ranges (the pool's rest and
   * other tenants' blocks outside the pool, block-allocator.ts `tenantForeignRanges`) and pids
   * reserve.
   * @returns `{ text, config }` — the YAML to write and its parsed form.
   * @throws PaddockError `ERR_CONFIG_INVALID` when the result is not a valid tenant config.
   */
  render(template: TenantTemplate, t: RenderableTenant): { text: string; config: TenantConfig } {
    const { config, paths, registry } = this.ctx;
    const blocks: Record<string, string> = {};
    for (const b of t.blocks) blocks[b.hostGroup] = b.cidr;
    const otherBlocks = Object.values(registry.snapshot().tenants).filter((o) => o.id !== t.id).flatMap((o) => o.blocks.map((b) => b.cidr));
    return renderTenantConfig(template, {
      tenantId: t.id,
      socketPath: paths.socketPath(t.id),
      stateDir: paths.stateDir(t.id),
      runDir: paths.runDir(t.id),
      imageDir: config.imageDir,
      blocks,
      limits: t.limits,
      overrides: t.overrides,
      ...(t.image !== undefined ? { image: t.image } : {}),
      ...(t.hypervisor !== undefined ? { hypervisor: t.hypervisor } : {}),
      deny: config.deny,
      foreignRanges: tenantForeignRanges(config.pool, t.blocks.map((b) => b.cidr), otherBlocks),
      ...(t.uidRange !== undefined ? { userns: t.uidRange } : {}),
      hostPidsReserve: config.hostPidsReserve,
    });
  }

  /** Create the tenant's state dir (with `logs/`) and run dir (0700), then write its config (0600). */
  async writeNew(id: string, text: string): Promise<void> {
    const { paths } = this.ctx;
    await fs.mkdir(path.join(paths.stateDir(id), "logs"), { recursive: true, mode: 0o700 });
    await fs.mkdir(paths.runDir(id), { recursive: true, mode: 0o700 });
    await writeFileAtomic(paths.configPath(id), text, 0o600);
  }

  /** Replace the config of an existing tenant (atomic, 0600). */
  async rewrite(id: string, text: string): Promise<void> {
    await writeFileAtomic(this.ctx.paths.configPath(id), text, 0o600);
  }

  /** Keep the parsed form of the config just rendered for `id`. */
  remember(id: string, config: TenantConfig): void {
    this.parsed.set(id, config);
  }

  /** Drop the parsed config of a deleted tenant. */
  forget(id: string): void {
    this.parsed.delete(id);
  }

  /** The tenant's parsed config: the cached one, else read from its file (undefined when unreadable). */
  async load(id: string): Promise<TenantConfig | undefined> {
    let c = this.parsed.get(id);
    if (!c) {
      c = await loadTenantConfig(this.ctx.paths.configPath(id), {}).catch(() => undefined);
      if (c) this.parsed.set(id, c);
    }
    return c;
  }

  /**
   * A tenant created before user namespaces has no `uidRange`: claim it now (the range its
   * daemon may already hold, shared/uid-ranges.ts keys claims by tenant id and state dir),
   * record it and render it into the tenant's config (best effort: the daemon claims the same
   * range by itself when its config lacks it).
   * @throws PaddockError `ERR_USERNS_RANGE_TAKEN`, `ERR_USERNS_EXHAUSTED` from the claim.
   */
  async ensureUidRange(id: string): Promise<void> {
    const { registry, paths, log, config } = this.ctx;
    const t0 = registry.get(id);
    if (t0.uidRange !== undefined) return;
    const uidRange = await claimUidRange({ tenantId: id, stateDir: paths.stateDir(id) });
    const t = await registry.updateTenant(id, (r) => {
      r.uidRange = uidRange;
      return r;
    });
    log.info("claimed a uid range for a tenant created before user namespaces", { tenant: id, uid_start: uidRange.uidStart, size: uidRange.size });
    try {
      const rendered = this.render(await loadTemplate(config.templatesDir, t.template), t);
      await this.rewrite(id, rendered.text);
      this.remember(id, rendered.config);
    } catch (err) {
      log.warn("could not re-render the tenant's config with its uid range", { tenant: id, err });
    }
  }
}
