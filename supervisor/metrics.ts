/**
 * Prometheus metrics of the supervisor (the admin API's `/metrics`), kept in a prom-client
 * registry of its own (https://github.com/siimots/prom-client), never the library's global one,
 * so two supervisors or a test in one process never share series.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** Histogram buckets of proxied request latency, seconds. */
export const LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The request counter and latency histogram of one `tenant` × `code`. */
interface RequestSeries {
  count: Counter.Internal;
  latency: Histogram.Internal<"tenant" | "code">;
}

/** Counters kept as events happen; gauges and restart counts are read from the registry at scrape time. */
export class SupervisorMetrics {
  /** This supervisor's own registry. */
  readonly registry = new Registry();
  private readonly tenants: Gauge<"status">;
  private readonly restarts: Counter<"tenant">;
  private readonly authFailures: Counter;
  private readonly requests: Counter<"tenant" | "code">;
  private readonly latency: Histogram<"tenant" | "code">;
  private readonly webhookDeliveries: Counter<"result">;
  private readonly previewRequests: Counter<"tenant" | "form" | "auth" | "code">;
  private readonly previewMints: Counter<"tenant">;
  /** By `tenant\0code`: the bound series, so a request costs one Map lookup. */
  private readonly series = new Map<string, RequestSeries>();

  constructor() {
    const registers = [this.registry];
    this.tenants = new Gauge({ name: "paddock_tenants", help: "Tenants by status.", labelNames: ["status"], registers });
    this.restarts = new Counter({ name: "paddock_daemon_restarts_total", help: "Tenant daemon restarts after crashes.", labelNames: ["tenant"], registers });
    this.authFailures = new Counter({ name: "paddock_gateway_auth_failures_total", help: "Gateway requests refused with 401.", registers });
    this.requests = new Counter({ name: "paddock_gateway_requests_total", help: "Requests through the gateway by tenant and status code.", labelNames: ["tenant", "code"], registers });
    this.webhookDeliveries = new Counter({ name: "paddock_webhook_deliveries_total", help: "Webhook delivery attempts by result: delivered (2xx), retry (failed, retried later), failed (given up), gone (410: webhook disabled).", labelNames: ["result"], registers });
    this.previewRequests = new Counter({ name: "paddock_preview_requests_total", help: "Preview requests and WebSocket upgrades through the gateway by tenant, address form (host|path), auth (tenant_token|preview_token|none) and status code.", labelNames: ["tenant", "form", "auth", "code"], registers });
    this.previewMints = new Counter({ name: "paddock_preview_tokens_minted_total", help: "Preview tokens minted, by tenant.", labelNames: ["tenant"], registers });
    this.latency = new Histogram({ name: "paddock_gateway_request_duration_seconds", help: "Gateway request latency (until the response ends).", labelNames: ["tenant", "code"], buckets: LATENCY_BUCKETS_S, registers });
  }

  /** Count one proxied request (tenant `-` for unauthenticated ones) and its latency in seconds. */
  observeRequest(tenant: string, code: number, seconds: number): void {
    const key = `${tenant}\u0000${code}`;
    let s = this.series.get(key);
    if (!s) {
      const labels = { tenant, code: String(code) };
      s = { count: this.requests.labels(labels), latency: this.latency.labels(labels) };
      this.series.set(key, s);
    }
    s.count.inc();
    s.latency.observe(seconds);
  }

  /** Count one webhook delivery attempt by its result. */
  observeWebhookDelivery(result: "delivered" | "retry" | "failed" | "gone"): void {
    this.webhookDeliveries.inc({ result });
  }

  /** Report `depth()` (pending webhook deliveries over all tenants) as `paddock_webhook_outbox_depth` at each scrape. */
  watchOutboxDepth(depth: () => number): void {
    new Gauge({ name: "paddock_webhook_outbox_depth", help: "Webhook deliveries pending in the outboxes (queued or between attempts).", registers: [this.registry], collect() {
      this.set(depth());
    } });
  }

  /** Count one preview request (tenant `-` when unknown; `auth` `none` when refused before auth) by its final status `code`. */
  observePreview(tenant: string, form: string, auth: string, code: number): void {
    this.previewRequests.inc({ tenant, form, auth, code: String(code) });
  }

  /** Count one minted preview token. */
  observePreviewMint(tenant: string): void {
    this.previewMints.inc({ tenant });
  }

  /** Count one gateway request refused with 401. */
  observeAuthFailure(): void {
    this.authFailures.inc();
  }

  /** The Content-Type of {@link render}'s text (text exposition format 0.0.4). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The exposition text (https://prometheus.io/docs/instrumenting/exposition_formats/);
   * `tenantsByStatus` and `daemonRestarts` (by tenant id) come from the tenant registry.
   */
  async render(tenantsByStatus: Record<string, number>, daemonRestarts: Record<string, number>): Promise<string> {
    this.tenants.reset();
    for (const [status, n] of Object.entries(tenantsByStatus)) this.tenants.set({ status }, n);
    // A counter whose value is owned by the registry: set it by resetting and adding the count.
    this.restarts.reset();
    for (const [tenant, n] of Object.entries(daemonRestarts)) this.restarts.inc({ tenant }, n);
    return this.registry.metrics();
  }
}
