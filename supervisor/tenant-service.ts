/**
 * The tenant service: the one object the admin API, the gateway and the composition root
 * talk to about tenants. It holds the state objects and hands each operation to the piece
 * that owns it:
 * - provisioning (supervisor/tenant-provisioning.ts): id, template, blocks, uid range,
 *   config, first token, first daemon start;
 * - changes of labels and limits (supervisor/tenant-update.ts);
 * - suspend and resume (supervisor/tenant-suspension.ts);
 * - restart, delete and the start-up reconciliation (supervisor/tenant-lifecycle.ts);
 * - tokens and the gateway's token index (supervisor/tenant-tokens.ts);
 * - the daemons (supervisor/tenant-daemons.ts), rendered configs (supervisor/tenant-configs.ts)
 *   and paths (supervisor/tenant-paths.ts).
 * Inputs arrive parsed and checked (supervisor/tenant-inputs.ts, from
 * supervisor/admin-request.ts); this never sees `req`/`res`.
 */
import type { TenantRegistry, TenantRecord, TenantStatus } from "./tenant-registry.js";
import { TENANT_STATUSES } from "./tenant-registry.js";
import { readLogTail } from "./daemon-process.js";
import { listDaemonNodes, type DaemonNode } from "./daemon-client.js";
import { createTenantContext, type Actor, type TenantContext, type TenantServiceDeps } from "./tenant-context.js";
import { TenantConfigs } from "./tenant-configs.js";
import { TenantDaemons, type DaemonInfo } from "./tenant-daemons.js";
import { TenantTokens, type IssuedTenantToken, type RevokedToken, type TokenOwner } from "./tenant-tokens.js";
import { createTenant, type CreatedTenant } from "./tenant-provisioning.js";
import { updateTenant } from "./tenant-update.js";
import { resumeTenant, suspendTenant } from "./tenant-suspension.js";
import { deleteTenant, reconcileTenants, restartTenant } from "./tenant-lifecycle.js";
import type { CreateTenantInput, IssueTokenInput, TenantListFilter, UpdateTenantInput } from "./tenant-inputs.js";

export type { Actor, SessionEnder, TenantServiceDeps } from "./tenant-context.js";

/** What the gateway needs to route one request. */
export interface GatewayTarget {
  tenantId: string;
  status: TenantStatus;
  socketPath: string;
  /** True when the daemon is running and ready. */
  daemonUp: boolean;
}

/** What a tenant's running VMs commit, from its daemon. */
export interface TenantUsage {
  /** VM count by status (`Running`, `Paused`, `Stopped`…). */
  vms: Record<string, number>;
  total: number;
  /** vCPUs of the VMs not stopped. */
  vcpu: number;
  /** RAM of the VMs not stopped, bytes. */
  ramBytes: number;
  /** Disk of every VM (its host group's storage_size), bytes. */
  diskBytes: number;
}

/** The tenant lifecycle service. */
export class TenantService {
  private readonly ctx: TenantContext;
  private readonly registry: TenantRegistry;
  private readonly daemons: TenantDaemons;
  private readonly configs: TenantConfigs;
  private readonly tokens: TenantTokens;
  /**
   * The daemon socket path of each committed tenant record, for {@link gatewayTarget} (a
   * `path.join` per request otherwise). Keyed by the record object: a path is a function of the
   * tenant id and the supervisor's fixed run dir (supervisor/tenant-paths.ts), and an entry goes
   * with its record when a registry change replaces or removes it.
   */
  private readonly socketPaths = new WeakMap<TenantRecord, string>();

  constructor(deps: TenantServiceDeps) {
    this.ctx = createTenantContext(deps);
    this.registry = deps.registry;
    this.daemons = new TenantDaemons(this.ctx);
    this.configs = new TenantConfigs(this.ctx);
    this.tokens = new TenantTokens(this.ctx);
  }

  // ---- paths -------------------------------------------------------------------------

  /** `<state>/tenants/<id>`. */
  tenantStateDir(id: string): string {
    return this.ctx.paths.stateDir(id);
  }
  /** `<run>/tenants/<id>`. */
  tenantRunDir(id: string): string {
    return this.ctx.paths.runDir(id);
  }
  /** `<state>/tenants/<id>/config.yaml`. */
  configPath(id: string): string {
    return this.ctx.paths.configPath(id);
  }
  /** `<run>/tenants/<id>/api.sock`. */
  socketPath(id: string): string {
    return this.ctx.paths.socketPath(id);
  }
  /** `<state>/tenants/<id>/logs/daemon.log`. */
  logFile(id: string): string {
    return this.ctx.paths.logFile(id);
  }

  // ---- gateway -----------------------------------------------------------------------

  /**
   * Resolve a presented bearer token (constant work whether or not it exists).
   * @returns the tenant id and token id, or undefined (unknown, expired, revoked, missing).
   */
  authenticate(token: string | undefined): TokenOwner | undefined {
    return this.tokens.authenticate(token);
  }

  /** Where a tenant's requests go, from the committed registry and live daemon state. */
  gatewayTarget(tenantId: string): GatewayTarget | undefined {
    const t = this.registry.find(tenantId);
    if (!t) return undefined;
    let socketPath = this.socketPaths.get(t);
    if (socketPath === undefined) {
      socketPath = this.socketPath(tenantId);
      this.socketPaths.set(t, socketPath);
    }
    return { tenantId, status: t.status, socketPath, daemonUp: this.daemons.isRunning(tenantId) };
  }

  // ---- changes (supervisor/tenant-provisioning.ts, tenant-update.ts, tenant-suspension.ts, tenant-lifecycle.ts)

  /**
   * Provision a tenant (supervisor/tenant-provisioning.ts `createTenant`).
   * @returns the tenant record and the one-time token.
   * @throws PaddockError `ERR_TENANT_INVALID`, `ERR_TENANT_EXISTS`, `ERR_TEMPLATE_NOT_FOUND`,
   *   `ERR_IMAGE_NOT_FOUND`, `ERR_PIDS_BUDGET_EXCEEDED`, `ERR_NETWORK_EXHAUSTED`,
   *   `ERR_USERNS_EXHAUSTED` / `ERR_USERNS_RANGE_TAKEN` (nothing kept),
   *   `ERR_DAEMON_START_FAILED` (tenant kept as `failed`).
   */
  async create(input: CreateTenantInput, who: Actor): Promise<CreatedTenant> {
    const out = await createTenant(this.ctx, this.configs, this.daemons, input, who);
    await this.ctx.publish({ type: "created", tenant: out.tenant.id, reason: "operator" });
    return out;
  }

  /**
   * Change labels and/or limits. New limits are written into the tenant's config at once
   * and applied by the daemon at its next start (`pending_restart`; `POST …/restart`).
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_PIDS_BUDGET_EXCEEDED`.
   */
  update(id: string, input: UpdateTenantInput, who: Actor): Promise<TenantRecord> {
    return updateTenant(this.ctx, this.configs, id, input, who);
  }

  /**
   * Suspend: the gateway answers 403 ERR_TENANT_SUSPENDED from now on and the tenant's
   * running VMs are paused through its daemon. A suspended tenant is a no-op
   * (`alreadySuspended`, no `suspended` event).
   * @returns the tenant and what was paused (pause errors do not undo the suspension).
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID`.
   */
  async suspend(id: string, reason: string, who: Actor): Promise<{ tenant: TenantRecord; paused: string[]; errors: string[]; alreadySuspended: boolean }> {
    const out = await suspendTenant(this.ctx, this.daemons, id, reason, who);
    if (!out.alreadySuspended) await this.ctx.publish({ type: "suspended", tenant: id, reason: "operator", message: reason });
    return out;
  }

  /**
   * Resume: resume the VMs paused at suspension and let the gateway through again. An active
   * tenant is a no-op (`alreadyActive`, no `resumed` event).
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (not suspended).
   */
  async resume(id: string, who: Actor): Promise<{ tenant: TenantRecord; resumed: string[]; errors: string[]; alreadyActive: boolean }> {
    const out = await resumeTenant(this.ctx, this.daemons, id, who);
    if (!out.alreadyActive) await this.ctx.publish({ type: "resumed", tenant: id, reason: "operator" });
    return out;
  }

  /**
   * Restart the daemon gracefully (applies pending limits, clears `failed`).
   * @throws PaddockError `ERR_DAEMON_START_FAILED` with the daemon's output.
   */
  async restart(id: string, who: Actor): Promise<TenantRecord> {
    const out = await restartTenant(this.ctx, this.configs, this.daemons, id, who);
    await this.ctx.publish({ type: "daemon_restarted", tenant: id, reason: "operator" });
    return out;
  }

  /**
   * Delete a tenant: stop its daemon, purge its VMs, disks, links, netns and nft table
   * (`main.js purge`), remove its directories and free its blocks. Idempotent.
   * @returns false when there was no such tenant.
   * @throws PaddockError `ERR_EXEC_FAILED` when the purge fails (tenant stays `deleting`;
   *   retry the DELETE).
   */
  async delete(id: string, who: Actor): Promise<boolean> {
    const deleted = await deleteTenant(this.ctx, this.configs, this.daemons, id, who);
    if (deleted) await this.ctx.publish({ type: "deleted", tenant: id, reason: "operator" });
    return deleted;
  }

  // ---- tokens (supervisor/tenant-tokens.ts) -----------------------------------------

  /**
   * Issue an extra token (older ones stay valid until revoked or expired).
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, `ERR_TENANT_INVALID` (being deleted).
   */
  issueToken(id: string, input: IssueTokenInput, who: Actor): Promise<IssuedTenantToken> {
    return this.tokens.issue(id, input, who);
  }

  /**
   * Revoke a token (idempotent for an already revoked one) and end its live sessions
   * ({@link TenantTokens.revoke}: the audit entry of a no-op has `already_revoked: true`).
   * @returns when it was revoked and whether it already was.
   * @throws PaddockError `ERR_TOKEN_NOT_FOUND`, `ERR_TENANT_NOT_FOUND`.
   */
  revokeToken(id: string, tokenId: string, who: Actor): Promise<RevokedToken> {
    return this.tokens.revoke(id, tokenId, who);
  }

  // ---- read --------------------------------------------------------------------------

  /** Tenants with the filter's status and labels, oldest first. */
  list(filter: TenantListFilter): TenantRecord[] {
    return Object.values(this.registry.snapshot().tenants)
      .filter((t) => filter.status === undefined || t.status === filter.status)
      .filter((t) => Object.entries(filter.labels ?? {}).every(([k, v]) => t.labels[k] === v))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * One tenant.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`.
   */
  get(id: string): TenantRecord {
    return this.registry.get(id);
  }

  /**
   * Live daemon facts for views.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`.
   */
  daemonInfo(id: string): DaemonInfo {
    return this.daemons.info(id);
  }

  /**
   * VMs of a running tenant by status and the resources they commit (vCPU, RAM from
   * `GET /nodes`; disk from the host group's storage_size).
   * @returns undefined when the daemon is not reachable.
   */
  async usage(id: string): Promise<TenantUsage | undefined> {
    if (!this.daemons.isRunning(id)) return undefined;
    let nodes: DaemonNode[];
    try {
      nodes = await listDaemonNodes(this.socketPath(id), 2000);
    } catch {
      return undefined;
    }
    const cfg = await this.configs.load(id);
    const vms: Record<string, number> = {};
    let vcpu = 0, ramBytes = 0, diskBytes = 0;
    for (const n of nodes) {
      vms[n.status] = (vms[n.status] ?? 0) + 1;
      if (n.status === "Stopped") continue;
      vcpu += n.cpus ?? 0;
      ramBytes += n.ram_bytes ?? 0;
    }
    for (const n of nodes) diskBytes += cfg?.hostGroups.find((g) => g.name === n.hostgroup)?.storageSizeBytes ?? 0;
    return { vms, total: nodes.length, vcpu, ramBytes, diskBytes };
  }

  /**
   * The last `lines` lines of the daemon's log.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`.
   */
  async logs(id: string, lines: number): Promise<string[]> {
    this.registry.get(id);
    return readLogTail(this.logFile(id), lines);
  }

  /** Counts for /metrics: tenants by status, daemon restarts by tenant. */
  metricsInputs(): { byStatus: Record<string, number>; restarts: Record<string, number> } {
    const byStatus: Record<string, number> = Object.fromEntries(TENANT_STATUSES.map((s) => [s, 0]));
    const restarts: Record<string, number> = {};
    for (const t of Object.values(this.registry.snapshot().tenants)) {
      byStatus[t.status] = (byStatus[t.status] ?? 0) + 1;
      restarts[t.id] = this.daemons.restarts(t.id, t.daemon.restarts);
    }
    return { byStatus, restarts };
  }

  // ---- start-up and shutdown ---------------------------------------------------------

  /** Reconcile after a (re)start (supervisor/tenant-lifecycle.ts `reconcileTenants`). */
  reconcile(): Promise<void> {
    return reconcileTenants(this.ctx, this.configs, this.daemons);
  }

  /**
   * Stop supervising once the operations under way have settled. With `stopDaemons`, daemons
   * are stopped gracefully (their ephemeral VMs go away); otherwise they keep running and are
   * adopted by the next supervisor.
   */
  async shutdown(stopDaemons: boolean): Promise<void> {
    await this.ctx.locks.settled();
    await this.daemons.shutdown(stopDaemons);
  }
}
