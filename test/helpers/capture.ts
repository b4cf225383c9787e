import { Writable } from "node:stream";

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
