/**
 * HTTP clients for the benchmark: a closed-loop load generator (N concurrent clients, each
 * sending its next request as soon as the previous answer is read, for a fixed duration, every
 * latency recorded with the monotonic clock — sub-millisecond percentiles, which autocannon's
 * integer-millisecond histogram cannot give), a streamed-exec reader (payload bytes and time to
 * first byte), and streamed uploads/downloads for cp. Unix socket or loopback TCP only.
 */
import http from "node:http";
import { createReadStream } from "node:fs";
import { nowMs } from "./stats.js";

/** Where to send: a Unix socket or a loopback TCP port, with extra headers (auth). */
export interface HttpTarget {
  name: string;
  socketPath?: string;
  host?: string;
  port?: number;
  headers?: Record<string, string>;
}

/** Result of {@link closedLoop}. */
export interface LoadResult {
  requests: number;
  errors: number;
  /** Status codes other than 200 seen (count by code; `ERR` = transport error). */
  failures: Record<string, number>;
  wallMs: number;
  rps: number;
  latenciesMs: number[];
  /** CPU used by this (client) process during the run, as a share of one core (1 = 100 %). */
  clientCpu: number;
}

function endpoint(t: HttpTarget): { socketPath: string } | { host: string; port: number } {
  return t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: t.host ?? "127.0.0.1", port: t.port ?? 80 };
}

/**
 * `concurrency` clients each send `method path` back to back for `durationMs` over keep-alive
 * connections. A request counts as an error unless it answers 200.
 */
export async function closedLoop(target: HttpTarget, method: string, path: string, concurrency: number, durationMs: number): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let errors = 0;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const t0 = nowMs();
      const req = http.request({ ...endpoint(target), agent, method, path, headers: { ...(target.headers ?? {}), "content-length": "0" } }, (res) => {
        res.on("data", () => undefined);
        res.on("end", () => {
          latencies.push(nowMs() - t0);
          if (res.statusCode !== 200) {
            errors++;
            failures[String(res.statusCode)] = (failures[String(res.statusCode)] ?? 0) + 1;
          }
          resolve();
        });
        res.on("error", () => resolve());
      });
      req.on("error", () => {
        errors++;
        failures.ERR = (failures.ERR ?? 0) + 1;
        resolve();
      });
      req.end();
    });
  const cpu0 = process.cpuUsage();
  const t0 = nowMs();
  const deadline = t0 + durationMs;
  const worker = async (): Promise<void> => {
    while (nowMs() < deadline) await one();
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  const wallMs = nowMs() - t0;
  const cpu = process.cpuUsage(cpu0);
  agent.destroy();
  return { requests: latencies.length, errors, failures, wallMs, rps: (latencies.length - errors) / (wallMs / 1000), latenciesMs: latencies, clientCpu: (cpu.user + cpu.system) / 1000 / wallMs };
}

/** Result of {@link streamExec}. */
export interface StreamResult {
  status: number;
  /** stdout payload bytes decoded from the NDJSON frames. */
  payloadBytes: number;
  /** Bytes on the wire (NDJSON). */
  wireBytes: number;
  /** Request sent → first stdout payload frame, ms. */
  ttfbMs: number;
  totalMs: number;
  exitCode: number | undefined;
}

/** POST a streamed (NDJSON) exec and read it like a client: parse every frame, count payload. */
export function streamExec(target: HttpTarget, path: string): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    let ttfb = NaN;
    let payload = 0;
    let wire = 0;
    let rest = "";
    let exitCode: number | undefined;
    const req = http.request({ ...endpoint(target), method: "POST", path, headers: { ...(target.headers ?? {}), "content-length": "0" } }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        wire += chunk.length;
        const text = rest + chunk;
        const lines = text.split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) {
          if (!line) continue;
          const f = JSON.parse(line) as { type?: string; stdout?: string; exit_code?: number };
          if (f.type === "stdout" && f.stdout) {
            if (Number.isNaN(ttfb)) ttfb = nowMs() - t0;
            payload += f.stdout.length;
          }
          if (f.type === "exit") exitCode = f.exit_code;
        }
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, payloadBytes: payload, wireBytes: wire, ttfbMs: ttfb, totalMs: nowMs() - t0, exitCode }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** POST the file at `file` as the (streamed) request body. @returns status and ms. */
export function uploadFile(target: HttpTarget, path: string, file: string): Promise<{ status: number; ms: number; text: string }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.request({ ...endpoint(target), method: "POST", path, headers: { ...(target.headers ?? {}), "content-type": "application/octet-stream", "transfer-encoding": "chunked" } }, (res) => {
      let text = "";
      res.on("data", (c: Buffer) => (text += c.toString()));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, ms: nowMs() - t0, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    createReadStream(file).on("error", reject).pipe(req);
  });
}

/** GET `path` and count the body bytes (discarded). */
export function downloadCount(target: HttpTarget, path: string): Promise<{ status: number; ms: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    const req = http.request({ ...endpoint(target), method: "GET", path, headers: target.headers ?? {} }, (res) => {
      let bytes = 0;
      res.on("data", (c: Buffer) => (bytes += c.length));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, ms: nowMs() - t0, bytes }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}
