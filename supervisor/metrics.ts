/**
 * Prometheus metrics of the supervisor (the admin API's `/metrics`), hand-written text exposition
 * format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
 */

/** Histogram buckets of proxied request latency, seconds. */
export const LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface Histogram {
  counts: number[];
  sum: number;
  count: number;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(obj: Record<string, string>): string {
  const parts = Object.entries(obj).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** In-memory counters; gauges are read from the registry at scrape time. */
export class SupervisorMetrics {
  /** By `tenant\0code`: latency histogram; its `count` is also the request counter. */
  private readonly latency = new Map<string, Histogram>();
  private readonly restarts = new Map<string, number>();
  private authFailures = 0;

  /** Count one proxied request (tenant `-` for unauthenticated ones). Hot path: one Map lookup. */
  observeRequest(tenant: string, code: number, seconds: number): void {
    const key = `${tenant}\u0000${code}`;
    let h = this.latency.get(key);
    if (!h) {
      h = { counts: LATENCY_BUCKETS_S.map(() => 0), sum: 0, count: 0 };
      this.latency.set(key, h);
    }
    // Buckets are cumulative (le): every bucket from the first that holds `seconds` counts it.
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) if (seconds <= (LATENCY_BUCKETS_S[i] as number)) h.counts[i]! += 1;
    h.sum += seconds;
    h.count += 1;
  }

  observeAuthFailure(): void {
    this.authFailures++;
  }

  observeRestart(tenant: string): void {
    this.restarts.set(tenant, (this.restarts.get(tenant) ?? 0) + 1);
  }

  /** The exposition text; `tenantsByStatus` and `daemonRestarts` come from the registry. */
  render(tenantsByStatus: Record<string, number>, daemonRestarts: Record<string, number>): string {
    const out: string[] = [];
    out.push("# HELP paddock_tenants Tenants by status.", "# TYPE paddock_tenants gauge");
    for (const [status, n] of Object.entries(tenantsByStatus)) out.push(`paddock_tenants${labels({ status })} ${n}`);
    out.push("# HELP paddock_daemon_restarts_total Tenant daemon restarts after crashes.", "# TYPE paddock_daemon_restarts_total counter");
    for (const [tenant, n] of Object.entries(daemonRestarts)) out.push(`paddock_daemon_restarts_total${labels({ tenant })} ${n}`);
    out.push("# HELP paddock_gateway_auth_failures_total Gateway requests refused with 401.", "# TYPE paddock_gateway_auth_failures_total counter");
    out.push(`paddock_gateway_auth_failures_total ${this.authFailures}`);
    out.push("# HELP paddock_gateway_requests_total Requests through the gateway by tenant and status code.", "# TYPE paddock_gateway_requests_total counter");
    for (const [key, h] of this.latency) {
      const [tenant, code] = key.split("\u0000") as [string, string];
      out.push(`paddock_gateway_requests_total${labels({ tenant, code })} ${h.count}`);
    }
    out.push("# HELP paddock_gateway_request_duration_seconds Gateway request latency (until the response ends).", "# TYPE paddock_gateway_request_duration_seconds histogram");
    for (const [key, h] of this.latency) {
      const [tenant, code] = key.split("\u0000") as [string, string];
      LATENCY_BUCKETS_S.forEach((b, i) => out.push(`paddock_gateway_request_duration_seconds_bucket${labels({ tenant, code, le: String(b) })} ${h.counts[i]}`));
      out.push(`paddock_gateway_request_duration_seconds_bucket${labels({ tenant, code, le: "+Inf" })} ${h.count}`);
      out.push(`paddock_gateway_request_duration_seconds_sum${labels({ tenant, code })} ${h.sum}`);
      out.push(`paddock_gateway_request_duration_seconds_count${labels({ tenant, code })} ${h.count}`);
    }
    return out.join("\n") + "\n";
  }
}
