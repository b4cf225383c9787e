/**
 * nginx as the peer reverse proxy of figure 3/4: installed from Debian (`nginx-light`) when
 * missing, with service start-up blocked during the install (policy-rc.d), run in the
 * foreground by this process with a config of its own in a temp dir, listening on one
 * 127.0.0.1 port and proxying to a tenant's Unix socket, and stopped by pid. The package's
 * default site is never started; if an install started it anyway, it is stopped by the pid in
 * /run/nginx.pid.
 */
import { existsSync, promises as fs } from "node:fs";
import net from "node:net";
import path from "node:path";
import { run } from "../../../shared/exec.js";
import { startChild, stopChild, type BenchChild } from "./procs.js";
import { freePort } from "./supervisor-lab.js";
import type { HttpTarget } from "./http-load.js";

const NGINX = "/usr/sbin/nginx";
const POLICY = "/usr/sbin/policy-rc.d";

/** Make sure /usr/sbin/nginx exists (apt-get install nginx-light). @returns what was done. */
export async function ensureNginx(): Promise<string> {
  if (existsSync(NGINX)) return "nginx already installed";
  const madePolicy = !existsSync(POLICY);
  if (madePolicy) await fs.writeFile(POLICY, "#!/bin/sh\n# written by Paddock's bench during apt-get install nginx-light\nexit 101\n", { mode: 0o755 });
  try {
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    let r = await run("apt-get", ["install", "-y", "--no-install-recommends", "nginx-light"], { env, allowFailure: true, timeoutMs: 300_000 });
    if (r.exitCode !== 0) {
      await run("apt-get", ["update"], { env, timeoutMs: 300_000 });
      r = await run("apt-get", ["install", "-y", "--no-install-recommends", "nginx-light"], { env, timeoutMs: 300_000 });
    }
  } finally {
    if (madePolicy) await fs.rm(POLICY, { force: true });
  }
  // Never leave the package's default site running.
  const pid = Number((await fs.readFile("/run/nginx.pid", "utf8").catch(() => "")).trim());
  if (pid > 0 && (await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).includes("nginx")) process.kill(pid, "SIGQUIT");
  return "installed nginx-light with apt-get";
}

/** A running nginx of ours. */
export class NginxProxy {
  readonly port: number;
  private readonly dir: string;
  private readonly child: BenchChild;

  private constructor(dir: string, port: number, child: BenchChild) {
    this.dir = dir;
    this.port = port;
    this.child = child;
  }

  /**
   * Start nginx (1 worker, like the single-process gateway; upstream HTTP/1.1 without
   * keep-alive — the gateway keeps upstream connections alive, nginx here does not; no
   * buffering, so streams pass through; client connections kept for the whole run) on a free port.
   */
  static async start(upstreamSocket: string): Promise<NginxProxy> {
    const dir = await fs.mkdtemp("/tmp/pdknginx-");
    const port = await freePort();
    const conf = [
      "user root;",
      "worker_processes 1;",
      "daemon off;",
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      "events { worker_connections 4096; }",
      "http {",
      "  access_log off;",
      // Never close a client connection during a load cell (default: after 1000 requests):
      // autocannon 8 does not clear its in-flight queue when it reconnects, so every later
      // response of that connection would be timed from an older request's start.
      "  keepalive_requests 1000000;",
      ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `  ${t}_temp_path ${dir}/${t};`),
      "  client_max_body_size 0;",
      `  upstream tenant { server unix:${upstreamSocket}; }`,
      "  server {",
      `    listen 127.0.0.1:${port};`,
      "    location / {",
      "      proxy_pass http://tenant;",
      "      proxy_http_version 1.1;",
      '      proxy_set_header Connection "";',
      "      proxy_buffering off;",
      "      proxy_request_buffering off;",
      "      proxy_read_timeout 300s;",
      "    }",
      "  }",
      "}",
    ].join("\n");
    await fs.writeFile(path.join(dir, "nginx.conf"), conf);
    const child = startChild([NGINX, "-p", dir, "-e", path.join(dir, "error.log"), "-c", path.join(dir, "nginx.conf")]);
    const proxy = new NginxProxy(dir, port, child);
    for (let i = 0; ; i++) {
      const up = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
        s.once("error", () => resolve(false));
      });
      if (up) break;
      if (child.child.exitCode !== null || i > 200) {
        const log = await fs.readFile(path.join(dir, "error.log"), "utf8").catch(() => "");
        await proxy.stop();
        throw new Error(`nginx did not start: ${child.output()} ${log}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    return proxy;
  }

  /** nginx master pid. */
  get pid(): number {
    return this.child.child.pid as number;
  }

  /** Worker pids (children of the master). */
  async workerPids(): Promise<number[]> {
    const text = await fs.readFile(`/proc/${this.pid}/task/${this.pid}/children`, "utf8").catch(() => "");
    return text.split(" ").filter(Boolean).map(Number);
  }

  target(): HttpTarget {
    return { name: "nginx", host: "127.0.0.1", port: this.port };
  }

  /** Stop by pid (SIGTERM = fast shutdown) and remove the temp dir. */
  async stop(): Promise<void> {
    await stopChild(this.child);
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
