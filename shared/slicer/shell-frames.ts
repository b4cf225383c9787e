/**
 * The shell frame format (docs/slicer-api.md#shell): 1-byte type + 4-byte big-endian payload
 * length + payload. Every WebSocket binary message between a client and the daemon is one frame; the
 * daemon ↔ agent byte stream carries the same frames back to back (they are self-delimiting).
 */

/** Frame types (the Go SDK's `FrameType*`: https://github.com/slicervm/sdk/blob/master/shell/shell.go). */
export const FrameType = {
  /** Terminal bytes, both ways. */
  Data: 0x01,
  /** Client → server: 8 bytes, cols u32 BE then rows u32 BE. */
  WindowSize: 0x02,
  /** Either way: ends the session. */
  Shutdown: 0x03,
  /** Client → server every 30 s; ignored. */
  Heartbeat: 0x04,
  /** Server → client: the shell exited. */
  SessionClose: 0x05,
} as const;

/** Header size in bytes. */
export const FRAME_HEADER_BYTES = 5;
/** Largest payload accepted from a peer (a terminal never needs more; protects the parser). */
export const MAX_FRAME_PAYLOAD_BYTES = 1 << 20;

/** One decoded frame. */
export interface ShellFrame {
  type: number;
  payload: Buffer;
}

/** Encode one frame. */
export function encodeFrame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt8(type, 0);
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/**
 * True when `message` is exactly one well-formed frame (header + declared payload length,
 * payload ≤ {@link MAX_FRAME_PAYLOAD_BYTES}). The daemon checks every client message with it
 * before putting it on the agent stream, so a malformed message cannot desynchronise it.
 */
export function isWholeFrame(message: Buffer): boolean {
  if (message.length < FRAME_HEADER_BYTES) return false;
  const len = message.readUInt32BE(1);
  return len <= MAX_FRAME_PAYLOAD_BYTES && message.length === FRAME_HEADER_BYTES + len;
}

/** A WindowSize payload: `cols` then `rows`, each u32 BE. */
export function encodeWindowSize(cols: number, rows: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeUInt32BE(cols, 0);
  out.writeUInt32BE(rows, 4);
  return out;
}

/** `cols`/`rows` of a WindowSize payload; undefined when the payload is not 8 bytes. */
export function decodeWindowSize(payload: Buffer): { cols: number; rows: number } | undefined {
  if (payload.length !== 8) return undefined;
  return { cols: payload.readUInt32BE(0), rows: payload.readUInt32BE(4) };
}

/**
 * Incremental decoder of a frame byte stream: feed chunks, get whole frames.
 * @throws Error when a frame declares a payload larger than {@link MAX_FRAME_PAYLOAD_BYTES}.
 */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  /** Frames completed by `chunk`, in order; an incomplete tail is kept for the next call. */
  push(chunk: Buffer): ShellFrame[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: ShellFrame[] = [];
    for (;;) {
      if (this.pending.length < FRAME_HEADER_BYTES) break;
      const len = this.pending.readUInt32BE(1);
      if (len > MAX_FRAME_PAYLOAD_BYTES) throw new Error(`shell frame payload of ${len} bytes exceeds ${MAX_FRAME_PAYLOAD_BYTES}`);
      if (this.pending.length < FRAME_HEADER_BYTES + len) break;
      out.push({ type: this.pending.readUInt8(0), payload: this.pending.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len) });
      this.pending = this.pending.subarray(FRAME_HEADER_BYTES + len);
    }
    return out;
  }

  /** Raw frame bytes (header + payload) for each whole frame; used by the daemon to relay frames as messages. */
  pushRaw(chunk: Buffer): Buffer[] {
    return this.push(chunk).map((f) => encodeFrame(f.type, f.payload));
  }
}
