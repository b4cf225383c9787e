/**
 * `paddock vm exec`: run a command in a VM through `POST /vm/{h}/exec` and relay its NDJSON
 * frames (base64 stdio) to this process's stdout and stderr, exiting with the command's code.
 */
import type { Readable } from "node:stream";
import { parseFlags, parseIntFlag, splitAtDoubleDash } from "./args.js";
import { seg, type QueryParams } from "./api-client.js";
import { UsageError, EXIT } from "./cli-errors.js";
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

/**
 * Relay an exec NDJSON response: payloads to stdout/stderr with backpressure, then the
 * command's exit code (cli/exec-stream.ts frames); 1 when the stream ends without an exit frame.
 */
export async function relayExecStream(res: Readable, out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const splitter = new LineSplitter();
  let terminal: ExecFrame | undefined;
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
  if (terminal === undefined) {
    out.stderr.write("paddock: the exec stream ended without an exit frame (connection lost?)\n");
    return EXIT.ERROR;
  }
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
