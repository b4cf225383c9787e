import { Readable, Writable } from "node:stream";
import type { CliContext } from "../../cli/cli-context.js";

/**
 * A Writable that keeps everything written to it, for a CLI's stdout or stderr in a test.
 * @returns the stream and `text()`, all of it as UTF-8 so far.
 */
export function capture(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

/**
 * A CLI context for `runCli` in a test (cli/cli-context.ts): `env` as given, stdout and stderr
 * captured, empty stdin, no /dev/kvm, and token files read by `readTokenFile` (default: none exist).
 * @returns the context and the two captures.
 */
export function fakeCliContext(env: NodeJS.ProcessEnv = {}, readTokenFile: CliContext["readTokenFile"] = () => undefined): { ctx: CliContext; out: ReturnType<typeof capture>; err: ReturnType<typeof capture> } {
  const out = capture();
  const err = capture();
  const ctx: CliContext = { env, stdout: out.stream, stderr: err.stream, stdin: Readable.from([]), readTokenFile, kvmPresent: () => false };
  return { ctx, out, err };
}
