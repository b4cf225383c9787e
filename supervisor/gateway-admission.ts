/**
 * Who may use the gateway right now, and ending what is open: per-tenant caps on client
 * connections, concurrent requests and request rate (a token bucket), a file-descriptor
 * budget shared by all tenants, and the registry of live proxied requests and WebSockets by
 * tenant and token id that revocation, suspension and deletion end.
 *
 * Accounting (one client connection and one upstream connection per proxied request or
 * WebSocket are the gateway's file descriptors):
 * - a client connection counts against a tenant from its first admitted request until it
 *   closes; a connection that carried two tenants' requests counts for both;
 * - a request counts from admission until its response closes; a WebSocket holds its request
 *   slot (and its connection) until its socket closes;
 * - every accepted client socket (authenticated or not) and every admitted request (its
 *   upstream socket) counts against the global budget, `RLIMIT_NOFILE` minus a reserve.
 *
 * Adapter-free: the gateway hands in sockets and closers; this module never sees routes.
 */
import { readFileSync } from "node:fs";
import type { Socket } from "node:net";
import { PaddockError } from "../shared/errors.js";

/** Per-tenant gateway limits (supervisor config `gateway.limits`). */
export interface TenantGatewayLimits {
  /** Client connections a tenant may hold open at once (WebSockets included). */
  maxConnections: number;
  /** Requests a tenant may have in flight at once (a live WebSocket holds one). */
  maxRequests: number;
  /** Sustained request rate, requests per second (token bucket refill). */
  requestsPerSecond: number;
  /** Token bucket size: requests allowed at once above the sustained rate. */
  burst: number;
}

/** The gateway's file-descriptor budget (supervisor config `gateway.fd_reserve`, `gateway.tenant_fd_share_percent`). */
export interface FdBudgetConfig {
  /** Descriptors kept back from `RLIMIT_NOFILE` for daemons' pipes, logs, the admin API, state files. */
  reserve: number;
  /** Percent of the global budget one tenant's connections plus requests may take (1–100). */
  tenantSharePercent: number;
}

/** A refusal: the error to answer with and the `Retry-After` seconds to send. */
export interface Refusal {
  error: PaddockError;
  retryAfterS: number;
}

/** One admitted request or WebSocket; `release` is idempotent. */
export interface Admission {
  release(): void;
}

/** What {@link GatewayAdmission.admit} needs to know about one request. */
export interface AdmitRequest {
  tenantId: string;
  tokenId: string;
  /** The client connection it arrived on. */
  socket: Socket;
  /**
   * Ends this request or WebSocket at once (revocation, suspension, deletion). `reason` is the
   * error a plain request whose answer has not started gets instead of a reset.
   */
  end: (reason: PaddockError) => void;
}

/** Usage of one tenant, for logs and tests. */
export interface TenantGatewayUsage {
  connections: number;
  requests: number;
}

const DEFAULT_NOFILE = 1024;
/** Smallest global budget worth running with; below it the reserve gives way (half the limit is kept back). */
const MIN_GLOBAL_FDS = 64;

/**
 * The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits` ("Max open files"
 * line; proc(5), https://man7.org/linux/man-pages/man5/proc.5.html).
 * @returns the limit, or 1024 when the file is unreadable or says "unlimited".
 */
export function readNofileLimit(limitsText?: string): number {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync("/proc/self/limits", "utf8");
    } catch {
      return DEFAULT_NOFILE;
    }
  }
  const m = /^Max open files\s+(\d+)\s/m.exec(text);
  return m ? Number(m[1]) : DEFAULT_NOFILE;
}

/**
 * The global descriptor budget: `nofile - reserve`, or half of `nofile` when the reserve
 * would leave fewer than 64.
 */
export function globalFdBudget(nofile: number, reserve: number): number {
  const left = nofile - reserve;
  return left >= MIN_GLOBAL_FDS ? left : Math.max(1, Math.floor(nofile / 2));
}

interface Session {
  tokenId: string;
  end: (reason: PaddockError) => void;
}

interface TenantState {
  connections: Set<Socket>;
  requests: number;
  tokens: number;
  refilledAtMs: number;
  sessions: Set<Session>;
}

/**
 * Admission control and live-session registry of the gateway. One instance per supervisor,
 * built by the composition root and shared by the gateway (admits, releases) and the tenant
 * service (ends sessions on revoke, suspend, delete).
 */
export class GatewayAdmission {
  readonly limits: TenantGatewayLimits;
  /** Global descriptor budget (client sockets + upstream sockets). */
  readonly globalFds: number;
  /** One tenant's share of {@link globalFds}. */
  readonly tenantFds: number;
  /** Hard cap on accepted client sockets (`server.maxConnections`): the budget plus half of what is left of the limit. */
  readonly maxClientSockets: number;
  private readonly tenants = new Map<string, TenantState>();
  private clientSockets = 0;
  private requestsInFlight = 0;
  private readonly now: () => number;

  constructor(limits: TenantGatewayLimits, fd: FdBudgetConfig, opts: { nofile?: number; nowMs?: () => number } = {}) {
    this.limits = limits;
    const nofile = opts.nofile ?? readNofileLimit();
    this.globalFds = globalFdBudget(nofile, fd.reserve);
    this.maxClientSockets = this.globalFds + Math.floor(Math.max(0, nofile - this.globalFds) / 2);
    this.tenantFds = Math.max(2, Math.floor((this.globalFds * fd.tenantSharePercent) / 100));
    this.now = opts.nowMs ?? (() => performance.now());
  }

  /** Count an accepted client socket against the global budget until it closes. */
  trackClientSocket(socket: Socket): void {
    this.clientSockets++;
    socket.once("close", () => this.clientSockets--);
  }

  /** Descriptors in use by the gateway (client sockets + upstream requests). */
  fdsInUse(): number {
    return this.clientSockets + this.requestsInFlight;
  }

  /** Current usage of a tenant. */
  usage(tenantId: string): TenantGatewayUsage {
    const t = this.tenants.get(tenantId);
    return { connections: t?.connections.size ?? 0, requests: t?.requests ?? 0 };
  }

  private state(tenantId: string): TenantState {
    let t = this.tenants.get(tenantId);
    if (!t) {
      t = { connections: new Set(), requests: 0, tokens: this.limits.burst, refilledAtMs: this.now(), sessions: new Set() };
      this.tenants.set(tenantId, t);
    }
    return t;
  }

  private forgetIfIdle(tenantId: string, t: TenantState): void {
    if (t.connections.size === 0 && t.requests === 0 && t.sessions.size === 0 && t.tokens >= this.limits.burst) this.tenants.delete(tenantId);
  }

  /**
   * Admit one request (or WebSocket upgrade) of a tenant, in this order: the global budget
   * (503 `ERR_GATEWAY_BUSY`), the tenant's connections (429 `ERR_TOO_MANY_CONNECTIONS`), its
   * concurrent requests (429 `ERR_TOO_MANY_REQUESTS`), its descriptor share (429
   * `ERR_TOO_MANY_CONNECTIONS`), its rate (429 `ERR_RATE_LIMITED`). A refused request takes
   * nothing (no rate token either).
   * @returns an {@link Admission} to release when the response (or WebSocket) closes, or a
   *   {@link Refusal}.
   */
  admit(r: AdmitRequest): Admission | Refusal {
    const t = this.state(r.tenantId);
    const newConnection = !t.connections.has(r.socket);
    const refuse = (error: PaddockError, retryAfterS: number): Refusal => {
      this.forgetIfIdle(r.tenantId, t);
      return { error, retryAfterS };
    };
    // The client socket is already counted (trackClientSocket); the request adds its upstream socket.
    if (this.fdsInUse() + 1 > this.globalFds) {
      return refuse(new PaddockError("ERR_GATEWAY_BUSY", `the gateway has no file descriptors left (${this.globalFds} in use); retry later`), 1);
    }
    if (newConnection && t.connections.size >= this.limits.maxConnections) {
      return refuse(new PaddockError("ERR_TOO_MANY_CONNECTIONS", `tenant ${r.tenantId} has ${t.connections.size} connections open, the limit is ${this.limits.maxConnections}`), 1);
    }
    if (t.requests >= this.limits.maxRequests) {
      return refuse(new PaddockError("ERR_TOO_MANY_REQUESTS", `tenant ${r.tenantId} has ${t.requests} requests in flight, the limit is ${this.limits.maxRequests}`), 1);
    }
    if (t.connections.size + (newConnection ? 1 : 0) + t.requests + 1 > this.tenantFds) {
      return refuse(new PaddockError("ERR_TOO_MANY_CONNECTIONS", `tenant ${r.tenantId} uses its whole share of the gateway's file descriptors (${this.tenantFds})`), 1);
    }
    const now = this.now();
    t.tokens = Math.min(this.limits.burst, t.tokens + ((now - t.refilledAtMs) / 1000) * this.limits.requestsPerSecond);
    t.refilledAtMs = now;
    if (t.tokens < 1) {
      const waitS = Math.max(1, Math.ceil((1 - t.tokens) / this.limits.requestsPerSecond));
      return refuse(new PaddockError("ERR_RATE_LIMITED", `tenant ${r.tenantId} is over its rate of ${this.limits.requestsPerSecond} requests/s (burst ${this.limits.burst})`), waitS);
    }
    t.tokens -= 1;
    if (newConnection) {
      t.connections.add(r.socket);
      r.socket.once("close", () => {
        t.connections.delete(r.socket);
        this.forgetIfIdle(r.tenantId, t);
      });
    }
    t.requests++;
    this.requestsInFlight++;
    const session: Session = { tokenId: r.tokenId, end: r.end };
    t.sessions.add(session);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        t.requests--;
        this.requestsInFlight--;
        t.sessions.delete(session);
        this.forgetIfIdle(r.tenantId, t);
      },
    };
  }

  /**
   * End every live request and WebSocket of a tenant (suspension, deletion), or only those
   * authenticated by `tokenId` (revocation). Each session's `end` runs synchronously; a plain
   * request whose answer has not started is answered with `reason` (its status and code).
   * @returns how many were ended.
   */
  endSessions(tenantId: string, tokenId?: string, reason: PaddockError = new PaddockError("ERR_TENANT_UNAVAILABLE", "session ended")): number {
    const t = this.tenants.get(tenantId);
    if (!t) return 0;
    let n = 0;
    for (const s of [...t.sessions]) {
      if (tokenId !== undefined && s.tokenId !== tokenId) continue;
      t.sessions.delete(s);
      s.end(reason);
      n++;
    }
    return n;
  }
}

/** True when `admit` refused. */
export function isRefusal(a: Admission | Refusal): a is Refusal {
  return "error" in a;
}
