/**
 * The agent's inotify(7) client: a `paddock-inotify` child process (native/paddock-inotify.c,
 * built into the toolbox beside agent.cjs) that adds and removes watches on request and
 * reports every event with its mask and move cookie, which node's fs.watch hides.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";

/** inotify event bits (linux/inotify.h). */
export const IN = {
  MODIFY: 0x2,
  ATTRIB: 0x4,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  Q_OVERFLOW: 0x4000,
  IGNORED: 0x8000,
  ISDIR: 0x40000000,
} as const;

/** One inotify event: the watch it came from, its mask, the move cookie (0 unless a move), the name (empty for the watched directory itself). */
export interface InotifyEvent {
  wd: number;
  mask: number;
  cookie: number;
  name: string;
}

const HEADER_BYTES = 20;
/** The helper writes native byte order. */
const LE = os.endianness() === "LE";

/**
 * Where the helper is: `$PADDOCK_AGENT_INOTIFY`, else beside the running agent script (the
 * bundle in `/.paddock/app`), else `dist/toolbox` seen from `dist/tenant-daemon/agent/` (the
 * agent run unbundled, as the integration tests do).
 */
export function inotifyHelperPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const script = process.argv[1] ?? "";
  const candidates = [env.PADDOCK_AGENT_INOTIFY, path.join(path.dirname(script), "paddock-inotify"), path.join(path.dirname(script), "../../toolbox/paddock-inotify")];
  return candidates.find((c): c is string => c !== undefined && c !== "" && existsSync(c));
}

/** A running helper. Events arrive through `onEvent`; {@link close} ends it. */
export class Inotify {
  private readonly child: ChildProcess;
  private pending: Buffer = Buffer.alloc(0);
  private readonly adds: Array<(wd: number) => void> = [];
  private closed = false;

  /**
   * Start the helper.
   * @throws PaddockError ERR_VM_UNSUPPORTED when the helper is not in the toolbox.
   */
  constructor(private readonly onEvent: (e: InotifyEvent) => void, onExit: (why: string) => void) {
    const helper = inotifyHelperPath();
    if (helper === undefined) throw new PaddockError("ERR_VM_UNSUPPORTED", "filesystem watch needs paddock-inotify in the agent's toolbox (npm run build makes it)");
    this.child = spawn(helper, [], { stdio: ["pipe", "pipe", "ignore"] });
    this.child.stdout!.on("data", (chunk: Buffer) => this.onData(chunk));
    this.child.stdin!.on("error", () => undefined);
    this.child.on("error", (err) => this.finish(`paddock-inotify failed: ${err.message}`, onExit));
    this.child.on("exit", (code, signal) => this.finish(`paddock-inotify exited (${signal ?? code})`, onExit));
  }

  /**
   * Watch directory `dir` (no symlink followed, directories only).
   * @returns the watch descriptor, or minus the errno (e.g. -2 ENOENT, -20 ENOTDIR, -28 ENOSPC
   *   when the user's inotify watch budget is spent).
   */
  add(dir: string): Promise<number> {
    if (this.closed || dir.includes("\0")) return Promise.resolve(-2);
    return new Promise((resolve) => {
      this.adds.push(resolve);
      this.child.stdin!.write(Buffer.concat([Buffer.from("A"), Buffer.from(dir), Buffer.from([0])]));
    });
  }

  /** Stop watching `wd` (the kernel then reports IN_IGNORED for it). */
  remove(wd: number): void {
    if (!this.closed) this.child.stdin!.write(`R${wd}\0`);
  }

  /** End the helper; pending adds resolve to -EBADF. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.child.stdin!.end();
    this.child.kill();
    for (const r of this.adds.splice(0)) r(-9);
  }

  private finish(why: string, onExit: (why: string) => void): void {
    const wasOpen = !this.closed;
    this.close();
    if (wasOpen) onExit(why);
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= HEADER_BYTES) {
      const b = this.pending;
      const u32 = (at: number): number => (LE ? b.readUInt32LE(at) : b.readUInt32BE(at));
      const kind = u32(0);
      const wd = LE ? b.readInt32LE(4) : b.readInt32BE(4);
      const mask = u32(8);
      const cookie = u32(12);
      const len = u32(16);
      if (this.pending.length < HEADER_BYTES + len) break;
      const name = this.pending.subarray(HEADER_BYTES, HEADER_BYTES + len).toString();
      this.pending = this.pending.subarray(HEADER_BYTES + len);
      if (kind === 1) this.adds.shift()?.(wd);
      else if (kind === 2 && !this.closed) this.onEvent({ wd, mask, cookie, name });
    }
  }
}
