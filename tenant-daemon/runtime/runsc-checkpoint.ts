/**
 * Suspend to disk and restore of a gVisor sandbox: `runsc checkpoint` and `runsc restore`
 * (measured on runsc 0.0~20221219 in docs/gvisor-findings.md §6):
 * - checkpoint writes the sentry's state (guest memory, processes, open files) as
 *   `checkpoint.img` into `--image-path`, then every guest process exits and the container is
 *   `stopped`; its memory goes back to the host once it is deleted. A failed checkpoint kills
 *   the sandbox too (even with `--leave-running`), so a failure is reported as the VM's crash.
 *   It fails while the guest holds a host-backed socket (the reverse agent channel's
 *   connections): the caller closes that channel first (agent-dial-pool.ts).
 * - restore needs the original id absent (delete after checkpoint), the same bundle (its
 *   config.json is kept while suspended), the same
 *   rootfs at the same path, unchanged while suspended (disk state is not in the image: files
 *   the guest holds open are checked by size and mtime), and the same global flags (runsc
 *   re-reads `--network`, … on every call). The guest's stdio is re-attached to the restore
 *   command's, so the restore runs behind a new console-log reader like `run`.
 *
 * The image directory is the host's: runsc (host root) creates and writes `checkpoint.img`
 * and the sentry only receives the open file; nothing there is reachable from any guest. It is
 * written to `<imageDir>.partial` and renamed once complete, so an image dir that exists is a
 * whole image.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { run, trimStderr, type RunResult } from "../../shared/exec.js";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { sleep } from "../../shared/time.js";
import { DEFAULT_CONSOLE_LOG_BYTES } from "./driver.js";
import { logcapPrefix } from "./nsutil.js";
import { ownCgroupPath, readCgroupPath, removeCgroupDirs } from "./oci-cgroups.js";
import { destroySandbox } from "./oci-lifecycle.js";
import { readRuntimeLog } from "./oci-runtime-cli.js";
import { runscId, type RunscCli, type RunscNetwork } from "./runsc-cli.js";

/** The image file runsc writes into the image directory. */
export const CHECKPOINT_IMAGE_NAME = "checkpoint.img";
/** Timeout of `runsc checkpoint` and `runsc restore`, ms (about 4 s per 100 MB of incompressible guest memory, findings §6). */
const CHECKPOINT_TIMEOUT_MS = 120_000;

/** What the checkpoint functions need of the driver: its command line and how it sets up a network. */
export interface RunscCheckpointContext {
  cli: RunscCli;
  logger: Logger;
  /** The tenant's cgroup parent: only a cgroup strictly below it is removed (oci-cgroups.ts `ownCgroupPath`). */
  cgroupParent: string;
  /** The argv prefix runsc runs behind when it sets up the sandbox's network (runsc-driver.ts `networkPrefix`). */
  networkPrefix(bundleDir: string, network: RunscNetwork): Promise<string[]>;
}

/**
 * A host-made channel whose connections reach into the guest as host-backed sockets (the
 * reverse agent channel's pool, agent-dial-pool.ts): closed before the checkpoint.
 */
export interface HostChannel {
  /** Connections open right now. */
  openCount(): number;
  /** Stop accepting, destroy every connection. */
  close(): Promise<void>;
}

/** How long the sentry may take to let go of a closed channel's connections, ms. */
const CHANNEL_RELEASE_TIMEOUT_MS = 5_000;

/** What one checkpoint wrote. */
export interface CheckpointResult {
  /** Size of the image directory's files, bytes. */
  imageBytes: number;
}

/** `<imageDir>.partial`: where an image is written before it is complete. */
function partialDir(imageDir: string): string {
  return `${imageDir}.partial`;
}

/** Total size of the regular files directly in `dir`, bytes. */
export async function imageSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(dir, e.name))).size;
  }
  return total;
}

/**
 * Checkpoint running sandbox `id` into `imageDir` (absolute; its parent must exist and be
 * host-only; it must not exist yet), then delete the sandbox and its cgroup leaf: its processes
 * are gone and its memory is given back. The bundle (config.json) is kept for the restore.
 * `channel` (the reverse agent channel) is closed first, and the checkpoint waits until the
 * sentry has released its end of every connection it had (see {@link closeChannel}).
 * @returns the image's size.
 * @throws PaddockError ERR_VM_SUSPEND_REFUSED (409) when the guest holds a TCP socket (the
 *   sandbox keeps running, see {@link refuseTcpSockets}); ERR_RUNTIME_FAILED when the sandbox
 *   is not running, `imageDir` exists, the channel's connections stay open (the sandbox is then
 *   still running), or runsc fails;
 *   after a runsc failure the sandbox is destroyed (runsc 20221219 kills it anyway) and no image
 *   is left.
 */
export async function checkpointSandbox(ctx: RunscCheckpointContext, id: string, imageDir: string, channel?: HostChannel): Promise<CheckpointResult> {
  if (!path.isAbsolute(imageDir)) throw new RangeError(`imageDir must be absolute, got ${JSON.stringify(imageDir)}`);
  const rid = runscId(id);
  const raw = await ctx.cli.rawState(rid);
  if (raw?.status !== "running") throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${id} cannot be checkpointed while ${raw?.status ?? "absent"}`);
  if (await exists(imageDir)) throw new PaddockError("ERR_RUNTIME_FAILED", `checkpoint image ${imageDir} already exists`);
  await refuseTcpSockets(ctx, id);
  if (channel !== undefined) await closeChannel(id, raw.pid, channel);
  const partial = partialDir(imageDir);
  await fs.rm(partial, { recursive: true, force: true });
  await fs.mkdir(partial, { mode: 0o700 });
  // No network setup happens here, but runsc re-reads the flags: they must be the sandbox's.
  const network: RunscNetwork = (await hasNetns(raw.bundle)) ? "sandbox" : "none";
  let result: RunResult | undefined;
  let failure: unknown;
  try {
    result = await run(ctx.cli.binary, [...ctx.cli.flags(network), "checkpoint", "--image-path", partial, rid], { timeoutMs: CHECKPOINT_TIMEOUT_MS, allowFailure: true, stdin: "ignore" });
  } catch (err) {
    failure = err;
  }
  if (result?.exitCode !== 0) {
    const why = failure !== undefined ? (failure as Error).message : trimStderr(result?.stderr ?? "");
    await fs.rm(partial, { recursive: true, force: true }).catch(() => undefined);
    await destroySandbox(ctx.cli, rid, ctx).catch((err: unknown) => ctx.logger.error("cannot remove the sandbox after a failed checkpoint", { id, err }));
    throw new PaddockError("ERR_RUNTIME_FAILED", `runsc checkpoint ${id} failed${result !== undefined ? ` (exit ${result.exitCode})` : ""}; the VM was stopped: ${why}`, {
      cause: failure,
      details: { command: `${ctx.cli.binary} checkpoint ${rid}`, exitCode: result?.exitCode, stderr: why },
    });
  }
  try {
    await destroySandbox(ctx.cli, rid, ctx);
    await fs.rename(partial, imageDir);
  } catch (err) {
    await fs.rm(partial, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
  return { imageBytes: await imageSize(imageDir) };
}

/**
 * Restore sandbox `id` from `imageDir` (written by {@link checkpointSandbox}) with the bundle it
 * was made from (`bundle.bundleDir`'s config.json, kept since the checkpoint: a restore needs
 * the same one): `runsc restore --detach` behind a new console-log reader, with the network set
 * up as at start (a netns in config.json ⇒ `--network=sandbox` behind the /proc/sys wrapper).
 * The image is kept (the caller removes it once the VM is back).
 * @returns the sentry's host pid.
 * @throws PaddockError ERR_RUNTIME_FAILED (no image or no config.json, the id exists, runsc
 *   fails); nothing of the restored sandbox is left behind on failure.
 */
export async function restoreSandbox(
  ctx: RunscCheckpointContext,
  id: string,
  imageDir: string,
  bundle: { bundleDir: string; consoleLogPath: string; consoleLogBytes?: number },
): Promise<number> {
  const rid = runscId(id);
  if (!(await exists(path.join(imageDir, CHECKPOINT_IMAGE_NAME)))) throw new PaddockError("ERR_RUNTIME_FAILED", `no checkpoint image of ${id} in ${imageDir}`);
  const { bundleDir, consoleLogPath } = bundle;
  const cgroupPath = await readCgroupPath(bundleDir);
  if (cgroupPath === undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `no config.json (or no cgroup in it) in the bundle of ${id}: ${bundleDir}`);
  const existing = await ctx.cli.rawState(rid);
  if (existing !== undefined) throw new PaddockError("ERR_RUNTIME_FAILED", `runsc container ${id} already exists (${existing.status}); restore needs it absent`);
  const logPath = path.join(bundleDir, "runsc.log");
  const pidFile = path.join(bundleDir, "pid");
  await Promise.all([fs.rm(logPath, { force: true }), fs.rm(pidFile, { force: true }), fs.mkdir(path.dirname(consoleLogPath), { recursive: true, mode: 0o700 })]);
  const network: RunscNetwork = (await hasNetns(bundleDir)) ? "sandbox" : "none";
  const argv = [
    ...logcapPrefix(consoleLogPath, (bundle.consoleLogBytes ?? DEFAULT_CONSOLE_LOG_BYTES) / 2, 1),
    ...(await ctx.networkPrefix(bundleDir, network)),
    ctx.cli.binary, ...ctx.cli.flags(network), `--log=${logPath}`, "--log-format=json",
    "restore", "--detach", "--image-path", imageDir, "--bundle", bundleDir, "--pid-file", pidFile, rid,
  ];
  let result: RunResult | undefined;
  let failure: unknown;
  try {
    result = await run(argv[0] as string, argv.slice(1), { cwd: bundleDir, timeoutMs: CHECKPOINT_TIMEOUT_MS, allowFailure: true, stdin: "ignore" });
  } catch (err) {
    failure = err;
  }
  if (result?.exitCode === 0) {
    const pid = Number.parseInt((await fs.readFile(pidFile, "utf8").catch(() => "")).trim(), 10);
    if (pid > 0) return pid;
    failure = new Error("runsc restore wrote no pid");
  }
  const why = failure !== undefined ? (failure as Error).message : (await readRuntimeLog(logPath)) || trimStderr(result?.stderr ?? "");
  await destroySandbox(ctx.cli, rid, { cgroupParent: ctx.cgroupParent, logger: silentLogger }).catch(() => undefined);
  // The path comes from the bundle's config.json: removed only when it is this tenant's (logged once here otherwise).
  const own = ownCgroupPath(ctx.cgroupParent, cgroupPath, ctx.logger, { id, source: "config.json", op: "restore cleanup" });
  if (own !== undefined) await removeCgroupDirs(own).catch((err: unknown) => ctx.logger.error("cannot remove the cgroup of a failed restore", { id, err }));
  throw new PaddockError("ERR_RUNTIME_FAILED", `runsc restore ${id} failed${result !== undefined ? ` (exit ${result.exitCode})` : ""}: ${why}`, {
    cause: failure,
    details: { command: `${ctx.cli.binary} restore ${rid}`, exitCode: result?.exitCode, stderr: why },
  });
}

/**
 * Most bytes of the guest's TCP tables the host reads (about 6 800 sockets at 150 bytes a line):
 * the check runs the guest's own `/bin/cat`, which guest root can replace by an endless printer.
 */
export const TCP_TABLE_MAX_BYTES = 1024 * 1024;
/** Timeout of the TCP-table read, ms. */
const TCP_TABLE_TIMEOUT_MS = 30_000;

/**
 * Refuse to checkpoint a guest that holds a TCP socket: runsc 20221219 fails to save a
 * netstack TCP socket with an epoll waiter (node listening or connected over TCP: findings §6),
 * and a failed checkpoint kills the sandbox. The guest's `/proc/net/tcp` and `tcp6` (the
 * sentry's, read with `runsc exec`) list every TCP socket; any entry refuses. The reader is the
 * guest's `/bin/cat`, so its output is guest bytes: at most {@link TCP_TABLE_MAX_BYTES} are
 * buffered (more refuses) and only counted, never used otherwise. A guest root that hides its
 * sockets only gets its own VM killed by the failed checkpoint.
 * @throws PaddockError ERR_VM_SUSPEND_REFUSED naming the count, or when the output is larger
 *   than {@link TCP_TABLE_MAX_BYTES}; ERR_RUNTIME_FAILED when the files cannot be read.
 */
async function refuseTcpSockets(ctx: RunscCheckpointContext, id: string): Promise<void> {
  const rid = runscId(id);
  const r = await readGuestBounded(ctx.cli.binary, [...ctx.cli.globals, "exec", rid, "/bin/cat", "/proc/net/tcp", "/proc/net/tcp6"], TCP_TABLE_MAX_BYTES, TCP_TABLE_TIMEOUT_MS);
  if (r.overflow) {
    throw new PaddockError("ERR_VM_SUSPEND_REFUSED", `VM ${id}: its TCP socket tables are larger than ${TCP_TABLE_MAX_BYTES} bytes; not suspended`, { details: { max_bytes: TCP_TABLE_MAX_BYTES } });
  }
  if (r.timedOut || (r.exitCode !== 0 && r.stdout === "")) {
    throw ctx.cli.fail("exec cat /proc/net/tcp", rid, { stdout: r.stdout, stderr: r.timedOut ? `timed out after ${TCP_TABLE_TIMEOUT_MS} ms` : r.stderr, exitCode: r.exitCode });
  }
  const sockets = r.stdout.split("\n").filter((l) => /^\s*\d+:/.test(l)).length;
  if (sockets > 0) {
    throw new PaddockError("ERR_VM_SUSPEND_REFUSED", `VM ${id} holds ${sockets} TCP socket(s); gVisor (runsc 20221219) cannot checkpoint them and a failed checkpoint would stop the VM: close them first`, { details: { tcp_sockets: sockets } });
  }
}

/**
 * Run a command whose output is guest bytes (`runsc exec` of a guest program) and keep at most
 * `maxBytes` of its stdout (and of its stderr). On overflow or after `timeoutMs` the command is
 * SIGKILLed and its pipes are destroyed at once: the sentry holds the write ends for the guest
 * process, so waiting for them to close (what execa and `run` do) lets a guest that keeps
 * writing, or keeps them open, hold the host forever.
 * @returns stdout/stderr (at most `maxBytes` each), the exit code (-1 when killed), whether
 *   output overflowed, whether it timed out.
 */
function readGuestBounded(file: string, args: string[], maxBytes: number, timeoutMs: number): Promise<{ stdout: string; stderr: string; exitCode: number; overflow: boolean; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    let overflow = false;
    let timedOut = false;
    let settled = false;
    const finish = (exitCode: number): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8"), exitCode, overflow, timedOut });
    };
    const stop = (): void => {
      child.kill("SIGKILL");
      finish(-1);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, timeoutMs);
    child.stdout.on("data", (b: Buffer) => {
      outBytes += b.length;
      if (outBytes > maxBytes) {
        overflow = true;
        stop();
      } else out.push(b);
    });
    child.stderr.on("data", (b: Buffer) => {
      errBytes += b.length;
      if (errBytes <= maxBytes) err.push(b);
    });
    child.on("error", () => finish(-1));
    // "close" waits for the pipes too: after the exit, they get one second to drain.
    child.on("close", (code) => finish(code ?? -1));
    child.on("exit", (code) => setTimeout(() => finish(code ?? -1), 1_000).unref());
  });
}

/**
 * Close `channel` and wait (up to {@link CHANNEL_RELEASE_TIMEOUT_MS}) until the sentry (host
 * pid `sentryPid`) holds as many fewer host socket fds as the channel had connections: each
 * connection the guest made through `--host-uds=open` is one host socket in the sentry, and
 * runsc 20221219 cannot save one (the checkpoint fails and kills the sandbox). The count and
 * the channel's connection count are read together (re-read when a connection came or went
 * meanwhile); the channel stops accepting when closed, so none can come after.
 * @throws PaddockError ERR_RUNTIME_FAILED when the sentry still holds them after the timeout.
 */
async function closeChannel(id: string, sentryPid: number, channel: HostChannel): Promise<void> {
  let open: number;
  let before: number;
  do {
    open = channel.openCount();
    before = await hostSocketCount(sentryPid);
  } while (channel.openCount() !== open);
  await channel.close();
  const deadline = Date.now() + CHANNEL_RELEASE_TIMEOUT_MS;
  for (let delayMs = 10; (await hostSocketCount(sentryPid)) > before - open; delayMs = Math.min(delayMs * 2, 200)) {
    if (Date.now() > deadline) throw new PaddockError("ERR_RUNTIME_FAILED", `VM ${id} still holds ${open} agent connection(s) ${CHANNEL_RELEASE_TIMEOUT_MS} ms after the host closed them; not suspended`);
    await sleep(delayMs);
  }
}

/** Socket fds of host process `pid` (from `/proc/<pid>/fd`); 0 when it is gone. */
async function hostSocketCount(pid: number): Promise<number> {
  const dir = `/proc/${pid}/fd`;
  let count = 0;
  for (const fd of await fs.readdir(dir).catch(() => [] as string[])) {
    if ((await fs.readlink(path.join(dir, fd)).catch(() => "")).startsWith("socket:")) count++;
  }
  return count;
}

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(() => true, () => false);
}

/** Whether the bundle's config.json names a network namespace (the sandbox then runs `--network=sandbox`). */
async function hasNetns(bundleDir: string): Promise<boolean> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(bundleDir, "config.json"), "utf8")) as { linux?: { namespaces?: { type?: string; path?: string }[] } };
    return config.linux?.namespaces?.some((n) => n.type === "network" && n.path !== undefined) ?? false;
  } catch {
    return false;
  }
}
