/**
 * Prometheus metrics of the supervisor (the admin API's `/metrics`), kept in a prom-client
 * registry of its own (https://github.com/siimots/prom-client), never the library's global one,
 * so two supervisors or a test in one process never share series.
 */
import { Counter, Gauge, Registry, type Metric, type MetricObjectWithValues, type MetricValue } from "prom-client";

/** Histogram buckets of proxied request latency, seconds. */
export const LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The `code` label of a request its client abandoned before any answer head was sent (no HTTP
 * status exists for it; the access line then has `aborted: true` and no `status`, README
 * "Logs"). Not a number, so it never mixes with an upstream's own codes (a daemon or a
 * previewed app may answer nginx's 499 itself), and one value, so the label stays bounded.
 */
export const ABORTED_CODE = "aborted";

/**
 * The `code` label of a finished or abandoned gateway response, from its `close`: its status
 * as a decimal string once the answer's head was sent (`res.headersSent`), else
 * {@link ABORTED_CODE} (Node's `res.statusCode` is then still its default 200, never sent).
 */
export function responseCodeLabel(res: { headersSent: boolean; statusCode: number }): string {
  return res.headersSent ? String(res.statusCode) : ABORTED_CODE;
}

/** The request count and latency histogram of one `tenant` × `code`, as plain numbers. */
interface RequestSeries {
  labels: { tenant: string; code: string };
  count: number;
  /** Sum of the latencies, seconds. */
  sum: number;
  /** Requests per bucket of {@link LATENCY_BUCKETS_S} (not cumulative); past the last bound only in `count`. */
  buckets: Float64Array;
}

/** A value of prom-client's exposition with the series' labels kept apart (`sharedLabels`), as its own histograms give them. */
type SharedValue = Omit<MetricValue<string>, "labels"> & { labels: Record<string, string | number>; metricName?: string; sharedLabels?: Record<string, string> };

/**
 * `paddock_gateway_requests_total` and `paddock_gateway_request_duration_seconds` as
 * prom-client registry entries (`registerMetric`) over plain numbers. Counting a request is a
 * Map lookup and a few additions: prom-client's own `Counter`/`Histogram` validate and hash the
 * label set on every `inc`/`observe` (even of a bound child), which was the larger part of the
 * gateway's metrics cost per request. The exposition is what prom-client writes for the same
 * Counter and Histogram (same names, labels, cumulative `le` buckets, `_sum`, `_count`).
 */
class RequestFamilies {
  /** By `tenant\0code`. */
  readonly series = new Map<string, RequestSeries>();

  /** Count one request of `tenant` with status `code` (decimal, or {@link ABORTED_CODE}) that took `seconds`. */
  observe(tenant: string, code: string, seconds: number): void {
    const key = `${tenant}\u0000${code}`;
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { tenant, code }, count: 0, sum: 0, buckets: new Float64Array(LATENCY_BUCKETS_S.length) };
      this.series.set(key, s);
    }
    s.count++;
    s.sum += seconds;
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) {
      if (seconds <= (LATENCY_BUCKETS_S[i] as number)) {
        (s.buckets[i] as number)++;
        break;
      }
    }
  }

  /** The registry entry of the counter. */
  counter(): Metric {
    const meta = { name: "paddock_gateway_requests_total", help: "Requests through the gateway by tenant and status code (aborted: the client left before any answer head).", type: "counter", aggregator: "sum" } as const;
    const get = async (): Promise<MetricObjectWithValues<MetricValue<string>>> => ({ ...meta, values: [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: s.count })) }) as unknown as MetricObjectWithValues<MetricValue<string>>;
    return { ...meta, get, reset: () => this.series.clear() } as unknown as Metric;
  }

  /** The registry entry of the latency histogram. */
  histogram(): Metric {
    const name = "paddock_gateway_request_duration_seconds";
    const meta = { name, help: "Gateway request latency (until the response ends).", type: "histogram", aggregator: "sum" } as const;
    const values = (): SharedValue[] => {
      const out: SharedValue[] = [];
      for (const s of this.series.values()) {
        let acc = 0;
        LATENCY_BUCKETS_S.forEach((le, i) => {
          acc += s.buckets[i] as number;
          out.push({ labels: { le }, value: acc, metricName: `${name}_bucket`, sharedLabels: s.labels });
        });
        out.push({ labels: { le: "+Inf" }, value: s.count, metricName: `${name}_bucket`, sharedLabels: s.labels });
        out.push({ labels: {}, value: s.sum, metricName: `${name}_sum`, sharedLabels: s.labels });
        out.push({ labels: {}, value: s.count, metricName: `${name}_count`, sharedLabels: s.labels });
      }
      return out;
    };
    // getForPromString: the text exposition (labels and shared labels apart); get: JSON, labels merged.
    const getForPromString = async (): Promise<unknown> => ({ ...meta, values: values() });
    const get = async (): Promise<unknown> => ({ ...meta, values: values().map(({ sharedLabels, labels, ...v }) => ({ ...v, labels: { ...labels, ...sharedLabels } })) });
    return { ...meta, get, getForPromString, reset: () => this.series.clear() } as unknown as Metric;
  }
}

/** Counters kept as events happen; gauges and restart counts are read from the registry at scrape time. */
export class SupervisorMetrics {
  /** This supervisor's own registry. */
  readonly registry = new Registry();
  private readonly tenants: Gauge<"status">;
  private readonly restarts: Counter<"tenant">;
  private readonly authFailures: Counter;
  /** The request counter and latency histogram, by tenant and code. */
  private readonly requests = new RequestFamilies();
  private readonly webhookDeliveries: Counter<"result">;
  private readonly previewRequests: Counter<"tenant" | "form" | "auth" | "code">;
  private readonly previewMints: Counter<"tenant">;

  constructor() {
    const registers = [this.registry];
    this.tenants = new Gauge({ name: "paddock_tenants", help: "Tenants by status.", labelNames: ["status"], registers });
    this.restarts = new Counter({ name: "paddock_daemon_restarts_total", help: "Tenant daemon restarts after crashes.", labelNames: ["tenant"], registers });
    this.authFailures = new Counter({ name: "paddock_gateway_auth_failures_total", help: "Gateway requests refused with 401.", registers });
    this.registry.registerMetric(this.requests.counter());
    this.webhookDeliveries = new Counter({ name: "paddock_webhook_deliveries_total", help: "Webhook delivery attempts by result: delivered (2xx), retry (failed, retried later), failed (given up), gone (410: webhook disabled).", labelNames: ["result"], registers });
    this.previewRequests = new Counter({ name: "paddock_preview_requests_total", help: "Preview requests and WebSocket upgrades through the gateway by tenant, address form (host|path), auth (tenant_token|preview_token|none) and status code (aborted: the client left before any answer head).", labelNames: ["tenant", "form", "auth", "code"], registers });
    this.previewMints = new Counter({ name: "paddock_preview_tokens_minted_total", help: "Preview tokens minted, by tenant.", labelNames: ["tenant"], registers });
    this.registry.registerMetric(this.requests.histogram());
  }

  /**
   * Count one proxied request (tenant `-` for unauthenticated ones) and its latency in seconds;
   * `code` is the answer's status, or {@link ABORTED_CODE} (see {@link responseCodeLabel}).
   */
  observeRequest(tenant: string, code: number | string, seconds: number): void {
    this.requests.observe(tenant, String(code), seconds);
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

  /**
   * Count one preview request (tenant `-` when unknown; `auth` `none` when refused before auth)
   * by its final status `code`, or {@link ABORTED_CODE} (see {@link responseCodeLabel}).
   */
  observePreview(tenant: string, form: string, auth: string, code: number | string): void {
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
