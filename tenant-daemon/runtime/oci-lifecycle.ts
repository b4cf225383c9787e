/**
 * Signals and teardown of a running OCI sandbox: kill, graceful stop, cgroup update and
 * destroy, each a short sequence of runtime commands through {@link OciRuntimeCli}.
 */
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import { sleep } from "../../shared/time.js";
import { ownCgroupPath, readCgroupPath, removeCgroupDirs, type CgroupGuard } from "./oci-cgroups.js";
import type { OciRuntimeCli } from "./oci-runtime-cli.js";
import { CPU_PERIOD_US } from "./oci-spec.js";

/** How long to wait for a SIGKILLed sandbox to be reported stopped before giving up. */
const KILL_WAIT_MS = 15_000;

/**
 * Send `signal` (`SIGTERM`, `TERM`, `9`, …) to the sandbox's init. tini forwards it to the
 * agent's process group. A SIGKILL of a paused runc/crun sandbox goes to every process of it
 * while it is frozen, then the sandbox is thawed ({@link killFrozen}): the kill takes effect
 * (frozen tasks do not die until thawed on cgroup v1) and no guest code runs after the pause.
 * A paused runsc sandbox is resumed after the SIGKILL (its pause is the sentry's own).
 * @throws PaddockError ERR_RUNTIME_FAILED (e.g. the sandbox is not running or does not exist)
 */
export async function killSandbox(cli: OciRuntimeCli, id: string, signal: string): Promise<void> {
  const before = await cli.rawState(id);
  if (before === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `${cli.name} container ${id} does not exist`);
  const frozen = before.status === "paused" && cli.name !== "runsc";
  if (frozen && /^(SIG)?KILL$|^9$/i.test(signal)) {
    await killFrozen(cli, id, { strict: true });
    return;
  }
  const r = await cli.exec(["kill", id, signal], { allowFailure: true });
  if (r.exitCode !== 0) throw cli.fail("kill", id, r);
  // runsc pauses in its sentry (no host freezer); a SIGKILL lands once it runs again.
  if (before.status === "paused" && cli.name === "runsc" && /^(SIG)?KILL$|^9$/i.test(signal)) await cli.verb("resume", id);
}

/**
 * Kill, then thaw, a paused (frozen) sandbox: `kill --all <id> KILL` queues SIGKILL for every
 * process of its cgroup while they are frozen (runc 1.1 freezes, signals each pid, thaws:
 * libcontainer `signalAllProcesses`, https://github.com/opencontainers/runc/blob/v1.1.5/libcontainer/init_linux.go),
 * then `resume` thaws it where the runtime did not (a "not paused" refusal is expected after
 * runc's own thaw and ignored). Each task dies at the thaw, before it returns to user space
 * (https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html): no guest code runs,
 * where a thaw first would let the guest run until the kill lands, and a kill without a thaw
 * would leave a caller waiting for an exit that never comes.
 * @param opts.strict - throw when the kill itself failed (else the caller's delete kills).
 * @throws PaddockError ERR_RUNTIME_FAILED (only with `strict`).
 */
async function killFrozen(cli: OciRuntimeCli, id: string, opts: { strict: boolean }): Promise<void> {
  const r = await cli.exec(["kill", "--all", id, "KILL"], { allowFailure: true });
  await cli.verb("resume", id).catch(() => undefined);
  if (r.exitCode !== 0 && opts.strict) throw cli.fail("kill --all", id, r);
}

/**
 * SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves once the runtime reports the
 * sandbox stopped (or absent). Signals go to init only (no `--all`): tini forwards SIGTERM
 * to the agent's process group, and when init exits the kernel SIGKILLs every other process
 * of the pid namespace, so nothing survives. A paused sandbox is thawed first (a frozen
 * process never handles SIGTERM). A sandbox only created (never started) gets SIGKILL at once.
 * @returns `forced`: whether it took a SIGKILL (see RuntimeDriver.stop in driver.ts).
 * @throws PaddockError ERR_RUNTIME_FAILED if it is still not stopped 15 s after SIGKILL.
 */
export async function stopSandbox(cli: OciRuntimeCli, logger: Logger, id: string, timeoutMs: number): Promise<{ forced: boolean }> {
  const st = await cli.state(id);
  if (st.status === "absent" || st.status === "stopped") return { forced: false };
  if (st.status === "paused") await cli.verb("resume", id);
  if (st.status !== "created") {
    await cli.exec(["kill", id, "TERM"], { allowFailure: true });
    if (await waitStopped(cli, id, timeoutMs)) return { forced: false };
    logger.warn("sandbox ignored SIGTERM; sending SIGKILL", { id, timeoutMs });
  }
  await cli.exec(["kill", id, "KILL"], { allowFailure: true });
  if (await waitStopped(cli, id, KILL_WAIT_MS)) return { forced: true };
  throw new PaddockError("ERR_RUNTIME_FAILED", `${cli.name} container ${id} did not stop ${KILL_WAIT_MS} ms after SIGKILL`);
}

/** Poll the runtime (25 ms doubling to 250 ms) until stopped/absent or `timeoutMs` elapses; true when stopped. */
async function waitStopped(cli: OciRuntimeCli, id: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delayMs = 25;
  for (;;) {
    const { status } = await cli.state(id);
    if (status === "stopped" || status === "absent") return true;
    if (Date.now() >= deadline) return false;
    await sleep(Math.min(delayMs, Math.max(1, deadline - Date.now())));
    delayMs = Math.min(delayMs * 2, 250);
  }
}

/**
 * `runc update` of the vCPU quota (`cpus` × the CFS period) and memory limit (bytes; swap
 * capped to the same where `swapAccounting`), oci-spec.ts's rules. Lowering memory below what
 * the sandbox uses fails in the kernel (EBUSY) and is reported as such.
 * @throws PaddockError ERR_RUNTIME_FAILED
 */
export async function updateSandbox(cli: OciRuntimeCli, swapAccounting: boolean, id: string, resources: { cpus: number; ramBytes: number }): Promise<void> {
  const args = ["update", "--cpu-period", String(CPU_PERIOD_US), "--cpu-quota", String(Math.round(resources.cpus * CPU_PERIOD_US)), "--memory", String(resources.ramBytes)];
  if (swapAccounting) args.push("--memory-swap", String(resources.ramBytes));
  const r = await cli.exec([...args, id], { allowFailure: true });
  if (r.exitCode !== 0) throw cli.fail("update", id, r);
}

/**
 * `runc delete --force` (kills what still runs), then remove the sandbox's cgroup
 * directories in every hierarchy if the runtime left any. No-op when the id is unknown.
 * The cgroup path is read from the bundle's config.json before the delete; it is removed only
 * when strictly below `guard.cgroupParent` (oci-cgroups.ts `ownCgroupPath`: another path is
 * logged as an error and left untouched). A paused sandbox is never thawed first (its guest
 * would run again until the kill landed): a frozen runc/crun one is killed, then thawed
 * ({@link killFrozen}); a paused runsc one is deleted as it is.
 * @throws PaddockError ERR_RUNTIME_FAILED when the sandbox still exists afterwards, or a
 *   cgroup directory cannot be removed.
 */
export async function destroySandbox(cli: OciRuntimeCli, id: string, guard: CgroupGuard): Promise<void> {
  const raw = await cli.rawState(id);
  if (raw === undefined) return;
  const cgroupPath = ownCgroupPath(guard.cgroupParent, await readCgroupPath(raw.bundle), guard.logger, { id, source: "config.json", op: "destroy" });
  // runsc pauses inside its sentry, not with the host freezer: `runsc delete --force` kills the
  // sandbox's host processes (sentry, gofer) as they are, and a thaw would let the guest run.
  if (raw.status === "paused" && cli.name !== "runsc") await killFrozen(cli, id, { strict: false });
  const r = await cli.exec(["delete", "--force", id], { allowFailure: true });
  if (r.exitCode !== 0 && (await cli.rawState(id)) !== undefined) throw cli.fail("delete --force", id, r);
  if (cgroupPath !== undefined) await removeCgroupDirs(cgroupPath);
}
