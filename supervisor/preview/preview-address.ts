/**
 * Where a preview request goes, read from its Host header or its path (docs/slicer-api.md#preview-urls):
 * - host-name form `<port>-<hostname>.<tenant>.<base domain>` (only when the operator set
 *   `preview.base_domain`): each VM port is its own origin; the app sees the path as sent;
 * - path form `/preview/<tenant>/<hostname>/<port>/<rest…>` on the gateway: the prefix
 *   `/preview/<tenant>/<hostname>/<port>` is stripped and the app sees `/<rest…>?<query>`;
 *   `X-Forwarded-Prefix` carries the stripped prefix.
 *
 * Every label is validated before anything else uses it: the port is 1–65535 in decimal
 * without leading zeros, the hostname is a VM hostname (one lower-case DNS label, the
 * daemon's rule, tenant-daemon/vm/vm-request.ts), the tenant id matches TENANT_ID_PATTERN
 * (shared/tenant-config-defaults.ts). Pure functions: no I/O.
 */
import { PaddockError } from "../../shared/errors.js";
import { TENANT_ID_PATTERN } from "../../shared/tenant-config.js";

/** A VM hostname: one lower-case DNS label (RFC 1123), 1–63 of [a-z0-9-], no leading or trailing `-`. */
export const VM_HOSTNAME_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** The path prefix of the path form. */
export const PREVIEW_PATH_PREFIX = "/preview/";

/** One preview destination and how the request addressed it. */
export interface PreviewAddress {
  form: "host" | "path";
  tenantId: string;
  hostname: string;
  /** TCP port on the VM's loopback, 1–65535. */
  port: number;
  /** Path form: `/preview/<tenant>/<hostname>/<port>`; host form: "". */
  prefix: string;
  /** The raw path after the prefix (at least `/`), without the query. */
  rest: string;
  /** The raw query string without `?` ("" when none). */
  query: string;
}

/**
 * Parse a port label: decimal 1–65535, no sign, no leading zero.
 * @returns the port, or undefined when the label is not one.
 */
export function parsePortLabel(text: string): number | undefined {
  if (!/^[1-9][0-9]{0,4}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

function invalid(what: string): PaddockError {
  return new PaddockError("ERR_PREVIEW_ADDRESS_INVALID", what);
}

/** Check the three labels of either form. @throws PaddockError ERR_PREVIEW_ADDRESS_INVALID */
function checkLabels(tenantId: string, hostname: string, portText: string): number {
  if (!TENANT_ID_PATTERN.test(tenantId)) throw invalid(`preview tenant ${JSON.stringify(tenantId)} is not a tenant id (1-12 characters of [a-z0-9] starting with a letter)`);
  if (!VM_HOSTNAME_PATTERN.test(hostname)) throw invalid(`preview hostname ${JSON.stringify(hostname)} is not a VM hostname (one DNS label of [a-z0-9-])`);
  const port = parsePortLabel(portText);
  if (port === undefined) throw invalid(`preview port ${JSON.stringify(portText)} is not a port number (1-65535)`);
  return port;
}

/** Split a raw request target into path and query (without `?`). */
function splitTarget(url: string): { path: string; query: string } {
  const q = url.indexOf("?");
  return q < 0 ? { path: url, query: "" } : { path: url.slice(0, q), query: url.slice(q + 1) };
}

/**
 * The host-name form of a Host header, when `baseDomain` is set and the host (port removed,
 * lower-cased, one trailing dot removed) is exactly three labels under it.
 * @returns the address, or undefined when the Host is not under the base domain (not a preview).
 * @throws PaddockError ERR_PREVIEW_ADDRESS_INVALID for a host under the base domain whose labels are invalid.
 */
export function parsePreviewHost(host: string | undefined, url: string, baseDomain: string | undefined): PreviewAddress | undefined {
  if (baseDomain === undefined || host === undefined) return undefined;
  let name = host.toLowerCase().replace(/:[0-9]*$/, "");
  if (name.endsWith(".")) name = name.slice(0, -1);
  const suffix = `.${baseDomain}`;
  if (!name.endsWith(suffix)) return undefined;
  const labels = name.slice(0, -suffix.length).split(".");
  if (labels.length !== 2) throw invalid(`preview host ${JSON.stringify(host)}: expected <port>-<hostname>.<tenant>.${baseDomain}`);
  const [first, tenantId] = labels as [string, string];
  const dash = first.indexOf("-");
  if (dash < 0) throw invalid(`preview host ${JSON.stringify(host)}: expected <port>-<hostname>.<tenant>.${baseDomain}`);
  const portText = first.slice(0, dash);
  const hostname = first.slice(dash + 1);
  const port = checkLabels(tenantId, hostname, portText);
  const { path, query } = splitTarget(url);
  return { form: "host", tenantId, hostname, port, prefix: "", rest: path, query };
}

/**
 * The path form of a request target `/preview/<tenant>/<hostname>/<port>[/<rest>][?query]`.
 * @returns the address (rest "" when the target stops right after the port: the caller
 *   redirects to the trailing slash), or undefined when the path does not start with `/preview/`.
 * @throws PaddockError ERR_PREVIEW_ADDRESS_INVALID for missing or invalid labels.
 */
export function parsePreviewPath(url: string): PreviewAddress | undefined {
  if (!url.startsWith(PREVIEW_PATH_PREFIX)) return undefined;
  const { path, query } = splitTarget(url);
  const m = /^\/preview\/([^/]*)\/([^/]*)\/([^/]*)(\/.*)?$/.exec(path);
  if (!m) throw invalid("a preview path is /preview/<tenant>/<hostname>/<port>/<path>");
  const [tenantId, hostname, portText] = [m[1] as string, m[2] as string, m[3] as string];
  const port = checkLabels(tenantId, hostname, portText);
  return { form: "path", tenantId, hostname, port, prefix: `/preview/${tenantId}/${hostname}/${port}`, rest: m[4] ?? "", query };
}

/** The host name of a VM port's host-name form (no scheme, no port). */
export function previewHostName(tenantId: string, hostname: string, port: number, baseDomain: string): string {
  return `${port}-${hostname}.${tenantId}.${baseDomain}`;
}

/** The path form's prefix with its trailing slash: where a VM port's preview starts. */
export function previewPathPrefix(tenantId: string, hostname: string, port: number): string {
  return `/preview/${tenantId}/${hostname}/${port}/`;
}
