/**
 * `paddock vm shell`: an interactive shell in a VM over the `/vm/{h}/shell` WebSocket (binary
 * frames: type byte, u32 BE length, payload), with the terminal in raw mode and its size sent
 * on resize.
 */
import type http from "node:http";
import { parseFlags, parseIntFlag, expectPositionals } from "./args.js";
import { seg, toApiError } from "./api-client.js";
import { ApiError, EXIT } from "./cli-errors.js";
import { PaddockError } from "../shared/errors.js";
import { CUT_CAUSES } from "./vm-exec-command.js";
import type { CliContext } from "./cli-context.js";
import { TARGET_FLAGS, clientFor, resolveHostname } from "./vm-common.js";
import { bearerHeader } from "../shared/http/bearer.js";
import { FrameDecoder, FrameType, encodeFrame, encodeWindowSize } from "../shared/slicer/shell-frames.js";


/** Interval of the Ctrl-D sent after a piped stdin ends, until the shell exits, ms. */
const EOF_REPEAT_MS = 300;

/**
 * The error for a shell whose WebSocket closed before the server said the session ended (no
 * SessionClose or Shutdown frame): the gateway ends a session by closing the connection without
 * a word (supervisor/gateway-session.ts, a stopping supervisor), and the agent then hangs the
 * shell up (tenant-daemon/agent/shell.ts).
 * @param code - the WebSocket close code (1006: the connection went without a close frame).
 * @param reason - the close frame's reason, if any.
 * @returns PaddockError `ERR_SHELL_SESSION_CUT` (the CLI's own, exit 1).
 */
export function shellCutError(code: number, reason: string): PaddockError {
  const how = `closed (WebSocket code ${code}${reason === "" ? "" : `: ${reason}`})`;
  return new PaddockError("ERR_SHELL_SESSION_CUT", `the shell's connection ${how} before the shell ended; the VM's agent hangs up a shell whose connection goes (SIGHUP), so what it was running was cut; likely causes: ${CUT_CAUSES}`);
}

/**
 * `paddock vm shell HOST`: until the server ends the session.
 * @returns the exit code (0 once the server ended the session)
 * @throws PaddockError ERR_SHELL_SESSION_CUT when the connection closes before that
 */
export async function vmShell(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, uid: { type: "string" }, gid: { type: "string" }, cwd: { type: "string" }, shell: { type: "string" } });
  expectPositionals(positionals, 1, 1, "paddock vm shell HOST [--uid N] [--cwd DIR] [--shell /bin/bash]");
  const uid = parseIntFlag(values.uid, "--uid", { min: 0, max: 4294967295 });
  const client = clientFor(ctx, values);
  const t = client.target;
  // Resolve a friendly name first (the upgrade itself cannot be retried cheaply).
  const host = await resolveHostname(client, positionals[0] as string);
  const q = new URLSearchParams();
  if (uid !== undefined) q.set("uid", String(uid));
  const gid = parseIntFlag(values.gid, "--gid", { min: 0, max: 4294967295 }) ?? uid;
  if (gid !== undefined) q.set("gid", String(gid));
  if (values.cwd) q.set("cwd", values.cwd);
  if (values.shell) q.set("shell", values.shell);
  const pathAndQuery = `/vm/${seg(host)}/shell${q.size > 0 ? `?${q}` : ""}`;
  const url = t.kind === "unix" ? `ws+unix://${t.socketPath}:${pathAndQuery}` : `${t.url.protocol === "https:" ? "wss" : "ws"}://${t.url.host}${pathAndQuery}`;
  const { WebSocket } = await import("ws");
  const ws = new WebSocket(url, { headers: t.token ? { Authorization: bearerHeader(t.token) } : {} });
  const stdin = ctx.stdin;
  const out = ctx.stdout;
  const sendSize = (): void => {
    const size = encodeWindowSize(out.columns ?? 80, (out as { rows?: number }).rows ?? 24);
    if (ws.readyState === ws.OPEN) ws.send(encodeFrame(FrameType.WindowSize, size));
  };
  return new Promise<number>((resolve, reject) => {
    // Exactly one outcome: a refused upgrade (its HTTP error), a socket error, or a normal close.
    let settled = false;
    // The server said the session ended (the shell exited): a close after that is the normal end.
    let sessionEnded = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      cleanup();
      fn();
    };
    const onData = (d: Buffer): void => {
      if (ws.readyState === ws.OPEN) ws.send(encodeFrame(FrameType.Data, d));
    };
    const heartbeat = setInterval(() => ws.readyState === ws.OPEN && ws.send(encodeFrame(FrameType.Heartbeat)), 30_000);
    const cleanup = (): void => {
      clearInterval(heartbeat);
      clearInterval(eofTimer);
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      out.off("resize", sendSize);
      if (stdin.isTTY) stdin.setRawMode?.(false);
      stdin.pause();
    };
    // End of a piped stdin: type EOF (Ctrl-D) so the shell exits after running everything
    // queued, and the server then sends SessionClose. A Shutdown frame here would end the
    // session at once, before the shell had read the piped lines (the PTY only echoed them).
    // Ctrl-D is repeated every EOF_REPEAT_MS until the session ends: one typed while the PTY
    // is still in canonical mode (the shell not yet at its prompt, or a command running)
    // reaches readline as a NUL byte, not as EOF. A terminal's end is the user's own Ctrl-D,
    // so this only matters for pipes.
    let eofTimer: NodeJS.Timeout | undefined;
    const sendEof = (): void => {
      if (ws.readyState === ws.OPEN) ws.send(encodeFrame(FrameType.Data, Buffer.from("\u0004")));
    };
    const onEnd = (): void => {
      sendEof();
      eofTimer ??= setInterval(sendEof, EOF_REPEAT_MS);
    };
    ws.on("unexpected-response", (_req, res: http.IncomingMessage) => {
      settled = true;
      cleanup();
      // The VM exists (resolved above), so a 404 here means the daemon has no shell endpoint.
      // The connection ends only once the error body is read: terminating at once dropped the
      // server's message and code ("Bad Request (HTTP 400)" instead of why).
      toApiError(res)
        .then((e) => reject(e.status === 404 && e.code === undefined ? new ApiError(404, `the API at ${t.display} does not serve /vm/{hostname}/shell (interactive shell)`, undefined) : e), reject)
        .finally(() => ws.terminate());
    });
    ws.on("open", () => {
      if (stdin.isTTY) stdin.setRawMode?.(true);
      stdin.on("data", onData);
      stdin.on("end", onEnd);
      stdin.resume();
      out.on("resize", sendSize);
      sendSize();
    });
    // One frame per message; a message that is not whole frames is ignored.
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return;
      let frames;
      try {
        frames = new FrameDecoder().push(data);
      } catch {
        return;
      }
      for (const f of frames) {
        if (f.type === FrameType.Data) out.write(f.payload);
        else if (f.type === FrameType.Shutdown || f.type === FrameType.SessionClose) {
          sessionEnded = true;
          ws.close();
        }
      }
    });
    // A close without the server's SessionClose (or Shutdown) is a cut, not the shell's exit.
    ws.on("close", (code: number, reason: Buffer) => finish(() => (sessionEnded ? resolve(EXIT.OK) : reject(shellCutError(code, reason.toString())))));
    ws.on("error", (err) => finish(() => reject(err)));
  });
}
