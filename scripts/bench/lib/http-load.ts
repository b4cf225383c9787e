/**
 * HTTP clients for the benchmark: the load generator of figure 3 ({@link LoadClient}: the
 * `autocannon` package in a child process, lib/autocannon-child.ts — N keep-alive connections
 * in a closed loop for a fixed duration, every response time kept with sub-millisecond
 * resolution), a streamed-exec reader (payload bytes and time to first byte), and streamed
 * uploads/downloads for cp. Unix socket or loopback TCP only.
 */
import http from "node:http";
import { fork, type ChildProcess } from "node:child_process";
import { createReadStream } from "node:fs";
import { fileURLToPath } from "node:url";
import { nowMs } from "./stats.js";

/** Where to send: a Unix socket or a loopback TCP port, with extra headers (auth). */
export interface HttpTarget {
  name: string;
  socketPath?: string;
  host?: string;
  port?: number;
  headers?: Record<string, string>;
}

/** One load cell: `connections` clients send `method path` back to back for `durationMs`. */
export interface LoadJob {
  target: HttpTarget;
  method: string;
  path: string;
  connections: number;
  durationMs: number;
}

/** Result of one {@link LoadJob}. */
export interface LoadResult {
  /** Responses received (any status). */
  requests: number;
  /** Responses other than 200 plus transport errors. */
  errors: number;
  /** Status codes other than 200 seen (count by code; `ERR` = transport error or timeout). */
  failures: Record<string, number>;
  /** Wall time of the run in the client, ms (autocannon stops at the first 1 s sample tick after `durationMs`). */
  wallMs: number;
  /** 200 responses per second of `wallMs`. */
  rps: number;
  /** Every response's time, ms (request written → response complete). */
  latenciesMs: number[];
  /**
   * False when the response times add up to more than connections × wall time: the server
   * closed keep-alive connections and autocannon timed later responses from stale starts.
   */
  latencyValid: boolean;
  /** CPU used by the client process during the run, as a share of one core (1 = 100 %). */
  clientCpu: number;
  /** autocannon's own counters, for cross-checking. */
  autocannon: { "2xx": number; non2xx: number; errors: number; timeouts: number; durationS: number };
}

const CHILD = fileURLToPath(new URL("./autocannon-child.js", import.meta.url));

/**
 * A forked autocannon child (lib/autocannon-child.ts) that runs load cells one at a time.
 * {@link LoadClient.close} ends it (the IPC channel closes, the child exits).
 */
export class LoadClient {
  private constructor(private readonly child: ChildProcess) {}

  /** Fork the child and wait for it to load autocannon. @throws Error when it exits first. */
  static async start(): Promise<LoadClient> {
    // execArgv: [] — not the bench's own node flags (e.g. --cpu-prof).
    const child = fork(CHILD, [], { execArgv: [], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    await new Promise<void>((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`autocannon child exited ${code} before it was ready`));
      child.once("exit", onExit);
      child.once("error", reject);
      child.once("message", () => {
        child.off("exit", onExit);
        resolve();
      });
    });
    return new LoadClient(child);
  }

  /** The child's pid. */
  get pid(): number {
    return this.child.pid as number;
  }

  /** Run one cell. @throws Error when autocannon fails to start or the child dies. */
  run(job: LoadJob): Promise<LoadResult> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`autocannon child exited ${code} during a run`));
      this.child.once("exit", onExit);
      this.child.once("message", (msg: { type: string; result?: LoadResult; message?: string }) => {
        this.child.off("exit", onExit);
        if (msg.type === "result" && msg.result) resolve(msg.result);
        else reject(new Error(`autocannon: ${msg.message ?? JSON.stringify(msg)}`));
      });
      this.child.send({ type: "run", job });
    });
  }

  /** Close the channel; the child exits. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.disconnect();
    await exited;
  }
}

function endpoint(t: HttpTarget): { socketPath: string } | { host: string; port: number } {
  return t.socketPath !== undefined ? { socketPath: t.socketPath } : { host: t.host ?? "127.0.0.1", port: t.port ?? 80 };
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

/**
 * POST a streamed (NDJSON) exec and read it like a client: parse every frame, count payload.
 * Linear in the bytes read, as Go's `bufio.Reader.ReadBytes('\n')` in the Slicer SDK: only a
 * chunk's new bytes are scanned for newlines, and a line spanning reads is joined once.
 */
export function streamExec(target: HttpTarget, path: string): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const t0 = nowMs();
    let ttfb = NaN;
    let payload = 0;
    let wire = 0;
    let pending: Buffer[] = [];
    let exitCode: number | undefined;
    const frame = (line: Buffer): void => {
      if (line.length === 0) return;
      const f = JSON.parse(line.toString("utf8")) as { type?: string; stdout?: string; exit_code?: number };
      if (f.type === "stdout" && f.stdout) {
        if (Number.isNaN(ttfb)) ttfb = nowMs() - t0;
        payload += f.stdout.length;
      }
      if (f.type === "exit") exitCode = f.exit_code;
    };
    const req = http.request({ ...endpoint(target), method: "POST", path, headers: { ...(target.headers ?? {}), "content-length": "0" } }, (res) => {
      res.on("data", (chunk: Buffer) => {
        wire += chunk.length;
        let from = 0;
        for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
          const tail = chunk.subarray(from, nl);
          frame(pending.length === 0 ? tail : Buffer.concat([...pending, tail]));
          pending = [];
          from = nl + 1;
        }
        if (from < chunk.length) pending.push(chunk.subarray(from));
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
