/**
 * Parsing and checking admin API requests (docs/admin-api.openapi.yaml) into the typed inputs
 * of the tenant service (supervisor/tenant-inputs.ts). Everything here is pure: it reads
 * `req.body`, `req.query` and `req.params` and throws a PaddockError for what it refuses —
 * `ERR_BAD_REQUEST` (body not an object, missing path parameter), `ERR_QUERY_INVALID` (query
 * values), `ERR_TENANT_INVALID` (tenant fields). What only a template can check (host group
 * overrides) is left to the service.
 */
import type { Request } from "express";
import { PaddockError } from "../shared/errors.js";
import { TENANT_ID_PATTERN } from "../shared/tenant-config.js";
import { ConfigReader } from "../shared/yaml-reader.js";
import { readLimitsSection, type LimitsPatch } from "./tenant-limits.js";
import { TENANT_HYPERVISORS, TENANT_STATUSES, type LimitsRecord, type TenantHypervisor, type TenantStatus } from "./tenant-registry.js";
import { readImageOverride } from "./tenant-template.js";
import type { CreateTenantInput, IssueTokenInput, LabelsPatch, TenantListFilter, UpdateTenantInput } from "./tenant-inputs.js";

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/i;

/** Fields of a create body. */
const CREATE_FIELDS = ["id", "template", "labels", "limits", "host_groups", "image", "hypervisor", "token_expires_in_seconds"];

/**
 * The JSON body as an object (`{}` when there is none).
 * @throws PaddockError `ERR_BAD_REQUEST` for a body that is not a JSON object.
 */
export function requestBody(req: Request): Record<string, unknown> {
  const b: unknown = req.body;
  if (b === undefined || b === null) return {};
  if (typeof b !== "object" || Array.isArray(b)) throw new PaddockError("ERR_BAD_REQUEST", "expected a JSON object body");
  return b as Record<string, unknown>;
}

/**
 * A query parameter given at most once.
 * @throws PaddockError `ERR_QUERY_INVALID` when it is repeated.
 */
export function queryString(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new PaddockError("ERR_QUERY_INVALID", `${name}: expected one value`);
  return v;
}

/**
 * An integer query parameter between 1 and `max`, `def` when absent.
 * @throws PaddockError `ERR_QUERY_INVALID`.
 */
export function queryInt(req: Request, name: string, def: number, max: number): number {
  const v = queryString(req, name);
  if (v === undefined) return def;
  if (!/^\d{1,9}$/.test(v) || Number(v) < 1 || Number(v) > max) throw new PaddockError("ERR_QUERY_INVALID", `${name}: expected an integer between 1 and ${max}`);
  return Number(v);
}

/**
 * A path parameter.
 * @throws PaddockError `ERR_BAD_REQUEST` when missing.
 */
export function pathParam(req: Request, name: string): string {
  const v = req.params[name];
  if (typeof v !== "string") throw new PaddockError("ERR_BAD_REQUEST", `missing ${name}`);
  return v;
}

/**
 * `labels` (string → string); with `allowNull`, a `null` value stays `null` (remove the label).
 * @returns undefined when absent.
 * @throws PaddockError `ERR_TENANT_INVALID` at the first bad key or value.
 */
function readLabels(raw: unknown, allowNull: boolean): LabelsPatch | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new PaddockError("ERR_TENANT_INVALID", "labels: expected an object of string values");
  const out: LabelsPatch = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!LABEL_KEY.test(k)) throw new PaddockError("ERR_TENANT_INVALID", `labels.${k}: label keys are 1-63 characters of [A-Za-z0-9._/-]`);
    if (v === null && allowNull) out[k] = null;
    else if (typeof v === "string" && v.length <= 256) out[k] = v;
    else throw new PaddockError("ERR_TENANT_INVALID", `labels.${k}: expected a string of at most 256 characters`);
  }
  return out;
}

/** Throw the problems a limits reading found, all in one `ERR_TENANT_INVALID`. */
function throwProblems(r: ConfigReader): void {
  if (r.problems.length) throw new PaddockError("ERR_TENANT_INVALID", r.problems.map((p) => `${p.path}: ${p.message}`).join("; "), { details: { problems: r.problems } });
}

/**
 * A token lifetime: `expires_in_seconds` (1 s to 10 years) or `expires_at` (RFC 3339, in the
 * future), not both.
 * @returns the expiry as an ISO time, or undefined for none.
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
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

/**
 * The optional `hypervisor` of a create body: `oci` or `gvisor` (`firecracker` has no driver in
 * this release).
 * @returns undefined when absent.
 * @throws PaddockError `ERR_TENANT_INVALID` for any other value.
 */
function readHypervisor(raw: unknown): TenantHypervisor | undefined {
  if (raw === undefined) return undefined;
  const known = TENANT_HYPERVISORS.find((h) => h === raw);
  if (known === undefined) throw new PaddockError("ERR_TENANT_INVALID", `hypervisor: expected ${TENANT_HYPERVISORS.join(" or ")} (runc or gVisor VMs), got ${JSON.stringify(raw)}`);
  return known;
}

/**
 * A create body (`POST /tenants`): known fields only, then id, template, image, hypervisor,
 * limits, labels and the first token's lifetime, each checked. Whether the host can run the
 * hypervisor is the service's check.
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
export function readCreateTenant(body: Record<string, unknown>): CreateTenantInput {
  for (const k of Object.keys(body)) if (!CREATE_FIELDS.includes(k)) throw new PaddockError("ERR_TENANT_INVALID", `unknown field ${JSON.stringify(k)} (known: ${CREATE_FIELDS.join(", ")})`);
  if (body.id !== undefined && (typeof body.id !== "string" || !TENANT_ID_PATTERN.test(body.id))) {
    throw new PaddockError("ERR_TENANT_INVALID", "id: expected 1-12 characters of [a-z0-9] starting with a letter");
  }
  if (body.template !== undefined && typeof body.template !== "string") throw new PaddockError("ERR_TENANT_INVALID", "template: expected a string");
  const image = readImageOverride(body.image);
  const hypervisor = readHypervisor(body.hypervisor);
  const r = new ConfigReader();
  const limits: LimitsRecord = readLimitsSection(r, body.limits, "limits", { unknownIsProblem: true });
  throwProblems(r);
  const labels = readLabels(body.labels, false) as Record<string, string> | undefined;
  const tokenExpiresAt = readExpiry(body.token_expires_in_seconds === undefined ? {} : { expires_in_seconds: body.token_expires_in_seconds }, Date.now());
  return {
    ...(body.id !== undefined ? { id: body.id as string } : {}),
    ...(body.template !== undefined ? { template: body.template as string } : {}),
    ...(labels !== undefined ? { labels } : {}),
    limits,
    ...(body.host_groups !== undefined ? { hostGroups: body.host_groups } : {}),
    ...(image !== undefined ? { image } : {}),
    ...(hypervisor !== undefined ? { hypervisor } : {}),
    ...(tokenExpiresAt !== undefined ? { tokenExpiresAt } : {}),
  };
}

/**
 * Refuse a change body (`PATCH /tenants/:id`) with fields that cannot change (checked before
 * the tenant is looked up).
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
export function checkUpdateFields(body: Record<string, unknown>): void {
  for (const k of Object.keys(body)) if (k !== "labels" && k !== "limits") throw new PaddockError("ERR_TENANT_INVALID", `field ${JSON.stringify(k)} cannot be changed (changeable: labels, limits)`);
}

/**
 * A change body (`PATCH /tenants/:id`): `labels` (a `null` value removes a label) and
 * `limits` (a `null` value resets a limit to its default).
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
export function readTenantUpdate(body: Record<string, unknown>): UpdateTenantInput {
  checkUpdateFields(body);
  const labels = readLabels(body.labels, true);
  let limits: LimitsPatch | undefined;
  if (body.limits !== undefined) {
    const r = new ConfigReader();
    limits = readLimitsSection(r, body.limits, "limits", { allowNull: true, unknownIsProblem: true });
    throwProblems(r);
  }
  return { ...(labels !== undefined ? { labels } : {}), ...(limits !== undefined ? { limits } : {}) };
}

/**
 * A token body (`POST /tenants/:id/tokens`): `expires_in_seconds` or `expires_at`, nothing else.
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
export function readIssueToken(body: Record<string, unknown>): IssueTokenInput {
  for (const k of Object.keys(body)) if (k !== "expires_in_seconds" && k !== "expires_at") throw new PaddockError("ERR_TENANT_INVALID", `unknown field ${JSON.stringify(k)}`);
  const expiresAt = readExpiry(body, Date.now());
  return expiresAt !== undefined ? { expiresAt } : {};
}

/**
 * The reason of a suspension (`POST /tenants/:id/suspend`), at most 500 characters.
 * @returns the reason, "suspended by operator" when absent.
 * @throws PaddockError `ERR_TENANT_INVALID`.
 */
export function readSuspendReason(body: Record<string, unknown>): string {
  const reason = body.reason === undefined ? "suspended by operator" : body.reason;
  if (typeof reason !== "string" || reason.length > 500) throw new PaddockError("ERR_TENANT_INVALID", "reason: expected a string of at most 500 characters");
  return reason;
}

/**
 * The filter of `GET /tenants`: `label=key=value` (repeatable) and `status`.
 * @throws PaddockError `ERR_QUERY_INVALID`.
 */
export function readListFilter(req: Request): TenantListFilter {
  const labels: Record<string, string> = {};
  const raw = req.query.label;
  for (const l of raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]) {
    if (typeof l !== "string" || !l.includes("=")) throw new PaddockError("ERR_QUERY_INVALID", "label: expected key=value");
    const i = l.indexOf("=");
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  const status = queryString(req, "status");
  if (status !== undefined && !TENANT_STATUSES.includes(status as TenantStatus)) {
    throw new PaddockError("ERR_QUERY_INVALID", `status: expected one of ${TENANT_STATUSES.join(", ")}`);
  }
  return { ...(status !== undefined ? { status: status as TenantStatus } : {}), labels };
}

/**
 * The query of `GET /audit`: `tenant`, `action`, `limit` (1–10 000, default 100) and `cursor`
 * (a `Paddock-Next-Cursor` of a previous page).
 * @throws PaddockError `ERR_QUERY_INVALID`.
 */
export function readAuditQuery(req: Request): { tenant: string | undefined; action: string | undefined; limit: number; cursor: string | undefined } {
  const cursor = queryString(req, "cursor");
  if (cursor !== undefined && !/^\d{1,20}-\d{1,20}:\d{1,20}$/.test(cursor)) throw new PaddockError("ERR_QUERY_INVALID", "cursor: expected the Paddock-Next-Cursor of a previous page");
  return { tenant: queryString(req, "tenant"), action: queryString(req, "action"), limit: queryInt(req, "limit", 100, 10_000), cursor };
}
