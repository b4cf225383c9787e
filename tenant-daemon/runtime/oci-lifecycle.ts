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
 * agent's process group. A paused sandbox is thawed after a SIGKILL so the kill takes effect
 * (frozen tasks do not die until thawed on cgroup v1).
 * @throws PaddockError ERR_RUNTIME_FAILED (e.g. the sandbox is not running or does not exist)
 */
export async function killSandbox(cli: OciRuntimeCli, id: string, signal: string): Promise<void> {
  const before = await cli.rawState(id);
  if (before === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `${cli.name} container ${id} does not exist`);
  const r = await cli.exec(["kill", id, signal], { allowFailure: true });
  if (r.exitCode !== 0) throw cli.fail("kill", id, r);
  if (before.status === "paused" && /^(SIG)?KILL$|^9$/i.test(signal)) await cli.verb("resume", id);
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
 * logged as an error and left untouched). A paused sandbox is thawed first.
 * @throws PaddockError ERR_RUNTIME_FAILED when the sandbox still exists afterwards, or a
 *   cgroup directory cannot be removed.
 */
export async function destroySandbox(cli: OciRuntimeCli, id: string, guard: CgroupGuard): Promise<void> {
  const raw = await cli.rawState(id);
  if (raw === undefined) return;
  const cgroupPath = ownCgroupPath(guard.cgroupParent, await readCgroupPath(raw.bundle), guard.logger, { id, source: "config.json", op: "destroy" });
  if (raw.status === "paused") await cli.verb("resume", id).catch(() => undefined);
  const r = await cli.exec(["delete", "--force", id], { allowFailure: true });
  if (r.exitCode !== 0 && (await cli.rawState(id)) !== undefined) throw cli.fail("delete --force", id, r);
  if (cgroupPath !== undefined) await removeCgroupDirs(cgroupPath);
}
