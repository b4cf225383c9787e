/**
 * The load generator of figure 3, run as a child process of the bench (forked with an IPC
 * channel by lib/http-load.ts {@link import("./http-load.js").LoadClient}): the `autocannon`
 * package drives N keep-alive connections, each sending its next request
 * as soon as the previous answer is read (closed loop, pipelining 1), for a fixed duration.
 *
 * Being its own process, its event loop shares nothing with the bench's bookkeeping, and its
 * CPU is measured on its own (`process.cpuUsage()` across the run).
 *
 * Latency: autocannon's own histogram keeps integer milliseconds, too coarse for a ≤ 1 ms
 * target on sub-millisecond requests, so every response's time (autocannon's `response`
 * event: request written → response complete, `process.hrtime`, fractional ms) is sent back
 * and the percentiles are computed by the bench (lib/stats.ts).
 *
 * Protocol: child → `{ type: "ready" }`; parent → `{ type: "run", job: LoadJob }`; child →
 * `{ type: "result", result: LoadResult }` (or `{ type: "error", message }`); the child exits
 * when the channel closes.
 */
import autocannon from "autocannon";
import type { LoadJob, LoadResult } from "./http-load.js";

function send(msg: unknown): void {
  process.send?.(msg);
}

async function runJob(job: LoadJob): Promise<LoadResult> {
  const t = job.target;
  const url = t.socketPath !== undefined ? "http://localhost" : `http://${t.host ?? "127.0.0.1"}:${t.port ?? 80}`;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({
      // With socketPath, the URL still gives the Host header and the request path.
      url: url + job.path,
      ...(t.socketPath !== undefined ? { socketPath: t.socketPath } : {}),
      method: job.method as autocannon.Request["method"],
      headers: { ...(t.headers ?? {}), "content-length": "0" },
      connections: job.connections,
      pipelining: 1,
      duration: job.durationMs / 1000,
      // A slow answer is a latency to record, not an error to retry.
      timeout: 60,
    }, (err: unknown, res: autocannon.Result) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)));
    instance.on("response", (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
      latencies.push(responseTime);
      if (statusCode !== 200) failures[String(statusCode)] = (failures[String(statusCode)] ?? 0) + 1;
    });
    instance.on("reqError", () => {
      failures.ERR = (failures.ERR ?? 0) + 1;
    });
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const errors = Object.values(failures).reduce((a, b) => a + b, 0);
  // With one request in flight per connection, the response times of a connection cannot add
  // up to more than the run. They do when the server closes a keep-alive connection: autocannon
  // reconnects without clearing its queue of in-flight requests, and every later response is
  // timed from an older request's start. Such latencies are reported as invalid.
  const latencySumMs = latencies.reduce((a, b) => a + b, 0);
  const latencyValid = latencySumMs <= wallMs * job.connections * 1.02;
  const ok = latencies.length - (errors - (failures.ERR ?? 0));
  return {
    requests: latencies.length,
    errors,
    failures,
    wallMs,
    rps: ok / (wallMs / 1000),
    latenciesMs: latencies,
    latencyValid,
    clientCpu: (cpu.user + cpu.system) / 1000 / wallMs,
    autocannon: { "2xx": result["2xx"], non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts, durationS: result.duration },
  };
}

process.on("message", (msg: { type: string; job?: LoadJob }) => {
  if (msg.type !== "run" || !msg.job) return;
  runJob(msg.job).then(
    (result) => send({ type: "result", result }),
    (err: unknown) => send({ type: "error", message: (err as Error).message }),
  );
});
process.on("disconnect", () => process.exit(0));
send({ type: "ready" });
