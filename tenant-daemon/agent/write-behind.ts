/**
 * Writing a streamed body to a file behind its reader, for cp uploads (cp.ts binary mode) and
 * the tar extractor (tar.ts): chunks are gathered by reference and written with one
 * `writev(2)` per batch while the next batch is read, so socket and disk do not take turns and
 * no byte is copied on the way (docs/performance.md).
 */
import type { FileHandle } from "node:fs/promises";

/** Bytes gathered before one `writev` (the batch in flight and the one filling: 2× this held). */
export const WRITE_BEHIND_BATCH_BYTES = 1024 * 1024;

/** At most this many buffers per `writev` (Linux IOV_MAX is 1024). */
const MAX_IOV = 1024;

/**
 * Writes a file's data in batches of {@link WRITE_BEHIND_BATCH_BYTES} at the file position,
 * one batch on the thread pool while the next is gathered. A failed write (e.g. ENOSPC) is
 * thrown by the next {@link add} or by {@link finish}; nothing is written after it.
 */
export class WriteBehind {
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private inFlight: Promise<void> = Promise.resolve();
  private failure: { err: unknown } | undefined;
  /** Bytes handed to {@link add} so far. */
  bytes = 0;

  constructor(private readonly fh: FileHandle, private readonly batchBytesLimit = WRITE_BEHIND_BATCH_BYTES) {}

  /**
   * Queue `chunk`, kept by reference: the caller must not reuse its memory (socket and file
   * stream chunks are fresh buffers). Resolves at once unless a full batch waits for the
   * previous write.
   * @throws the error of an earlier write.
   */
  async add(chunk: Buffer): Promise<void> {
    if (this.failure !== undefined) throw this.failure.err;
    if (chunk.length === 0) return;
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    this.bytes += chunk.length;
    if (this.batchBytes >= this.batchBytesLimit || this.batch.length >= MAX_IOV) await this.flush();
  }

  /**
   * Write what is queued and wait for every write.
   * @throws the error of any write.
   */
  async finish(): Promise<void> {
    await this.flush();
    await this.inFlight;
    if (this.failure !== undefined) throw this.failure.err;
  }

  private async flush(): Promise<void> {
    await this.inFlight;
    if (this.failure !== undefined) throw this.failure.err;
    if (this.batchBytes === 0) return;
    const data = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    this.inFlight = writevFully(this.fh, data).catch((err: unknown) => {
      this.failure = { err };
    });
  }
}

/** `writev` all of `buffers` at the file position, continuing after short writes. */
async function writevFully(fh: FileHandle, buffers: Buffer[]): Promise<void> {
  let rest = buffers;
  while (rest.length > 0) {
    let { bytesWritten } = await fh.writev(rest);
    if (bytesWritten === 0) throw new Error("writev wrote nothing");
    let i = 0;
    while (i < rest.length && bytesWritten >= (rest[i] as Buffer).length) bytesWritten -= (rest[i++] as Buffer).length;
    rest = rest.slice(i);
    if (bytesWritten > 0) rest[0] = (rest[0] as Buffer).subarray(bytesWritten);
  }
}
