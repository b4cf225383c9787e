/**
 * Interactive shell (docs/slicer-api.md#shell), guest side. The PTY is allocated here, inside the
 * VM, with node-pty (loaded lazily from `/.paddock/app/node_modules`, so an agent that never serves
 * a shell does not pay for it). The upgraded stream carries shell frames (shell-frames.ts) both
 * ways: Data → PTY input, WindowSize → `pty.resize`, Shutdown → SIGHUP, Heartbeat ignored; PTY
 * output → Data frames; the shell's exit → SessionClose, then the stream ends.
 */
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import type { Duplex } from "node:stream";
import { createRequire } from "node:module";
import type { IPty } from "node-pty";
import { PaddockError } from "../../shared/errors.js";
import { badRequest } from "./http-util.js";
import { FrameDecoder, FrameType, decodeWindowSize, encodeFrame } from "../../shared/slicer/shell-frames.js";
import { acceptUpgrade } from "./upgrade-util.js";
import { resolveCwd, type Identity, type UserDirectory } from "./users.js";

/** A validated shell request. */
export interface ShellSpec {
  file: string;
  identity: Identity;
  cwd: string;
  env: Record<string, string>;
}

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Grace between SIGHUP and SIGKILL when the client goes away. */
const KILL_GRACE_MS = 2000;

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parse `uid`, `gid` (absent ⇒ the default user, docs/slicer-api.md#guest-users-and-paths), `shell`
 * (absolute, executable; default the account's login shell unless it is a nologin/false shell, then
 * `/bin/bash`, then `/bin/sh`), `cwd` (default the user's home; `/` when the home is missing).
 * @throws PaddockError 400 on invalid input.
 */
export function parseShellSpec(q: URLSearchParams, users: UserDirectory): ShellSpec {
  const identity = users.resolve(q);
  const account = users.byUid(identity.uid);
  const requested = q.get("shell") ?? "";
  let file: string;
  if (requested !== "") {
    if (!requested.startsWith("/") || requested.includes("\0")) throw badRequest(`shell must be an absolute path: ${JSON.stringify(requested)}`, "ERR_QUERY_INVALID");
    if (!isExecutableFile(requested)) throw badRequest(`shell ${requested} does not exist or is not executable in the VM`, "ERR_QUERY_INVALID");
    file = requested;
  } else {
    const candidates = [account?.shell, "/bin/bash", "/bin/sh"].filter((s): s is string => !!s && !/(nologin|false)$/.test(s));
    const found = candidates.find(isExecutableFile);
    if (found === undefined) throw badRequest("no usable shell in the VM (tried the login shell, /bin/bash, /bin/sh)", "ERR_QUERY_INVALID");
    file = found;
  }
  const cwdGiven = q.get("cwd");
  let cwd = resolveCwd(cwdGiven, identity.home);
  let isDir = false;
  try {
    isDir = statSync(cwd).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) {
    if (cwdGiven !== null && cwdGiven !== "") throw badRequest(`cwd does not exist or is not a directory: ${cwd}`, "ERR_PATH_INVALID");
    cwd = "/";
  }
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH, HOME: identity.home, USER: identity.name, LOGNAME: identity.name, SHELL: file,
    TERM: "xterm-256color", LANG: "C.UTF-8", ...users.sessionEnv,
  };
  return { file, identity, cwd, env };
}

type PtyModule = typeof import("node-pty");
let ptyModule: Promise<PtyModule> | undefined;

/**
 * Load node-pty once (a CommonJS package). Through `require` from this module's place, not
 * `import()`: in a VM the agent runs from its bundle through `vm.Script` with a V8 code cache
 * (tenant-daemon/agent/loader.ts), where node 20 has no loader for a dynamic `import()` (a
 * script's import callback does not survive the cache). The bundle's `import.meta.url` is its
 * own file (scripts/build-agent-bundle.ts), so node-pty resolves from `/.paddock/app/node_modules`.
 * @throws PaddockError ERR_VM_UNSUPPORTED when it cannot be loaded.
 */
async function loadPty(): Promise<PtyModule> {
  ptyModule ??= Promise.resolve().then(() => createRequire(import.meta.url)("node-pty") as PtyModule).then(
    (m) => m,
    (err: unknown) => {
      ptyModule = undefined;
      throw new PaddockError("ERR_VM_UNSUPPORTED", `interactive shells need node-pty in the agent bundle: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    },
  );
  return ptyModule;
}

/** Live shell sessions, for shutdown. */
export class ShellSessions {
  private readonly live = new Set<IPty>();

  /** `proofHeaders`: headers of every 101 answer (tenant-daemon/agent/boot.ts AGENT_PROOF_HEADER). */
  constructor(private readonly users: UserDirectory, private readonly proofHeaders: Readonly<Record<string, string>> = {}) {}

  /**
   * Validate, spawn the shell on a new PTY, answer 101 and run the session on `socket`.
   * @throws PaddockError (before anything is written) for invalid input or a missing node-pty.
   */
  async open(q: URLSearchParams, socket: Duplex, head: Buffer): Promise<void> {
    const spec = parseShellSpec(q, this.users);
    const pty = await loadPty();
    const sameUser = process.getuid?.() === spec.identity.uid && process.getgid?.() === spec.identity.gid;
    let term: IPty;
    try {
      term = pty.spawn(spec.file, ["-l"], {
        name: "xterm-256color", cols: 80, rows: 24, cwd: spec.cwd, env: spec.env, encoding: null,
        ...(sameUser ? {} : { uid: spec.identity.uid, gid: spec.identity.gid }),
      });
    } catch (err) {
      throw new PaddockError("ERR_EXEC_FAILED", `cannot start ${spec.file} on a PTY: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    this.live.add(term);
    acceptUpgrade(socket, this.proofHeaders);
    runSession(term, socket, head, () => this.live.delete(term));
  }

  /** SIGKILL every live shell (agent shutdown). */
  shutdown(): void {
    for (const t of this.live) {
      try {
        t.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

function runSession(term: IPty, socket: Duplex, head: Buffer, onDone: () => void): void {
  let exited = false;
  let killTimer: NodeJS.Timeout | undefined;
  const decoder = new FrameDecoder();
  const hangUp = (): void => {
    if (exited) return;
    try {
      term.kill("SIGHUP");
    } catch {
      return;
    }
    killTimer ??= setTimeout(() => {
      if (!exited) {
        try {
          term.kill("SIGKILL");
        } catch {
          // gone
        }
      }
    }, KILL_GRACE_MS);
  };

  // PTY output → Data frames, pausing the PTY while the socket is congested.
  term.onData((d: string | Buffer) => {
    if (socket.destroyed || socket.writableEnded) return;
    const chunk = typeof d === "string" ? Buffer.from(d, "utf8") : d;
    if (!socket.write(encodeFrame(FrameType.Data, chunk))) {
      term.pause();
      socket.once("drain", () => term.resume());
    }
  });
  term.onExit(() => {
    exited = true;
    if (killTimer) clearTimeout(killTimer);
    onDone();
    if (!socket.destroyed && !socket.writableEnded) socket.end(encodeFrame(FrameType.SessionClose));
  });

  const onInput = (chunk: Buffer): void => {
    let frames;
    try {
      frames = decoder.push(chunk);
    } catch {
      socket.destroy();
      hangUp();
      return;
    }
    for (const f of frames) {
      if (f.type === FrameType.Data) {
        if (!exited) term.write(f.payload);
      } else if (f.type === FrameType.WindowSize) {
        const ws = decodeWindowSize(f.payload);
        if (ws && ws.cols > 0 && ws.rows > 0 && ws.cols <= 0xffff && ws.rows <= 0xffff && !exited) term.resize(ws.cols, ws.rows);
      } else if (f.type === FrameType.Shutdown) {
        hangUp();
      }
      // Heartbeat and unknown types: ignored.
    }
  };
  socket.on("data", onInput);
  socket.on("error", () => undefined);
  socket.on("close", hangUp);
  socket.on("end", hangUp);
  if (head.length > 0) onInput(head);
}
