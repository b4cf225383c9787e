/**
 * The OCI runtime driver: each VM is a runc (or crun) container created from a bundle whose
 * `config.json` comes from {@link renderOciSpec}. Containers run detached and outlive the
 * daemon; their state lives in the runtime's default root (`/run/runc`), so `runc list` shows
 * them and a restarted daemon finds them again by id.
 *
 * The pieces: host detection and the toolbox (oci-host.ts), the runtime's command line and
 * state queries (oci-runtime-cli.ts), bundle and launch (oci-bundle.ts), signals and teardown
 * (oci-lifecycle.ts), leftover cgroups (oci-cgroups.ts). Every command goes through
 * shared/exec.ts `run()` with a timeout; failures become PaddockError ERR_RUNTIME_FAILED
 * carrying the runtime's stderr.
 */
import { promises as fs, existsSync } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { readdirOrEmpty } from "../../shared/read-dir.js";
import { run } from "../../shared/exec.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { pidAlive } from "../../shared/proc.js";
import type { RuntimeDriver, RuntimeState, VmRuntimeSpec } from "./driver.js";
import { launchSandbox, pidFilePath, writeCreateBundle, writeRunBundle } from "./oci-bundle.js";
import { assertCgroupParent, pruneCgroupParent, type CgroupGuard } from "./oci-cgroups.js";
import { defaultToolbox, detectOciRuntime, hostHasSwapAccounting, type OciRuntimeName, type OciRuntimePreference } from "./oci-host.js";
import { destroySandbox, killSandbox, stopSandbox, updateSandbox } from "./oci-lifecycle.js";
import { OciRuntimeCli, readRuntimeLog } from "./oci-runtime-cli.js";
import { renderOciSpec, type OciSpec, type OciToolbox } from "./oci-spec.js";
import { runcWarning } from "./runc-advisories.js";
import { loadSeccompProfile, type OciSeccomp } from "./seccomp.js";

export { cgroupMountPoints, removeCgroupDirs } from "./oci-cgroups.js";
export {
  chooseOciRuntime, defaultToolbox, detectOciRuntime, findOnPath, hostHasSwapAccounting,
  type OciHostFacts, type OciRuntimeName, type OciRuntimePreference,
} from "./oci-host.js";

/** Options of {@link OciDriver}. */
export interface OciDriverOptions {
  name: OciRuntimeName;
  /** Absolute path of the runtime binary. */
  binary: string;
  /**
   * The tenant's cgroup parent (absolute, relative to each hierarchy root), `/paddock/<tenant>`
   * (tenant-cgroup.ts `tenantCgroupPath`): a sandbox's cgroup read from its config.json is
   * removed only when strictly below it (oci-cgroups.ts `ownCgroupPath`).
   */
  cgroupParent: string;
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

/** The OCI runtime driver. Construct with {@link createOciDriver} (detects runtime and toolbox). */
export class OciDriver implements RuntimeDriver {
  readonly name: OciRuntimeName;
  /** Absolute path of the runtime binary. */
  readonly binary: string;
  private readonly cli: OciRuntimeCli;
  private readonly toolbox: OciToolbox;
  private readonly swapAccounting: boolean;
  private readonly seccomp: OciSeccomp;
  private readonly logger: Logger;
  private readonly stateRoot: string;
  /** The tenant's cgroup parent and this driver's logger, for every teardown (oci-lifecycle.ts `destroySandbox`). */
  private readonly guard: CgroupGuard;

  /** @throws RangeError for a `cgroupParent` that is not a cgroup below the hierarchy root. */
  constructor(options: OciDriverOptions) {
    assertCgroupParent(options.cgroupParent);
    this.name = options.name;
    this.binary = options.binary;
    this.cli = new OciRuntimeCli(options.name, options.binary, options.commandTimeoutMs ?? 30_000);
    this.toolbox = options.toolbox;
    this.swapAccounting = options.swapAccounting;
    this.seccomp = options.seccomp ?? loadSeccompProfile();
    this.logger = options.logger ?? silentLogger;
    this.stateRoot = options.stateRoot ?? (options.name === "crun" ? "/run/crun" : "/run/runc");
    this.guard = { cgroupParent: options.cgroupParent, logger: this.logger };
  }

  /** The sandbox's `config.json` (oci-spec.ts), with this driver's seccomp profile unless the spec opts out. */
  private render(spec: VmRuntimeSpec): OciSpec {
    return renderOciSpec(spec, this.toolbox, { swapAccounting: this.swapAccounting, seccomp: spec.seccomp === "unconfined" ? undefined : this.seccomp });
  }

  /**
   * Write `<bundle>/config.json` and `runc create` the sandbox (init waits for start).
   * The sandbox's stdin is /dev/null; its stdout and stderr are the console pipe of
   * oci-bundle.ts, so tini's and the agent's output land in the size-capped console log.
   * A leftover stopped sandbox of the same id (daemon killed mid-way) is deleted first.
   * @throws PaddockError ERR_RUNTIME_FAILED (already exists and not stopped; runtime error with its log)
   */
  async create(spec: VmRuntimeSpec): Promise<void> {
    const config = this.render(spec);
    const existing = await this.cli.rawState(spec.id);
    if (existing !== undefined) {
      if (existing.status !== "stopped") {
        throw new PaddockError("ERR_RUNTIME_FAILED", `${this.name} container ${spec.id} already exists (${existing.status})`);
      }
      this.logger.warn("deleting leftover stopped container", { id: spec.id });
      await this.destroy(spec.id);
    }
    await writeCreateBundle(this.cli, spec, config);
    await launchSandbox(this.cli, spec, "create", this.guard);
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
    const config = this.render(spec);
    if (existsSync(path.join(this.stateRoot, spec.id))) {
      this.logger.warn("removing leftover container before run", { id: spec.id });
      await this.destroy(spec.id);
    }
    await writeRunBundle(this.cli, spec, config);
    await launchSandbox(this.cli, spec, "run", this.guard);
    const pid = Number.parseInt((await fs.readFile(pidFilePath(spec), "utf8").catch(() => "")).trim(), 10);
    if (!(pid > 0)) return this.state(spec.id);
    return pidAlive(pid) ? { status: "running", pid } : { status: "stopped", pid: undefined };
  }

  /** Start a created sandbox (`runc start`). @throws PaddockError ERR_RUNTIME_FAILED */
  async start(id: string): Promise<void> {
    await this.cli.verb("start", id);
  }

  /** See {@link OciRuntimeCli.state}. @throws PaddockError ERR_RUNTIME_FAILED */
  async state(id: string): Promise<RuntimeState> {
    return this.cli.state(id);
  }

  /** See {@link killSandbox}. @throws PaddockError ERR_RUNTIME_FAILED (e.g. the sandbox is not running) */
  async kill(id: string, signal: string): Promise<void> {
    await killSandbox(this.cli, id, signal);
  }

  /** See {@link stopSandbox}. @throws PaddockError ERR_RUNTIME_FAILED if it is still not stopped after SIGKILL. */
  async stop(id: string, timeoutMs: number): Promise<{ forced: boolean }> {
    return stopSandbox(this.cli, this.logger, id, timeoutMs);
  }

  /** Freeze every process of the sandbox (`runc pause`). @throws PaddockError ERR_RUNTIME_FAILED */
  async pause(id: string): Promise<void> {
    await this.cli.verb("pause", id);
  }

  /** Thaw a paused sandbox (`runc resume`). @throws PaddockError ERR_RUNTIME_FAILED */
  async resume(id: string): Promise<void> {
    await this.cli.verb("resume", id);
  }

  /** See {@link updateSandbox}. @throws PaddockError ERR_RUNTIME_FAILED */
  async update(id: string, resources: { cpus: number; ramBytes: number }): Promise<void> {
    await updateSandbox(this.cli, this.swapAccounting, id, resources);
  }

  /**
   * See {@link destroySandbox}; then removes `<stateRoot>/<id>` if the runtime left it empty: a
   * runtime killed between creating that directory and writing its state there leaves one, and
   * the runtime then knows no such container yet refuses a new one with that id ("container
   * with id exists"). `rmdir` removes only an empty directory; the state root is the host's own.
   * @throws PaddockError ERR_RUNTIME_FAILED when the sandbox still exists afterwards.
   */
  async destroy(id: string): Promise<void> {
    await destroySandbox(this.cli, id, this.guard);
    await fs.rmdir(path.join(this.stateRoot, id)).catch(() => undefined);
  }

  /**
   * Ids the runtime knows that start with `prefix`: the entries of its state root (one
   * directory per container). Read directly rather than through `runc list`, which fails as a
   * whole when any container on the host (another tenant's) is deleted while it lists.
   */
  async list(prefix: string): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdirOrEmpty(this.stateRoot);
    } catch {
      return this.cli.list(prefix);
    }
    return entries.filter((id) => id.startsWith(prefix)).sort();
  }

  /** See {@link RuntimeDriver.pruneCgroups}. Never removes a hierarchy root. */
  async pruneCgroups(cgroupParent: string): Promise<void> {
    await pruneCgroupParent(cgroupParent);
  }

  /** Error and warning messages of a runtime JSON log (`--log-format json`), trimmed to the tail. */
  static async readRuntimeLog(logPath: string): Promise<string> {
    return readRuntimeLog(logPath);
  }
}

/**
 * Log a warning when the runtime `driver` runs is a runc with known escapes (runc-advisories.ts),
 * from its `--version`. Advisory only: the daemon calls it after it is ready (tenant-daemon/main.ts),
 * so the child is not on the start's path. Nothing for another runtime. Never throws (a runc that
 * does not answer gives no warning).
 */
export async function warnRuncAdvisories(driver: Pick<OciDriver, "name" | "binary">, logger: Logger): Promise<void> {
  if (driver.name !== "runc") return;
  const version = await run(driver.binary, ["--version"], { timeoutMs: 10_000, allowFailure: true }).catch(() => undefined);
  const warning = version === undefined ? undefined : runcWarning(version.stdout);
  if (warning !== undefined) logger.warn(warning, { runtime: driver.binary });
}

/**
 * Build the OCI driver for this host: detect the runtime (see oci-host.ts `chooseOciRuntime`),
 * the toolbox and swap accounting (runc's advisories: {@link warnRuncAdvisories}, after start).
 * `cgroupParent`: the tenant's, see {@link OciDriverOptions}.
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE; RangeError for a bad `cgroupParent`
 */
export async function createOciDriver(options: { cgroupParent: string; preference?: OciRuntimePreference; logger?: Logger; toolbox?: OciToolbox }): Promise<OciDriver> {
  const { name, binary } = await detectOciRuntime(options.preference ?? "auto");
  return new OciDriver({
    name,
    binary,
    cgroupParent: options.cgroupParent,
    toolbox: options.toolbox ?? defaultToolbox(),
    swapAccounting: hostHasSwapAccounting(),
    logger: options.logger,
  });
}
