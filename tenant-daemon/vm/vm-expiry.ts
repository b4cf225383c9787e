/**
 * VM expiry: a VM's deadline is its `expires_at=<RFC 3339>` tag (the convention Slicer's docs
 * suggest for applications to enforce; Slicer's API and Go SDK have no expiry field, so the tag
 * is also how GET /vm/{h} and /nodes show it). A create's `ttl` (a Go duration) or its host
 * group's `default_ttl` becomes that tag; a tags PATCH moves it; `max_ttl` (host group and
 * `paddock.expiry`, the smaller wins) bounds it from the VM's creation. Being a tag, the deadline
 * is saved with the VM's record in the state file and survives daemon restarts.
 *
 * {@link VmExpiry} is the one scheduler: a single unref'd timer set for the earliest deadline
 * among running and paused VMs (deadline-timer.ts). At the deadline an ephemeral VM is deleted;
 * a persistent one is shut down (Stopped, disk kept) or deleted, as its group's `expiry_action`
 * says (default `shutdown`). `count:` (config) VMs never expire.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { GroupExpiryConfig, HostGroupConfig, TenantExpiryConfig } from "../../shared/tenant-config.js";
import { parseRfc3339Ms, parseVmTtlMs, rfc3339 } from "../../shared/time.js";
import { DeadlineTimer } from "./deadline-timer.js";
import type { LiveVm, VmTable } from "./vm-table.js";
import type { VmRecord } from "./vm-types.js";

/** The tag prefix of a VM's deadline. */
export const EXPIRES_AT_TAG = "expires_at=";

/** Delay before acting again on a VM whose expiry failed, ms. */
const RETRY_MS = 30_000;

/**
 * The deadline in a tag list (its one `expires_at=` tag), ms since the epoch; undefined when
 * there is none. @throws PaddockError ERR_EXPIRES_AT_INVALID for two such tags or a value that
 * is not RFC 3339.
 */
export function deadlineOf(tags: readonly string[]): number | undefined {
  const found = [...new Set(tags.filter((t) => t.startsWith(EXPIRES_AT_TAG)))];
  if (found.length > 1) throw new PaddockError("ERR_EXPIRES_AT_INVALID", `a VM has at most one expires_at= tag (got ${found.length})`);
  if (found.length === 0) return undefined;
  return parseRfc3339Ms((found[0] as string).slice(EXPIRES_AT_TAG.length), "expires_at", "ERR_EXPIRES_AT_INVALID");
}

/**
 * A create body's `ttl`: a Go duration string of at least 1s (shared/time.ts MIN_VM_TTL_MS; `"90s"`,
 * `"1h30m"`); undefined when absent, null or "". @returns milliseconds.
 * @throws PaddockError ERR_TTL_INVALID (not a duration, or below the minimum: the message names it)
 */
export function parseTtl(value: unknown): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw new PaddockError("ERR_TTL_INVALID", "ttl must be a Go duration string such as \"90s\" or \"1h30m\"");
  return parseVmTtlMs(value, "ttl");
}

/** A group's expiry rules with the tenant's folded in. */
export interface ExpiryPolicy {
  action: GroupExpiryConfig["action"];
  /** The group's default, else the tenant's, else the maximum. */
  defaultTtlMs: number | undefined;
  /** The smaller of the group's and the tenant's maximum. */
  maxTtlMs: number | undefined;
}

/** The expiry rules of VMs of `group` in a tenant with `tenant`'s settings. */
export function expiryPolicy(group: HostGroupConfig, tenant: TenantExpiryConfig): ExpiryPolicy {
  const maxes = [group.expiry.maxTtlMs, tenant.maxTtlMs].filter((m): m is number => m !== undefined);
  const maxTtlMs = maxes.length === 0 ? undefined : Math.min(...maxes);
  return { action: group.expiry.action, defaultTtlMs: group.expiry.defaultTtlMs ?? tenant.defaultTtlMs ?? maxTtlMs, maxTtlMs };
}

function ttlText(ms: number): string {
  return `${Math.round(ms) / 1000}s`;
}

/**
 * The tags a new VM gets: `tags` as asked, plus an `expires_at=` tag from `ttlMs` or the
 * policy's default when the request has none. A deadline from a tag, a ttl or the default must
 * lie within `max_ttl` of `nowMs`.
 * @throws PaddockError ERR_TTL_INVALID (both `ttl` and an `expires_at=` tag), ERR_TTL_OVER_MAX,
 *   ERR_EXPIRES_AT_INVALID
 */
export function tagsWithDeadline(tags: readonly string[], ttlMs: number | undefined, policy: ExpiryPolicy, nowMs: number): string[] {
  const tagged = deadlineOf(tags);
  if (tagged !== undefined && ttlMs !== undefined) throw new PaddockError("ERR_TTL_INVALID", "give either ttl or an expires_at= tag, not both");
  if (ttlMs !== undefined && policy.maxTtlMs !== undefined && ttlMs > policy.maxTtlMs) {
    throw new PaddockError("ERR_TTL_OVER_MAX", `ttl ${ttlText(ttlMs)} is longer than the host group's max_ttl of ${ttlText(policy.maxTtlMs)}`);
  }
  if (tagged !== undefined) {
    if (policy.maxTtlMs !== undefined && tagged - nowMs > policy.maxTtlMs) throw new PaddockError("ERR_TTL_OVER_MAX", `expires_at is more than the host group's max_ttl of ${ttlText(policy.maxTtlMs)} away`);
    return [...tags];
  }
  const ttl = ttlMs ?? policy.defaultTtlMs;
  return ttl === undefined ? [...tags] : [...tags, `${EXPIRES_AT_TAG}${rfc3339(nowMs + ttl)}`];
}

/**
 * Check the tags a PATCH leaves on `record`: a config VM takes no deadline; under a `max_ttl`
 * the deadline may be moved but not removed nor set beyond creation + max_ttl.
 * @returns the new deadline (ms) or undefined.
 * @throws PaddockError ERR_EXPIRES_AT_INVALID, ERR_TTL_OVER_MAX
 */
export function checkPatchedDeadline(record: VmRecord, next: readonly string[], policy: ExpiryPolicy): number | undefined {
  const deadline = deadlineOf(next);
  if (deadline !== undefined && record.protected) throw new PaddockError("ERR_EXPIRES_AT_INVALID", `VM ${record.hostname} was created from count: in the config; config VMs do not expire`);
  if (policy.maxTtlMs !== undefined && !record.protected) {
    if (deadline === undefined) throw new PaddockError("ERR_TTL_OVER_MAX", `the host group's max_ttl of ${ttlText(policy.maxTtlMs)} requires a deadline: the expires_at= tag may be moved, not removed`);
    if (deadline - Date.parse(record.createdAt) > policy.maxTtlMs) throw new PaddockError("ERR_TTL_OVER_MAX", `expires_at is later than the VM's creation plus the host group's max_ttl of ${ttlText(policy.maxTtlMs)}`);
  }
  return deadline;
}

/** What {@link VmExpiry} works with. */
export interface VmExpiryDeps {
  table: VmTable;
  log: Logger;
  /** Act on a VM whose deadline (ms) has passed; a rejection is logged. */
  expire: (vm: LiveVm, deadlineMs: number) => Promise<void>;
  /**
   * Whether a suspended VM is acted on at its deadline: true when the action would be a delete
   * (its checkpoint image and disk go). A suspended VM whose action is a shutdown is already off:
   * it is acted on once restored. Absent: suspended VMs wait for their restore.
   */
  expiresWhileSuspended?: (vm: LiveVm) => boolean;
  /** The clock, ms since the epoch (default Date.now). */
  now?: () => number;
}

/** The expiry scheduler: one timer for the earliest deadline of the table's running and paused VMs (and suspended ones a delete would end). */
export class VmExpiry {
  private readonly deps: VmExpiryDeps;
  private readonly now: () => number;
  private readonly timer: DeadlineTimer<LiveVm>;
  /** Hostnames whose expiry is being acted on. */
  private readonly acting = new Set<string>();
  /** Hostnames whose last expiry failed, with when to try again (ms since the epoch). */
  private readonly retryAt = new Map<string, number>();

  constructor(deps: VmExpiryDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.timer = new DeadlineTimer<LiveVm>({
      items: () => this.deps.table.vms.values(),
      deadline: (vm) => this.deadline(vm),
      due: (vm, deadlineMs) => this.act(vm, deadlineMs),
      now: this.now,
    });
  }

  /** The deadline of `vm` if it can expire now (running, paused, or suspended when {@link VmExpiryDeps.expiresWhileSuspended} says so; not a config VM), else undefined. */
  private deadline(vm: LiveVm): number | undefined {
    const eligible = vm.phase === "running" || vm.phase === "paused" || (vm.phase === "suspended" && this.deps.expiresWhileSuspended?.(vm) === true);
    if (vm.record.protected || !eligible || this.acting.has(vm.record.hostname)) return undefined;
    try {
      const d = deadlineOf(vm.record.tags);
      const retry = this.retryAt.get(vm.record.hostname);
      return d === undefined || retry === undefined ? d : Math.max(d, retry);
    } catch {
      // Tags are checked before they are stored; a bad one read back from an edited state file
      // is ignored rather than acted on.
      return undefined;
    }
  }

  /**
   * Act on every VM whose deadline has passed and re-arm the timer for the earliest remaining
   * one. Call after anything that may change a deadline or make a VM eligible (start, create,
   * tags PATCH, relaunch, resume). Cheap: one pass over the table.
   */
  kick(): void {
    this.timer.kick();
  }

  /** Stop the timer; nothing expires after this (a daemon stop). */
  stop(): void {
    this.timer.stop();
  }

  private act(vm: LiveVm, deadlineMs: number): void {
    const h = vm.record.hostname;
    this.acting.add(h);
    void this.deps.expire(vm, deadlineMs)
      .then(() => this.retryAt.delete(h), (err: unknown) => {
        this.deps.log.error("expiry failed; retrying in 30 s", { hostname: h, reason: "expired", err });
        this.retryAt.set(h, this.now() + RETRY_MS);
      })
      .finally(() => {
        this.acting.delete(h);
        this.kick();
      });
  }
}
