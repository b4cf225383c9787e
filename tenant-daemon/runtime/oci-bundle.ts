/**
 * The OCI bundle of one sandbox and the runtime call that starts it: `config.json` in the
 * bundle directory, a fresh runtime log, the host-only directory of the agent socket and the
 * console log, then `paddock-nsutil logcap … listen <agent.sock> runc create|run
 * --preserve-fds 1`. The console goes through the capped log reader and the agent listener
 * becomes the sandbox's fd 3 (tenant-daemon/runtime/native/paddock-nsutil.c).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { trimStderr, type RunResult } from "../../shared/exec.js";
import { runCommand as run } from "../vm/spawn-server.js";
import { writeFileAtomic } from "../../shared/state-store.js";
import { DEFAULT_CONSOLE_LOG_BYTES, type VmRuntimeSpec } from "./driver.js";
import { listenPrefix, logcapPrefix } from "./nsutil.js";
import type { CgroupGuard } from "./oci-cgroups.js";
import { destroySandbox } from "./oci-lifecycle.js";
import { readRuntimeLog, type OciRuntimeCli } from "./oci-runtime-cli.js";

/** Timeout of the `create` and `run` commands, ms (they set up every namespace and mount). */
const CREATE_TIMEOUT_MS = 60_000;

/** Where the runtime writes its JSON log for this sandbox: `<bundleDir>/<runtime>.log`. */
export function runtimeLogPath(cli: OciRuntimeCli, spec: VmRuntimeSpec): string {
  return path.join(spec.bundleDir, `${cli.name}.log`);
}

/** Where the runtime writes the init's host pid: `<bundleDir>/pid`. */
export function pidFilePath(spec: VmRuntimeSpec): string {
  return path.join(spec.bundleDir, "pid");
}

/**
 * Bundle for {@link OciRuntimeCli} `create`: the bundle and console-log directories (0700),
 * `config.json` (pretty, 0600) written atomically, the old runtime log removed and the agent
 * socket's directory made, one step after another.
 */
export async function writeCreateBundle(cli: OciRuntimeCli, spec: VmRuntimeSpec, config: unknown): Promise<void> {
  await fs.mkdir(spec.bundleDir, { recursive: true, mode: 0o700 });
  await fs.mkdir(path.dirname(spec.consoleLogPath), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path.join(spec.bundleDir, "config.json"), JSON.stringify(config, null, 2) + "\n", 0o600);
  await fs.rm(runtimeLogPath(cli, spec), { force: true });
  await prepareAgentSocket(spec.agentSocketPath);
}

/**
 * Bundle for the `run` fast path: the same files as {@link writeCreateBundle}, the independent
 * steps in parallel, the old pid file removed too. The bundle lives in the run dir and is
 * rewritten on every boot, so `config.json` (compact, 0600) is written without fsync.
 */
export async function writeRunBundle(cli: OciRuntimeCli, spec: VmRuntimeSpec, config: unknown): Promise<void> {
  await fs.mkdir(spec.bundleDir, { recursive: true, mode: 0o700 });
  await Promise.all([
    fs.writeFile(path.join(spec.bundleDir, "config.json"), JSON.stringify(config) + "\n", { mode: 0o600 }),
    fs.rm(runtimeLogPath(cli, spec), { force: true }),
    fs.rm(pidFilePath(spec), { force: true }),
    fs.mkdir(path.dirname(spec.consoleLogPath), { recursive: true, mode: 0o700 }),
    prepareAgentSocket(spec.agentSocketPath),
  ]);
}

/**
 * Run `<runtime> --log <log> --log-format json <verb> [--detach] --preserve-fds 1 --bundle
 * <bundle> --pid-file <bundle>/pid <id>` behind the agent listener and the console-log reader
 * (see {@link consoleArgv}), from the bundle directory, stdin /dev/null, 60 s timeout. Not
 * through {@link OciRuntimeCli.exec}: the sandbox's stdio is the console pipe, which it keeps
 * open for its whole life. On any failure the agent socket and whatever the runtime left of
 * the sandbox are removed.
 * @param verb - `create` (init waits for `start`) or `run` (`--detach`, init starts at once).
 * @param guard - the tenant's cgroup parent: the cleanup removes only a cgroup below it (oci-lifecycle.ts `destroySandbox`).
 * @throws PaddockError ERR_RUNTIME_FAILED with the runtime log's errors, else its stderr, else
 *   the console log's tail (where paddock-nsutil reports).
 */
export async function launchSandbox(cli: OciRuntimeCli, spec: VmRuntimeSpec, verb: "create" | "run", guard: CgroupGuard): Promise<void> {
  const logPath = runtimeLogPath(cli, spec);
  let result: RunResult;
  try {
    // paddock-nsutil binds the agent listener and execs the runtime with it as fd 3; `--preserve-fds 1`
    // hands it to the sandbox's init (tenant-daemon/runtime/native/paddock-nsutil.c).
    const argv = consoleArgv(spec, [
      ...listenPrefix(spec.agentSocketPath), cli.binary,
      "--log", logPath, "--log-format", "json", verb, ...(verb === "run" ? ["--detach"] : []), "--preserve-fds", "1", "--bundle", spec.bundleDir, "--pid-file", pidFilePath(spec), spec.id,
    ]);
    result = await run(argv[0] as string, argv.slice(1), { cwd: spec.bundleDir, timeoutMs: CREATE_TIMEOUT_MS, allowFailure: true, stdin: "ignore" });
  } catch (err) {
    await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
    await destroySandbox(cli, spec.id, guard).catch(() => undefined);
    throw new PaddockError("ERR_RUNTIME_FAILED", `${cli.name} ${verb} ${spec.id}: ${(err as Error).message}`, { cause: err });
  }
  if (result.exitCode !== 0) {
    const log = (await readRuntimeLog(logPath)) || trimStderr(result.stderr) || trimStderr(await readTail(spec.consoleLogPath));
    await fs.rm(spec.agentSocketPath, { force: true }).catch(() => undefined);
    await destroySandbox(cli, spec.id, guard).catch(() => undefined);
    throw new PaddockError("ERR_RUNTIME_FAILED", `${cli.name} ${verb} ${spec.id} failed (exit ${result.exitCode}): ${log}`, {
      details: { command: `${cli.binary} ${verb} ${spec.id}`, exitCode: result.exitCode, stderr: log },
    });
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
