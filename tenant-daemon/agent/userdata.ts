/**
 * First-boot userdata (docs/slicer-api.md#vm-lifecycle): run once as root, guarded by
 * `/etc/slicer/userdata-ran`, with `TARGET_USER` exported; output goes to the agent's stdout/stderr
 * (= the VM console log). The guard file records the exit code so health can report it after a
 * restart.
 */
import { spawn } from "node:child_process";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";

/** Userdata progress as health reports it. */
export interface UserdataState {
  ran: boolean;
  exitCode: number | undefined;
}

/** Options for {@link runUserdataOnce}. */
export interface UserdataOptions {
  script: string | null;
  /** Guard file; default `/etc/slicer/userdata-ran`. */
  guardPath: string;
  /** Directory for the script file (the agent dir). */
  workDir: string;
  targetUser: string;
  /** Called with each state change. */
  onState: (s: UserdataState) => void;
}

/**
 * Run the userdata script unless the guard file exists. Scripts without a shebang run
 * under `/bin/sh`. Resolves when done (never rejects: failures are recorded as exit codes).
 */
export async function runUserdataOnce(opts: UserdataOptions): Promise<void> {
  if (opts.script === null) {
    opts.onState({ ran: true, exitCode: undefined });
    return;
  }
  const previous = await readFile(opts.guardPath, "utf8").catch(() => undefined);
  if (previous !== undefined) {
    const n = parseInt(previous.trim(), 10);
    opts.onState({ ran: true, exitCode: Number.isInteger(n) ? n : 0 });
    return;
  }
  opts.onState({ ran: false, exitCode: undefined });
  const file = path.join(opts.workDir, "userdata.sh");
  let exitCode: number;
  try {
    await writeFile(file, opts.script, { mode: 0o700 });
    await chmod(file, 0o700);
    const [cmd, args] = opts.script.startsWith("#!") ? [file, []] : ["/bin/sh", [file]];
    exitCode = await new Promise<number>((resolve) => {
      // The script's output reaches the console through pipes the agent relays, never through the
      // agent's own stdout: that is a pipe node has made non-blocking, and a script sharing it
      // (O_NONBLOCK is per open file, not per process) fails on EAGAIN as soon as it writes faster
      // than the console reader drains it.
      const child = spawn(cmd, args, {
        stdio: ["ignore", "pipe", "pipe"],
        cwd: "/",
        env: { ...process.env, TARGET_USER: opts.targetUser, HOME: "/root", USER: "root" },
      });
      // Relayed for as long as anything holds the pipes: a server the script started in the
      // background keeps logging to the console. The script is done when it exits.
      child.stdout.pipe(process.stdout, { end: false });
      child.stderr.pipe(process.stderr, { end: false });
      child.once("error", (err) => {
        process.stderr.write(`paddock-agent: userdata failed to start: ${err.message}\n`);
        resolve(127);
      });
      child.once("exit", (code, signal) => resolve(signal ? 128 : (code ?? 1)));
    });
  } catch (err) {
    process.stderr.write(`paddock-agent: userdata failed: ${err instanceof Error ? err.message : String(err)}\n`);
    exitCode = 1;
  }
  await rm(file, { force: true });
  await mkdir(path.dirname(opts.guardPath), { recursive: true }).catch(() => undefined);
  await writeFile(opts.guardPath, `${exitCode}\n`).catch(() => undefined);
  opts.onState({ ran: true, exitCode });
}
