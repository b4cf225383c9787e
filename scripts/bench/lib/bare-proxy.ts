/**
 * A bare Node reverse proxy: Node's own floor for the gateway's work (figure 3,
 * scripts/bench/profile-gateway.ts). `http.createServer` + `http.request` on a keep-alive agent
 * to a tenant's Unix socket, the `Authorization` header dropped, the answer piped; no token
 * check, admission, log or metrics. Run as its own node process (started and stopped by pid)
 * on a free 127.0.0.1 port, as the gateway runs in the supervisor's.
 */
import { startChild, stopChild, type BenchChild } from "./procs.js";
import { freePort } from "./supervisor-lab.js";
import type { HttpTarget } from "./http-load.js";

/** The proxy's program (`node --input-type=module -e`); argv: socket path, port. */
const BARE_PROXY = `
import http from "node:http";
const [socketPath, port] = process.argv.slice(1);
const agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64 });
http.createServer((req, res) => {
  const headers = { ...req.headers };
  delete headers.authorization;
  const up = http.request({ socketPath, agent, method: req.method, path: req.url, headers }, (u) => {
    res.writeHead(u.statusCode, u.rawHeaders);
    u.pipe(res);
  });
  up.on("error", () => res.destroy());
  req.pipe(up);
}).listen(Number(port), "127.0.0.1", () => process.stdout.write("ready\\n"));
`;

/** A running bare Node proxy of ours. */
export class BareNodeProxy {
  readonly port: number;
  private readonly child: BenchChild;

  private constructor(port: number, child: BenchChild) {
    this.port = port;
    this.child = child;
  }

  /**
   * Start it in front of `upstreamSocket` and wait until it listens (≤ 10 s).
   * @throws Error when it exits or does not print "ready" in time (it is stopped first).
   */
  static async start(upstreamSocket: string): Promise<BareNodeProxy> {
    const port = await freePort();
    const child = startChild([process.execPath, "--input-type=module", "-e", BARE_PROXY, upstreamSocket, String(port)]);
    const proxy = new BareNodeProxy(port, child);
    for (let i = 0; !child.output().includes("ready"); i++) {
      if (child.child.exitCode !== null || i > 400) {
        const out = child.output();
        await proxy.stop();
        throw new Error(`bare Node proxy did not start: ${out}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return proxy;
  }

  /** The proxy's pid (one process: all of its CPU). */
  get pid(): number {
    return this.child.child.pid as number;
  }

  /** Load target on the proxy's port; `headers` are sent as given (e.g. the gateway's Bearer token, dropped here). */
  target(headers?: Record<string, string>): HttpTarget {
    return { name: "node", host: "127.0.0.1", port: this.port, ...(headers ? { headers } : {}) };
  }

  /** Stop by pid (SIGTERM). */
  async stop(): Promise<void> {
    await stopChild(this.child);
  }
}
