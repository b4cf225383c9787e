/**
 * What the pieces of the tenant service share: the supervisor config, the registry, the
 * tenant paths, the audit trail, the live gateway sessions and the per-tenant lock. The
 * composition root builds one {@link TenantContext}; each piece (supervisor/tenant-*.ts)
 * takes it and the state objects it needs, never the service itself.
 */
import type { PaddockError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { AuditLog } from "./audit-log.js";
import type { SupervisorConfig } from "./supervisor-config.js";
import type { TenantRegistry } from "./tenant-registry.js";
import { TenantPaths } from "./tenant-paths.js";
import type { TenantEventInput, TenantEvents } from "./events/tenant-events.js";

/** Who asked (for the audit log). */
export interface Actor {
  actor: string;
  requestId?: string;
}

/** Ends a tenant's live gateway sessions (supervisor/gateway-admission.ts `GatewayAdmission`). */
export interface SessionEnder {
  /**
   * End the tenant's live proxied requests and WebSockets, or only those of `tokenId`; a request
   * not yet answered gets `reason`. Returns how many.
   */
  endSessions(tenantId: string, tokenId?: string, reason?: PaddockError): number;
}

/** Dependencies of the tenant service (the composition root passes them). */
export interface TenantServiceDeps {
  config: SupervisorConfig;
  registry: TenantRegistry;
  audit: AuditLog;
  log: Logger;
  /** Live gateway sessions, ended at revoke, suspend and delete (absent: nothing to end). */
  sessions?: SessionEnder;
  /** Where tenant events are published (supervisor/events/tenant-events.ts; absent: nowhere). */
  events?: TenantEvents;
  /** Called each time a tenant's daemon becomes ready (start, restart, adoption). */
  onDaemonReady?: (tenantId: string) => void;
}

/**
 * Serialises lifecycle operations per tenant (create, update, delete, suspend, resume,
 * restart): an operation on a tenant starts when the previous one on it has settled.
 */
export class TenantLocks {
  private readonly tails = new Map<string, Promise<unknown>>();

  /**
   * Run `fn` after every earlier operation on tenant `id` has settled (failed ones too).
   * @returns what `fn` returns; rejects with what `fn` throws.
   */
  run<R>(id: string, fn: () => Promise<R>): Promise<R> {
    const prev = this.tails.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    const tail = next.catch(() => undefined);
    this.tails.set(id, tail);
    void tail.then(() => { if (this.tails.get(id) === tail) this.tails.delete(id); });
    return next;
  }

  /** Resolves when every operation queued so far has settled (shutdown). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.tails.values()]);
  }
}

/** The shared state and services of the tenant pieces. */
export interface TenantContext {
  config: SupervisorConfig;
  registry: TenantRegistry;
  paths: TenantPaths;
  log: Logger;
  locks: TenantLocks;
  /** Append an audit entry; a failed write is logged, never thrown. */
  recordAudit(who: Actor, action: string, tenant: string | undefined, details?: Record<string, unknown>, status?: number): void;
  /**
   * End the live gateway sessions of a tenant (or of one of its tokens) with `reason`, and log
   * how many (nothing when no session registry was given).
   */
  endSessions(id: string, tokenId?: string, reason?: PaddockError): void;
  /**
   * Publish a tenant event (admin event stream, webhook outbox); resolves once the outbox took
   * it. Never throws (a failure is logged).
   */
  publish(input: TenantEventInput): Promise<void>;
  /** A tenant's daemon became ready. */
  daemonReady(id: string): void;
}

/** Build the shared context from the service's dependencies. */
export function createTenantContext(deps: TenantServiceDeps): TenantContext {
  const { config, registry, audit, log, sessions, events, onDaemonReady } = deps;
  return {
    config,
    registry,
    paths: new TenantPaths(config),
    log,
    locks: new TenantLocks(),
    recordAudit: (who, action, tenant, details, status) => {
      void audit.record({ actor: who.actor, action, tenant, requestId: who.requestId, status, details }, (err) => log.error("audit write failed", { err }));
    },
    endSessions: (id, tokenId, reason) => {
      const n = sessions?.endSessions(id, tokenId, reason) ?? 0;
      if (n > 0) log.info("ended live gateway sessions", { tenant: id, ...(tokenId !== undefined ? { token_id: tokenId } : {}), sessions: n });
    },
    publish: async (input) => {
      await events?.publish(input, (err) => log.error("a tenant event sink failed", { tenant: input.tenant, type: input.type, err }));
    },
    daemonReady: (id) => onDaemonReady?.(id),
  };
}
