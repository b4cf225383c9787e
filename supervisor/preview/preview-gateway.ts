/**
 * Preview requests at the gateway (docs/slicer-api.md#preview-urls): recognise the host-name
 * or path form (preview-address.ts), authenticate, and plan what goes to the tenant daemon's
 * `/vm/{hostname}/preview/{port}/…` route (tenant-daemon/api/preview-routes.ts).
 *
 * Access, in this order: `Authorization: Bearer` with the tenant's own token or a preview
 * token; a preview token in `?paddock_token=`; (host-name form only) the preview cookie. A
 * tenant token of another tenant, a preview token for another tenant, VM or port, an expired
 * or forged one: 401 `ERR_AUTH_REQUIRED`, the gateway's one 401 body.
 *
 * What the app never sees: the tenant's token and preview tokens (an `Authorization` bearer
 * with a `pdk_`/`pvt_` token is removed, `paddock_token` is removed from the query, the preview
 * cookie from `Cookie`, a `Referer` naming `paddock_token` is dropped), the client's
 * `Forwarded`/`X-Forwarded-*`/`X-Real-IP`/`X-Paddock-*`. The gateway sets `X-Forwarded-For`,
 * `X-Forwarded-Proto` (`preview.scheme`), `X-Forwarded-Host` (the client's Host) and, in the
 * path form, `X-Forwarded-Prefix` (`/preview/<tenant>/<hostname>/<port>`).
 *
 * Cookies (docs/security.md#preview-urls): the host-name form gives each VM port its own
 * origin, so a query token on a GET is exchanged for an HttpOnly, SameSite=Lax cookie scoped to
 * that host (`Secure` and `__Host-` when `preview.scheme` is https) by a 303 to the same URL
 * without the token. The path form shares one origin among all tenants' VMs, so it refuses
 * cookies altogether: no preview cookie, the client's `Cookie` is not forwarded, the app's
 * `Set-Cookie` is dropped, and every answer carries `Content-Security-Policy: sandbox …` so a
 * page of one VM runs in an opaque origin and cannot read another VM's pages or storage.
 */
import type http from "node:http";
import { parseBearer } from "../../shared/http/bearer.js";
import { PaddockError } from "../../shared/errors.js";
import { requestTargetProblem } from "../../shared/http-input.js";
import type { ForwardPlan } from "../gateway-forward.js";
import { refusal, routeTenant, unauthorized, type Route, type TenantResolver } from "../gateway-route.js";
import type { SupervisorConfig } from "../supervisor-config.js";
import { TOKEN_PREFIX } from "../tokens.js";
import { parsePreviewHost, parsePreviewPath, type PreviewAddress } from "./preview-address.js";
import type { PreviewKeys } from "./preview-keys.js";
import { PREVIEW_TOKEN_PREFIX, verifyPreviewToken, type PreviewGrant } from "./preview-token.js";

/** The query parameter carrying a preview token. */
export const PREVIEW_QUERY_PARAM = "paddock_token";
/** The preview cookie's name over http, and over https (`__Host-`: host-only, Secure, Path=/; RFC 6265bis §4.1.3.2). */
export const PREVIEW_COOKIE = "paddock_preview";
export const PREVIEW_COOKIE_SECURE = "__Host-paddock_preview";
/** The header carrying a preview token's VM binding to the daemon (tenant-daemon/api/preview-routes.ts). */
export const PREVIEW_CREATED_AT_HEADER = "x-paddock-preview-created-at";
/** CSP of every path-form answer: the page runs in an opaque origin (https://www.w3.org/TR/CSP3/#directive-sandbox). */
export const PATH_FORM_CSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/** Client headers never forwarded on a preview request (the gateway sets its own). */
const PROXY_HEADERS = new Set(["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x-request-id"]);

/** How a preview request was authenticated. */
export type PreviewAuth = "tenant_token" | "preview_token";

/** The gateway's decision on one preview request. */
export interface PreviewDecision {
  addr?: PreviewAddress;
  /** Where it goes (with `plan`), or the refusal to answer. */
  r: Route;
  auth?: PreviewAuth;
  /** Answer this instead of forwarding (a redirect), after admission. */
  answer?: { status: number; headers: Record<string, string> };
  /** The rewrite of what is forwarded. */
  plan?: ForwardPlan;
}

/** Values of the query parameter `name` in a raw query string, and the query without them. */
export function takeQueryParam(query: string, name: string): { values: string[]; rest: string } {
  if (query === "") return { values: [], rest: "" };
  const values: string[] = [];
  const kept: string[] = [];
  for (const part of query.split("&")) {
    const eq = part.indexOf("=");
    const rawName = eq < 0 ? part : part.slice(0, eq);
    let n: string;
    let v: string;
    try {
      n = decodeURIComponent(rawName.replace(/\+/g, " "));
      v = eq < 0 ? "" : decodeURIComponent(part.slice(eq + 1).replace(/\+/g, " "));
    } catch {
      kept.push(part);
      continue;
    }
    if (n === name) values.push(v);
    else kept.push(part);
  }
  return { values, rest: kept.join("&") };
}

/** Values of the cookies named in `names` in a `Cookie` header, and the header without them ("" when none left). */
export function takeCookies(header: string | undefined, names: ReadonlySet<string>): { values: string[]; rest: string } {
  if (header === undefined) return { values: [], rest: "" };
  const values: string[] = [];
  const kept: string[] = [];
  for (const raw of header.split(";")) {
    const pair = raw.trim();
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const n = eq < 0 ? pair : pair.slice(0, eq).trim();
    if (names.has(n)) values.push(eq < 0 ? "" : pair.slice(eq + 1).trim());
    else kept.push(pair);
  }
  return { values, rest: kept.join("; ") };
}

/** The preview side of the gateway. */
export class PreviewGateway {
  private readonly tenants: TenantResolver;
  private readonly keys: PreviewKeys;
  private readonly config: SupervisorConfig["preview"];
  private readonly cookieName: string;
  private readonly cookieNames: ReadonlySet<string>;

  constructor(deps: { tenants: TenantResolver; keys: PreviewKeys; config: SupervisorConfig["preview"] }) {
    this.tenants = deps.tenants;
    this.keys = deps.keys;
    this.config = deps.config;
    this.cookieName = deps.config.scheme === "https" ? PREVIEW_COOKIE_SECURE : PREVIEW_COOKIE;
    this.cookieNames = new Set([PREVIEW_COOKIE, PREVIEW_COOKIE_SECURE]);
  }

  /**
   * Decide on one request (plain or upgrade).
   * @returns undefined when it is not a preview request (neither form), else the decision:
   *   400 `ERR_PREVIEW_ADDRESS_INVALID`/`ERR_URL_MALFORMED`, 308 to the trailing slash (path
   *   form), 401, the refusals of supervisor/gateway-route.ts `routeTenant`, 303 (a host-name
   *   form GET with a query token: the cookie is set), or the forward plan.
   */
  route(req: http.IncomingMessage, upgrade: boolean): PreviewDecision | undefined {
    const url = req.url ?? "/";
    let addr: PreviewAddress | undefined;
    try {
      addr = parsePreviewHost(req.headers.host, url, this.config.baseDomain) ?? parsePreviewPath(url);
    } catch (err) {
      return { r: refusal(err as PaddockError, "-") };
    }
    if (addr === undefined) return undefined;
    const bad = requestTargetProblem(url);
    // The tenant named in the address is not authenticated yet: refusals before the token check
    // are counted under "-" (a label per made-up id would grow the metrics without bound).
    if (bad !== undefined) return { addr, r: refusal(new PaddockError("ERR_URL_MALFORMED", bad), "-") };
    if (addr.form === "path" && addr.rest === "") {
      // `/preview/t/h/8080` → `/preview/t/h/8080/`: relative links of the app resolve under the prefix.
      return { addr, r: unauthorized(), answer: { status: 308, headers: { location: `${addr.prefix}/${addr.query ? `?${addr.query}` : ""}` } } };
    }
    const { values: queryTokens, rest: query } = takeQueryParam(addr.query, PREVIEW_QUERY_PARAM);
    const cookies = takeCookies(req.headers.cookie, this.cookieNames);
    const bearer = parseBearer(req.headers.authorization);
    const want = { tenantId: addr.tenantId, hostname: addr.hostname, port: addr.port };
    const verify = (t: string): PreviewGrant | undefined => verifyPreviewToken(t, want, (id) => this.keys.keyOf(id));

    let owner: { tenantId: string; tokenId: string } | undefined;
    let grant: PreviewGrant | undefined;
    if (bearer !== undefined) {
      const o = this.tenants.authenticate(bearer);
      if (o !== undefined && o.tenantId === addr.tenantId) owner = o;
      else grant = verify(bearer);
    }
    let queryToken: string | undefined;
    for (const t of queryTokens) {
      if (owner || grant) break;
      grant = verify(t);
      if (grant) queryToken = t;
    }
    if (addr.form === "host") {
      for (const t of cookies.values) {
        if (owner || grant) break;
        grant = verify(t);
      }
    }
    if (grant) owner = { tenantId: grant.tenantId, tokenId: `preview:${grant.hostname}:${grant.port}` };
    if (!owner) return { addr, r: unauthorized() };
    const auth: PreviewAuth = grant ? "preview_token" : "tenant_token";
    const r = routeTenant(this.tenants, owner, req);
    if (!r.ok) return { addr, r, auth };

    const setCookie = addr.form === "host" && queryToken !== undefined && grant ? this.cookie(grant, queryToken) : undefined;
    if (setCookie !== undefined && !upgrade && (req.method === "GET" || req.method === "HEAD")) {
      // Exchange the query token for the cookie and drop it from the address bar (and so from Referer).
      return { addr, r, auth, answer: { status: 303, headers: { location: `${addr.rest}${query ? `?${query}` : ""}`, "set-cookie": setCookie, "cache-control": "no-store" } } };
    }
    return { addr, r, auth, plan: this.plan(req, addr, query, cookies.rest, bearer, grant, setCookie) };
  }

  /** The Set-Cookie value carrying the preview `token` of `grant` until it expires (host-name form). */
  private cookie(grant: PreviewGrant, token: string): string {
    const maxAge = Math.max(0, Math.floor(grant.expiresAtS - Date.now() / 1000));
    const secure = this.config.scheme === "https" ? "; Secure" : "";
    return `${this.cookieName}=${token}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure}`;
  }

  /** The forward plan: daemon path, cleaned headers, the answer's rewrite. */
  private plan(req: http.IncomingMessage, addr: PreviewAddress, query: string, cookieRest: string, bearer: string | undefined, grant: PreviewGrant | undefined, setCookie: string | undefined): ForwardPlan {
    const headers: string[] = [];
    const src = req.headers;
    const ourBearer = bearer !== undefined && (bearer.startsWith(TOKEN_PREFIX) || bearer.startsWith(PREVIEW_TOKEN_PREFIX));
    for (const k in src) {
      if (PROXY_HEADERS.has(k) || k.startsWith("x-paddock-")) continue;
      if (k === "authorization" && ourBearer) continue;
      if (k === "cookie") continue;
      const v = src[k];
      if (v === undefined) continue;
      if (k === "referer" && typeof v === "string" && v.includes(PREVIEW_QUERY_PARAM)) continue;
      if (typeof v === "string") headers.push(k, v);
      else for (const x of v) headers.push(k, x);
    }
    if (addr.form === "host" && cookieRest !== "") headers.push("cookie", cookieRest);
    headers.push("x-forwarded-for", req.socket.remoteAddress ?? "unix", "x-forwarded-proto", this.config.scheme);
    if (src.host !== undefined) headers.push("x-forwarded-host", src.host);
    if (addr.form === "path") headers.push("x-forwarded-prefix", addr.prefix);
    if (grant) headers.push(PREVIEW_CREATED_AT_HEADER, grant.vmCreatedAt);
    const path = `/vm/${addr.hostname}/preview/${addr.port}${addr.rest}${query ? `?${query}` : ""}`;
    const pathForm = addr.form === "path";
    const rewriteAnswer = pathForm || setCookie !== undefined
      ? (out: string[]): string[] => {
        const kept: string[] = [];
        for (let i = 0; i < out.length; i += 2) {
          if (pathForm && (out[i] as string).toLowerCase() === "set-cookie") continue;
          kept.push(out[i] as string, out[i + 1] as string);
        }
        if (pathForm) kept.push("content-security-policy", PATH_FORM_CSP);
        if (setCookie !== undefined) kept.push("set-cookie", setCookie);
        return kept;
      }
      : undefined;
    return { path, headers, ...(rewriteAnswer ? { rewriteAnswer } : {}) };
  }
}
