/**
 * The tenant registry: one JSON file `<state>/supervisor/registry.json`,
 * updated read-modify-write under proper-lockfile and written atomically (shared
 * {@link JsonStateStore}), mode 0600, schema version 1. A corrupt file stops the
 * supervisor (ERR_STATE_CORRUPT) and is never overwritten.
 *
 * The supervisor is the only writer, so a committed copy is kept in memory for the
 * gateway's hot path (token index) and refreshed after every update.
 */
import { JsonStateStore } from "../shared/state-store.js";
import { PaddockError } from "../shared/errors.js";
import { TENANT_ID_PATTERN } from "../shared/tenant-config.js";
import type { UidRange } from "../shared/uid-ranges.js";

export const REGISTRY_SCHEMA_VERSION = 1;

/** Tenant lifecycle status. */
export type TenantStatus = "provisioning" | "active" | "suspended" | "failed" | "deleting";
export const TENANT_STATUSES: readonly TenantStatus[] = ["provisioning", "active", "suspended", "failed", "deleting"];

/** Daemon restart state machine (supervisor/process-manager.ts drives it). */
export type DaemonState = "starting" | "running" | "backoff" | "stopping" | "stopped" | "failed";

/** A stored token: never the secret, only its SHA-256. */
export interface TokenRecord {
  id: string;
  hash: string;
  createdAt: string;
  expiresAt?: string;
  revokedAt?: string;
}

/** Per-tenant quotas (rendered into `paddock.limits`, enforced by the daemon). */
export interface LimitsRecord {
  maxVms?: number;
  maxVcpu?: number;
  maxRamBytes?: number;
  maxDiskBytes?: number;
  /** pids.max of the tenant's parent cgroup; the sum over tenants is checked against pid_max (shared/host-pids.ts). */
  maxPids?: number;
  /** Conntrack entries of all the tenant's VMs together (`paddock.limits.max_conns`, tenant-daemon/network/conn-limits.ts). */
  maxConns?: number;
  /** Conntrack entries of one VM (`paddock.limits.max_conns_per_vm`). */
  maxConnsPerVm?: number;
}

/** One network block owned by a tenant, for one host group of its template. */
export interface BlockRecord {
  hostGroup: string;
  cidr: string;
}

/** The daemon as last seen by the supervisor. */
export interface DaemonRecord {
  state: DaemonState;
  pid?: number;
  /** `/proc/<pid>/stat` start time (clock ticks since boot); guards against pid reuse. */
  procStartTicks?: number;
  /** When the process started (ISO 8601, from its /proc start time; supervisor/process-manager.ts `markRunning`). */
  startedAt?: string;
  /**
   * The build the process runs, `<version>+<build>` (shared/build-info.ts), recorded at its
   * spawn and kept across adoptions; absent when its spawner recorded none.
   */
  version?: string;
  /** Restarts after crashes since the tenant was created. */
  restarts: number;
  lastExit?: string;
  lastError?: string;
}

/** Host group overrides requested at create (validated against the template's bounds). */
export type HostGroupOverrides = Record<string, { vcpu?: number; ramBytes?: number; storageSizeBytes?: number; warmPool?: number }>;

/** One tenant as persisted in registry.json; tokens are stored as hashes only. */
export interface TenantRecord {
  id: string;
  status: TenantStatus;
  statusReason?: string;
  template: string;
  labels: Record<string, string>;
  limits: LimitsRecord;
  overrides: HostGroupOverrides;
  /** Image chosen at create instead of the template's `config.image`. */
  image?: string;
  /**
   * The runtime of the tenant's VMs, fixed at create (the request's, else the template's
   * `config.hypervisor`) and rendered over the template's at every re-render, so editing a
   * template never moves a tenant to another runtime. Absent in records written before it
   * (and for templates naming another hypervisor): the template's.
   */
  hypervisor?: TenantHypervisor;
  blocks: BlockRecord[];
  /**
   * The tenant's host uid/gid range (shared/uid-ranges.ts), claimed at create and rendered as
   * `paddock.userns`. Absent in records written before user namespaces: claimed at the
   * tenant's next start or adoption (optional, so schema version 1 files still load).
   */
  uidRange?: UidRange;
  tokens: TokenRecord[];
  daemon: DaemonRecord;
  /** VMs the supervisor paused at suspend, resumed at resume. */
  pausedVms?: string[];
  /** Limits changed since the daemon last started (a restart applies them). */
  pendingRestart?: boolean;
  /**
   * The limits the running daemon started with, kept while `pendingRestart` is set, so a change
   * back to them clears it (absent otherwise, and in records written before it).
   */
  appliedLimits?: LimitsRecord;
  createdAt: string;
  updatedAt: string;
}

/** The runtimes a tenant can be created on: `oci` (runc) and `gvisor` (runsc). */
export const TENANT_HYPERVISORS = ["oci", "gvisor"] as const;
/** One of {@link TENANT_HYPERVISORS}. */
export type TenantHypervisor = (typeof TENANT_HYPERVISORS)[number];

/** The whole registry file: schema version plus tenants by id. */
export interface RegistryState {
  schemaVersion: number;
  tenants: Record<string, TenantRecord>;
}

/** Structural check of a registry file; returns the first problem found. */
export function validateRegistry(value: unknown): string | undefined {
  const v = value as Partial<RegistryState>;
  if (typeof v.tenants !== "object" || v.tenants === null || Array.isArray(v.tenants)) return "tenants is not a mapping";
  for (const [id, t] of Object.entries(v.tenants)) {
    if (!TENANT_ID_PATTERN.test(id) || typeof t !== "object" || t === null) return `tenant ${JSON.stringify(id)} is malformed`;
    if (t.id !== id) return `tenant ${id} has id ${JSON.stringify(t.id)}`;
    if (!TENANT_STATUSES.includes(t.status)) return `tenant ${id} has unknown status ${JSON.stringify(t.status)}`;
    if (!Array.isArray(t.tokens) || !Array.isArray(t.blocks) || typeof t.daemon !== "object" || t.daemon === null) return `tenant ${id} lacks tokens, blocks or daemon`;
    if (t.tokens.some((k) => typeof k.hash !== "string" || !/^[0-9a-f]{64}$/.test(k.hash) || typeof k.id !== "string")) return `tenant ${id} has a malformed token record`;
    if (t.hypervisor !== undefined && !TENANT_HYPERVISORS.includes(t.hypervisor)) return `tenant ${id} has unknown hypervisor ${JSON.stringify(t.hypervisor)}`;
    if (t.uidRange !== undefined && (typeof t.uidRange !== "object" || t.uidRange === null || !Number.isSafeInteger(t.uidRange.uidStart) || !Number.isSafeInteger(t.uidRange.size) || t.uidRange.size < 1)) return `tenant ${id} has a malformed uidRange`;
  }
  return undefined;
}

/** The registry: a locked JSON store plus an in-memory committed copy. */
export class TenantRegistry {
  private readonly store: JsonStateStore<RegistryState>;
  private current: RegistryState = { schemaVersion: REGISTRY_SCHEMA_VERSION, tenants: {} };
  private readonly listeners: Array<(state: RegistryState) => void> = [];

  constructor(file: string) {
    this.store = new JsonStateStore<RegistryState>({
      file,
      schemaVersion: REGISTRY_SCHEMA_VERSION,
      initial: () => ({ schemaVersion: REGISTRY_SCHEMA_VERSION, tenants: {} }),
      validate: validateRegistry,
    });
  }

  get file(): string {
    return this.store.file;
  }

  /**
   * Create or read the file.
   * @throws PaddockError `ERR_STATE_CORRUPT` on a corrupt or foreign-schema file.
   */
  async init(): Promise<void> {
    this.current = await this.store.init();
    this.emit();
  }

  /** Call `fn` after every committed change (and once now). */
  onChange(fn: (state: RegistryState) => void): void {
    this.listeners.push(fn);
    fn(this.current);
  }

  private emit(): void {
    for (const l of this.listeners) l(this.current);
  }

  /** The last committed state (do not mutate). */
  snapshot(): RegistryState {
    return this.current;
  }

  /** A tenant from the committed state, or undefined (own keys only: `__proto__` and friends are no tenant). */
  find(id: string): TenantRecord | undefined {
    return Object.hasOwn(this.current.tenants, id) ? this.current.tenants[id] : undefined;
  }

  /**
   * A tenant from the committed state.
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`.
   */
  get(id: string): TenantRecord {
    const t = this.find(id);
    if (!t) throw new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${JSON.stringify(id)} not found`);
    return t;
  }

  /**
   * Read-modify-write of the whole state under the lock; the committed copy and the change
   * listeners follow each written change.
   * @param options.unchanged true for a result of `mutate` that changed nothing: nothing is
   *   written, the committed copy stays and no listener is called (shared/state-store.ts)
   */
  async update<R>(mutate: (state: RegistryState) => R | Promise<R>, options: { unchanged?: (result: R) => boolean } = {}): Promise<R> {
    let committed: RegistryState | undefined;
    const { unchanged } = options;
    const result = await this.store.update(async (state) => {
      const r = await mutate(state);
      if (unchanged?.(r) !== true) committed = state;
      return r;
    }, { unchanged });
    if (committed) {
      this.current = JSON.parse(JSON.stringify(committed)) as RegistryState;
      this.emit();
    }
    return result;
  }

  /**
   * Mutate one tenant under the lock; `updatedAt` is refreshed.
   * @param options.unchanged as {@link update}'s: nothing is written, `updatedAt` included
   * @throws PaddockError `ERR_TENANT_NOT_FOUND`, or whatever `mutate` throws (nothing written).
   */
  async updateTenant<R>(id: string, mutate: (t: TenantRecord) => R, options: { unchanged?: (result: R) => boolean } = {}): Promise<R> {
    return this.update((state) => {
      const t = state.tenants[id];
      if (!t) throw new PaddockError("ERR_TENANT_NOT_FOUND", `tenant ${JSON.stringify(id)} not found`);
      const r = mutate(t);
      if (options.unchanged?.(r) !== true) t.updatedAt = new Date().toISOString();
      return r;
    }, options);
  }
}
