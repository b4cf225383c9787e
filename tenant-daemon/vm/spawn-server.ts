/**
 * Commands of the create path (mkfs, mount, ip, runc) run by a small helper process,
 * `paddock-spawnd` (tenant-daemon/vm/native/paddock-spawnd.c, built to `dist/bin/` by
 * `npm run build`), instead of by the daemon itself. Each node spawn forks the whole daemon
 * and blocks its event loop until the child has exec'd: on the 2-core dev host 40 spawns of
 * `/bin/true` from node cost the parent ~5 ms of CPU each (~9 ms through execa) and kept its
 * event loop busy for all of their wall time, so 20 concurrent creates (six commands each)
 * queued on one thread. The helper spawns with posix_spawn(3) from a process of a few hundred
 * KiB, and the daemon only writes a request and reads an answer.
 *
 * The helper is started on the first command and ended when no command ran for
 * {@link SpawnServerOptions.idleMs}, so an idle daemon holds no extra process. Same options,
 * results and errors as shared/exec.ts `run` (argv arrays, timeouts, typed errors with the
 * command, exit code and trimmed stderr); where the helper was not built, `run` itself runs
 * the command.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { run, trimStderr, type RunOptions, type RunResult } from "../../shared/exec.js";
import { findProjectRoot } from "../../shared/proc.js";

/** Options of {@link SpawnServer}. */
export interface SpawnServerOptions {
  /** The helper binary (default `<project>/dist/bin/paddock-spawnd`). */
  binary?: string;
  /** End the helper after this long without a command, ms (default 5000). */
  idleMs?: number;
}

/** What {@link SpawnServer.run} accepts: shared/exec.ts `RunOptions` without stdout/stderr redirection. */
export type SpawnRunOptions = Omit<RunOptions, "stdout" | "stderr">;

/** The `run` function shape of shared/exec.ts, which {@link SpawnServer.run} also has. */
export type RunCommand = (file: string, args: readonly string[], options?: SpawnRunOptions) => Promise<RunResult>;

interface Pending {
  resolve: (r: { kind: number; code: number; flags: number; stdout: string; stderr: string }) => void;
  reject: (err: Error) => void;
  /** The helper the request went to. */
  helper: ChildProcess;
}

/** Which of `strings` (name, value) holds a NUL byte, by name; undefined when none does. */
function nulIn(strings: readonly (readonly [string, string])[]): string | undefined {
  return strings.find(([, v]) => v.includes("\0"))?.[0];
}

/** One lazily started `paddock-spawnd` and the commands in flight on it. */
export class SpawnServer {
  private readonly binary: string | undefined;
  private readonly idleMs: number;
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(options: SpawnServerOptions = {}) {
    const binary = options.binary ?? path.join(findProjectRoot(), "dist", "bin", "paddock-spawnd");
    this.binary = existsSync(binary) ? binary : undefined;
    // Correct without it (shared/exec.ts forks the daemon per command), only slower: say so once.
    if (this.binary === undefined) process.emitWarning(`${binary} is missing (npm run build compiles it): commands run by forking the daemon`, { code: "PADDOCK_NO_SPAWND" });
    this.idleMs = options.idleMs ?? 5000;
  }

  /** True while the helper process runs (tests). */
  get running(): boolean {
    return this.child !== undefined;
  }

  /**
   * Run `file` with `args` and wait for it, as shared/exec.ts `run` does (its options bar
   * stdout/stderr redirection; `env` adds to the daemon's environment).
   * @throws PaddockError `options.errorCode` (default ERR_EXEC_FAILED) on a non-zero exit, a
   *   signal or a failed start, unless `allowFailure`; ERR_EXEC_TIMEOUT after `timeoutMs`
   *   (default 30 000; the command got SIGTERM, then SIGKILL 2 s later); and, before anything
   *   runs, when the program, an argument, `cwd` or an environment entry holds a NUL byte (the
   *   request separates them with NULs: `a\0b` would become two arguments, or spill into the
   *   environment; node's `spawn` refuses them too). All carry `details.command`, `exitCode`
   *   (−1 without one) and `stderr`.
   */
  run = async (file: string, args: readonly string[], options: SpawnRunOptions = {}): Promise<RunResult> => {
    if (this.binary === undefined) return run(file, args, options);
    const timeoutMs = options.timeoutMs ?? 30_000;
    const input = options.input === undefined ? Buffer.alloc(0) : Buffer.from(options.input);
    const env = options.env === undefined ? [] : Object.entries({ ...process.env, ...options.env }).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
    const withNul = nulIn([["the program", file], ...args.map((a, i) => [`argument ${i + 1}`, a] as const), ["cwd", options.cwd ?? ""], ...env.map((e) => ["an environment entry", e] as const)]);
    if (withNul !== undefined) {
      const shown = [file, ...args].join(" ").replace(/\0/g, "\\0");
      throw new PaddockError(options.errorCode ?? "ERR_EXEC_FAILED", `${shown} not run: ${withNul} holds a NUL byte`, { details: { command: shown, exitCode: -1, stderr: "" } });
    }
    const id = (this.seq = (this.seq + 1) >>> 0);
    const strings = Buffer.from([options.cwd ?? "", file, ...args, ...env].map((s) => `${s}\0`).join(""));
    const head = Buffer.alloc(24);
    head.writeUInt32LE(20 + strings.length + input.length, 0);
    head.writeUInt32LE(id, 4);
    head.writeUInt32LE(timeoutMs, 8);
    head.writeUInt32LE(1 + args.length, 12);
    head.writeUInt32LE(env.length, 16);
    head.writeUInt32LE(input.length, 20);
    const child = this.ensureChild();
    const answer = new Promise<Parameters<Pending["resolve"]>[0]>((resolve, reject) => this.pending.set(id, { resolve, reject, helper: child }));
    clearTimeout(this.idleTimer);
    this.setRef(true);
    child.stdin?.write(Buffer.concat([head, strings, input]));
    const a = await answer.finally(() => this.armIdle());
    const command = [file, ...args].join(" ");
    if ((a.flags & 1) !== 0) {
      throw new PaddockError("ERR_EXEC_TIMEOUT", `command timed out after ${timeoutMs} ms: ${command}`, { details: { command, stderr: trimStderr(a.stderr) } });
    }
    const exitCode = a.kind === 0 ? a.code : -1;
    if (exitCode !== 0 && !options.allowFailure) {
      const reason = a.kind === 0 ? trimStderr(a.stderr) : a.kind === 1 ? `killed by signal ${a.code}` : `spawn ${file}: ${errnoText(a.code)}`;
      throw new PaddockError(options.errorCode ?? "ERR_EXEC_FAILED", `${command} failed (exit ${exitCode}): ${reason}`, {
        details: { command, exitCode, stderr: trimStderr(a.stderr) },
      });
    }
    return { stdout: a.stdout, stderr: a.kind === 2 ? `spawn ${file}: ${errnoText(a.code)}` : a.stderr, exitCode };
  };

  /**
   * End the helper: it reads no more requests and exits once the commands in flight were
   * answered (they still are). A later {@link run} starts a new one. Idempotent.
   */
  close(): void {
    clearTimeout(this.idleTimer);
    const c = this.child;
    this.child = undefined;
    c?.stdin?.end();
  }

  private armIdle(): void {
    if (this.pending.size > 0) return;
    this.setRef(false);
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.close(), this.idleMs);
    this.idleTimer.unref();
  }

  private ensureChild(): ChildProcess {
    if (this.child !== undefined) return this.child;
    const child = spawn(this.binary as string, [], { stdio: ["pipe", "pipe", "inherit"] });
    this.child = child;
    child.stdin?.on("error", () => undefined);
    child.stdout?.on("data", answers((a) => {
      const p = this.pending.get(a.id);
      this.pending.delete(a.id);
      p?.resolve(a);
    }));
    const gone = (why: string): void => {
      if (this.child === child) this.child = undefined;
      const err = new PaddockError("ERR_EXEC_FAILED", `paddock-spawnd ${why} with commands in flight`);
      for (const [id, p] of this.pending) {
        if (p.helper !== child) continue;
        this.pending.delete(id);
        p.reject(err);
      }
    };
    child.once("error", (err) => gone(`failed: ${err.message}`));
    child.once("exit", (code, signal) => gone(`exited (${code ?? signal})`));
    return child;
  }

  /**
   * Keep the event loop alive for the helper only while a command is in flight: an idle
   * helper (waiting out its idle time) never holds a daemon or a test open.
   */
  private setRef(busy: boolean): void {
    const c = this.child;
    if (c === undefined) return;
    for (const h of [c, c.stdout, c.stdin] as ({ ref?: () => void; unref?: () => void } | null)[]) {
      if (busy) h?.ref?.();
      else h?.unref?.();
    }
  }
}

/** One answer frame of paddock-spawnd. */
interface Answer {
  id: number;
  kind: number;
  code: number;
  flags: number;
  stdout: string;
  stderr: string;
}

/**
 * A `data` listener that cuts a helper's stdout into answer frames (`len id kind code flags
 * out_len err_len | out err`, little-endian 32-bit fields; paddock-spawnd.c) and hands each to
 * `onAnswer`. Chunks are joined once a frame is complete, not on every chunk.
 */
function answers(onAnswer: (a: Answer) => void): (chunk: Buffer) => void {
  let chunks: Buffer[] = [];
  let buffered = 0;
  let need = 4;
  return (chunk) => {
    chunks.push(chunk);
    buffered += chunk.length;
    if (buffered < need) return;
    const buf = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
    let off = 0;
    need = 4;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32LE(off);
      if (buf.length - off - 4 < len) {
        need = 4 + len;
        break;
      }
      const f = off + 4;
      const outLen = buf.readUInt32LE(f + 16);
      const errLen = buf.readUInt32LE(f + 20);
      onAnswer({
        id: buf.readUInt32LE(f),
        kind: buf.readInt32LE(f + 4),
        code: buf.readInt32LE(f + 8),
        flags: buf.readUInt32LE(f + 12),
        stdout: buf.toString("utf8", f + 24, f + 24 + outLen),
        stderr: buf.toString("utf8", f + 24 + outLen, f + 24 + outLen + errLen),
      });
      off = f + len;
    }
    const rest = buf.subarray(off);
    chunks = rest.length > 0 ? [rest] : [];
    buffered = rest.length;
  };
}

/** The errno name of a number posix_spawnp returned (`ENOENT`), else the number. */
function errnoText(errno: number): string {
  return Object.entries(os.constants.errno).find(([, v]) => v === errno)?.[0] ?? `errno ${errno}`;
}

let shared: SpawnServer | undefined;

/**
 * shared/exec.ts `run` through the process's one {@link SpawnServer}, made on first use. One
 * helper per daemon, like libuv's thread pool: a process resource with no configuration,
 * started on demand and ended when idle. The create path's storage, runtime and link commands
 * (tenant-daemon/storage/vm-disk.ts, runtime/oci-*.ts, network/vm-links.ts) run through it.
 */
export const runCommand: RunCommand = (file, args, options) => (shared ??= new SpawnServer()).run(file, args, options);
