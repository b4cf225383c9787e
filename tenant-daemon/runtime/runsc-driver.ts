/**
 * The gVisor runtime driver: each VM is a runsc sandbox (a user-space kernel, the "sentry",
 * between the guest and the host) created from the OCI bundle of runsc-spec.ts. Sandboxes run
 * detached and outlive the daemon; their state lives in a root private to the tenant
 * (`<runDir>/runsc`), so a restarted daemon finds them again by id, and no tenant's runsc call
 * can resolve another tenant's container.
 *
 * The pieces: binary and platform (runsc-host.ts), the command line with the same global flags
 * on every call and prefix-free ids (runsc-cli.ts), the spec (runsc-spec.ts). Signals and
 * teardown reuse oci-lifecycle.ts, the bundle files oci-bundle.ts. What runsc 0.0~20221219
 * does differently from runc is measured in docs/gvisor-findings.md; what works end to end is
 * in docs/gvisor-status.md.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { run, trimStderr, type RunResult } from "../../shared/exec.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { pidAlive } from "../../shared/proc.js";
import { readdirOrEmpty } from "../../shared/read-dir.js";
import { DEFAULT_CONSOLE_LOG_BYTES, type RuntimeDriver, type RuntimeState, type VmRuntimeSpec } from "./driver.js";
import { hideSysctlPrefix, logcapPrefix } from "./nsutil.js";
import { pidFilePath, runtimeLogPath, writeCreateBundle, writeRunBundle } from "./oci-bundle.js";
import { assertCgroupParent, cgroupPathWithin, ownCgroupPath, pruneCgroupParent, readCgroupPath, type CgroupGuard } from "./oci-cgroups.js";
import { defaultToolbox, hostHasSwapAccounting } from "./oci-host.js";
import { destroySandbox, killSandbox, stopSandbox } from "./oci-lifecycle.js";
import { readRuntimeLog } from "./oci-runtime-cli.js";
import type { OciToolbox } from "./oci-spec.js";
import { checkpointSandbox, restoreSandbox, type HostChannel, type RunscCheckpointContext } from "./runsc-checkpoint.js";
import { RunscCli, listRunscIds, paddockId, runscId, type RunscNetwork } from "./runsc-cli.js";
import { writeCgroupResources } from "./runsc-cgroup.js";
import { chooseRunscPlatform, hostKvmFacts, requireRunsc, type RunscPlatform } from "./runsc-host.js";
import { reapCgroup } from "./runsc-reap.js";
import { renderRunscSpec } from "./runsc-spec.js";

/** Timeout of `create` and `run`, ms (the sentry boots and the gofer mounts everything). */
const CREATE_TIMEOUT_MS = 60_000;

/** The network namespace path of a bundle's config.json (`linux.namespaces`), or undefined (none, or unreadable). */
async function readNetnsPath(bundleDir: string): Promise<string | undefined> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(bundleDir, "config.json"), "utf8")) as { linux?: { namespaces?: { type?: string; path?: string }[] } };
    return config.linux?.namespaces?.find((n) => n.type === "network")?.path;
  } catch {
    return undefined;
  }
}

/** Options of {@link RunscDriver}. */
export interface RunscDriverOptions {
  /** Absolute path of runsc. */
  binary: string;
  /** The tenant's private state root (absolute), e.g. `<runDir>/runsc`. */
  stateRoot: string;
  /**
   * The tenant's cgroup parent (absolute, relative to each hierarchy root), `/paddock/<tenant>`
   * (tenant-cgroup.ts `tenantCgroupPath`): only a sandbox cgroup strictly below it is reaped or
   * updated (oci-cgroups.ts `cgroupPathWithin`).
   */
  cgroupParent: string;
  platform: RunscPlatform;
  toolbox: OciToolbox;
  swapAccounting: boolean;
  logger?: Logger;
  /** Timeout of each runsc command other than create/run, ms (default 30 000). */
  commandTimeoutMs?: number;
  /** Timeout of `create`, `run` and `start` (the sentry boots), ms (default {@link CREATE_TIMEOUT_MS}). */
  bootTimeoutMs?: number;
}

/** The gVisor driver. Construct with {@link createRunscDriver} (detects runsc, platform and toolbox). */
export class RunscDriver implements RuntimeDriver {
  readonly name = "runsc";
  /**
   * runsc 20221219 cannot pass an inherited listener (no `--preserve-fds`): the agent dials the
   * daemon's listener bound read-only into the guest (`--host-uds=open`, runsc-cli.ts).
   */
  readonly agentChannel = "dial";
  readonly platform: RunscPlatform;
  private readonly cli: RunscCli;
  private readonly stateRoot: string;
  private readonly toolbox: OciToolbox;
  private readonly swapAccounting: boolean;
  private readonly logger: Logger;
  private readonly bootTimeoutMs: number;
  private readonly cgroupParent: string;
  /**
   * Cgroup path of each sandbox this driver launched (Paddock id → `spec.cgroupPath`), so
   * {@link destroy} finds the processes of one runsc lost track of. In memory only: after a
   * restart the tenant's purge ({@link pruneCgroups}) clears such leftovers.
   */
  private readonly launched = new Map<string, string>();

  constructor(options: RunscDriverOptions) {
    if (!path.isAbsolute(options.stateRoot)) throw new RangeError(`stateRoot must be absolute, got ${JSON.stringify(options.stateRoot)}`);
    assertCgroupParent(options.cgroupParent);
    this.cgroupParent = options.cgroupParent;
    this.platform = options.platform;
    this.stateRoot = options.stateRoot;
    this.cli = new RunscCli(options.binary, { root: options.stateRoot, platform: options.platform }, options.commandTimeoutMs ?? 30_000);
    this.toolbox = options.toolbox;
    this.swapAccounting = options.swapAccounting;
    this.logger = options.logger ?? silentLogger;
    this.bootTimeoutMs = options.bootTimeoutMs ?? CREATE_TIMEOUT_MS;
  }

  /**
   * argv of `runsc <global flags> exec <id> <args…>`: a process inside the sandbox, for tests
   * and diagnostics (the agent is the product's way in).
   */
  execArgv(id: string, args: readonly string[]): string[] {
    return [this.cli.binary, ...this.cli.globals, "exec", runscId(id), ...args];
  }

  /**
   * Write the bundle and `runsc create` the sandbox (init waits for start). A leftover stopped
   * sandbox of the same id is removed first.
   * @throws PaddockError ERR_RUNTIME_FAILED (exists and not stopped; runsc error with its log;
   *   nothing is left behind)
   */
  async create(spec: VmRuntimeSpec): Promise<void> {
    const config = this.render(spec);
    const existing = await this.cli.rawState(runscId(spec.id));
    if (existing !== undefined) {
      if (existing.status !== "stopped") throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${spec.id} already exists (${existing.status})`);
      this.logger.warn("deleting leftover stopped container", { id: spec.id });
      await this.destroy(spec.id);
    }
    await writeCreateBundle(this.cli, spec, config);
    await this.launch(spec, "create");
  }

  /**
   * Create and start in one call (`runsc run --detach`). A leftover of the same id is removed first.
   * @returns `running` with the sentry's host pid, or `stopped` when the sandbox already exited.
   * @throws PaddockError ERR_RUNTIME_FAILED (nothing is left behind)
   */
  async run(spec: VmRuntimeSpec): Promise<RuntimeState> {
    const config = this.render(spec);
    if ((await listRunscIds(this.stateRoot)).includes(runscId(spec.id))) {
      this.logger.warn("removing leftover container before run", { id: spec.id });
      await this.destroy(spec.id);
    }
    await writeRunBundle(this.cli, spec, config);
    await this.launch(spec, "run");
    const pid = Number.parseInt((await fs.readFile(pidFilePath(spec), "utf8").catch(() => "")).trim(), 10);
    if (!(pid > 0)) return this.state(spec.id);
    return pidAlive(pid) ? { status: "running", pid } : { status: "stopped", pid: undefined };
  }

  /**
   * `runsc start`. runsc sets the network up here, so a VM with a netns (its config.json names
   * one) starts with `--network=sandbox` behind the /proc/sys wrapper, like `run`.
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async start(id: string): Promise<void> {
    const rid = runscId(id);
    const raw = await this.cli.rawState(rid);
    if (raw === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${id} does not exist`);
    const network = (await readNetnsPath(raw.bundle)) === undefined ? "none" : "sandbox";
    const argv = [...(await this.networkPrefix(raw.bundle, network)), this.cli.binary, ...this.cli.flags(network), "start", rid];
    const r = await run(argv[0] as string, argv.slice(1), { timeoutMs: this.bootTimeoutMs, allowFailure: true, stdin: "ignore" });
    if (r.exitCode !== 0) throw this.cli.fail("start", rid, r);
  }

  /** The sandbox's state (`pid` = the sentry's host pid). @throws PaddockError ERR_RUNTIME_FAILED */
  async state(id: string): Promise<RuntimeState> {
    return this.cli.state(runscId(id));
  }

  /** Signal the guest's init (tini forwards it). @throws PaddockError ERR_RUNTIME_FAILED */
  async kill(id: string, signal: string): Promise<void> {
    await killSandbox(this.cli, runscId(id), signal);
  }

  /** SIGTERM, wait up to `timeoutMs`, then SIGKILL; `forced` when it took the SIGKILL. @throws PaddockError ERR_RUNTIME_FAILED if still not stopped. */
  async stop(id: string, timeoutMs: number): Promise<{ forced: boolean }> {
    return stopSandbox(this.cli, this.logger, runscId(id), timeoutMs);
  }

  /**
   * `runsc pause`: the sentry stops every guest task (memory kept; the host freezer is not
   * used). runsc 20221219 panics on pausing a created (never started) sandbox, so that is refused.
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  async pause(id: string): Promise<void> {
    const st = await this.state(id);
    if (st.status !== "running") throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${id} cannot be paused while ${st.status}`);
    await this.cli.verb("pause", runscId(id));
  }

  /** `runsc resume`. @throws PaddockError ERR_RUNTIME_FAILED */
  async resume(id: string): Promise<void> {
    await this.cli.verb("resume", runscId(id));
  }

  /**
   * There is no `runsc update`: the vCPU quota and memory limit are written to the sandbox's
   * host cgroup (runsc-cgroup.ts). The guest's `/proc/meminfo` keeps its boot-time total.
   * @throws PaddockError ERR_RUNTIME_FAILED (unknown sandbox, a limit the kernel refuses)
   */
  async update(id: string, resources: { cpus: number; ramBytes: number }): Promise<void> {
    const raw = await this.cli.rawState(runscId(id));
    const cgroupPath = raw === undefined ? undefined : await readCgroupPath(raw.bundle);
    if (cgroupPath === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${id} does not exist or has no cgroup`);
    if (!cgroupPathWithin(this.cgroupParent, cgroupPath)) {
      throw new PaddockError("ERR_RUNTIME_FAILED", `refusing to set limits on cgroup ${JSON.stringify(cgroupPath)} of runsc container ${id}: not below the tenant's cgroup ${this.cgroupParent}`);
    }
    await writeCgroupResources(cgroupPath, resources, this.swapAccounting);
  }

  /**
   * `cgroupPath` when it is a cgroup of this tenant (strictly below {@link cgroupParent},
   * oci-cgroups.ts `ownCgroupPath`); otherwise undefined, with an error logged: destroy
   * never freezes, kills in or removes a cgroup outside the tenant's own because a bundle's
   * config.json names it.
   */
  private ownCgroup(id: string, cgroupPath: string | undefined, source: string): string | undefined {
    return ownCgroupPath(this.cgroupParent, cgroupPath, this.logger, { id, source, op: "reap" });
  }

  /**
   * The tenant's cgroup parent for oci-lifecycle.ts `destroySandbox`. `destroy` has already
   * logged a refused config.json path ({@link ownCgroup}), so its own calls pass `quiet`.
   */
  private guard(quiet = false): CgroupGuard {
    return { cgroupParent: this.cgroupParent, logger: quiet ? silentLogger : this.logger };
  }

  /**
   * `runsc delete --force`, then every process left in the sandbox's cgroup is killed and the
   * cgroup removed (runsc-reap.ts), then runsc's leftover state files of the id. The cgroup is the
   * one of its config.json, or, for a sandbox runsc no longer knows (a boot killed on its
   * timeout), the one this driver launched it in; either only when strictly below the tenant's
   * cgroup parent (a path outside it is logged as an error and left untouched). No-op when
   * nothing is left.
   * @throws PaddockError ERR_RUNTIME_FAILED when the sandbox, a process or its cgroup stays.
   */
  async destroy(id: string): Promise<void> {
    const rid = runscId(id);
    const raw = await this.cli.rawState(rid);
    const cgroupPath = this.ownCgroup(id, raw === undefined ? undefined : await readCgroupPath(raw.bundle), "config.json")
      ?? this.ownCgroup(id, this.launched.get(id), "launch");
    let failure: unknown;
    await destroySandbox(this.cli, rid, this.guard(true)).catch((err: unknown) => {
      failure = err;
    });
    if (cgroupPath !== undefined) {
      const killed = await reapCgroup(cgroupPath);
      if (killed.length > 0) this.logger.warn("killed processes left in the cgroup of a sandbox", { id, cgroupPath, pids: killed });
      // With its processes gone, runsc can delete what it still knows.
      if (failure !== undefined) failure = await destroySandbox(this.cli, rid, this.guard(true)).then(() => undefined, (err: unknown) => err);
    }
    if (failure !== undefined) throw failure;
    await this.removeStateFiles(rid);
    this.launched.delete(id);
  }

  /**
   * Remove runsc's `<sandbox>_sandbox:<rid>.state` and `.lock` files of container `rid` from the
   * tenant's private state root (host-only, runsc-cli.ts) when runsc does not know the id: a
   * `runsc run` killed mid-boot leaves its `.lock`.
   */
  private async removeStateFiles(rid: string): Promise<void> {
    if ((await this.cli.rawState(rid)) !== undefined) return;
    for (const e of await readdirOrEmpty(this.stateRoot)) {
      if (e.endsWith(`_sandbox:${rid}.lock`) || e.endsWith(`_sandbox:${rid}.state`)) await fs.rm(path.join(this.stateRoot, e), { force: true });
    }
  }

  /** Paddock ids of the sandboxes in the tenant's root that start with `prefix`, sorted. */
  async list(prefix: string): Promise<string[]> {
    return (await listRunscIds(this.stateRoot)).flatMap((rid) => paddockId(rid) ?? []).filter((id) => id.startsWith(prefix)).sort();
  }

  /**
   * See {@link RuntimeDriver.pruneCgroups}, called once the tenant has no sandbox left: a
   * process still in a cgroup below `cgroupParent` belongs to a sandbox runsc no longer knows
   * (a boot killed on its timeout), so it is killed and the cgroups removed (runsc-reap.ts).
   * Never throws: what cannot be removed is logged and left.
   */
  async pruneCgroups(cgroupParent: string): Promise<void> {
    try {
      const killed = await reapCgroup(cgroupParent);
      if (killed.length > 0) this.logger.warn("killed processes left in the tenant's cgroups", { cgroupParent, pids: killed });
    } catch (err) {
      this.logger.error("cannot clear the tenant's cgroups", { cgroupParent, err });
    }
    await pruneCgroupParent(cgroupParent);
  }

  /** `runsc checkpoint` into `imageDir`, then delete: see runsc-checkpoint.ts. @throws PaddockError ERR_RUNTIME_FAILED */
  async suspend(id: string, imageDir: string, channel?: HostChannel): Promise<{ imageBytes: number }> {
    return checkpointSandbox(this.checkpointContext(), id, imageDir, channel);
  }

  /** `runsc restore` from `imageDir`: see runsc-checkpoint.ts. @throws PaddockError ERR_RUNTIME_FAILED */
  async restore(id: string, imageDir: string, bundle: { bundleDir: string; consoleLogPath: string; consoleLogBytes?: number }): Promise<RuntimeState> {
    const pid = await restoreSandbox(this.checkpointContext(), id, imageDir, bundle);
    return pidAlive(pid) ? { status: "running", pid } : this.state(id);
  }

  private checkpointContext(): RunscCheckpointContext {
    return { cli: this.cli, logger: this.logger, cgroupParent: this.cgroupParent, networkPrefix: (bundleDir, network) => this.networkPrefix(bundleDir, network) };
  }

  /** The spec for runsc (runsc-spec.ts). @throws RangeError on a bad spec (oci-spec.ts). */
  private render(spec: VmRuntimeSpec): ReturnType<typeof renderRunscSpec> {
    return renderRunscSpec(spec, this.toolbox, this.swapAccounting);
  }

  /**
   * The argv prefix runsc runs behind when it makes the sandbox or sets up its network
   * (`create`, `run`, `start`): for a VM
   * with a netns, `paddock-nsutil hidesysctl <bundle>/sysctl-scratch` (nsutil.ts
   * {@link hideSysctlPrefix}); [] otherwise.
   */
  private async networkPrefix(bundleDir: string, network: RunscNetwork): Promise<string[]> {
    if (network === "none") return [];
    const scratch = path.join(bundleDir, "sysctl-scratch");
    await fs.mkdir(scratch, { recursive: true, mode: 0o700 });
    return hideSysctlPrefix(scratch);
  }

  /**
   * `runsc <globals> --log <bundle>/runsc.log --log-format json create|run [--detach] --bundle
   * <bundle> --pid-file <bundle>/pid <id>` behind the console-log reader (`paddock-nsutil
   * logcap`: stdout and stderr are one pipe; runsc imports them as host fds), stdin /dev/null.
   * On failure the sandbox and its cgroup leaf are removed: runsc leaves the cgroup behind when
   * create or start fails.
   * @throws PaddockError ERR_RUNTIME_FAILED with runsc's log, else its stderr.
   */
  private async launch(spec: VmRuntimeSpec, verb: "create" | "run"): Promise<void> {
    const logPath = runtimeLogPath(this.cli, spec);
    await fs.mkdir(this.stateRoot, { recursive: true, mode: 0o700 });
    this.launched.set(spec.id, spec.cgroupPath);
    const network: RunscNetwork = spec.netnsPath === undefined ? "none" : "sandbox";
    const argv = [
      ...logcapPrefix(spec.consoleLogPath, (spec.consoleLogBytes ?? DEFAULT_CONSOLE_LOG_BYTES) / 2, 1),
      ...(await this.networkPrefix(spec.bundleDir, network)),
      this.cli.binary, ...this.cli.flags(network), `--log=${logPath}`, "--log-format=json",
      verb, ...(verb === "run" ? ["--detach"] : []), "--bundle", spec.bundleDir, "--pid-file", pidFilePath(spec), runscId(spec.id),
    ];
    let result: RunResult | undefined;
    let failure: unknown;
    try {
      result = await run(argv[0] as string, argv.slice(1), { cwd: spec.bundleDir, timeoutMs: this.bootTimeoutMs, allowFailure: true, stdin: "ignore" });
    } catch (err) {
      failure = err;
    }
    if (result?.exitCode === 0) return;
    const why = failure !== undefined ? (failure as Error).message : (await readRuntimeLog(logPath)) || trimStderr(result?.stderr ?? "");
    // runsc killed mid-boot may not know the sandbox any more while it still runs: destroy()
    // kills what is in the VM's cgroup (this.launched holds it) and removes the cgroup.
    await this.destroy(spec.id).catch((err: unknown) => this.logger.error("cannot remove a failed sandbox", { id: spec.id, err }));
    throw new PaddockError("ERR_RUNTIME_FAILED", `runsc ${verb} ${spec.id} failed${result !== undefined ? ` (exit ${result.exitCode})` : ""}: ${why}`, {
      cause: failure,
      details: { command: `${this.cli.binary} ${verb} ${runscId(spec.id)}`, exitCode: result?.exitCode, stderr: why },
    });
  }
}

/**
 * Build the gVisor driver for a tenant: find runsc, choose the platform (runsc-host.ts
 * {@link chooseRunscPlatform}: `auto` ⇒ kvm when /dev/kvm opens read-write and the CPU has
 * hardware virtualisation, else ptrace), the toolbox and swap accounting.
 * @param options.stateRoot - the tenant's private runsc root, e.g. `<runDir>/runsc`.
 * @param options.cgroupParent - the tenant's cgroup parent, `/paddock/<tenant>` (see {@link RunscDriverOptions.cgroupParent}).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE (runsc missing: names `apt-get install runsc`;
 *   kvm asked for where it cannot work; toolbox missing)
 */
export function createRunscDriver(options: { stateRoot: string; cgroupParent: string; platform?: "auto" | RunscPlatform; logger?: Logger; toolbox?: OciToolbox }): RunscDriver {
  return new RunscDriver({
    binary: requireRunsc(),
    stateRoot: options.stateRoot,
    cgroupParent: options.cgroupParent,
    platform: chooseRunscPlatform(options.platform ?? "auto", hostKvmFacts()),
    toolbox: options.toolbox ?? defaultToolbox(),
    swapAccounting: hostHasSwapAccounting(),
    logger: options.logger,
  });
}
