/**
 * Foreground exec (docs/slicer-api.md#exec): NDJSON stream of `started`/`stdout`/`stderr`/`exit`
 * frames, or one buffered JSON result. stdin is streamed from the request body (full duplex: the
 * response starts before the body is read). A client that disconnects kills the process group.
 */
import type { Readable } from "node:stream";
import { rfc3339 } from "../../shared/time.js";
import { badRequest, queryBool, sendJson, type AgentRequest } from "./http-util.js";
import {
  killGroup,
  onProcessDone,
  parseExecSpec,
  spawnExec,
  startFailureExitCode,
  startFailureMessage,
  type ExecSpec,
  type ExitStatus,
} from "./exec-spec.js";
import type { UserDirectory } from "./users.js";
import { PayloadFramer } from "./exec-frames.js";

/** One NDJSON exec frame. */
export type ExecFrame = Record<string, string | number | boolean | undefined>;

/** `stdout=false` / `stderr=false` suppress a stream; absent ⇒ captured. */
function captured(q: URLSearchParams, name: string): boolean {
  return q.get(name) === null || q.get(name) === "" || queryBool(q, name);
}

/** Handle `POST /v1/exec` without `background`. */
export function handleForegroundExec(ctx: AgentRequest, users: UserDirectory): void {
  const { query: q, req, res } = ctx;
  const stdinOn = queryBool(q, "stdin");
  const buffered = queryBool(q, "buffered");
  if (buffered && stdinOn) throw badRequest("buffered=true cannot be combined with stdin=true", "ERR_QUERY_INVALID");
  const spec = parseExecSpec(q, users, "-c");
  const wantOut = captured(q, "stdout");
  const wantErr = captured(q, "stderr");
  const child = spawnExec(spec, [stdinOn ? "pipe" : "ignore", wantOut ? "pipe" : "ignore", wantErr ? "pipe" : "ignore"]);
  const startedAt = rfc3339();
  const b64 = spec.stdio === "base64";
  const enc = b64 ? { encoding: "base64" } : {};
  let done = false;

  // A client that goes away ends the command (and its group).
  res.on("close", () => {
    if (!done && child.pid !== undefined) killGroup(child.pid, "SIGKILL");
  });
  if (stdinOn && child.stdin) {
    child.stdin.on("error", () => undefined); // EPIPE when the command exits before reading all stdin
    req.pipe(child.stdin);
  }

  if (buffered) {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (c: Buffer) => out.push(c));
    child.stderr?.on("data", (c: Buffer) => err.push(c));
    const reply = (status: ExitStatus, error?: string): void => {
      done = true;
      const toWire = (bufs: Buffer[]): string => Buffer.concat(bufs).toString(b64 ? "base64" : "utf8");
      sendJson(res, 200, {
        stdout: toWire(out),
        stderr: toWire(err),
        exit_code: status.exitCode,
        ...enc,
        ...(child.pid !== undefined ? { pid: child.pid } : {}),
        started_at: startedAt,
        ended_at: rfc3339(),
        ...(status.signal ? { signal: status.signal } : {}),
        ...(error ? { error } : {}),
      });
    };
    child.once("error", (e) => {
      if (child.pid === undefined && !done) reply({ exitCode: startFailureExitCode(e), signal: "" }, startFailureMessage(spec, e));
    });
    onProcessDone(child, (s) => reply(s));
    return;
  }

  res.writeHead(200, { "Content-Type": "application/x-ndjson", "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff" });
  res.on("error", () => undefined);
  const write = (frame: ExecFrame): boolean =>
    res.destroyed || res.writableEnded ? true : res.write(JSON.stringify({ timestamp: rfc3339(), ...frame }) + "\n");

  child.once("error", (e) => {
    if (child.pid !== undefined || done) return;
    done = true;
    write({ type: "exit", ...enc, exit_code: startFailureExitCode(e), error: startFailureMessage(spec, e), ended_at: rfc3339() });
    res.end();
  });
  if (child.pid === undefined) return; // spawn failed synchronously-ish: the error event answers
  const pid = child.pid;
  write({ type: "started", pid, started_at: startedAt, ...enc, exit_code: 0 });
  pipeFrames(child.stdout, "stdout", spec, res);
  pipeFrames(child.stderr, "stderr", spec, res);
  onProcessDone(child, (s) => {
    done = true;
    write({ type: "exit", pid, ...enc, exit_code: s.exitCode, ...(s.signal ? { signal: s.signal } : {}), ended_at: rfc3339() });
    res.end();
  });
}

/** Turn a child pipe into payload frames (exec-frames.ts), pausing the pipe while the response is congested. */
function pipeFrames(
  stream: Readable | null,
  kind: "stdout" | "stderr",
  spec: ExecSpec,
  res: AgentRequest["res"],
): void {
  if (!stream) return;
  const framer = new PayloadFramer(kind, spec.stdio);
  const emit = (frame: Buffer | undefined): void => {
    if (frame === undefined || res.destroyed || res.writableEnded) return;
    if (!res.write(frame)) {
      stream.pause();
      res.once("drain", () => stream.resume());
    }
  };
  stream.on("data", (chunk: Buffer) => emit(framer.chunk(chunk, rfc3339())));
  stream.on("end", () => emit(framer.end(rfc3339())));
}
