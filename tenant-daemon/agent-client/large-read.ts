/**
 * Agent connections whose socket reads are larger than Node's own (docs/performance.md "cp out,
 * to the floor"). Node reads a socket into buffers of 64 KiB (libuv's suggested size), so the
 * byte-level relay of a download (chunked-relay.ts `AnswerTap`) made one `read` and one `write`
 * of at most 64 KiB per 64 KiB relayed, even when the agent had queued three times that on its
 * Unix socket. A socket made with Node's `onread` option (https://nodejs.org/docs/latest-v20.x/api/net.html#socketconnectoptions-connectlistener)
 * reads into a buffer of our size instead; the callback here hands each read on as a normal
 * `data` chunk (`socket.push`), so Node's HTTP client and the tap see the same stream as before,
 * only in fewer, larger pieces.
 */
import net from "node:net";
import type { ClientRequestArgs } from "node:http";

/**
 * Size of one read of a large-read agent connection, bytes. A Unix stream socket holds what its
 * sender's send buffer allows (`net.core.wmem_default`, 208 KiB on Linux by default), so a read
 * rarely returns more than that; 256 KiB takes all of it in one call.
 */
export const LARGE_READ_BYTES = 256 * 1024;

/**
 * A Unix-socket connection to `socketPath` that reads up to `readBytes` per call and emits each
 * read as one `data` chunk (backpressure as usual: a full readable buffer stops reading until it
 * is read). A read shorter than a quarter of `readBytes` is copied out into a buffer of its own
 * size and the read buffer kept for the next read; a longer one is handed on as a slice of the
 * read buffer (no copy) and a fresh read buffer is taken. So a chunk never pins more than 4× its
 * own size, and a small answer (a head, an error) costs a copy of its bytes, not a new buffer.
 * @param socketPath the agent listener's host path.
 * @param readBytes bytes per read (> 0), default {@link LARGE_READ_BYTES}.
 * @returns a connecting `net.Socket` (errors are emitted on it, as `net.createConnection`'s).
 */
export function largeReadConnection(socketPath: string, readBytes = LARGE_READ_BYTES): net.Socket {
  const keepBelow = Math.max(1, Math.floor(readBytes / 4));
  let buf: Buffer | undefined;
  // The generator is called when the handle is set up and after each read (Node's
  // lib/internal/stream_base_commons.js `onStreamRead`).
  const next = (): Buffer => (buf ??= Buffer.allocUnsafeSlow(readBytes));
  const socket: net.Socket = net.createConnection({
    path: socketPath,
    onread: {
      buffer: next,
      callback: (nread: number, b: Uint8Array): boolean => {
        const read = b as Buffer;
        let chunk: Buffer;
        if (nread < keepBelow) {
          chunk = Buffer.from(read.subarray(0, nread));
        } else {
          chunk = read.subarray(0, nread);
          buf = undefined;
        }
        return socket.push(chunk);
      },
    },
  });
  return socket;
}

/**
 * `http.request` options that open a new large-read connection ({@link largeReadConnection}) to
 * `socketPath` for the request (no agent, no keep-alive pool: the byte-level relay drops the
 * connection after the answer anyway).
 */
export function largeReadConnectOptions(socketPath: string): Pick<ClientRequestArgs, "createConnection"> {
  return { createConnection: () => largeReadConnection(socketPath) };
}
