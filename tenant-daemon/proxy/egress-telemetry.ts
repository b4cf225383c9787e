/**
 * What the egress proxy counts and tells: prom-client counters per allow rule (requests, bytes
 * up and down) and per denial reason, in the daemon's registry (`GET /metrics`), and
 * rate-limited `egress_denied` / `egress_audit` events on the daemon event log (`GET /events`).
 *
 * Label values are bounded: `client` is a store name, `rule` is a rule's host pattern (both from
 * the API, capped in number by the store); a denied request's host, which a guest chooses, is
 * never a label, only an event field.
 *
 * Events: one per (type, client, host) per {@link EVENT_WINDOW_MS}, the next one carrying how
 * many were swallowed (`suppressed`), and at most {@link EVENT_WINDOW_MAX} of all kinds per
 * window; a guest hammering denied hosts cannot flood `GET /events` consumers. The
 * suppressed-counts map is bounded ({@link EVENT_KEYS_MAX}).
 */
import { Counter, type Registry } from "prom-client";
import type { EgressEventInput, EgressRefusal } from "../events/event-log.js";

/** Window of the event rate limit, ms. */
export const EVENT_WINDOW_MS = 10_000;
/** Most egress events of all kinds per window. */
export const EVENT_WINDOW_MAX = 20;
/** Most (type, client, host) keys remembered. */
export const EVENT_KEYS_MAX = 4096;

/** A denial or would-be denial, as counted and told (the fields of an egress event). */
export type Refusal = EgressRefusal;

/** The egress proxy's counters in a registry. */
export interface EgressCounters {
  requests: Counter<"client" | "rule">;
  bytes: Counter<"client" | "rule" | "direction">;
  denials: Counter<"client" | "reason" | "mode">;
}

/**
 * The egress proxy's counters in `registry`, registered on the first call and found again on
 * later ones (several engines of one daemon share them). The daemon registers them at start
 * (tenant-daemon/main.ts), so `GET /metrics` lists them before the engine, built on first use
 * (network/egress-proxy-wiring.ts), exists.
 * @param registry the daemon's registry (tenant-daemon/api/metrics.ts `DaemonMetrics.registry`).
 */
export function egressCounters(registry: Registry): EgressCounters {
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: L[]): Counter<L> =>
    (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers });
  return {
    requests: counter("paddock_egress_requests_total", "requests (HTTP requests and CONNECT tunnels) the egress proxy let through, by client and allow rule (its host pattern; `-` in audit mode without a rule)", ["client", "rule"]),
    bytes: counter("paddock_egress_bytes_total", "bytes the egress proxy moved, by client, allow rule and direction (up: to the upstream, down: to the VM)", ["client", "rule", "direction"]),
    denials: counter("paddock_egress_denials_total", "requests the egress proxy refused (mode enforce) or would have refused (mode audit), by client and reason", ["client", "reason", "mode"]),
  };
}

/** The proxy's counters and event limiter. */
export class EgressTelemetry {
  private readonly requests: Counter<"client" | "rule">;
  private readonly bytes: Counter<"client" | "rule" | "direction">;
  private readonly denials: Counter<"client" | "reason" | "mode">;
  private readonly keys = new Map<string, { last: number; suppressed: number }>();
  private window = { start: 0, sent: 0 };

  /**
   * @param registry the daemon's registry (tenant-daemon/api/metrics.ts `DaemonMetrics.registry`).
   * @param emit where events go (`EventLog.emit`).
   */
  constructor(registry: Registry, private readonly emit: (e: EgressEventInput) => void, private readonly now: () => number = Date.now) {
    ({ requests: this.requests, bytes: this.bytes, denials: this.denials } = egressCounters(registry));
  }

  /** Count one request or tunnel let through by `rule` (a host pattern, or `-`). */
  allowed(client: string, rule: string): void {
    this.requests.inc({ client, rule });
  }

  /** Count bytes moved for `rule`. */
  moved(client: string, rule: string, direction: "up" | "down", n: number): void {
    if (n > 0) this.bytes.inc({ client, rule, direction }, n);
  }

  /** Count a denial (`audit`: a would-be denial let through) and maybe tell it. */
  refused(r: Refusal, audit: boolean): void {
    this.denials.inc({ client: r.client, reason: r.reason, mode: audit ? "audit" : "enforce" });
    const type = audit ? "egress_audit" : "egress_denied";
    const t = this.now();
    const key = `${type}\0${r.client}\0${r.host}`;
    const k = this.keys.get(key);
    if (t - this.window.start >= EVENT_WINDOW_MS) this.window = { start: t, sent: 0 };
    if ((k && t - k.last < EVENT_WINDOW_MS) || this.window.sent >= EVENT_WINDOW_MAX) {
      if (k) k.suppressed++;
      else this.remember(key, { last: -Infinity, suppressed: 1 });
      return;
    }
    this.window.sent++;
    const suppressed = k?.suppressed ?? 0;
    this.remember(key, { last: t, suppressed: 0 });
    this.emit({ type, client: r.client, host: r.host, port: r.port, reason: r.reason, suppressed, ...(r.method !== undefined ? { method: r.method } : {}), ...(r.path !== undefined ? { path: r.path } : {}) });
  }

  private remember(key: string, v: { last: number; suppressed: number }): void {
    this.keys.delete(key);
    if (this.keys.size >= EVENT_KEYS_MAX) this.keys.delete(this.keys.keys().next().value as string);
    this.keys.set(key, v);
  }
}
