/**
 * Pulling a request body chunk by chunk as the socket delivered them. A Readable's own async
 * iterator calls `read()`, which joins everything buffered into one new Buffer: with the agent
 * connections' 1 MiB stream mark (unix-transport.ts) that copied most of a cp upload once more
 * (docs/performance.md). This hands out the socket's chunks themselves.
 */
import { finished, type Readable } from "node:stream";

/** Chunks queued before the source is paused. */
const MAX_QUEUED_CHUNKS = 16;

/**
 * The chunks of `source` in order, each the Buffer the source emitted (not copied). The source
 * is paused while {@link MAX_QUEUED_CHUNKS} wait to be taken, so a slow consumer holds the
 * sender back; a consumer that stops early (break, throw) leaves the source paused and drops
 * its queue.
 * @throws the source's error, or ERR_STREAM_PREMATURE_CLOSE when it closed before its end
 *   (a client that went away mid-upload).
 */
export async function* bodyChunks(source: Readable): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let end: { err: Error | null | undefined } | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer): void => {
    queue.push(chunk);
    if (queue.length >= MAX_QUEUED_CHUNKS) source.pause();
    wake?.();
  };
  const stopWatching = finished(source, (err) => {
    end = { err };
    wake?.();
  });
  source.on("data", onData);
  try {
    for (;;) {
      const chunk = queue.shift();
      if (chunk !== undefined) {
        if (queue.length < MAX_QUEUED_CHUNKS / 2 && source.isPaused() && end === undefined) source.resume();
        yield chunk;
        continue;
      }
      if (end !== undefined) {
        if (end.err) throw end.err;
        return;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    source.off("data", onData);
    stopWatching();
    source.pause();
  }
}
