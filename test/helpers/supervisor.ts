/**
 * The tests' supervisor fixture: {@link TestSupervisor} runs a REAL supervisor on a fresh temp
 * dir, either in this process (`runSupervisor`, supervisor/main.ts) or as a child process
 * (`node dist/cli/paddock.js up`, so it can be kill -9'd), and gives the test its admin and
 * gateway clients. {@link TestSupervisor.destroy} stops it and everything it started (tenants,
 * daemons, VMs) and removes the temp dir, also after a failed start.
 *
 * Tenant daemons are either played by test/fixtures/echo-daemon ({@link echoDaemonConfig}: no
 * root, no VMs) or real (`dist/tenant-daemon/main.js`, e.g. {@link realDaemonConfig}: root,
 * runc, the debian-12 image). Typical use:
 *
 *     sup = await TestSupervisor.create({ config: (p) => ({ ...echoDaemonConfig(p), restart: FAST_RESTART }) });
 *     await sup.start();
 *     …
 *     after(() => sup?.destroy());
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { existsSync, promises as fs, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { runSupervisor, type RunningSupervisor } from "../../supervisor/main.js";
import { silentLogger } from "../../shared/logger.js";
import { childEnded, endChild } from "../../scripts/lib/child-stop.js";
import { DAEMON_MAIN, PROJECT_ROOT } from "./daemon.js";
import { request, type Target, type TestResponse } from "./http.js";
import { TEST_IMAGE_DIR } from "./prerequisites.js";
import { pidAlive } from "../../shared/proc.js";

/** The compiled `paddock` CLI (`node CLI_MAIN up …` runs the supervisor). */
export const CLI_MAIN = path.join(PROJECT_ROOT, "dist/cli/paddock.js");
/** The leak checker (`LEAKS_SH --tenant <id> [--remove]`). */
export const LEAKS_SH = path.join(PROJECT_ROOT, "scripts/leaks.sh");
/** The compiled stand-in tenant daemon (test/fixtures/echo-daemon.ts). */
export const ECHO_DAEMON = path.join(PROJECT_ROOT, "dist/test/fixtures/echo-daemon.js");

/**
 * Restart settings for echo daemons: fast backoff (50 → 400 ms), 4 crashes in a minute,
 * 20 s to become ready, 5 s to stop (supervisor config `restart:`).
 */
export const FAST_RESTART = Object.freeze({ initial_backoff_ms: 50, max_backoff_ms: 400, max_crashes: 4, crash_window_ms: 60_000, ready_timeout_ms: 20_000, stop_timeout_ms: 5000 });

/** The paths of one {@link TestSupervisor}, known before its config is written. */
export interface SupervisorPaths {
  /** The temp dir (mode 0711) holding everything below. */
  dir: string;
  stateDir: string;
  runDir: string;
}

/**
 * An image store holding a `debian-12` with an empty rootfs (test/fixtures/images): what a
 * tenant create checks (supervisor/tenant-provisioning.ts), for daemons that run no VM.
 */
export const FIXTURE_IMAGE_DIR = path.join(PROJECT_ROOT, "test/fixtures/images");

/**
 * Config for tenant daemons played by the echo fixture: gateway on 127.0.0.1:0, admin API on
 * `<run>/admin.sock`, the repository's templates, the fixture image store
 * ({@link FIXTURE_IMAGE_DIR}). Tests add `restart`, `deny`, limits…
 */
export function echoDaemonConfig(p: SupervisorPaths): Record<string, unknown> {
  return { gateway: { address: "127.0.0.1:0" }, admin: { address: path.join(p.runDir, "admin.sock") }, templates: { dir: path.join(PROJECT_ROOT, "templates") }, image_dir: FIXTURE_IMAGE_DIR, daemon_entry: ECHO_DAEMON };
}

/**
 * Config for real tenant daemons on a shared host: gateway and admin API on 127.0.0.1:0,
 * images from TEST_IMAGE_DIR, a random free /20 of 198.18.0.0/15 cut into /24 blocks (others'
 * tenants use 169.254.0.0/16), restarts tuned for crash tests.
 */
export function realDaemonConfig(): Record<string, unknown> {
  return {
    gateway: { address: "127.0.0.1:0" },
    admin: { address: "127.0.0.1:0" },
    image_dir: TEST_IMAGE_DIR,
    network: { pool: randomTestPool(), block_prefix: 24 },
    restart: { initial_backoff_ms: 200, max_backoff_ms: 2000, max_crashes: 50, crash_window_ms: 60_000, stable_after_ms: 5000, ready_timeout_ms: 60_000, stop_timeout_ms: 10_000 },
  };
}

/**
 * A random /20 of 198.18.0.0/15 (32 possible) holding no address of any host interface
 * right now (others' tenants and benches use the same block).
 */
export function randomTestPool(): string {
  const used = new Set<number>();
  try {
    for (const m of execFileSync("ip", ["-4", "-o", "addr"], { encoding: "utf8" }).matchAll(/inet (198)\.(18|19)\.(\d+)\./g)) used.add((Number(m[2]) - 18) * 16 + (Number(m[3]) >> 4));
  } catch {}
  const free = Array.from({ length: 32 }, (_, n) => n).filter((n) => !used.has(n));
  const n = free[crypto.randomInt(0, Math.max(1, free.length))] ?? crypto.randomInt(0, 32);
  return `198.${18 + (n >> 4)}.${(n & 15) * 16}.0/20`;
}

/** Pids of `node …/tenant-daemon/{launch,main}.js up <configPath>` processes (from /proc). */
export function daemonPidsOf(configPath: string): number[] {
  const out: number[] = [];
  let names: string[] = [];
  try {
    names = readdirSync("/proc");
  } catch {}
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const argv = readFileSync(`/proc/${n}/cmdline`, "utf8").split("\0");
      if (argv.some((a) => a.endsWith("tenant-daemon/main.js") || a.endsWith("tenant-daemon/launch.js")) && argv.includes("up") && argv.includes(configPath)) out.push(Number(n));
    } catch {}
  }
  return out;
}

/** `host:port` → a TCP target; anything else is a Unix socket path. */
function targetOf(addr: string): Target {
  if (addr.startsWith("/")) return { socketPath: addr };
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/** Options of {@link TestSupervisor.create}. */
export interface TestSupervisorOptions {
  /**
   * The supervisor config, written as JSON to `<dir>/supervisor.yaml` with `state_dir` and
   * `run_dir` added (unless given). A function gets the paths first. Undefined: no config
   * file (flags and environment only).
   */
  config?: Record<string, unknown> | ((p: SupervisorPaths) => Record<string, unknown>);
  /** Use an existing state dir (e.g. a small loop-mounted fs); default `<dir>/state`. */
  stateDir?: string;
  /** `in-process` (default): runSupervisor here; `child`: `node dist/cli/paddock.js up`. */
  mode?: "in-process" | "child";
  /** In-process only: `runSupervisor` flags besides the state and run dirs. */
  flags?: Record<string, unknown>;
  /** In-process: the environment the config loader reads (default `{}`). Child: added to ours. */
  env?: Record<string, string>;
  /** In-process only: the gateway's request-body idle bound, ms. */
  gatewayBodyIdleMs?: number;
  /**
   * Child only: a command that execs the rest of its argv, run in front of `node …/paddock.js up`
   * (e.g. `["unshare", "--mount", "--propagation", "private"]`: the supervisor and its daemons
   * then see a private mount table the test can change with nsenter). It must exec, not fork,
   * so the child's pid is the supervisor's.
   */
  wrap?: readonly string[];
}

/**
 * A supervisor on a temp dir `/tmp/pdk-*` (0711: VMs' unprivileged roots traverse it to their
 * rootfs). `gateway` and `admin` are the bound addresses (`host:port` or a socket path) once
 * started; `adminToken` the token from `<state>/supervisor/admin-token`.
 */
export class TestSupervisor implements SupervisorPaths {
  readonly dir: string;
  readonly stateDir: string;
  readonly runDir: string;
  /** `<dir>/supervisor.yaml`, or undefined when no config file was written. */
  readonly configFile: string | undefined;
  readonly mode: "in-process" | "child";
  /** The in-process supervisor while it runs. */
  running: RunningSupervisor | undefined;
  /** The child process while it runs (child mode). */
  child: ChildProcess | undefined;
  gateway = "";
  admin = "";
  adminToken = "";
  /** What the child wrote on stdout and stderr (its JSON log lines), newest 1 MB at least. */
  output = "";
  private readonly opts: TestSupervisorOptions;

  private constructor(p: SupervisorPaths, configFile: string | undefined, opts: TestSupervisorOptions) {
    this.dir = p.dir;
    this.stateDir = p.stateDir;
    this.runDir = p.runDir;
    this.configFile = configFile;
    this.mode = opts.mode ?? "in-process";
    this.opts = opts;
  }

  /**
   * Make the temp dir and write the config (nothing started yet).
   * @throws Error from the file system, after removing the dir.
   */
  static async create(opts: TestSupervisorOptions = {}): Promise<TestSupervisor> {
    const dir = await fs.mkdtemp("/tmp/pdk-");
    try {
      await fs.chmod(dir, 0o711);
      const p: SupervisorPaths = { dir, stateDir: opts.stateDir ?? path.join(dir, "state"), runDir: path.join(dir, "run") };
      let configFile: string | undefined;
      if (opts.config !== undefined) {
        configFile = path.join(dir, "supervisor.yaml");
        const body = typeof opts.config === "function" ? opts.config(p) : opts.config;
        await fs.writeFile(configFile, JSON.stringify({ state_dir: p.stateDir, run_dir: p.runDir, ...body }));
      }
      return new TestSupervisor(p, configFile, opts);
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Start the supervisor and wait until it is ready (child: its "supervisor ready" log line),
   * then read the admin token.
   * @throws Error when it fails to start (child: with its output; the child is killed).
   */
  async start(timeoutMs = 120_000): Promise<void> {
    if (this.mode === "in-process") {
      this.running = await runSupervisor({
        ...(this.configFile !== undefined ? { configFile: this.configFile } : {}),
        flags: { stateDir: this.stateDir, runDir: this.runDir, ...(this.opts.flags ?? {}) },
        env: this.opts.env ?? {},
        logger: silentLogger,
        ...(this.opts.gatewayBodyIdleMs !== undefined ? { gatewayBodyIdleMs: this.opts.gatewayBodyIdleMs } : {}),
      });
      this.gateway = this.running.gatewayAddress;
      this.admin = this.running.adminAddress;
    } else {
      await this.spawnChild(timeoutMs);
    }
    this.adminToken = (await fs.readFile(path.join(this.stateDir, "supervisor", "admin-token"), "utf8")).trim();
  }

  private async spawnChild(timeoutMs: number): Promise<void> {
    const args = this.configFile !== undefined ? ["--config", this.configFile] : ["--state-dir", this.stateDir, "--run-dir", this.runDir];
    const [file, ...argv] = [...(this.opts.wrap ?? []), process.execPath, CLI_MAIN, "up", ...args] as [string, ...string[]];
    const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...(this.opts.env ?? {}), PADDOCK_LOG_LEVEL: "info" } });
    this.child = child;
    this.output = "";
    const ready = new Promise<void>((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`supervisor not ready after ${timeoutMs} ms:\n${this.output.slice(-3000)}`)), timeoutMs);
      const onExit = (code: number | null, sig: string | null): void => {
        clearTimeout(timer);
        reject(new Error(`supervisor exited (${code ?? sig}) during start:\n${this.output.slice(-3000)}`));
      };
      child.once("exit", onExit);
      const onData = (c: Buffer): void => {
        this.output += c.toString();
        if (this.output.length > 2_000_000) this.output = this.output.slice(-1_000_000);
        if (process.env.PADDOCK_TEST_VERBOSE) process.stderr.write(c);
        buf += c.toString();
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const j = JSON.parse(line) as { msg?: string; gateway?: string; admin?: string };
            if (j.msg === "supervisor ready" && j.gateway && j.admin) {
              this.gateway = j.gateway;
              this.admin = j.admin;
              clearTimeout(timer);
              child.off("exit", onExit);
              resolve();
            }
          } catch {}
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
    });
    try {
      await ready;
    } catch (err) {
      await this.kill9();
      throw err;
    }
  }

  /** The child's pid (child mode, while it runs). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGKILL the child supervisor (its daemons keep running: they are in their own process groups). */
  async kill9(): Promise<void> {
    if (await endChild(this.child, "SIGKILL")) this.child = undefined;
  }

  /**
   * Stop the supervisor. In-process: close it, stopping its daemons unless `stopDaemons` is
   * false. Child: SIGTERM and wait (SIGKILL after 60 s); its daemons keep running unless the
   * config says `stop_daemons_on_exit`.
   */
  async stop(opts: { stopDaemons?: boolean } = {}): Promise<void> {
    const running = this.running;
    if (running) {
      this.running = undefined;
      await running.close({ stopDaemons: opts.stopDaemons ?? true });
      return;
    }
    if (await endChild(this.child, "SIGTERM", 60_000)) this.child = undefined;
  }

  /** Whether the supervisor runs (in-process or child). */
  get isRunning(): boolean {
    return this.running !== undefined || (this.child !== undefined && !childEnded(this.child));
  }

  /** The admin API as a request target. */
  adminTarget(): Target {
    return targetOf(this.admin);
  }

  /** The gateway's TCP host and port. @throws Error when it listens on a Unix socket. */
  gatewayTarget(): { host: string; port: number } {
    const t = targetOf(this.gateway);
    if ("socketPath" in t) throw new Error(`the gateway listens on ${this.gateway}, not TCP`);
    return t;
  }

  /**
   * `method /admin/v1<p>` with the admin token (and `content-type: application/json` with a
   * body); `headers` are added last (they may replace the authorization).
   */
  adminReq(method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
    return request(this.adminTarget(), method, `/admin/v1${p}`, body, { authorization: `Bearer ${this.adminToken}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers });
  }

  /**
   * `method p` through the gateway with `token` (none when undefined), and
   * `content-type: application/json` with an object body; `headers` are added last.
   */
  gw(token: string | undefined, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
    return request(targetOf(this.gateway), method, p, body, { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined && typeof body === "object" && !Buffer.isBuffer(body) ? { "content-type": "application/json" } : {}), ...headers });
  }

  /**
   * Create a tenant (`POST /admin/v1/tenants` with id, template and `extra` fields).
   * @returns its token. @throws Error unless 201.
   */
  async createTenant(id: string, template = "sandbox", extra: Record<string, unknown> = {}): Promise<string> {
    const r = await this.adminReq("POST", "/tenants", { id, template, ...extra });
    if (r.status !== 201) throw new Error(`create tenant ${id}: ${r.status} ${r.text}`);
    return (r.json as { token: string }).token;
  }

  /** `<state>/tenants/<id>/state.json`, the tenant daemon's state file. */
  tenantStateFile(id: string): string {
    return path.join(this.stateDir, "tenants", id, "state.json");
  }

  /** `<state>/supervisor/registry.json`. */
  registryFile(): string {
    return path.join(this.stateDir, "supervisor", "registry.json");
  }

  /**
   * Clean up, whatever state the test left: delete the tenants `ids` (when running), stop the
   * supervisor (in-process: with its daemons), SIGKILL any daemon still alive (the registry's
   * process groups and `ids`' real daemons), purge `ids`' configs and remove their leftovers
   * (scripts/leaks.sh), then remove the temp dir. Never throws.
   */
  async destroy(ids: readonly string[] = []): Promise<void> {
    // Tenants are independent: their deletes, and below their purges, run side by side.
    if (this.isRunning) await Promise.all(ids.map((id) => this.adminReq("DELETE", `/tenants/${id}`).catch(() => undefined)));
    await this.stop().catch(() => undefined);
    // Daemons the supervisor did not stop (killed supervisor, failed delete): stop by pid.
    try {
      const reg = JSON.parse(await fs.readFile(this.registryFile(), "utf8")) as { tenants: Record<string, { daemon: { pid?: number } }> };
      for (const t of Object.values(reg.tenants)) if (t.daemon.pid && pidAlive(t.daemon.pid)) process.kill(-t.daemon.pid, "SIGKILL");
    } catch {}
    await Promise.all(ids.map(async (id) => {
      const cfg = path.join(this.stateDir, "tenants", id, "config.yaml");
      for (const pid of daemonPidsOf(cfg)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      if (existsSync(cfg)) await execa(process.execPath, [DAEMON_MAIN, "purge", cfg], { reject: false, env: { PADDOCK_IMAGE_DIR: TEST_IMAGE_DIR } });
      await execa(LEAKS_SH, ["--tenant", id, "--remove"], { reject: false });
    }));
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
