/**
 * Tenant lifecycle rules (issue 4 §2–§6): provisioning (id, template, blocks, config,
 * token, daemon start), updates, suspend/resume, restart, tokens, deletion, and the
 * start-up reconciliation that adopts live daemons and removes leftovers. Routes call
 * this; it never sees `req`/`res`.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { run } from "../shared/exec.js";
import type { Logger } from "../shared/logger.js";
import { writeFileAtomic } from "../shared/state-store.js";
import { TENANT_ID_PATTERN, loadTenantConfig, type TenantConfig } from "../shared/tenant-config.js";
import { ConfigReader } from "../shared/yaml-reader.js";
import { checkTenantPidsBudget, readPidMax } from "../shared/host-pids.js";
import { LIMIT_KEYS, layerLimits, readLimitsSection } from "./tenant-limits.js";
import { claimUidRange, releaseUidRange } from "../shared/uid-ranges.js";
import { allocateBlocks, poolComplement } from "./block-allocator.js";
import type { SupervisorConfig } from "./supervisor-config.js";
import { TenantRegistry, TENANT_STATUSES, type DaemonRecord, type LimitsRecord, type RegistryState, type TenantRecord, type TenantStatus } from "./tenant-registry.js";
import { loadTemplate, readImageOverride, readOverrides, renderTenantConfig, type TenantTemplate } from "./tenant-template.js";
import { issueToken, TokenIndex } from "./tokens.js";
import { ManagedDaemon, type DaemonEvents } from "./process-manager.js";
import { killDaemonGroup, readLogTail, type DaemonSpec } from "./daemon-process.js";
import { findDaemonPids, pidAlive } from "./proc-info.js";
import { listDaemonNodes, setVmPaused, type DaemonNode } from "./daemon-client.js";
import type { AuditLog } from "./audit-log.js";
import type { SupervisorMetrics } from "./metrics.js";

/** Who asked (for the audit log). */
export interface Actor {
  actor: string;
  requestId?: string;
}

/** What the gateway needs to route one request. */
export interface GatewayTarget {
  tenantId: string;
  status: TenantStatus;
  socketPath: string;
  /** True when the daemon is running and ready. */
  daemonUp: boolean;
}

/** A token owner in the gateway's index. */
interface TokenOwner {
  tenantId: string;
  tokenId: string;
}

/** Ends a tenant's live gateway sessions (supervisor/gateway-admission.ts `GatewayAdmission`). */
export interface SessionEnder {
  /**
   * End the tenant's live proxied requests and WebSockets, or only those of `tokenId`; a request
   * not yet answered gets `reason`. Returns how many.
   */
  endSessions(tenantId: string, tokenId?: string, reason?: PaddockError): number;
}

/** Dependencies of the service (composition root passes them). */
export interface TenantServiceDeps {
  config: SupervisorConfig;
  registry: TenantRegistry;
  audit: AuditLog;
  metrics: SupervisorMetrics;
  log: Logger;
  /** Live gateway sessions, ended at revoke, suspend and delete (absent: nothing to end). */
  sessions?: SessionEnder;
}

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/i;

/**
 * Read `limits` of an admin request over `base`; `null` (when `allowNull`) resets a limit to
 * `defaults` (the template's, else the supervisor's `default_limits`).
 */
function readLimits(raw: unknown, base: LimitsRecord, allowNull: boolean, defaults: Required<LimitsRecord>): LimitsRecord {
  const r = new ConfigReader();
  const patch = allowNull ? readLimitsSection(r, raw, "limits", { allowNull: true, unknownIsProblem: true }) : readLimitsSection(r, raw, "limits", { unknownIsProblem: true });
  if (r.problems.length) throw new PaddockError("ERR_TENANT_INVALID", r.problems.map((p) => `${p.path}: ${p.message}`).join("; "), { details: { problems: r.problems } });
  const out: LimitsRecord = { ...base };
  for (const [, field] of LIMIT_KEYS) {
    const v = patch[field];
    if (v === null) out[field] = defaults[field];
    else if (v !== undefined) out[field] = v;
  }
  return out;
}

/** Read `labels` (string → string); `null` values remove a label when `allowNull`. */
function readLabels(raw: unknown, base: Record<string, string>, allowNull: boolean): Record<string, string> {
  if (raw === undefined) return { ...base };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new PaddockError("ERR_TENANT_INVALID", "labels: expected an object of string values");
  const out = { ...base };
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!LABEL_KEY.test(k)) throw new PaddockError("ERR_TENANT_INVALID", `labels.${k}: label keys are 1-63 characters of [A-Za-z0-9._/-]`);
    if (v === null && allowNull) delete out[k];
    else if (typeof v === "string" && v.length <= 256) out[k] = v;
    else throw new PaddockError("ERR_TENANT_INVALID", `labels.${k}: expected a string of at most 256 characters`);
  }
  return out;
}

/** Parse an optional token lifetime (`expires_in_seconds` or `expires_at`). */
function readExpiry(body: Record<string, unknown>, nowMs: number): string | undefined {
  if (body.expires_in_seconds !== undefined && body.expires_at !== undefined) throw new PaddockError("ERR_TENANT_INVALID", "set either expires_in_seconds or expires_at, not both");
  if (body.expires_in_seconds !== undefined) {
    const s = body.expires_in_seconds;
    if (typeof s !== "number" || !Number.isInteger(s) || s < 1 || s > 10 * 365 * 86400) throw new PaddockError("ERR_TENANT_INVALID", "expires_in_seconds: expected an integer between 1 and 315360000");
    return new Date(nowMs + s * 1000).toISOString();
  }
  if (body.expires_at !== undefined) {
    const t = typeof body.expires_at === "string" ? Date.parse(body.expires_at) : NaN;
    if (!Number.isFinite(t) || t <= nowMs) throw new PaddockError("ERR_TENANT_INVALID", "expires_at: expected an RFC3339 time in the future");
    return new Date(t).toISOString();
  }
  return undefined;
}

/** Poll until `pid` is gone (zombies of other parents count as gone once reaped), at most `timeoutMs`. */
async function waitForPidExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await pidAlive(pid))) await new Promise((r) => setTimeout(r, 50));
}

/** The tenant lifecycle service. */
export class TenantService {
  private readonly config: SupervisorConfig;
  private readonly registry: TenantRegistry;
  private readonly audit: AuditLog;
  private readonly metrics: SupervisorMetrics;
  private readonly log: Logger;
  private readonly sessions: SessionEnder | undefined;
  private readonly daemons = new Map<string, ManagedDaemon>();
  private readonly tenantConfigs = new Map<string, TenantConfig>();
  private tokenIndex = new TokenIndex<TokenOwner>();
  /** Serialises lifecycle operations per tenant (create/delete/suspend/restart). */
  private readonly tenantLocks = new Map<string, Promise<unknown>>();

  constructor(deps: TenantServiceDeps) {
    this.config = deps.config;
    this.registry = deps.registry;
    this.audit = deps.audit;
    this.metrics = deps.metrics;
    this.log = deps.log;
    this.sessions = deps.sessions;
    this.registry.onChange((state) => this.rebuildTokenIndex(state));
  }

  // ---- paths -------------------------------------------------------------------------

  tenantStateDir(id: string): string {
    return path.join(this.config.stateDir, "tenants", id);
  }
  tenantRunDir(id: string): string {
    return path.join(this.config.runDir, "tenants", id);
  }
  configPath(id: string): string {
    return path.join(this.tenantStateDir(id), "config.yaml");
  }
  socketPath(id: string): string {
    return path.join(this.tenantRunDir(id), "api.sock");
  }
  logFile(id: string): string {
    return path.join(this.tenantStateDir(id), "logs", "daemon.log");
  }

  private daemonEnv(): Record<string, string> {
    return { PADDOCK_STATE_DIR: this.config.stateDir, PADDOCK_RUN_DIR: this.config.runDir, PADDOCK_IMAGE_DIR: this.config.imageDir };
  }

  private daemonSpec(id: string): DaemonSpec {
    return { tenantId: id, entry: this.config.daemonEntry, configPath: this.configPath(id), socketPath: this.socketPath(id), logFile: this.logFile(id), env: this.daemonEnv(),
      logRotation: { rotateBytes: this.config.logs.daemonLogBytes, keep: this.config.logs.daemonLogKeep } };
  }

  private rebuildTokenIndex(state: RegistryState): void {
    const entries = [];
    for (const t of Object.values(state.tenants)) {
      for (const k of t.tokens) {
        entries.push({ hash: k.hash, expiresAtMs: k.expiresAt ? Date.parse(k.expiresAt) : undefined, revoked: k.revokedAt !== undefined, value: { tenantId: t.id, tokenId: k.id } });
      }
    }
    this.tokenIndex = new TokenIndex(entries);
  }

  private async withTenantLock<R>(id: string, fn: () => Promise<R>): Promise<R> {
    const prev = this.tenantLocks.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    const tail = next.catch(() => undefined);
    this.tenantLocks.set(id, tail);
    void tail.then(() => { if (this.tenantLocks.get(id) === tail) this.tenantLocks.delete(id); });
    return next;
  }

  private recordAudit(who: Actor, action: string, tenant: string | undefined, details?: Record<string, unknown>, status?: number): void {
    void this.audit.record({ actor: who.actor, action, tenant, requestId: who.requestId, status, details }, (err) => this.log.error("audit write failed", { err }));
  }

  // ---- gateway -----------------------------------------------------------------------

  /**
   * Resolve a presented bearer token (constant work whether or not it exists).
   * @returns the tenant id and token id, or undefined (unknown, expired, revoked, missing).
   */
  authenticate(token: string | undefined): TokenOwner | undefined {
    return this.tokenIndex.verify(token);
  }

  /** Where a tenant's requests go, from the committed registry and live daemon state. */
  gatewayTarget(tenantId: string): GatewayTarget | undefined {
    const t = this.registry.find(tenantId);
    if (!t) return undefined;
    return { tenantId, status: t.status, socketPath: this.socketPath(tenantId), daemonUp: this.daemons.get(tenantId)?.state === "running" };
  }

  // ---- daemon plumbing ---------------------------------------------------------------

  private daemonEvents(): DaemonEvents {
    return {
      record: async (id, patch) => {
        if (!this.registry.find(id)) return;
        await this.registry.updateTenant(id, (t) => {
          const d: DaemonRecord = { ...t.daemon, ...patch };
          for (const k of Object.keys(d) as Array<keyof DaemonRecord>) if (d[k] === undefined) delete d[k];
          t.daemon = d;
        }).catch((err: unknown) => {
          if (!(err instanceof PaddockError && err.code === "ERR_TENANT_NOT_FOUND")) throw err;
        });
      },
      ready: async (id) => {
        const t = this.registry.find(id);
        if (t?.status === "suspended") await this.pauseAll(id);
      },
      failed: async (id, reason) => {
        await this.registry.updateTenant(id, (t) => {
          if (t.status === "active" || t.status === "provisioning") {
            t.status = "failed";
            t.statusReason = reason;
          }
        });
        this.recordAudit({ actor: "supervisor" }, "tenant.failed", id, { reason });
      },
      restarting: (id) => this.metrics.observeRestart(id),
    };
  }

  private managed(id: string, restarts = 0): ManagedDaemon {
    let d = this.daemons.get(id);
    if (!d) {
      d = new ManagedDaemon(this.daemonSpec(id), this.config.restart, this.daemonEvents(), this.log.child({ tenant: id }), restarts);
      this.daemons.set(id, d);
    }
    return d;
  }

  // ---- create ------------------------------------------------------------------------

  private newTenantId(): string {
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
    const bytes = randomBytes(7);
    return "t" + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
  }

  /**
   * The host-level pids check: every tenant's budget together must leave `host_pids_reserve`
   * of pid_max to the host (shared/host-pids.ts).
   * @throws PaddockError ERR_PIDS_BUDGET_EXCEEDED (507).
   */
  private async checkPidsBudget(id: string, maxPids: number, state: RegistryState): Promise<void> {
    const others = Object.values(state.tenants).filter((t) => t.id !== id).map((t) => ({ id: t.id, maxPids: t.limits.maxPids }));
    checkTenantPidsBudget({ tenantId: id, maxPids, others, pidMax: await readPidMax(), reservePids: this.config.hostPidsReserve });
  }

  private render(template: TenantTemplate, t: Pick<TenantRecord, "id" | "blocks" | "limits" | "overrides" | "image" | "uidRange">): { text: string; config: TenantConfig } {
    const blocks: Record<string, string> = {};
    for (const b of t.blocks) blocks[b.hostGroup] = b.cidr;
    return renderTenantConfig(template, {
      tenantId: t.id,
      socketPath: this.socketPath(t.id),
      stateDir: this.tenantStateDir(t.id),
      runDir: this.tenantRunDir(t.id),
      imageDir: this.config.imageDir,
      blocks,
      limits: t.limits,
      overrides: t.overrides,
      ...(t.image !== undefined ? { image: t.image } : {}),
      deny: this.config.deny,
      foreignRanges: poolComplement(this.config.pool, t.blocks.map((b) => b.cidr)),
      ...(t.uidRange !== undefined ? { userns: t.uidRange } : {}),
      hostPidsReserve: this.config.hostPidsReserve,
    });
  }

  /**
   * A tenant created before user namespaces has no `uidRange`: claim it now (the range its
   * daemon may already hold, shared/uid-ranges.ts keys claims by tenant id and state dir),
   * record it and render it into the tenant's config (best effort: the daemon claims the same
   * range by itself when its config lacks it).
   * @throws PaddockError `ERR_USERNS_RANGE_TAKEN`, `ERR_USERNS_EXHAUSTED` from the claim.
   */
  private async ensureUidRange(id: string): Promise<void> {
    const t0 = this.registry.get(id);
    if (t0.uidRange !== undefined) return;
    const uidRange = await claimUidRange({ tenantId: id, stateDir: this.tenantStateDir(id) });
    const t = await this.registry.updateTenant(id, (r) => {
      r.uidRange = uidRange;
      return r;
    });
    this.log.info("claimed a uid range for a tenant created before user namespaces", { tenant: id, uid_start: uidRange.uidStart, size: uidRange.size });
    try {
      const rendered = this.render(await loadTemplate(this.config.templatesDir, t.template), t);
      await writeFileAtomic(this.configPath(id), rendered.text, 0o600);
      this.tenantConfigs.set(id, rendered.config);
    } catch (err) {
      this.log.warn("could not re-render the tenant's config with its uid range", { tenant: id, err });
    }
  }

  /**
   * The image store must hold `name` (`<imageDir>/<name>/image.json` and `rootfs/`), so a
   * typo fails the create instead of the daemon's start.
   * @throws PaddockError `ERR_IMAGE_NOT_FOUND` saying how to build it.
   */
  private async checkImage(name: string): Promise<void> {
    const dir = path.join(this.config.imageDir, name);
    const [info, rootfs] = await Promise.all([fs.stat(path.join(dir, "image.json")).catch(() => undefined), fs.stat(path.join(dir, "rootfs")).catch(() => undefined)]);
    if (!info?.isFile() || !rootfs?.isDirectory()) {
      throw new PaddockError("ERR_IMAGE_NOT_FOUND", `image ${JSON.stringify(name)} is not in the image store ${this.config.imageDir}; build it with \`paddock image build ${name}\``, { details: { image: name } });
    }
  }

  private async writeConfig(id: string, text: string): Promise<void> {
    const dir = this.tenantStateDir(id);
    await fs.mkdir(path.join(dir, "logs"), { recursive: true, mode: 0o700 });
    await fs.mkdir(this.tenantRunDir(id), { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.configPath(id), text, 0o600);
  }

  /**
   * Provision a tenant: validate, allocate blocks and a host uid/gid range, render and write its config, issue its
   * first token, start its daemon and wait for readiness.
   * @returns the tenant record and the one-time token.
   * @throws PaddockError `ERR_TENANT_INVALID`, `ERR_TENANT_EXISTS`, `ERR_TEMPLATE_NOT_FOUND`,
   *   `ERR_NETWORK_EXHAUSTED`, `ERR_USERNS_EXHAUSTED` / `ERR_USERNS_RANGE_TAKEN` (no uid range:
   *   nothing kept), `ERR_DAEMON_START_FAILED` (tenant kept as `failed`).
   */
  async create(body: Record<string, unknown>, who: Actor): Promise<{ tenant: TenantRecord; token: string; tokenId: string }> {
    const known = ["id", "template", "labels", "limits", "host_groups", "image", "token_expires_in_seconds"];
    for (const k of Object.keys(body)) if (!known.includes(k)) throw new PaddockError("ERR_TENANT_INVALID", `unknown field ${JSON.stringify(k)} (known: ${known.join(", ")})`);
    if (body.id !== undefined && (typeof body.id !== "string" || !TENANT_ID_PATTERN.test(body.id))) {
      throw new PaddockError("ERR_TENANT_INVALID", "id: expected 1-12 characters of [a-z0-9] starting with a letter");
    }
    if (body.template !== undefined && typeof body.template !== "string") throw new PaddockError("ERR_TENANT_INVALID", "template: expected a string");
    const id = (body.id as string | undefined) ?? this.newTenantId();
    const template = await loadTemplate(this.config.templatesDir, (body.template as string | undefined) ?? this.config.defaultTemplate);
    const overrides = readOverrides(template, body.host_groups);
    const image = readImageOverride(body.image);
    if (image !== undefined) await this.checkImage(image);
    // Every limit is set: the request's, else the template's, else the supervisor's default.
    const limits = layerLimits(readLimits(body.limits, {}, false, this.config.defaultLimits), template.limits, this.config.defaultLimits);
    const labels = readLabels(body.labels, {}, false);
    const expiresAt = readExpiry(body.token_expires_in_seconds === undefined ? {} : { expires_in_seconds: body.token_expires_in_seconds }, Date.now());
    const issued = issueToken();

    return this.withTenantLock(id, async () => {
      const stateDir = this.tenantStateDir(id);
      let claimed: { stateDirExisted: boolean } | undefined;
      const rendered = await this.registry.update(async (state) => {
        if (state.tenants[id]) throw new PaddockError("ERR_TENANT_EXISTS", `tenant ${JSON.stringify(id)} already exists`);
        const used = Object.values(state.tenants).flatMap((t) => t.blocks.map((b) => b.cidr));
        const cidrs = allocateBlocks({ pool: this.config.pool, blockPrefix: this.config.blockPrefix, used, count: template.hostGroups.length });
        // The host uid/gid range (shared/uid-ranges.ts); claiming creates the state dir.
        const stateDirExisted = await fs.access(stateDir).then(() => true, () => false);
        claimed = { stateDirExisted };
        await this.checkPidsBudget(id, limits.maxPids, state);
        const uidRange = await claimUidRange({ tenantId: id, stateDir });
        const now = new Date().toISOString();
        const record: TenantRecord = {
          id, status: "provisioning", template: template.name, labels, limits, overrides, ...(image !== undefined ? { image } : {}),
          blocks: template.hostGroups.map((g, i) => ({ hostGroup: g, cidr: cidrs[i] as string })),
          tokens: [{ id: issued.id, hash: issued.hash, createdAt: now, ...(expiresAt ? { expiresAt } : {}) }],
          uidRange,
          daemon: { state: "stopped", restarts: 0 },
          createdAt: now, updatedAt: now,
        };
        const out = this.render(template, record); // throws before anything is written
        state.tenants[id] = record;
        return out;
      }).catch(async (err: unknown) => {
        // Nothing of a refused create stays: neither the claim nor the state dir it created.
        if (claimed !== undefined) {
          await releaseUidRange({ tenantId: id, stateDir }).catch((e: unknown) => this.log.error("could not release the uid range of a failed create", { tenant: id, err: e }));
          if (!claimed.stateDirExisted) await fs.rm(stateDir, { recursive: true, force: true }).catch(() => undefined);
        }
        throw err;
      });
      this.tenantConfigs.set(id, rendered.config);
      this.recordAudit(who, "tenant.create", id, { template: template.name });
      try {
        await this.writeConfig(id, rendered.text);
        await this.managed(id).start();
      } catch (err) {
        await this.registry.updateTenant(id, (t) => {
          t.status = "failed";
          t.statusReason = (err as Error).message.split("\n")[0];
        });
        throw err;
      }
      const tenant = await this.registry.updateTenant(id, (t) => {
        if (t.status === "provisioning") t.status = "active";
        return t;
      });
      return { tenant, token: issued.token, tokenId: issued.id };
    });
  }

  // ---- read --------------------------------------------------------------------------

  /** Tenants filtered by status and `key=value` labels. */
  list(filter: { status?: string; labels?: Record<string, string> }): TenantRecord[] {
    if (filter.status !== undefined && !TENANT_STATUSES.includes(filter.status as TenantStatus)) {
      throw new PaddockError("ERR_QUERY_INVALID", `status: expected one of ${TENANT_STATUSES.join(", ")}`);
    }
    return Object.values(this.registry.snapshot().tenants)
      .filter((t) => filter.status === undefined || t.status === filter.status)
      .filter((t) => Object.entries(filter.labels ?? {}).every(([k, v]) => t.labels[k] === v))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  get(id: string): TenantRecord {
    return this.registry.get(id);
  }

  /** Live daemon facts for views. */
  daemonInfo(id: string): { state: string; pid: number | undefined; restarts: number; uptimeSeconds: number | undefined } {
    const rec = this.registry.get(id).daemon;
    const d = this.daemons.get(id);
    const uptime = d?.uptimeMs;
    return { state: d?.state ?? rec.state, pid: d?.pid ?? rec.pid, restarts: d?.restarts ?? rec.restarts, uptimeSeconds: uptime === undefined ? undefined : Math.floor(uptime / 1000) };
  }

  /**
   * VMs of a running tenant by status and the resources they commit (vCPU, RAM from
   * `GET /nodes`; disk from the host group's storage_size).
   * @returns undefined when the daemon is not reachable.
   */
  async usage(id: string): Promise<{ vms: Record<string, number>; total: number; vcpu: number; ramBytes: number; diskBytes: number } | undefined> {
    if (this.daemons.get(id)?.state !== "running") return undefined;
    let nodes: DaemonNode[];
    try {
      nodes = await listDaemonNodes(this.socketPath(id), 2000);
    } catch {
      return undefined;
    }
    const cfg = await this.tenantConfig(id);
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

  private async tenantConfig(id: string): Promise<TenantConfig | undefined> {
    let c = this.tenantConfigs.get(id);
    if (!c) {
      c = await loadTenantConfig(this.configPath(id), {}).catch(() => undefined);
      if (c) this.tenantConfigs.set(id, c);
    }
    return c;
  }

  /** The last `lines` lines of the daemon's log. */
  async logs(id: string, lines: number): Promise<string[]> {
    this.registry.get(id);
    return readLogTail(this.logFile(id), lines);
  }

  // ---- update ------------------------------------------------------------------------

  /**
   * Change labels and/or limits. New limits are written into the tenant's config at once
   * and applied by the daemon at its next start (`pending_restart`; `POST …/restart`).
   * @throws PaddockError `ERR_TENANT_INVALID`, `ERR_TENANT_NOT_FOUND`.
   */
  async update(id: string, body: Record<string, unknown>, who: Actor): Promise<TenantRecord> {
    for (const k of Object.keys(body)) if (k !== "labels" && k !== "limits") throw new PaddockError("ERR_TENANT_INVALID", `field ${JSON.stringify(k)} cannot be changed (changeable: labels, limits)`);
    return this.withTenantLock(id, async () => {
      const current = this.registry.get(id);
      const labels = readLabels(body.labels, current.labels, true);
      const defaults = body.limits === undefined ? undefined : layerLimits((await loadTemplate(this.config.templatesDir, current.template)).limits, this.config.defaultLimits);
      const limits = defaults === undefined ? current.limits : readLimits(body.limits, current.limits, true, defaults);
      if (limits.maxPids !== undefined && limits.maxPids !== current.limits.maxPids) await this.checkPidsBudget(id, limits.maxPids, this.registry.snapshot());
      const limitsChanged = JSON.stringify(limits) !== JSON.stringify(current.limits);
      let text: string | undefined;
      if (limitsChanged) {
        const template = await loadTemplate(this.config.templatesDir, current.template);
        const rendered = this.render(template, { ...current, limits });
        text = rendered.text;
        this.tenantConfigs.set(id, rendered.config);
      }
      if (text !== undefined) await writeFileAtomic(this.configPath(id), text, 0o600);
      const t = await this.registry.updateTenant(id, (t) => {
        t.labels = labels;
        t.limits = limits;
        if (limitsChanged) t.pendingRestart = true;
        return t;
      });
      this.recordAudit(who, "tenant.update", id, { labels: body.labels !== undefined, limits: limitsChanged });
      return t;
    });
  }

  // ---- suspend / resume --------------------------------------------------------------

  private async pauseAll(id: string): Promise<{ paused: string[]; errors: string[] }> {
    const nodes = await listDaemonNodes(this.socketPath(id));
    const paused: string[] = [];
    const errors: string[] = [];
    for (const n of nodes.filter((n) => n.status === "Running")) {
      try {
        await setVmPaused(this.socketPath(id), n.hostname, true);
        paused.push(n.hostname);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    await this.registry.updateTenant(id, (t) => {
      t.pausedVms = [...new Set([...(t.pausedVms ?? []), ...paused])];
    });
    return { paused, errors };
  }

  /**
   * Suspend: the gateway answers 403 ERR_TENANT_SUSPENDED from now on and the tenant's
   * running VMs are paused through its daemon.
   * @returns the tenant and what was paused (pause errors do not undo the suspension).
   */
  async suspend(id: string, reason: string, who: Actor): Promise<{ tenant: TenantRecord; paused: string[]; errors: string[] }> {
    return this.withTenantLock(id, async () => {
      await this.registry.updateTenant(id, (t) => {
        if (t.status === "deleting" || t.status === "provisioning") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is ${t.status} and cannot be suspended`);
        t.status = "suspended";
        t.statusReason = reason;
      });
      // The gateway refuses new requests from now on; what is open (exec, shell, forward) ends.
      this.endSessions(id, undefined, new PaddockError("ERR_TENANT_SUSPENDED", `tenant ${id} is suspended`));
      let result = { paused: [] as string[], errors: [] as string[] };
      if (this.daemons.get(id)?.state === "running") {
        result = await this.pauseAll(id).catch((err: unknown) => ({ paused: [], errors: [(err as Error).message] }));
      }
      this.recordAudit(who, "tenant.suspend", id, { reason, paused: result.paused.length });
      return { tenant: this.registry.get(id), ...result };
    });
  }

  /** Resume: resume the VMs paused at suspension and let the gateway through again. */
  async resume(id: string, who: Actor): Promise<{ tenant: TenantRecord; resumed: string[]; errors: string[] }> {
    return this.withTenantLock(id, async () => {
      const t0 = this.registry.get(id);
      if (t0.status !== "suspended") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is ${t0.status}, not suspended`);
      const resumed: string[] = [];
      const errors: string[] = [];
      if (this.daemons.get(id)?.state === "running") {
        for (const h of t0.pausedVms ?? []) {
          try {
            await setVmPaused(this.socketPath(id), h, false);
            resumed.push(h);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }
      }
      const failed = this.daemons.get(id)?.state === "failed";
      const tenant = await this.registry.updateTenant(id, (t) => {
        t.status = failed ? "failed" : "active";
        delete t.statusReason;
        delete t.pausedVms;
        return t;
      });
      this.recordAudit(who, "tenant.resume", id, { resumed: resumed.length });
      return { tenant, resumed, errors };
    });
  }

  // ---- restart -----------------------------------------------------------------------

  /**
   * Restart the daemon gracefully (applies pending limits, clears `failed`).
   * @throws PaddockError `ERR_DAEMON_START_FAILED` with the daemon's output.
   */
  async restart(id: string, who: Actor): Promise<TenantRecord> {
    return this.withTenantLock(id, async () => {
      const t0 = this.registry.get(id);
      if (t0.status === "deleting") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is being deleted`);
      await this.ensureUidRange(id);
      const d = this.managed(id, t0.daemon.restarts);
      await d.stop();
      this.recordAudit(who, "tenant.restart", id);
      try {
        await d.start();
      } catch (err) {
        await this.registry.updateTenant(id, (t) => {
          if (t.status !== "suspended") {
            t.status = "failed";
            t.statusReason = (err as Error).message.split("\n")[0];
          }
        });
        throw err;
      }
      return this.registry.updateTenant(id, (t) => {
        if (t.status === "failed") {
          t.status = "active";
          delete t.statusReason;
        }
        delete t.pendingRestart;
        return t;
      });
    });
  }

  // ---- tokens ------------------------------------------------------------------------

  /** Issue an extra token (older ones stay valid until revoked or expired). */
  async issueToken(id: string, body: Record<string, unknown>, who: Actor): Promise<{ token: string; id: string; expiresAt: string | undefined; createdAt: string }> {
    for (const k of Object.keys(body)) if (k !== "expires_in_seconds" && k !== "expires_at") throw new PaddockError("ERR_TENANT_INVALID", `unknown field ${JSON.stringify(k)}`);
    const expiresAt = readExpiry(body, Date.now());
    const issued = issueToken();
    const createdAt = new Date().toISOString();
    await this.registry.updateTenant(id, (t) => {
      if (t.status === "deleting") throw new PaddockError("ERR_TENANT_INVALID", `tenant ${id} is being deleted`);
      // Keep the record list bounded: drop tokens revoked or expired more than a day ago.
      const cutoff = Date.now() - 86_400_000;
      t.tokens = t.tokens.filter((k) => !(k.revokedAt && Date.parse(k.revokedAt) < cutoff) && !(k.expiresAt && Date.parse(k.expiresAt) < cutoff));
      t.tokens.push({ id: issued.id, hash: issued.hash, createdAt, ...(expiresAt ? { expiresAt } : {}) });
    });
    this.recordAudit(who, "token.issue", id, { token_id: issued.id, expires_at: expiresAt });
    return { token: issued.token, id: issued.id, expiresAt, createdAt };
  }

  /**
   * Revoke a token (idempotent for an already revoked one).
   * @throws PaddockError `ERR_TOKEN_NOT_FOUND`, `ERR_TENANT_NOT_FOUND`.
   */
  async revokeToken(id: string, tokenId: string, who: Actor): Promise<void> {
    await this.registry.updateTenant(id, (t) => {
      const k = t.tokens.find((x) => x.id === tokenId);
      if (!k) throw new PaddockError("ERR_TOKEN_NOT_FOUND", `tenant ${id} has no token ${JSON.stringify(tokenId)}`);
      k.revokedAt ??= new Date().toISOString();
    });
    this.endSessions(id, tokenId, new PaddockError("ERR_AUTH_REQUIRED", "missing, invalid, expired or revoked token"));
    this.recordAudit(who, "token.revoke", id, { token_id: tokenId });
  }

  /** End the live gateway sessions of a tenant (or of one of its tokens) and log how many. */
  private endSessions(id: string, tokenId?: string, reason?: PaddockError): void {
    const n = this.sessions?.endSessions(id, tokenId, reason) ?? 0;
    if (n > 0) this.log.info("ended live gateway sessions", { tenant: id, ...(tokenId !== undefined ? { token_id: tokenId } : {}), sessions: n });
  }

  // ---- delete ------------------------------------------------------------------------

  /**
   * Delete a tenant: stop its daemon, purge its VMs, disks, links, netns and nft table
   * (`main.js purge`), remove its directories and free its blocks. Idempotent.
   * @returns false when there was no such tenant.
   * @throws PaddockError `ERR_EXEC_FAILED` when the purge fails (tenant stays `deleting`;
   *   retry the DELETE).
   */
  async delete(id: string, who: Actor): Promise<boolean> {
    if (!TENANT_ID_PATTERN.test(id)) return false;
    return this.withTenantLock(id, async () => {
      if (!this.registry.find(id)) return false;
      await this.registry.updateTenant(id, (t) => {
        t.status = "deleting";
      });
      this.endSessions(id, undefined, new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${id} was deleted`));
      this.recordAudit(who, "tenant.delete", id);
      const rec = this.registry.get(id);
      const d = this.managed(id, rec.daemon.restarts);
      if (d.state !== "running" && rec.daemon.pid !== undefined) await d.adopt(rec.daemon.pid, rec.daemon.procStartTicks);
      await d.stop();
      this.daemons.delete(id);
      await this.purgeTenantFiles(id);
      await this.registry.update((state) => {
        delete state.tenants[id];
      });
      this.tenantConfigs.delete(id);
      return true;
    });
  }

  /** Kill stray daemons of this config, run the daemon's purge, remove the tenant's dirs. */
  private async purgeTenantFiles(id: string): Promise<void> {
    const configPath = this.configPath(id);
    for (const pid of await findDaemonPids(this.config.daemonEntry, configPath)) {
      this.log.warn("killing stray daemon of tenant", { tenant: id, pid });
      killDaemonGroup(pid);
      // The purge below needs the daemon's state lock: wait until the killed one is gone.
      await waitForPidExit(pid, 10_000);
    }
    const hasConfig = await fs.access(configPath).then(() => true, () => false);
    if (hasConfig) {
      await run(process.execPath, [this.config.daemonEntry, "purge", configPath], { timeoutMs: 180_000, env: this.daemonEnv() });
    }
    await fs.rm(this.tenantStateDir(id), { recursive: true, force: true });
    await fs.rm(this.tenantRunDir(id), { recursive: true, force: true });
    // The daemon's purge released it already when it ran; this covers a tenant without config.
    await releaseUidRange({ tenantId: id, stateDir: this.tenantStateDir(id) });
  }

  // ---- start-up and shutdown ---------------------------------------------------------

  /**
   * Reconcile after a (re)start (STYLE.md §11): finish interrupted deletions, adopt live
   * daemons that are provably ours, start the dead ones of active/suspended/provisioning
   * tenants (failed ones stay failed), and purge tenant directories no registry entry owns.
   */
  async reconcile(): Promise<void> {
    const tenants = Object.values(this.registry.snapshot().tenants);
    await Promise.allSettled(tenants.map(async (t) => {
      const log = this.log.child({ tenant: t.id });
      try {
        if (t.status === "deleting") {
          await this.delete(t.id, { actor: "supervisor" });
          return;
        }
        if (t.status === "provisioning") {
          // The create was interrupted (supervisor killed): its caller never received the
          // tenant's only token, and the config or the daemon may be missing or half started.
          // Roll it back entirely, so the tenant is fully absent and a retry can succeed.
          log.warn("rolling back a tenant whose create was interrupted");
          await this.delete(t.id, { actor: "supervisor" });
          return;
        }
        await this.ensureUidRange(t.id);
        const d = this.managed(t.id, t.daemon.restarts);
        if (t.daemon.pid !== undefined && (await d.adopt(t.daemon.pid, t.daemon.procStartTicks))) return;
        // A daemon spawned by a supervisor killed before it recorded the pid (start or
        // restart in progress) is still ours: stop it, or a second daemon would be started.
        for (const pid of await findDaemonPids(this.config.daemonEntry, this.configPath(t.id))) {
          log.warn("killing an unrecorded daemon of the tenant", { pid });
          killDaemonGroup(pid);
          await waitForPidExit(pid, 10_000);
        }
        if (t.status === "failed") return;
        log.info("daemon not running; starting it");
        await d.start();
      } catch (err) {
        log.error("reconcile of tenant failed", { err });
        await this.registry.updateTenant(t.id, (r) => {
          if (r.status === "active" || r.status === "provisioning") {
            r.status = "failed";
            r.statusReason = (err as Error).message.split("\n")[0];
          }
        }).catch(() => undefined);
      }
    }));
    await this.removeLeftovers();
  }

  private async removeLeftovers(): Promise<void> {
    const known = new Set(Object.keys(this.registry.snapshot().tenants));
    for (const base of [path.join(this.config.stateDir, "tenants"), path.join(this.config.runDir, "tenants")]) {
      let names: string[];
      try {
        names = await fs.readdir(base);
      } catch (err) {
        if (errnoCode(err) === "ENOENT") continue;
        throw err;
      }
      for (const name of names) {
        // Only directories named like our tenants are ours to remove.
        if (known.has(name) || !TENANT_ID_PATTERN.test(name)) continue;
        this.log.warn("removing leftovers of a tenant the registry does not know", { tenant: name, dir: path.join(base, name) });
        try {
          await this.purgeTenantFiles(name);
        } catch (err) {
          this.log.error("could not remove leftovers", { tenant: name, err });
        }
      }
    }
  }

  /**
   * Stop supervising. With `stopDaemons`, daemons are stopped gracefully (their ephemeral
   * VMs go away); otherwise they keep running and are adopted by the next supervisor.
   */
  async shutdown(stopDaemons: boolean): Promise<void> {
    await Promise.allSettled([...this.tenantLocks.values()]);
    if (stopDaemons) await Promise.allSettled([...this.daemons.values()].map((d) => d.stop()));
    else for (const d of this.daemons.values()) d.detach();
    await Promise.allSettled([...this.daemons.values()].map((d) => d.flush()));
  }

  /** Counts for /metrics. */
  metricsInputs(): { byStatus: Record<string, number>; restarts: Record<string, number> } {
    const byStatus: Record<string, number> = Object.fromEntries(TENANT_STATUSES.map((s) => [s, 0]));
    const restarts: Record<string, number> = {};
    for (const t of Object.values(this.registry.snapshot().tenants)) {
      byStatus[t.status] = (byStatus[t.status] ?? 0) + 1;
      restarts[t.id] = this.daemons.get(t.id)?.restarts ?? t.daemon.restarts;
    }
    return { byStatus, restarts };
  }
}
