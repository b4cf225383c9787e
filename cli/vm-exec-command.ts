/**
 * `paddock vm exec`: run a command in a VM through `POST /vm/{h}/exec` and relay its NDJSON
 * frames (base64 stdio) to this process's stdout and stderr, exiting with the command's code.
 */
import type { Readable } from "node:stream";
import { parseFlags, parseIntFlag, splitAtDoubleDash } from "./args.js";
import { seg, type QueryParams } from "./api-client.js";
import { UsageError } from "./cli-errors.js";
import { PaddockError, errnoCode } from "../shared/errors.js";
import type { CliContext } from "./cli-context.js";
import { LineSplitter, exitCodeOfFrame, framePayload, isTerminalFrame, type ExecFrame } from "./exec-stream.js";
import { TARGET_FLAGS, clientFor, resolveHostname, withVm } from "./vm-common.js";

/** Query of `POST /vm/{h}/exec` for a command (pure): `cmd`, repeated `args` and `env`, uid/gid (gid defaults to uid), cwd, shell, stdin. Always `stdio=base64`. */
export function execQuery(cmd: readonly string[], opts: { uid?: number; gid?: number; cwd?: string; env?: readonly string[]; shell?: string; stdin?: boolean }): QueryParams {
  const q: [string, string | number | boolean | undefined][] = [["cmd", cmd[0]]];
  for (const a of cmd.slice(1)) q.push(["args", a]);
  for (const e of opts.env ?? []) q.push(["env", e]);
  q.push(["uid", opts.uid], ["gid", opts.gid ?? opts.uid], ["cwd", opts.cwd], ["shell", opts.shell]);
  if (opts.stdin) q.push(["stdin", true]);
  q.push(["stdio", "base64"]);
  return q;
}

/** Why an exec stream or a shell may end before the server says so, for {@link streamCutError} and the shell's cut. */
export const CUT_CAUSES = "the tenant's API token was revoked, the tenant was suspended or deleted, the gateway or daemon stopped (docs/slicer-api.md \"Ending sessions\"), or the VM itself ended (a guest exit, an OOM kill, its pids limit under gVisor: `paddock events` says why)";

/**
 * The error for an exec stream that ended before its exit frame: one line saying what was cut
 * and the likely causes; the command's outcome is unknown. The gateway cuts a started answer
 * without a word when it ends a session (supervisor/gateway-session.ts `endRequestSession`), so
 * node only sees the connection reset or closed.
 * @param err - what reading the response threw (node's `aborted`/ECONNRESET), or undefined
 *   for a stream that ended cleanly without the frame.
 * @returns PaddockError `ERR_EXEC_STREAM_CUT` (the CLI's own, exit 1), `err` as its cause.
 */
export function streamCutError(err: unknown): PaddockError {
  const errno = errnoCode(err);
  const how = err === undefined ? "ended" : `was cut (${errno ?? (err instanceof Error ? err.message : String(err))})`;
  return new PaddockError("ERR_EXEC_STREAM_CUT", `the exec stream ${how} before the command's exit frame, so its outcome is unknown; likely causes: ${CUT_CAUSES}`, err === undefined ? {} : { cause: err });
}

/**
 * Relay an exec NDJSON response: payloads to stdout/stderr with backpressure, then the
 * command's exit code (cli/exec-stream.ts frames). A stream that breaks off after the exit frame
 * still gives the command's code.
 * @throws PaddockError ERR_EXEC_STREAM_CUT when the stream is reset or ends before the exit frame
 *   (see {@link streamCutError}).
 */
export async function relayExecStream(res: Readable, out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const splitter = new LineSplitter();
  let terminal: ExecFrame | undefined;
  let cut: unknown;
  try {
    for await (const chunk of res) {
      for (const line of splitter.push(chunk as Buffer)) {
        let frame: ExecFrame;
        try {
          frame = JSON.parse(line) as ExecFrame;
        } catch {
          continue; // not a frame; Slicer's own clients skip such lines too
        }
        const payload = framePayload(frame);
        if (payload) {
          const stream = payload.stream === "stdout" ? out.stdout : out.stderr;
          if (!stream.write(payload.bytes)) await new Promise<void>((resolve) => stream.once("drain", () => resolve()));
        }
        if (isTerminalFrame(frame)) terminal = frame;
      }
    }
  } catch (err) {
    cut = err;
  }
  if (terminal === undefined) throw streamCutError(cut);
  if (terminal.error) out.stderr.write(`paddock: ${terminal.error}\n`);
  return exitCodeOfFrame(terminal);
}

/** `paddock vm exec HOST [flags] -- CMD [ARGS...]`. @returns the command's exit code */
export async function vmExec(ctx: CliContext, argv: string[]): Promise<number> {
  const [before, after] = splitAtDoubleDash(argv);
  const { values, positionals } = parseFlags(before, {
    ...TARGET_FLAGS,
    uid: { type: "string" },
    gid: { type: "string" },
    cwd: { type: "string" },
    env: { type: "string", multiple: true },
    shell: { type: "string" },
    stdin: { type: "boolean" },
  });
  const usage = "paddock vm exec HOST [flags] -- CMD [ARGS...]";
  if (positionals.length < 1) throw new UsageError(`missing HOST; usage: ${usage}`);
  const cmd = [...positionals.slice(1), ...(after ?? [])];
  if (cmd.length === 0 || cmd[0] === "") throw new UsageError(`missing CMD; usage: ${usage}`);
  for (const e of values.env ?? []) if (!/^[^=]+=/.test(e)) throw new UsageError(`--env takes KEY=VALUE, got ${JSON.stringify(e)}`);
  const query = execQuery(cmd, {
    uid: parseIntFlag(values.uid, "--uid", { min: 0, max: 4294967295 }),
    gid: parseIntFlag(values.gid, "--gid", { min: 0, max: 4294967295 }),
    cwd: values.cwd,
    env: values.env,
    shell: values.shell,
    stdin: values.stdin,
  });
  const client = clientFor(ctx, values);
  // With --stdin the body cannot be replayed, so resolve a friendly name before sending.
  const host = values.stdin ? await resolveHostname(client, positionals[0] as string) : (positionals[0] as string);
  const res = await withVm(client, host, (h) => client.send("POST", `/vm/${seg(h)}/exec`, {
    query,
    ...(values.stdin ? { body: ctx.stdin, contentType: "application/octet-stream" } : {}),
  }));
  return relayExecStream(res, { stdout: ctx.stdout, stderr: ctx.stderr });
}
