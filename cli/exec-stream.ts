/**
 * Client side of the exec NDJSON stream (docs/slicer-api.md#streaming-answer-ndjson): split lines,
 * decode frames, map the final frame to a process exit code. Pure pieces, used by
 * `paddock vm exec`.
 */
import os from "node:os";
import { StringDecoder } from "node:string_decoder";

/** One exec frame as sent by the daemon (all keys optional). */
export interface ExecFrame {
  type?: string;
  timestamp?: string;
  pid?: number;
  encoding?: string;
  stdout?: string;
  stderr?: string;
  data?: string;
  exit_code?: number;
  signal?: string;
  error?: string;
}

/** Splits a byte stream into complete `\n`-terminated lines (UTF-8 safe across chunks). */
export class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private buf = "";

  /** Feed a chunk; returns the complete lines it finished (without `\n`, empty lines dropped). */
  push(chunk: Buffer): string[] {
    this.buf += this.decoder.write(chunk);
    const parts = this.buf.split("\n");
    this.buf = parts.pop() ?? "";
    return parts.map((l) => l.replace(/\r$/, "")).filter((l) => l !== "");
  }

  /** What is left without a terminating newline (Slicer's clients ignore such a last line). */
  rest(): string {
    return this.buf + this.decoder.end();
  }
}

/** Which local stream a frame's payload belongs to, and its bytes; undefined for control frames. */
export function framePayload(frame: ExecFrame): { stream: "stdout" | "stderr"; bytes: Buffer } | undefined {
  const decode = (s: string): Buffer => (frame.encoding === "base64" ? Buffer.from(s, "base64") : Buffer.from(s, "utf8"));
  if (frame.type === "stdout" || (frame.type === undefined && frame.stdout)) {
    const s = frame.stdout || frame.data;
    return s ? { stream: "stdout", bytes: decode(s) } : undefined;
  }
  if (frame.type === "stderr" || (frame.type === undefined && frame.stderr)) {
    const s = frame.stderr || frame.data;
    return s ? { stream: "stderr", bytes: decode(s) } : undefined;
  }
  return undefined;
}

/** True for the frame that ends the stream: `exit`, or any frame with a non-empty `error`. */
export function isTerminalFrame(frame: ExecFrame): boolean {
  return frame.type === "exit" || (typeof frame.error === "string" && frame.error !== "");
}

/**
 * The local exit code for a terminal frame: the command's exit code; a start failure's code
 * (e.g. 127) or 1; 128 + signal number for a command killed by a signal (shell convention).
 */
export function exitCodeOfFrame(frame: ExecFrame): number {
  const code = typeof frame.exit_code === "number" && Number.isInteger(frame.exit_code) ? frame.exit_code : 0;
  if (frame.error) return code !== 0 ? code : 1;
  if (code === 0 && frame.signal) {
    const name = (frame.signal.startsWith("SIG") ? frame.signal : `SIG${frame.signal}`).toUpperCase() as keyof typeof os.constants.signals;
    const n = os.constants.signals[name];
    return typeof n === "number" ? 128 + n : 1;
  }
  return code;
}
