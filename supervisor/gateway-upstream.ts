/**
 * The gateway's connections to the tenant daemons' sockets for plain HTTP requests: one undici
 * `Pool` per daemon socket path (https://undici.nodejs.org/#/docs/api/Pool.md), made on first
 * use and dropped once it holds no connection and no request.
 *
 * Why undici and not `http.request` on an `http.Agent`: the proxy's CPU per request (a stand-alone
 * Node proxy on a stub daemon socket, autocannon `GET` at 1/16/64 connections) was 430/209/198 µs
 * with `http.request` and 366/115/101 µs with undici's `Pool.dispatch` (docs/performance.md,
 * "Gateway, third look: undici upstream"). WebSocket upgrades stay on http-proxy and an
 * `http.Agent` (supervisor/gateway-upgrade.ts).
 *
 * Settings, and why:
 * - `pipelining: 1`: one request at a time on a connection (as Node's agent did); a daemon
 *   connection is never shared by two requests in flight, so an answer cut short fails only its
 *   own request.
 * - `headersTimeout: 0`, `bodyTimeout: 0`: the gateway never times out a response (undici's
 *   default 300 s would cut long exec streams and wait-exit calls); the client's abort,
 *   revocation and the request body idle bound end a request (supervisor/gateway-session.ts).
 * - `keepAliveTimeout` = `keepAliveMaxTimeout` = 2 s: idle connections are closed by the gateway
 *   well before the daemon's own keep-alive close (5 s, tenant-daemon's server), so a reused
 *   connection never meets a close already in flight from the daemon; undici would otherwise
 *   follow the daemon's `Keep-Alive: timeout=5` hint minus its 2 s threshold (3 s).
 * - `connections: null` (no cap): as Node's agent had no `maxSockets`; the per-tenant request
 *   cap (`gateway.limits.max_requests`, supervisor/gateway-admission.ts) bounds them.
 * - No retry: a plain `Pool`, not a `RetryAgent`; a request undici has written is never sent
 *   again (a request still queued when its connection closes is sent on another one).
 */
import { Pool } from "undici";

/** How long an upstream connection may sit idle before the gateway closes it, ms (daemon: 5 s). */
export const UPSTREAM_IDLE_MS = 2_000;

/** Default interval of the sweep that drops pools with no connection and no request, ms. */
export const POOL_SWEEP_MS = 10_000;

/** One proxied request's upstream side, as the gateway's request end and session end see it. */
export interface UpstreamRequest {
  /**
   * Abort the upstream request (idempotent): its daemon connection is closed, so the daemon
   * sees the disconnect (an exec stream stops); a request not yet written is never sent. The
   * forwarder writes nothing more to the client for it.
   */
  abort(): void;
}

/**
 * The pools to the daemon sockets, keyed by socket path. A pool with no connection and nothing
 * queued or running is closed and dropped by a periodic sweep (`sweepMs`), so tenant churn
 * does not grow the map: a deleted tenant's pool goes once its idle connections close (2 s).
 */
export class UpstreamPools {
  private readonly pools = new Map<string, Pool>();
  private readonly timer: NodeJS.Timeout;

  /** @param sweepMs interval of the idle sweep, ms (default {@link POOL_SWEEP_MS}). */
  constructor(sweepMs = POOL_SWEEP_MS) {
    this.timer = setInterval(() => this.sweep(), sweepMs);
    this.timer.unref();
  }

  /** The pool for the daemon socket at `socketPath` (made on first use). */
  get(socketPath: string): Pool {
    let pool = this.pools.get(socketPath);
    if (pool === undefined) {
      pool = new Pool("http://localhost", {
        socketPath,
        connections: null,
        pipelining: 1,
        headersTimeout: 0,
        bodyTimeout: 0,
        keepAliveTimeout: UPSTREAM_IDLE_MS,
        keepAliveMaxTimeout: UPSTREAM_IDLE_MS,
      });
      this.pools.set(socketPath, pool);
    }
    return pool;
  }

  /** How many pools are kept (for tests and diagnostics). */
  get size(): number {
    return this.pools.size;
  }

  /** Close and drop every pool with no connection and no request queued or running. */
  sweep(): void {
    for (const [socketPath, pool] of this.pools) {
      const s = pool.stats;
      if (s.connected === 0 && s.size === 0) {
        this.pools.delete(socketPath);
        void pool.close().catch(() => undefined);
      }
    }
  }

  /** Stop the sweep and destroy every pool (their requests fail, their connections close). */
  destroy(): void {
    clearInterval(this.timer);
    for (const pool of this.pools.values()) void pool.destroy().catch(() => undefined);
    this.pools.clear();
  }
}
