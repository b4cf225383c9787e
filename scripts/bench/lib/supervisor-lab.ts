/**
 * The supervisor lab: a real `node dist/cli/paddock.js up --config <temp>` (gateway on a free
 * 127.0.0.1 port, admin API on a Unix socket in a temp dir, a network pool of a random /18 of
 * 198.18.0.0/15 that no host route uses, cut into /24 tenant blocks) and the admin calls the
 * figures need. {@link SupervisorLab.stop} deletes every tenant it created (admin DELETE),
 * SIGTERMs the supervisor by pid (it stops its daemons) and removes the temp dir.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../../shared/exec.js";
import { cidrOverlaps, formatCidr, parseCidr } from "../../../shared/cidr.js";
import { request, type TestResponse } from "../../lib/http-client.js";
import { CURRENT_PATHS, type BuildPaths } from "./builds.js";
import type { HttpTarget } from "./http-load.js";
import { startChild, stopChild, type BenchChild } from "./procs.js";
import { nowMs } from "./stats.js";

export { freePort } from "../../lib/http-client.js";
import { freePort } from "../../lib/http-client.js";

/** A random /18 of 198.18.0.0/15 that overlaps no IPv4 route or address of the host, nor `avoid`. */
async function freePool(avoid: readonly string[] = []): Promise<string> {
  const routes = (await run("ip", ["-4", "route", "show", "table", "all"])).stdout + (await run("ip", ["-4", "addr"])).stdout;
  const used = [...routes.matchAll(/\b(198\.1[89]\.\d+\.\d+)(?:\/(\d+))?/g)].map((m) => parseCidr(`${m[1]}/${m[2] ?? "32"}`, { strict: false }));
  used.push(...avoid.map((c) => parseCidr(c, { strict: false })));
  const candidates = Array.from({ length: 8 }, (_, i) => ({ base: (parseCidr("198.18.0.0/15").base + i * 2 ** 14) >>> 0, prefix: 18 }));
  const free = candidates.filter((c) => !used.some((u) => cidrOverlaps(c, u)));
  const pick = free[Math.floor(Math.random() * free.length)];
  if (!pick) throw new Error("no free /18 in 198.18.0.0/15 for the bench's tenant pool");
  return formatCidr(pick);
}

/** Options of {@link SupervisorLab.start}. */
export interface LabOptions {
  /** node flags before the script (e.g. `--cpu-prof` for scripts/bench/profile-gateway.ts); the tenant daemons do not get them. */
  nodeArgs?: readonly string[];
  /** Prefix of a tenant block cut from the lab's /18 (default 24: 64 tenants; 26: 256). */
  blockPrefix?: number;
  /** Extra templates (name → YAML text) written into the lab's own templates dir next to the project's. */
  templates?: Record<string, string>;
  /** The build to run (lib/builds.ts): its CLI, its templates, and so its own daemons. Default this checkout. */
  build?: BuildPaths;
  /** Pools of other labs running at the same time (the new lab's /18 overlaps none). */
  avoidPools?: readonly string[];
}

/** A tenant the lab created. */
export interface LabTenant {
  id: string;
  token: string;
  socketPath: string;
}

export class SupervisorLab {
  readonly dir: string;
  readonly adminSocket: string;
  readonly gatewayPort: number;
  readonly pool: string;
  /** The build it runs (its daemons are that build's, spawned by its supervisor). */
  readonly build: BuildPaths;
  /** Every tenant id ever created here (for the leak check). */
  readonly createdIds: string[] = [];
  private readonly live = new Set<string>();
  /** Tenant creates retried because another user's network overlapped the block. */
  overlapRetries = 0;
  private child: BenchChild | undefined;
  private adminToken = "";
  private argv: string[] = [];

  private constructor(dir: string, gatewayPort: number, pool: string, build: BuildPaths) {
    this.dir = dir;
    this.build = build;
    this.adminSocket = path.join(dir, "adm.sock");
    this.gatewayPort = gatewayPort;
    this.pool = pool;
  }

  /**
   * Start `paddock up` and wait for the admin API.
   * @throws Error with its output when it exits.
   */
  static async start(imageDir: string, opts: LabOptions = {}): Promise<SupervisorLab> {
    const dir = await fs.mkdtemp("/tmp/pdksup-");
    // Traversable by the VMs' unprivileged roots (user namespaces), which reach their rootfs below it.
    await fs.chmod(dir, 0o711);
    const lab = new SupervisorLab(dir, await freePort(), await freePool(opts.avoidPools), opts.build ?? CURRENT_PATHS);
    try {
      const cfg = path.join(dir, "supervisor.yaml");
      let templatesDir = path.join(lab.build.root, "templates");
      if (opts.templates) {
        templatesDir = path.join(dir, "templates");
        await fs.cp(path.join(lab.build.root, "templates"), templatesDir, { recursive: true });
        for (const [name, text] of Object.entries(opts.templates)) await fs.writeFile(path.join(templatesDir, `${name}.yaml`), text);
      }
      await fs.writeFile(cfg, JSON.stringify({
        // The bench measures the gateway's own cost: its per-tenant caps must not be what it meets.
        gateway: { address: `127.0.0.1:${lab.gatewayPort}`, limits: { max_connections: 1_000_000, max_requests: 1_000_000, requests_per_second: 1_000_000, burst: 1_000_000 } },
        admin: { address: lab.adminSocket },
        state_dir: path.join(dir, "s"),
        run_dir: path.join(dir, "r"),
        image_dir: imageDir,
        network: { pool: lab.pool, block_prefix: opts.blockPrefix ?? 24 },
        templates: { dir: templatesDir },
        stop_daemons_on_exit: true,
      }));
      lab.argv = [process.execPath, ...(opts.nodeArgs ?? []), lab.build.cli, "up", "--config", cfg];
      await lab.launch(30_000);
      lab.adminToken = (await fs.readFile(path.join(dir, "s", "supervisor", "admin-token"), "utf8")).trim();
      return lab;
    } catch (err) {
      await lab.stop();
      throw err;
    }
  }

  /** Start the supervisor process and wait until its admin API answers. @throws Error with its output. */
  private async launch(timeoutMs: number): Promise<void> {
    const child = startChild(this.argv);
    this.child = child;
    const deadline = nowMs() + timeoutMs;
    for (;;) {
      if (child.child.exitCode !== null) throw new Error(`paddock up exited ${child.child.exitCode}:\n${child.output()}`);
      const ok = await request({ socketPath: this.adminSocket }, "GET", "/healthz").then((r) => r.status === 200, () => false);
      if (ok) return;
      if (nowMs() > deadline) throw new Error(`supervisor not ready after ${timeoutMs / 1000} s:\n${child.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * A supervisor crash and restart: SIGKILL the supervisor by pid (its daemons keep running:
   * nothing stops them), start it again on the same config and wait for its admin API.
   * @returns ms from the kill to the new admin API answering (includes waiting for the killed
   *   supervisor's ownership lock to go stale, supervisor/main.ts).
   */
  async crashAndRestart(timeoutMs = 300_000): Promise<number> {
    if (this.child) await stopChild(this.child, "SIGKILL");
    const t0 = nowMs();
    await this.launch(timeoutMs);
    return nowMs() - t0;
  }

  /** The supervisor's pid (`paddock up` runs it in-process). */
  get pid(): number {
    return this.child?.child.pid as number;
  }

  admin(method: string, p: string, body?: unknown): Promise<TestResponse> {
    return request({ socketPath: this.adminSocket }, method, `/admin/v1${p}`, body, { authorization: `Bearer ${this.adminToken}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) });
  }

  /** The gateway as a load target for `token`. */
  gateway(token: string): HttpTarget {
    return { name: "gateway", host: "127.0.0.1", port: this.gatewayPort, headers: { authorization: `Bearer ${token}` } };
  }

  /**
   * `POST /admin/v1/tenants` (template sandbox), then poll `GET /nodes` through the gateway
   * until it answers 200. Other engineers' tests pick networks in 198.18.0.0/15 too: when the
   * daemon refuses to start with ERR_NETWORK_OVERLAP, the failed tenant is kept (so its block
   * stays taken and the next try gets another) and the create is retried under `id` + `r<k>`,
   * up to 3 times; {@link SupervisorLab.overlapRetries} counts these.
   * @returns the tenant, ms until the admin call returned 201 and ms until the first 200
   *   (of the attempt that succeeded).
   */
  async createTenant(id: string, limits: Record<string, number> = { max_vms: 64 }, template = "sandbox"): Promise<{ tenant: LabTenant; postMs: number; readyMs: number }> {
    for (let attempt = 0; ; attempt++) {
      const tid = attempt === 0 ? id : `${id.slice(0, 10)}r${attempt}`;
      const t0 = nowMs();
      this.createdIds.push(tid);
      this.live.add(tid);
      const r = await this.admin("POST", "/tenants", { id: tid, template, limits });
      const postMs = nowMs() - t0;
      if (r.status !== 201) {
        if (attempt < 3 && r.text.includes("ERR_NETWORK_OVERLAP")) {
          this.overlapRetries++;
          continue;
        }
        throw new Error(`tenant create ${tid} failed (${r.status}): ${r.text}`);
      }
      const body = r.json as { token: string; socket_path: string };
      const tenant = { id: tid, token: body.token, socketPath: body.socket_path };
      const gw = this.gateway(tenant.token);
      for (;;) {
        const g = await request({ host: gw.host as string, port: gw.port as number }, "GET", "/nodes", undefined, gw.headers).catch(() => undefined);
        if (g?.status === 200) break;
        if (nowMs() - t0 > 120_000) throw new Error(`tenant ${tid} not ready through the gateway after 120 s (last ${g?.status})`);
        await new Promise((res) => setTimeout(res, 5));
      }
      return { tenant, postMs, readyMs: nowMs() - t0 };
    }
  }

  /** `DELETE /admin/v1/tenants/<id>`. @returns ms. @throws Error unless 204. */
  async deleteTenant(id: string): Promise<number> {
    const t0 = nowMs();
    const r = await this.admin("DELETE", `/tenants/${id}`);
    if (r.status !== 204 && r.status !== 404) throw new Error(`tenant delete ${id} failed (${r.status}): ${r.text}`);
    this.live.delete(id);
    return nowMs() - t0;
  }

  /** The tenant daemon's pid (admin GET). */
  async daemonPid(id: string): Promise<number> {
    const r = await this.admin("GET", `/tenants/${id}`);
    return (r.json as { daemon: { pid: number } }).daemon.pid;
  }

  /**
   * Delete what is left (4 at a time), stop the supervisor by pid, remove the temp dir. A
   * supervisor that died while tenants were left is started again first (it adopts their
   * daemons), so they are deleted through it rather than left running.
   */
  async stop(): Promise<void> {
    const alive = (): boolean => this.child !== undefined && this.child.child.exitCode === null && this.child.child.signalCode === null;
    if (this.live.size > 0 && !alive() && this.argv.length > 0) await this.launch(300_000).catch(() => undefined);
    if (this.child && alive()) {
      const ids = [...this.live];
      await Promise.all(Array.from({ length: 4 }, async () => {
        for (let id = ids.shift(); id !== undefined; id = ids.shift()) await this.deleteTenant(id).catch(() => undefined);
      }));
      await stopChild(this.child);
    }
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
