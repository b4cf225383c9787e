/**
 * The typed inputs of the tenant service: what the admin API hands it once a request is
 * parsed and checked (supervisor/admin-request.ts). The service never sees a raw body; what
 * only a template can check (host group overrides) is checked by the service against it.
 */
import type { LimitsPatch } from "./tenant-limits.js";
import type { LimitsRecord, TenantHypervisor, TenantStatus } from "./tenant-registry.js";

/** Label changes: a string sets the label, `null` removes it. */
export type LabelsPatch = Record<string, string | null>;

/** A tenant to create (`POST /admin/v1/tenants`). */
export interface CreateTenantInput {
  /** 1-12 characters of [a-z0-9] starting with a letter (`TENANT_ID_PATTERN`); absent: a random id. */
  id?: string;
  /** Template name; absent: the supervisor's `templates.default`. */
  template?: string;
  /** Labels (keys of [A-Za-z0-9._/-], values of at most 256 characters); absent: none. */
  labels?: Record<string, string>;
  /** The limits the request sets; the rest come from the template, else the supervisor's `default_limits`. */
  limits?: LimitsRecord;
  /**
   * The request's `host_groups` as sent: per host group overrides, checked against the
   * template's bounds at create (supervisor/tenant-template.ts `readOverrides`).
   */
  hostGroups?: unknown;
  /** A local image replacing the template's (a checked name; the service checks the store holds it). */
  image?: string;
  /**
   * The runtime of the tenant's VMs, replacing the template's `config.hypervisor`: `oci` (runc)
   * or `gvisor` (runsc; the service checks the host has it). Absent: the template's.
   */
  hypervisor?: TenantHypervisor;
  /** When the first token expires (RFC 3339, in the future); absent: never. */
  tokenExpiresAt?: string;
}

/** Changes to a tenant (`PATCH /admin/v1/tenants/:id`); an absent field is left as it is. */
export interface UpdateTenantInput {
  labels?: LabelsPatch;
  /** A number sets the limit, `null` resets it to the template's, else the supervisor's default. */
  limits?: LimitsPatch;
}

/** An extra token (`POST /admin/v1/tenants/:id/tokens`). */
export interface IssueTokenInput {
  /** When it expires (RFC 3339, in the future); absent: never. */
  expiresAt?: string;
}

/** Which tenants to list (`GET /admin/v1/tenants`). */
export interface TenantListFilter {
  status?: TenantStatus;
  /** Labels a tenant must carry with exactly these values. */
  labels?: Record<string, string>;
}
