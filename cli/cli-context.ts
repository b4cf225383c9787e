/**
 * What a CLI command may touch of the outside world, passed down from the entry point
 * (the one place that builds them) so commands can run against other streams in tests.
 */
import { existsSync, readFileSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { errnoCode } from "../shared/errors.js";
import type { ReadTokenFile } from "./target.js";

/** A writable that may be a terminal. */
export type OutStream = Writable & { isTTY?: boolean; columns?: number };

/** The CLI's view of the process. */
export interface CliContext {
  env: NodeJS.ProcessEnv;
  stdout: OutStream;
  stderr: OutStream;
  stdin: Readable & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };
  /** Reads a token file (undefined when it does not exist). */
  readTokenFile: ReadTokenFile;
  /** True when /dev/kvm exists (decides `paddock new`'s hypervisor). */
  kvmPresent: () => boolean;
}

/** Read a token file; undefined for ENOENT, other errors propagate. */
export function readTokenFileSync(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw err;
  }
}

/** The real process's context. */
export function processContext(): CliContext {
  return {
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    readTokenFile: readTokenFileSync,
    kvmPresent: () => existsSync("/dev/kvm"),
  };
}

/**
 * Write to a stream and wait for `drain` when its buffer is full (so large outputs keep
 * backpressure and are not lost when the process exits).
 */
export async function writeOut(stream: Writable, text: string | Buffer): Promise<void> {
  if (!stream.write(text)) await new Promise<void>((resolve) => stream.once("drain", resolve));
}
