/**
 * Start and stop REAL tenant daemons (`node dist/tenant-daemon/main.js up <config>`) on fresh
 * temp dirs, for the integration and privileged tests (through test/helpers/daemon.ts) and the
 * benchmarks (scripts/bench/). Every daemon started here is stopped by pid in
 * {@link TestDaemon.stop}; {@link TestDaemon.destroy} also purges what it left (VMs, disks,
 * links, table) and removes the temp dir.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { stringify } from "yaml";
import { endChild } from "./child-stop.js";
import { request, type Target, type TestResponse } from "./http-client.js";

/** The project root (dir with package.json), from dist/scripts/lib. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** The compiled tenant daemon entry point (`node DAEMON_MAIN up|purge <config>`). */
export const DAEMON_MAIN = path.join(PROJECT_ROOT, "dist/tenant-daemon/main.js");

/**
 * The environment overlay the supervisor of the build that `daemonArgv` runs gives its daemons:
 * that build's `dist/shared/daemon-env.js` `daemonProcessEnv(process.env)` when it has one (the
 * entry, the last `.js` argument, is `<root>/dist/tenant-daemon/<x>.js`), else `{}` (a build
 * before it: its supervisor let the daemon inherit the environment, NODE_EXTRA_CA_CERTS
 * included). Per build, as scripts/bench/lib/builds.ts `daemonArgvOf` reads each build's flags.
 * Keys whose value is `undefined` are left out of the child's environment.
 * @throws when that build's module fails to load.
 */
export async function daemonEnvOf(daemonArgv: readonly string[]): Promise<Record<string, string | undefined>> {
  const entry = [...daemonArgv].reverse().find((a) => a.endsWith(".js"));
  if (entry === undefined) return {};
  const helper = path.resolve(path.dirname(entry), "../shared/daemon-env.js");
  if (!existsSync(helper)) return {};
  const mod = (await import(pathToFileURL(helper).href)) as { daemonProcessEnv?: (parent: NodeJS.ProcessEnv) => Record<string, string | undefined> };
  return mod.daemonProcessEnv?.(process.env) ?? {};
}

/** A short random tenant id (link names and socket paths stay short). */
export function randomTenantId(): string {
  return "t" + crypto.randomBytes(4).toString("hex").slice(0, 7);
}

/** Options for {@link TestDaemon.create}. */
export interface TestDaemonOptions {
  tenantId?: string;
  /** `config.host_groups`, in the Slicer YAML shape. Default: one isolated `sbox` group. */
  hostGroups?: Record<string, unknown>[];
  /** Extra `paddock:` keys. */
  paddock?: Record<string, unknown>;
  /** Extra `config:` keys (e.g. graceful_shutdown). */
  config?: Record<string, unknown>;
  /**
   * node arguments before `up|purge <config>`: flags and the entry point of the daemon to run
   * (e.g. another build's `dist/tenant-daemon/launch.js` with its V8 flags). Default `[DAEMON_MAIN]`.
   */
  daemonArgv?: readonly string[];
}

/** /22 blocks this process handed out already (two daemons of one test must not share one). */
const handedOut = new Set<number>();

/** Third octets of the 169.254 /22 blocks holding an address on a host interface right now. */
function blocksInUse(): Set<number> {
  const used = new Set<number>();
  try {
    for (const m of execFileSync("ip", ["-o", "-4", "addr", "show"], { encoding: "utf8" }).matchAll(/inet 169\.254\.(\d+)\./g)) used.add(Math.floor(Number(m[1]) / 4) * 4);
  } catch {
    // no ip(8): random choice only
  }
  return used;
}

/**
 * A random /22 inside 169.254.0.0/16 (away from 169.254.169.0/22), for isolated test groups:
 * never one this process handed out before, nor one with an address on a host interface (a
 * daemon that is running refuses an overlapping range).
 */
export function randomIsolatedRange(): string {
  const used = blocksInUse();
  // Over a whole suite the process hands out more blocks than exist; the old ones are long gone.
  if (handedOut.size >= 48) handedOut.clear();
  for (let tries = 0; ; tries++) {
    const third = crypto.randomInt(0, 64) * 4;
    if (third === 168) continue;
    if (tries < 500 && (handedOut.has(third) || used.has(third))) continue;
    handedOut.add(third);
    return `169.254.${third}.0/22`;
  }
}

/**
 * One tenant daemon on a temp dir: `dir` (0711) holds `config.yaml`, the API socket
 * `api.sock`, and the `state/` and `run/` dirs. {@link TestDaemon.create} writes the config,
 * {@link TestDaemon.start} runs it, {@link TestDaemon.destroy} stops, purges and removes it.
 * `stderr` holds what the current process wrote (echoed live with PADDOCK_TEST_VERBOSE set).
 */
export class TestDaemon {
  readonly dir: string;
  readonly tenantId: string;
  readonly configPath: string;
  readonly socketPath: string;
  readonly stateDir: string;
  readonly runDir: string;
  /** node arguments before `up|purge <config>` ({@link TestDaemonOptions.daemonArgv}). */
  readonly daemonArgv: readonly string[];
  /** The extension of this process's environment the daemon (and its purge) runs with ({@link daemonEnvOf}). */
  readonly env: Readonly<Record<string, string | undefined>>;
  child: ChildProcess | undefined;
  stderr = "";

  private constructor(dir: string, tenantId: string, daemonArgv: readonly string[], env: Record<string, string | undefined>) {
    this.dir = dir;
    this.tenantId = tenantId;
    this.daemonArgv = daemonArgv;
    this.env = env;
    this.configPath = path.join(dir, "config.yaml");
    this.socketPath = path.join(dir, "api.sock");
    this.stateDir = path.join(dir, "state");
    this.runDir = path.join(dir, "run");
  }

  /** Write a config into a fresh temp dir (nothing started yet). */
  static async create(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
    const dir = await fs.mkdtemp("/tmp/pdk-");
    // Traversable (not listable) by the VMs' unprivileged roots, which reach their rootfs below it.
    await fs.chmod(dir, 0o711);
    const daemonArgv = opts.daemonArgv ?? [DAEMON_MAIN];
    const d = new TestDaemon(dir, opts.tenantId ?? randomTenantId(), daemonArgv, await daemonEnvOf(daemonArgv));
    const hostGroups = opts.hostGroups ?? [{ name: "sbox", count: 0, vcpu: 2, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }];
    await fs.writeFile(d.configPath, stringify({
      config: { host_groups: hostGroups, image: "debian-12", hypervisor: "oci", graceful_shutdown: false, api: { bind_address: d.socketPath }, ...(opts.config ?? {}) },
      paddock: { tenant_id: d.tenantId, state_dir: d.stateDir, run_dir: d.runDir, stop_timeout_seconds: 2, ...(opts.paddock ?? {}) },
    }));
    return d;
  }

  /**
   * Spawn the daemon without waiting for it to be ready (see {@link start}): `node <command>`,
   * by default `node <daemonArgv> up <config>`.
   */
  spawn(command: readonly string[] = [...this.daemonArgv, "up", this.configPath]): ChildProcess {
    this.stderr = "";
    const child = spawn(process.execPath, command, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...this.env } });
    this.child = child;
    child.stderr?.on("data", (c: Buffer) => {
      this.stderr += c.toString();
      if (process.env.PADDOCK_TEST_VERBOSE) process.stderr.write(c);
    });
    return child;
  }

  /**
   * Start the daemon and wait until `/healthz` answers 200. `opts.target`: where to poll
   * (default its socket; a config written for TCP passes its host and port). `opts.command`:
   * what node runs (default `<daemonArgv> up <config>`; e.g. the CLI's `daemon up`).
   * `opts.pollMs`: the pause between two polls, ms (default 50; a benchmark that times the
   * start passes a few ms, else the time read can be up to one pause late).
   * @throws Error with its stderr when it exits first, or after `timeoutMs`.
   */
  async start(timeoutMs = 60_000, opts: { target?: Target; command?: readonly string[]; pollMs?: number } = {}): Promise<void> {
    const target = opts.target ?? { socketPath: this.socketPath };
    const child = this.spawn(opts.command);
    const exited = new Promise<never>((_, reject) => child.once("exit", (code, sig) => reject(new Error(`daemon exited (${code ?? sig}) during start:\n${this.stderr.slice(-4000)}`))));
    exited.catch(() => undefined);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const ok = await Promise.race([request(target, "GET", "/healthz").then((r) => r.status === 200, () => false), exited]);
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`daemon not ready after ${timeoutMs} ms:\n${this.stderr.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 50));
    }
  }

  /**
   * SIGTERM the daemon (by its handle) and wait for it to exit; SIGKILL after `timeoutMs`.
   * @returns its exit code (null when a signal ended it, or none runs).
   */
  async stop(timeoutMs = 60_000): Promise<number | null> {
    const child = this.child;
    if (await endChild(child, "SIGTERM", timeoutMs)) this.child = undefined;
    return child?.exitCode ?? null;
  }

  /** SIGKILL the daemon (crash simulation) and wait for it to be gone. */
  async kill9(): Promise<void> {
    if (await endChild(this.child, "SIGKILL")) this.child = undefined;
  }

  /** Stop, purge everything of the tenant (`<daemonArgv> purge`: the same build), and remove the temp dir. */
  async destroy(): Promise<void> {
    await this.stop().catch(() => undefined);
    if (!existsSync(this.configPath)) return; // destroyed already
    await new Promise<void>((resolve) => {
      const p = spawn(process.execPath, [...this.daemonArgv, "purge", this.configPath], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ...this.env } });
      p.once("exit", () => resolve());
      p.once("error", () => resolve());
    });
    await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /**
   * The warm pool of `group` as `/metrics` shows it (`paddock_vm_warm{host_group,state}`): VMs
   * ready and booting; both 0 when the group has no pool line.
   */
  async warmPool(group: string): Promise<{ ready: number; booting: number }> {
    const text = (await this.get("/metrics")).text;
    const read = (state: string): number => Number(new RegExp(`^paddock_vm_warm\\{host_group="${group}",state="${state}"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    return { ready: read("ready"), booting: read("booting") };
  }

  /** `GET p` on the daemon's socket. */
  get(p: string, headers?: Record<string, string>): Promise<TestResponse> {
    return request({ socketPath: this.socketPath }, "GET", p, undefined, headers);
  }
  /** `POST p` on the daemon's socket (an object body is sent as JSON). */
  post(p: string, body?: unknown, headers?: Record<string, string>): Promise<TestResponse> {
    return request({ socketPath: this.socketPath }, "POST", p, body, headers);
  }
  /** `PATCH p` on the daemon's socket. */
  patch(p: string, body?: unknown): Promise<TestResponse> {
    return request({ socketPath: this.socketPath }, "PATCH", p, body);
  }
  /** `DELETE p` on the daemon's socket. */
  del(p: string): Promise<TestResponse> {
    return request({ socketPath: this.socketPath }, "DELETE", p);
  }
}

/** Mount points under `dir` (from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fs.readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) => m === dir || m.startsWith(dir + "/"));
}

/** Loop devices whose backing file is under `dir`. */
export async function loopDevicesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await fs.readdir("/sys/block").catch(() => [] as string[])) {
    if (!name.startsWith("loop")) continue;
    const backing = await fs.readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.trim().startsWith(dir + "/")) out.push(name);
  }
  return out;
}

/**
 * What a destroyed tenant daemon left on the host: runc containers named `pdk-<tenantId>-…`,
 * network namespaces naming the tenant, and mounts and loop devices under its state dir `dir`.
 * Every list is empty when nothing was left. Uses `runc list -q` and `ip netns list`.
 * @throws when runc or ip cannot be run.
 */
export async function leftoversOf(tenantId: string, dir: string): Promise<{ containers: string[]; netns: string[]; mounts: string[]; loops: string[] }> {
  const lines = (cmd: string, args: string[]): string[] => execFileSync(cmd, args, { encoding: "utf8" }).split("\n");
  const containers = lines("runc", ["list", "-q"]).filter((id) => id.startsWith(`pdk-${tenantId}-`));
  const netns = lines("ip", ["netns", "list"]).filter((l) => l.includes(tenantId));
  return { containers, netns, mounts: await mountsUnder(dir), loops: await loopDevicesUnder(dir) };
}
