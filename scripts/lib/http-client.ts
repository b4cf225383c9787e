/**
 * A minimal real HTTP client for tests and benchmarks (test/helpers/http.ts re-exports it):
 * Unix socket or TCP, JSON or raw bodies.
 */
import http from "node:http";
import net from "node:net";

/** A finished response. */
export interface TestResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: unknown;
}

/** Where to send requests: a socket path or host:port. */
export type Target = { socketPath: string } | { host: string; port: number };

/**
 * Send one request and read the whole response.
 * `body`: an object is sent as JSON, a string/Buffer raw.
 */
export function request(target: Target, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const req = http.request({ ...target, method, path, headers: { ...(payload !== undefined ? { "content-length": String(Buffer.byteLength(payload)) } : {}), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** A free loopback TCP port (bound and released; a tiny race is accepted). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
