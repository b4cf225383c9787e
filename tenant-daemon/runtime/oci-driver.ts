/**
 * The OCI runtime driver (DESIGN.md §3): each VM is a runc (or crun) container created from a
 * bundle whose `config.json` comes from {@link renderOciSpec}. Containers run detached and
 * outlive the daemon; their state lives in the runtime's default root (`/run/runc`), so
 * `runc list` shows them and a restarted daemon finds them again by id.
 *
 * Every command goes through shared/exec.ts `run()` with a timeout; failures become
 * PaddockError ERR_RUNTIME_FAILED carrying the runtime's stderr.
 */
import { constants as fsConstants, promises as fs, existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PaddockError, errnoCode, isPaddockError } from "../../shared/errors.js";
import { run, trimStderr, type RunResult } from "../../shared/exec.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { pidAlive, writeFileAtomic } from "../../shared/state-store.js";
import { sleep } from "../../shared/time.js";
import { DEFAULT_CONSOLE_LOG_BYTES, type RuntimeDriver, type RuntimeState, type RuntimeStatus, type VmRuntimeSpec } from "./driver.js";
import { CPU_PERIOD_US, renderOciSpec, type OciToolbox } from "./oci-spec.js";
import { listenPrefix, logcapPrefix } from "./nsutil.js";
import { runcWarning } from "./runc-advisories.js";
import { readMounts } from "../storage/vm-disk.js";
import { loadSeccompProfile, type OciSeccomp } from "./seccomp.js";

/** Which OCI runtime to use; `auto` = crun on a pure cgroup-v2 host with crun installed, else runc. */
export type OciRuntimePreference = "auto" | "runc" | "crun";
export type OciRuntimeName = "runc" | "crun";

/** Host facts {@link chooseOciRuntime} decides on. */
export interface OciHostFacts {
  /** `/sys/fs/cgroup/cgroup.controllers` exists (unified hierarchy only). */
  cgroupV2: boolean;
  /** Absolute path of each runtime found on PATH. */
  binaries: { runc: string | undefined; crun: string | undefined };
}

/**
 * Pick the OCI runtime (pure). Rule: `auto` ⇒ crun when the host is pure cgroup v2 and crun
 * is installed, otherwise runc. crun is only used on cgroup v2: on hybrid/v1 hosts it is the
 * less-tested path and fails on this project's reference host.
 * @returns the runtime name and binary path
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE naming the Debian package to install.
 */
export function chooseOciRuntime(preference: OciRuntimePreference, facts: OciHostFacts): { name: OciRuntimeName; binary: string } {
  const { runc, crun } = facts.binaries;
  if (preference === "crun" || (preference === "auto" && facts.cgroupV2 && crun !== undefined)) {
    if (crun === undefined) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", "paddock.runtime is crun but crun is not on PATH; install it with `apt-get install crun`");
    if (!facts.cgroupV2) {
      throw new PaddockError(
        "ERR_RUNTIME_UNAVAILABLE",
        "paddock.runtime is crun but this host is not pure cgroup v2 (/sys/fs/cgroup/cgroup.controllers is missing); use runtime runc (apt-get install runc)",
      );
    }
    return { name: "crun", binary: crun };
  }
  if (runc === undefined) {
    throw new PaddockError(
      "ERR_RUNTIME_UNAVAILABLE",
      `no usable OCI runtime: runc is not on PATH; install it with \`apt-get install runc\`${facts.cgroupV2 ? " (or `apt-get install crun`)" : ""}`,
    );
  }
  return { name: "runc", binary: runc };
}

/** Absolute path of `name` on `PATH` (executable regular file), or undefined. */
export async function findOnPath(name: string, envPath = process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"): Promise<string | undefined> {
  for (const dir of envPath.split(":")) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      const st = await fs.stat(candidate);
      if (!st.isFile()) continue;
      await fs.access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Detect the OCI runtime on this host (see {@link chooseOciRuntime}).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE
 */
export async function detectOciRuntime(preference: OciRuntimePreference): Promise<{ name: OciRuntimeName; binary: string }> {
  // PATH plus the standard system dirs: a daemon started by a supervisor or unit with a
  // trimmed PATH (no sbin) must still find /usr/sbin/runc.
  const searchPath = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].join(":");
  const facts: OciHostFacts = {
    cgroupV2: existsSync("/sys/fs/cgroup/cgroup.controllers"),
    binaries: { runc: await findOnPath("runc", searchPath), crun: await findOnPath("crun", searchPath) },
  };
  return chooseOciRuntime(preference, facts);
}

/**
 * The project root: the nearest ancestor of `startDir` holding a package.json named "paddock"
 * (from dist/tenant-daemon/runtime/ that is three levels up).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when there is none.
 */
export function findProjectRoot(startDir = path.dirname(fileURLToPath(import.meta.url))): string {
  let dir = startDir;
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, "utf8")) as { name?: unknown }).name === "paddock") return dir;
      } catch {
        // not ours
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `cannot find Paddock's project root (package.json) above ${startDir}`);
    dir = parent;
  }
}

/**
 * The default toolbox: this process's node, `/usr/bin/tini-static`, and `dist/toolbox` (the
 * agent bundle and node-pty, made by `npm run build`).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when tini-static or the built toolbox is missing.
 */
export function defaultToolbox(): OciToolbox {
  const tiniPath = "/usr/bin/tini-static";
  if (!existsSync(tiniPath)) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `${tiniPath} not found; install it with \`apt-get install tini\``);
  const appDir = path.join(findProjectRoot(), "dist", "toolbox");
  if (!existsSync(path.join(appDir, "agent.cjs"))) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `the guest toolbox ${appDir}/agent.cjs is missing; run \`npm run build\``);
  }
  return { nodePath: process.execPath, tiniPath, appDir };
}

/** True when the kernel accounts swap per cgroup (v1 `memory.memsw.*`, or cgroup v2). */
export function hostHasSwapAccounting(): boolean {
  return existsSync("/sys/fs/cgroup/cgroup.controllers") || existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
}

/** Mount points of every cgroup hierarchy (v1 controllers and v2), from /proc/self/mountinfo. */
export async function cgroupMountPoints(): Promise<string[]> {
  return (await readMounts()).filter((m) => m.fsType === "cgroup" || m.fsType === "cgroup2").map((m) => m.mountPoint);
}

/** `runc state` JSON (the fields Paddock reads). */
interface RuncStateJson {
  id: string;
  pid: number;
  status: string;
  bundle: string;
}

/** Options of {@link OciDriver}. */
export interface OciDriverOptions {
  name: OciRuntimeName;
  /** Absolute path of the runtime binary. */
  binary: string;
  toolbox: OciToolbox;
  swapAccounting: boolean;
  /** Seccomp profile of VMs whose spec does not say `unconfined`; default {@link loadSeccompProfile}(). */
  seccomp?: OciSeccomp;
  logger?: Logger;
  /** Timeout of each runtime command other than create, ms (default 30 000). */
  commandTimeoutMs?: number;
  /**
   * The runtime's state root (default: runc `/run/runc`, crun `/run/crun`, the roots both use
   * for root without `--root`). A container exists for the runtime iff `<stateRoot>/<id>` does;
   * {@link OciDriver.run} checks that directory instead of spawning `runc state`.
   */
  stateRoot?: string;
}

const CREATE_TIMEOUT_MS = 60_000;
/** How long to wait for a SIGKILLed sandbox to be reported stopped before giving up. */
const KILL_WAIT_MS = 15_000;

/** The OCI runtime driver. Construct with {@link createOciDriver} (detects runtime and toolbox). */
export class OciDriver implements RuntimeDriver {
  readonly name: OciRuntimeName;
  private readonly binary: string;
  private readonly toolbox: OciToolbox;
  private readonly swapAccounting: boolean;
  private readonly seccomp: OciSeccomp;
  private readonly logger: Logger;
  private readonly timeoutMs: number;
  private readonly stateRoot: string;

  constructor(options: OciDriverOptions) {
    this.name = options.name;
    this.binary = options.binary;
    this.toolbox = options.toolbox;
    this.swapAccounting = options.swapAccounting;
    this.seccomp = options.seccomp ?? loadSeccompProfile();
    this.logger = options.logger ?? silentLogger;
    this.timeoutMs = options.commandTimeoutMs ?? 30_000;
    this.stateRoot = options.stateRoot ?? (options.name === "crun" ? "/run/crun" : "/run/runc");
  }

  /** Run the runtime; non-zero exit ⇒ ERR_RUNTIME_FAILED with its stderr. */
  private async runtime(args: string[], opts: { allowFailure?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    try {
      return await run(this.binary, args, { timeoutMs: opts.timeoutMs ?? this.timeoutMs, allowFailure: opts.allowFailure, errorCode: "ERR_RUNTIME_FAILED" });
    } catch (err) {
      if (isPaddockError(err, "ERR_EXEC_TIMEOUT")) {
        throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} ${args.join(" ")}: ${err.message}`, { cause: err, details: err.details });
      }
      throw err;
    }
  }

  private fail(what: string, id: string, result: RunResult): PaddockError {
    const stderr = trimStderr(result.stderr);
    return new PaddockError("ERR_RUNTIME_FAILED", `${this.name} ${what} ${id} failed (exit ${result.exitCode}): ${stderr}`, {
      details: { command: `${this.binary} ${what} ${id}`, exitCode: result.exitCode, stderr },
    });
  }

  private async rawState(id: string): Promise<RuncStateJson | undefined> {
    const r = await this.runtime(["state", id], { allowFailure: true });
    if (r.exitCode !== 0) {
      // runc: "container does not exist"; crun: "... No such file or directory".
      if (/does not exist|not exist|no such file/i.test(r.stderr)) return undefined;
      throw this.fail("state", id, r);
    }
    return JSON.parse(r.stdout) as RuncStateJson;
  }

  /**
   * Write `<bundle>/config.json` and `runc create` the sandbox (init waits for start).
   * The sandbox's stdin is /dev/null; its stdout and stderr are the console pipe of
   * {@link consoleArgv}, so tini's and the agent's output land in the size-capped console
   * log. A leftover
   * stopped sandbox of the same id (daemon killed mid-way) is deleted first.
   * @throws PaddockError ERR_RUNTIME_FAILED (already exists and not stopped; runtime error with its log)
   */
  async create(spec: VmRuntimeSpec): Promise<void> {
    const config = renderOciSpec(spec, this.toolbox, { swapAccounting: this.swapAccounting, seccomp: spec.seccomp === "unconfined" ? undefined : this.seccomp });
    const existing = await this.rawState(spec.id);
    if (existing !== undefined) {
      if (existing.status !== "stopped") {
        throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} container ${spec.id} already exists (${existing.status})`);
      }
      this.logger.warn("deleting leftover stopped container", { id: spec.id });
      await this.destroy(spec.id);
    }
    await fs.mkdir(spec.bundleDir, { recursive: true, mode: 0o700 });
    await fs.mkdir(path.dirname(spec.consoleLogPath), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path.join(spec.bundleDir, "config.json"), JSON.stringify(config, null, 2) + "\n", 0o600);
    const logPath = path.join(spec.bundleDir, `${this.name}.log`);
    await fs.rm(logPath, { force: true });
    await prepareAgentSocket(spec.agentSocketPath);
    let result: RunResult;
    try {
      // Not through runtime(): the sandbox's stdio is the console pipe of consoleArgv(), which
      // the sandbox keeps open for its whole life.
      const argv = consoleArgv(spec, [
        ...listenPrefix(spec.agentSocketPath), this.binary,
        "--log", logPath, "--log-format", "json", "create", "--preserve-fds", "1", "--bundle", spec.bundleDir, "--pid-file", path.join(spec.bundleDir, "pid"), spec.id,
      ]);
      result = await run(argv[0] as string, argv.slice(1), { cwd: spec.bundleDir, timeoutMs: CREATE_TIMEOUT_MS, allowFailure: true, stdin: "ignore" });
    } catch (err) {
      await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
      await this.destroy(spec.id).catch(() => undefined);
      throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} create ${spec.id}: ${(err as Error).message}`, { cause: err });
    }
    if (result.exitCode !== 0) {
      const log = (await OciDriver.readRuntimeLog(logPath)) || trimStderr(result.stderr) || trimStderr(await readTail(spec.consoleLogPath));
      await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
      await this.destroy(spec.id).catch(() => undefined);
      throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} create ${spec.id} failed (exit ${result.exitCode}): ${log}`, {
        details: { command: `${this.binary} create ${spec.id}`, exitCode: result.exitCode, stderr: log },
      });
    }
  }

  /**
   * Create and start the sandbox in one runtime call (`runc run --detach`), the fast path of a
   * VM boot: one spawn instead of create + start + state. A leftover of the same id is removed
   * first (found by its state dir, so the common case costs no `runc state`); the pid comes from
   * the pid file runc writes before it returns. Same bundle, stdio and log handling as
   * {@link create}.
   * @returns `running` with the init's host pid, or `stopped` when init already exited.
   * @throws PaddockError ERR_RUNTIME_FAILED (runtime error with its log; nothing is left behind)
   */
  async run(spec: VmRuntimeSpec): Promise<RuntimeState> {
    const config = renderOciSpec(spec, this.toolbox, { swapAccounting: this.swapAccounting, seccomp: spec.seccomp === "unconfined" ? undefined : this.seccomp });
    if (existsSync(path.join(this.stateRoot, spec.id))) {
      this.logger.warn("removing leftover container before run", { id: spec.id });
      await this.destroy(spec.id);
    }
    await fs.mkdir(spec.bundleDir, { recursive: true, mode: 0o700 });
    // The bundle lives in the run dir and is rewritten on every boot: no fsync needed.
    const pidFile = path.join(spec.bundleDir, "pid");
    const logPath = path.join(spec.bundleDir, `${this.name}.log`);
    await Promise.all([
      fs.writeFile(path.join(spec.bundleDir, "config.json"), JSON.stringify(config) + "\n", { mode: 0o600 }),
      fs.rm(logPath, { force: true }),
      fs.rm(pidFile, { force: true }),
      fs.mkdir(path.dirname(spec.consoleLogPath), { recursive: true, mode: 0o700 }),
      prepareAgentSocket(spec.agentSocketPath),
    ]);
    let result: RunResult;
    try {
      // paddock-nsutil binds the agent listener and execs runc with it as fd 3; `--preserve-fds 1`
      // hands it to the sandbox's init (tenant-daemon/runtime/native/paddock-nsutil.c).
      const argv = consoleArgv(spec, [
        ...listenPrefix(spec.agentSocketPath), this.binary,
        "--log", logPath, "--log-format", "json", "run", "--detach", "--preserve-fds", "1", "--bundle", spec.bundleDir, "--pid-file", pidFile, spec.id,
      ]);
      result = await run(argv[0] as string, argv.slice(1), { cwd: spec.bundleDir, timeoutMs: CREATE_TIMEOUT_MS, allowFailure: true, stdin: "ignore" });
    } catch (err) {
      await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
      await this.destroy(spec.id).catch(() => undefined);
      throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} run ${spec.id}: ${(err as Error).message}`, { cause: err });
    }
    if (result.exitCode !== 0) {
      const log = (await OciDriver.readRuntimeLog(logPath)) || trimStderr(result.stderr) || trimStderr(await readTail(spec.consoleLogPath));
      await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
      await this.destroy(spec.id).catch(() => undefined);
      throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} run ${spec.id} failed (exit ${result.exitCode}): ${log}`, {
        details: { command: `${this.binary} run ${spec.id}`, exitCode: result.exitCode, stderr: log },
      });
    }
    const pid = Number.parseInt((await fs.readFile(pidFile, "utf8").catch(() => "")).trim(), 10);
    if (!(pid > 0)) return this.state(spec.id);
    return pidAlive(pid) ? { status: "running", pid } : { status: "stopped", pid: undefined };
  }

  /** Start a created sandbox (`runc start`). @throws PaddockError ERR_RUNTIME_FAILED */
  async start(id: string): Promise<void> {
    const r = await this.runtime(["start", id], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail("start", id, r);
  }

  async state(id: string): Promise<RuntimeState> {
    const raw = await this.rawState(id);
    if (raw === undefined) return { status: "absent", pid: undefined };
    const status: RuntimeStatus =
      raw.status === "created" || raw.status === "running" || raw.status === "paused" || raw.status === "stopped"
        ? raw.status
        : raw.status === "pausing"
          ? "running"
          : "stopped";
    return { status, pid: status === "stopped" || !(raw.pid > 0) ? undefined : raw.pid };
  }

  /**
   * Send `signal` (`SIGTERM`, `TERM`, `9`, …) to the sandbox's init. tini forwards it to the
   * agent's process group. A paused sandbox is thawed after a SIGKILL so the kill takes effect
   * (frozen tasks do not die until thawed on cgroup v1).
   * @throws PaddockError ERR_RUNTIME_FAILED (e.g. the sandbox is not running)
   */
  async kill(id: string, signal: string): Promise<void> {
    const before = await this.rawState(id);
    if (before === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} container ${id} does not exist`);
    const r = await this.runtime(["kill", id, signal], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail("kill", id, r);
    if (before.status === "paused" && /^(SIG)?KILL$|^9$/i.test(signal)) await this.resume(id);
  }

  /**
   * SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves once the runtime reports the
   * sandbox stopped (or absent). Signals go to init only (no `--all`): tini forwards SIGTERM
   * to the agent's process group, and when init exits the kernel SIGKILLs every other process
   * of the pid namespace, so nothing survives. A paused sandbox is thawed first (a frozen
   * process never handles SIGTERM).
   * @throws PaddockError ERR_RUNTIME_FAILED if it is still not stopped after SIGKILL.
   */
  async stop(id: string, timeoutMs: number): Promise<void> {
    const st = await this.state(id);
    if (st.status === "absent" || st.status === "stopped") return;
    if (st.status === "paused") await this.resume(id);
    if (st.status !== "created") {
      await this.runtime(["kill", id, "TERM"], { allowFailure: true });
      if (await this.waitStopped(id, timeoutMs)) return;
      this.logger.warn("sandbox ignored SIGTERM; sending SIGKILL", { id, timeoutMs });
    }
    await this.runtime(["kill", id, "KILL"], { allowFailure: true });
    if (await this.waitStopped(id, KILL_WAIT_MS)) return;
    throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} container ${id} did not stop ${KILL_WAIT_MS} ms after SIGKILL`);
  }

  /** Poll the runtime until stopped/absent or `timeoutMs` elapses; true when stopped. */
  private async waitStopped(id: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    let delayMs = 25;
    for (;;) {
      const { status } = await this.state(id);
      if (status === "stopped" || status === "absent") return true;
      if (Date.now() >= deadline) return false;
      await sleep(Math.min(delayMs, Math.max(1, deadline - Date.now())));
      delayMs = Math.min(delayMs * 2, 250);
    }
  }

  /** Freeze every process of the sandbox (`runc pause`). @throws PaddockError ERR_RUNTIME_FAILED */
  async pause(id: string): Promise<void> {
    const r = await this.runtime(["pause", id], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail("pause", id, r);
  }

  /** Thaw a paused sandbox (`runc resume`). @throws PaddockError ERR_RUNTIME_FAILED */
  async resume(id: string): Promise<void> {
    const r = await this.runtime(["resume", id], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail("resume", id, r);
  }

  /**
   * `runc update` of the vCPU quota and memory limit (renderOciSpec's rules). Lowering memory
   * below what the sandbox uses fails in the kernel (EBUSY) and is reported as such.
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async update(id: string, resources: { cpus: number; ramBytes: number }): Promise<void> {
    const args = ["update", "--cpu-period", String(CPU_PERIOD_US), "--cpu-quota", String(Math.round(resources.cpus * CPU_PERIOD_US)), "--memory", String(resources.ramBytes)];
    if (this.swapAccounting) args.push("--memory-swap", String(resources.ramBytes));
    const r = await this.runtime([...args, id], { allowFailure: true });
    if (r.exitCode !== 0) throw this.fail("update", id, r);
  }

  /**
   * `runc delete --force` (kills what still runs), then remove the sandbox's cgroup
   * directories in every hierarchy if the runtime left any. No-op when the id is unknown.
   * The cgroup path is read from the bundle's config.json before the delete.
   * @throws PaddockError ERR_RUNTIME_FAILED when the sandbox still exists afterwards.
   */
  async destroy(id: string): Promise<void> {
    const raw = await this.rawState(id);
    if (raw === undefined) return;
    const cgroupPath = await readCgroupPath(raw.bundle);
    if (raw.status === "paused") await this.resume(id).catch(() => undefined);
    const r = await this.runtime(["delete", "--force", id], { allowFailure: true });
    if (r.exitCode !== 0 && (await this.rawState(id)) !== undefined) throw this.fail("delete --force", id, r);
    if (cgroupPath !== undefined) await removeCgroupDirs(cgroupPath);
  }

  /**
   * Ids the runtime knows that start with `prefix`: the entries of its state root (one
   * directory per container). Read directly rather than through `runc list`, which fails as a
   * whole when any container on the host (another tenant's) is deleted while it lists.
   */
  async list(prefix: string): Promise<string[]> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.stateRoot);
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return [];
      return this.listByCommand(prefix);
    }
    return entries.filter((id) => id.startsWith(prefix)).sort();
  }

  private async listByCommand(prefix: string): Promise<string[]> {
    const r = await this.runtime(["list", "--format", "json"]);
    const parsed = JSON.parse(r.stdout.trim() === "" ? "null" : r.stdout) as { id: string }[] | null;
    return (parsed ?? []).map((c) => c.id).filter((id) => id.startsWith(prefix)).sort();
  }

  /** See {@link RuntimeDriver.pruneCgroups}. Never removes a hierarchy root. */
  async pruneCgroups(cgroupParent: string): Promise<void> {
    if (!cgroupParent.startsWith("/") || cgroupParent === "/" || cgroupParent.split("/").includes("..")) return;
    for (const mount of await cgroupMountPoints()) {
      // rmdir(2) of a cgroup fails with EBUSY while it has children or tasks: that is the "busy, leave it" case.
      await fs.rmdir(path.join(mount, cgroupParent)).catch(() => undefined);
    }
  }

  /** Error and warning messages of a runtime JSON log (`--log-format json`), trimmed to the tail. */
  static async readRuntimeLog(logPath: string): Promise<string> {
    let text: string;
    try {
      text = await fs.readFile(logPath, "utf8");
    } catch {
      return "";
    }
    const msgs: string[] = [];
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      try {
        const entry = JSON.parse(line) as { level?: string; msg?: string };
        if (entry.msg !== undefined && entry.level !== "debug" && entry.level !== "info") msgs.push(entry.msg);
      } catch {
        msgs.push(line);
      }
    }
    return trimStderr(msgs.join("\n"));
  }
}

/**
 * The runtime command `argv` behind a `paddock-nsutil logcap` of the VM's console log: the
 * sandbox's stdout and stderr are a pipe whose detached reader keeps at most
 * `spec.consoleLogBytes` on disk (`<log>` and `<log>.1`, rotated at half of it) and exits when
 * the sandbox's last process has exited. The daemon is not the pipe's reader: a persistent VM
 * outlives it and keeps logging. Without the cap, a guest writing to /proc/1/fd/1 fills the
 * host's state file system.
 */
function consoleArgv(spec: VmRuntimeSpec, argv: string[]): string[] {
  return [...logcapPrefix(spec.consoleLogPath, (spec.consoleLogBytes ?? DEFAULT_CONSOLE_LOG_BYTES) / 2, 1), ...argv];
}

/** Remove a stale agent socket at `socketPath` and make its (host-only, 0700) directory. */
async function prepareAgentSocket(socketPath: string): Promise<void> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o700 });
  await fs.rm(socketPath, { force: true });
}

/** The last 4 KiB of a file (the console log: where paddock-nsutil reports), or "". */
async function readTail(file: string): Promise<string> {
  try {
    const text = await fs.readFile(file, "utf8");
    return text.slice(-4096);
  } catch {
    return "";
  }
}

async function readCgroupPath(bundleDir: string): Promise<string | undefined> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(bundleDir, "config.json"), "utf8")) as { linux?: { cgroupsPath?: unknown } };
    const p = config.linux?.cgroupsPath;
    return typeof p === "string" && p.startsWith("/") ? p : undefined;
  } catch {
    return undefined;
  }
}

/**
 * rmdir `<hierarchy><cgroupPath>` in every cgroup hierarchy (only the leaf: parents may hold
 * other sandboxes). A cgroup directory is removed with rmdir, never rm -r (its files are
 * kernel interfaces). Missing directories are fine; a busy one (processes left) is logged by
 * the caller's error.
 */
export async function removeCgroupDirs(cgroupPath: string): Promise<void> {
  if (!cgroupPath.startsWith("/") || cgroupPath.split("/").includes("..") || cgroupPath === "/") return;
  for (const mount of await cgroupMountPoints()) {
    try {
      await fs.rmdir(path.join(mount, cgroupPath));
    } catch (err) {
      const code = errnoCode(err);
      if (code !== "ENOENT") {
        throw new PaddockError("ERR_RUNTIME_FAILED", `cannot remove cgroup ${path.join(mount, cgroupPath)}: ${(err as Error).message}`, { cause: err });
      }
    }
  }
}

/**
 * Build the OCI driver for this host: detect the runtime (see {@link chooseOciRuntime}), the
 * toolbox and swap accounting; with `warnAdvisories`, log a warning when the installed runc has
 * known escapes (runc-advisories.ts).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE
 */
export async function createOciDriver(options: { preference?: OciRuntimePreference; logger?: Logger; toolbox?: OciToolbox; warnAdvisories?: boolean } = {}): Promise<OciDriver> {
  const { name, binary } = await detectOciRuntime(options.preference ?? "auto");
  if (name === "runc" && options.warnAdvisories === true) {
    const version = await run(binary, ["--version"], { timeoutMs: 10_000, allowFailure: true });
    const warning = runcWarning(version.stdout);
    if (warning !== undefined) options.logger?.warn(warning, { runtime: binary });
  }
  return new OciDriver({
    name,
    binary,
    toolbox: options.toolbox ?? defaultToolbox(),
    swapAccounting: hostHasSwapAccounting(),
    logger: options.logger,
  });
}
