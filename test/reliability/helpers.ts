/**
 * Shared fixtures of the reliability suite (issue 7): a REAL supervisor as a child process
 * (`node dist/cli/paddock.js up`, so it can be kill -9'd), its admin and gateway clients,
 * the leak checker (scripts/leaks.sh), state-file schema checks and RSS sampling.
 *
 * Addresses: every supervisor gets a random /20 of 198.18.0.0/15 as its pool (block /24),
 * so parallel runs by others (169.254.0.0/16) never overlap.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { promises as fs, existsSync, readFileSync, readdirSync } from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { execa } from "execa";
import { stringify } from "yaml";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import { request, type TestResponse } from "../helpers/http.js";

export const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? "/var/lib/paddock/images";
export const CLI_MAIN = path.join(PROJECT_ROOT, "dist/cli/paddock.js");
export const LEAKS_SH = path.join(PROJECT_ROOT, "scripts/leaks.sh");

/** Root, the base image and a build: the suite's preconditions. */
export const privilegedReady = process.getuid?.() === 0 && existsSync(path.join(IMAGE_DIR, "debian-12")) && existsSync(CLI_MAIN);

/**
 * A random /20 of 198.18.0.0/15 (32 possible) holding no address of any host interface
 * right now (others' tenants and benches use the same block).
 */
export function randomBenchPool(): string {
  const used = new Set<number>();
  try {
    for (const m of execFileSync("ip", ["-4", "-o", "addr"], { encoding: "utf8" }).matchAll(/inet (198)\.(18|19)\.(\d+)\./g)) used.add((Number(m[2]) - 18) * 16 + (Number(m[3]) >> 4));
  } catch {}
  const free = Array.from({ length: 32 }, (_, n) => n).filter((n) => !used.has(n));
  const n = free[crypto.randomInt(0, Math.max(1, free.length))] ?? crypto.randomInt(0, 32);
  return `198.${18 + (n >> 4)}.${(n & 15) * 16}.0/20`;
}

/** A short random tenant id (`r` + 6 chars). */
export function rid(prefix = "r"): string {
  return prefix + crypto.randomBytes(4).toString("hex").slice(0, 6);
}

export { sleepMs, until } from "../helpers/wait.js";

function tcp(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

/** Options of {@link SupervisorProc.create}. */
export interface SupervisorProcOptions {
  /** Extra supervisor YAML keys merged over the defaults below. */
  config?: Record<string, unknown>;
  /** Use an existing state dir (e.g. a small loop-mounted fs). */
  stateDir?: string;
}

/**
 * A supervisor process on fresh /tmp/pdk-* state and run dirs, gateway and admin on
 * 127.0.0.1:0 (addresses read from its "supervisor ready" log line).
 */
export class SupervisorProc {
  readonly dir: string;
  readonly stateDir: string;
  readonly runDir: string;
  readonly configFile: string;
  readonly pool: string;
  child: ChildProcess | undefined;
  gateway = "";
  admin = "";
  adminToken = "";
  stderr = "";

  private constructor(dir: string, stateDir: string, pool: string) {
    this.dir = dir;
    this.stateDir = stateDir;
    this.runDir = path.join(dir, "run");
    this.configFile = path.join(dir, "supervisor.yaml");
    this.pool = pool;
  }

  static async create(opts: SupervisorProcOptions = {}): Promise<SupervisorProc> {
    const dir = await fs.mkdtemp("/tmp/pdk-");
    // Traversable (not listable) by the VMs' unprivileged roots, which reach their rootfs below it.
    await fs.chmod(dir, 0o711);
    const pool = randomBenchPool();
    const s = new SupervisorProc(dir, opts.stateDir ?? path.join(dir, "state"), pool);
    await fs.writeFile(s.configFile, stringify({
      gateway: { address: "127.0.0.1:0" },
      admin: { address: "127.0.0.1:0" },
      state_dir: s.stateDir,
      run_dir: s.runDir,
      image_dir: IMAGE_DIR,
      network: { pool, block_prefix: 24 },
      restart: { initial_backoff_ms: 200, max_backoff_ms: 2000, max_crashes: 50, crash_window_ms: 60_000, stable_after_ms: 5000, ready_timeout_ms: 60_000, stop_timeout_ms: 10_000 },
      ...(opts.config ?? {}),
    }));
    return s;
  }

  /** Spawn `paddock up` and wait for its ready line (or its exit: then throw with stderr). */
  async start(timeoutMs = 120_000): Promise<void> {
    this.stderr = "";
    const child = spawn(process.execPath, [CLI_MAIN, "up", "--config", this.configFile], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, PADDOCK_LOG_LEVEL: "info" } });
    this.child = child;
    await new Promise<void>((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`supervisor not ready after ${timeoutMs} ms:\n${this.stderr.slice(-3000)}`)), timeoutMs);
      const onExit = (code: number | null, sig: string | null): void => {
        clearTimeout(timer);
        reject(new Error(`supervisor exited (${code ?? sig}) during start:\n${this.stderr.slice(-3000)}`));
      };
      child.once("exit", onExit);
      child.stderr?.on("data", (c: Buffer) => {
        this.stderr += c.toString();
        if (this.stderr.length > 2_000_000) this.stderr = this.stderr.slice(-1_000_000);
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
      });
    });
    this.adminToken = (await fs.readFile(path.join(this.stateDir, "supervisor", "admin-token"), "utf8")).trim();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGKILL the supervisor (its daemons keep running: they are in their own process groups). */
  async kill9(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const done = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGKILL");
    await done;
    this.child = undefined;
  }

  /** SIGTERM and wait (daemons keep running unless the config says otherwise). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const done = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 60_000);
    await done;
    clearTimeout(t);
    this.child = undefined;
  }

  adminReq(method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
    return request(tcp(this.admin), method, `/admin/v1${p}`, body, { authorization: `Bearer ${this.adminToken}`, ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers });
  }

  gw(token: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
    return request(tcp(this.gateway), method, p, body, { authorization: `Bearer ${token}`, ...(body !== undefined && typeof body === "object" && !Buffer.isBuffer(body) ? { "content-type": "application/json" } : {}), ...headers });
  }

  gatewayTarget(): { host: string; port: number } {
    return tcp(this.gateway);
  }

  adminTarget(): { host: string; port: number } {
    return tcp(this.admin);
  }

  /** Create a tenant; returns its token. */
  async createTenant(id: string, template = "sandbox", extra: Record<string, unknown> = {}): Promise<string> {
    const r = await this.adminReq("POST", "/tenants", { id, template, ...extra });
    if (r.status !== 201) throw new Error(`create tenant ${id}: ${r.status} ${r.text}`);
    return (r.json as { token: string }).token;
  }

  tenantStateFile(id: string): string {
    return path.join(this.stateDir, "tenants", id, "state.json");
  }

  registryFile(): string {
    return path.join(this.stateDir, "supervisor", "registry.json");
  }

  /** Delete every tenant, stop the supervisor and its daemons, remove leftovers and dirs. */
  async destroy(ids: readonly string[]): Promise<void> {
    if (this.child) {
      for (const id of ids) await this.adminReq("DELETE", `/tenants/${id}`).catch(() => undefined);
    }
    await this.stop().catch(() => undefined);
    // Daemons the supervisor did not stop (killed supervisor, failed delete): stop by pid.
    for (const id of ids) {
      for (const pid of daemonPidsOf(path.join(this.stateDir, "tenants", id, "config.yaml"))) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {}
      }
      const cfg = path.join(this.stateDir, "tenants", id, "config.yaml");
      if (existsSync(cfg)) await execa(process.execPath, [path.join(PROJECT_ROOT, "dist/tenant-daemon/main.js"), "purge", cfg], { reject: false, env: { PADDOCK_IMAGE_DIR: IMAGE_DIR } });
      await execa(LEAKS_SH, ["--tenant", id, "--remove"], { reject: false });
    }
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Pids of `node …/tenant-daemon/main.js up <configPath>` processes (from /proc). */
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
      if (argv.some((a) => a.endsWith("tenant-daemon/main.js")) && argv.includes("up") && argv.includes(configPath)) out.push(Number(n));
    } catch {}
  }
  return out;
}

/**
 * What scripts/leaks.sh lists for a tenant (list mode). Asserts the script's contract too:
 * exit 0 with "no Paddock leftovers" when clean, 1 with one line per leftover otherwise.
 * @returns the leftover lines (empty when clean).
 */
export async function leaksOf(tenantId: string): Promise<string[]> {
  const r = await execa(LEAKS_SH, ["--tenant", tenantId], { reject: false });
  if (r.exitCode === 0) {
    if (!/no Paddock leftovers/.test(r.stdout)) throw new Error(`leaks.sh exit 0 without its clean line: ${r.stdout}`);
    return [];
  }
  if (r.exitCode !== 1) throw new Error(`leaks.sh failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout.split("\n").filter((l) => l.trim() !== "");
}

/** Everything mounted at or below `dir`, and loop devices backed by files below it. */
export async function hostLeftoversUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const mi = await fs.readFile("/proc/self/mountinfo", "utf8");
  for (const l of mi.split("\n")) {
    const mp = l.split(" ")[4] ?? "";
    if (mp.startsWith(dir + "/")) out.push(`mount ${mp}`);
  }
  for (const name of await fs.readdir("/sys/block").catch(() => [] as string[])) {
    if (!name.startsWith("loop")) continue;
    const backing = (await fs.readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (backing.startsWith(dir + "/")) out.push(`loop ${name} ${backing}`);
  }
  return out;
}

/** A VM record as the daemon's state file holds it (the fields the suite relies on). */
interface VmRecordShape {
  hostname: string;
  hostGroup: string;
  index: number;
  persistent: boolean;
  ipCidr: string;
  /** A warm-pool VM, not handed out yet. */
  pooled?: boolean;
}

/**
 * Parse and check a tenant daemon's state.json (schema version 1). `vms` are the handed-out
 * VMs, each named at or below its group's counter; `warm` the warm-pool VMs (names above the
 * counter are theirs until handed out).
 * @throws Error naming the first problem.
 */
export function checkDaemonState(text: string, tenantId: string): { vms: Record<string, VmRecordShape>; warm: Record<string, VmRecordShape>; counters: Record<string, number> } {
  const s = JSON.parse(text) as { schemaVersion?: unknown; tenantId?: unknown; vms?: unknown; counters?: unknown };
  if (s.schemaVersion !== 1) throw new Error(`schemaVersion ${String(s.schemaVersion)}`);
  if (s.tenantId !== tenantId) throw new Error(`tenantId ${String(s.tenantId)}`);
  if (typeof s.vms !== "object" || s.vms === null || typeof s.counters !== "object" || s.counters === null) throw new Error("vms/counters missing");
  for (const [h, v] of Object.entries(s.vms as Record<string, VmRecordShape>)) {
    if (v.hostname !== h || typeof v.hostGroup !== "string" || !Number.isInteger(v.index) || typeof v.persistent !== "boolean" || typeof v.ipCidr !== "string") throw new Error(`bad VM record ${h}: ${JSON.stringify(v)}`);
    if (!h.startsWith(`${v.hostGroup}-`)) throw new Error(`VM ${h} not named after its group ${v.hostGroup}`);
    if (v.pooled === true) continue;
    const c = (s.counters as Record<string, number>)[v.hostGroup];
    if (c === undefined || c < v.index) throw new Error(`counter of ${v.hostGroup} (${String(c)}) below VM index ${v.index}`);
  }
  const all = Object.entries(s.vms as Record<string, VmRecordShape>);
  return {
    vms: Object.fromEntries(all.filter(([, v]) => v.pooled !== true)),
    warm: Object.fromEntries(all.filter(([, v]) => v.pooled === true)),
    counters: s.counters as Record<string, number>,
  };
}

/** A tenant record of the registry (fields the suite relies on). */
export interface RegistryTenant {
  id: string;
  status: string;
  blocks: Array<{ hostGroup: string; cidr: string }>;
  tokens: Array<{ id: string; hash: string; revokedAt?: string; expiresAt?: string }>;
  daemon: { pid?: number; state: string; restarts: number };
}

/**
 * Parse and check the supervisor registry (schema version 1): ids match keys, blocks unique.
 * @throws Error naming the first problem.
 */
export function checkRegistry(text: string): Record<string, RegistryTenant> {
  const s = JSON.parse(text) as { schemaVersion?: unknown; tenants?: Record<string, RegistryTenant> };
  if (s.schemaVersion !== 1 || typeof s.tenants !== "object" || s.tenants === null) throw new Error("registry schema");
  const blocks = new Set<string>();
  for (const [id, t] of Object.entries(s.tenants)) {
    if (t.id !== id) throw new Error(`registry key ${id} holds ${t.id}`);
    for (const b of t.blocks) {
      if (blocks.has(b.cidr)) throw new Error(`block ${b.cidr} given twice`);
      blocks.add(b.cidr);
    }
  }
  return s.tenants;
}

/** Resident set size of a pid, bytes (0 when gone). */
export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runc containers, netns and links of a tenant that exist right now (via leaks.sh). */
export async function expectNoLeaks(tenantId: string, extraDirs: readonly string[] = []): Promise<string[]> {
  const lines = await leaksOf(tenantId);
  for (const d of extraDirs) lines.push(...(await hostLeftoversUnder(d)));
  return lines;
}
