/**
 * The bytes of an exec stream's payload frames (docs/slicer-api.md#exec), built without a
 * round trip through JavaScript strings where the output allows it.
 *
 * A payload frame is exactly what `JSON.stringify({ timestamp, type, [type]: s, data: s,
 * encoding?, exit_code: 0 }) + "\n"` gives (the payload twice: `stdout`/`stderr` and `data`).
 * Building it that way costs far more than moving the bytes: the guest agent spent ~2 s of
 * CPU per 100 MiB of `stdout` (decode, escape, concatenate, then encode the 2× string back to
 * UTF-8 on write; docs/performance.md). Here:
 * - text mode, a chunk that is valid UTF-8 with nothing JSON escapes (no byte below 0x20, no
 *   `"` or `\`) and no partial character pending from an earlier chunk: the JSON string is the
 *   chunk's own bytes, copied twice into the frame;
 * - text mode otherwise: the same `StringDecoder` as before (characters split across chunks,
 *   U+FFFD for invalid bytes) and `JSON.stringify` of the decoded string, once, encoded once;
 * - base64 mode: the base64 text has nothing to escape and is written into the frame as bytes.
 * Every path yields the bytes the `JSON.stringify` form yields (test/unit/exec-frames.test.ts).
 */
import { isUtf8 } from "node:buffer";
import { StringDecoder } from "node:string_decoder";

/** True when `buf` holds a byte JSON must escape in a string: below 0x20, `"` or `\`. */
export function needsJsonEscape(buf: Buffer): boolean {
  if (buf.indexOf(0x22) !== -1 || buf.indexOf(0x5c) !== -1) return true;
  const n = buf.length;
  let i = 0;
  const head = Math.min(n, (4 - (buf.byteOffset & 3)) & 3);
  for (; i < head; i++) if ((buf[i] as number) < 0x20) return true;
  // Four bytes at a time: ((x - 0x20202020) & ~x & 0x80808080) is non-zero iff a byte of x is < 0x20
  // (https://graphics.stanford.edu/~seander/bithacks.html#HasLessInWord).
  const wordCount = (n - i) >>> 2;
  if (wordCount > 0) {
    const words = new Uint32Array(buf.buffer, buf.byteOffset + i, wordCount);
    for (let j = 0; j < wordCount; j++) {
      const x = words[j] as number;
      if (((x - 0x20202020) & ~x & 0x80808080) !== 0) return true;
    }
    i += wordCount * 4;
  }
  for (; i < n; i++) if ((buf[i] as number) < 0x20) return true;
  return false;
}

const QUOTE = 0x22;

/** The payload frames of one stream (`stdout` or `stderr`) of one exec, as bytes. */
export class PayloadFramer {
  private readonly base64: boolean;
  private readonly decoder = new StringDecoder("utf8");
  /** False while the decoder may hold the first bytes of a character split across chunks. */
  private decoderEmpty = true;
  private readonly typeBytes: Buffer;
  private readonly midBytes: Buffer;
  private readonly tailBytes: Buffer;

  /** `kind`: the stream; `mode`: the exec's `stdio`. */
  constructor(kind: "stdout" | "stderr", mode: "text" | "base64") {
    this.base64 = mode === "base64";
    // {"timestamp":<ts>  ,"type":"stdout","stdout":  <P>  ,"data":  <P>  ,"encoding":"base64","exit_code":0}\n
    this.typeBytes = Buffer.from(`,"type":"${kind}","${kind}":`);
    this.midBytes = Buffer.from(`,"data":`);
    this.tailBytes = Buffer.from(`${this.base64 ? `,"encoding":"base64"` : ""},"exit_code":0}\n`);
  }

  /**
   * The frame for one chunk read from the stream, stamped `timestamp` (RFC 3339), or
   * undefined when the chunk gives nothing to send yet (only part of a character).
   */
  chunk(buf: Buffer, timestamp: string): Buffer | undefined {
    if (buf.length === 0) return undefined;
    if (this.base64) {
      const b64 = buf.toString("base64");
      return this.frame(timestamp, b64.length + 2, (out, at) => {
        out[at] = QUOTE;
        out.write(b64, at + 1, "latin1");
        out[at + 1 + b64.length] = QUOTE;
      });
    }
    if (this.decoderEmpty && isUtf8(buf) && !needsJsonEscape(buf)) {
      return this.frame(timestamp, buf.length + 2, (out, at) => {
        out[at] = QUOTE;
        buf.copy(out, at + 1);
        out[at + 1 + buf.length] = QUOTE;
      });
    }
    // A chunk ending in an ASCII byte leaves nothing pending in the decoder.
    this.decoderEmpty = (buf[buf.length - 1] as number) < 0x80;
    return this.decoded(this.decoder.write(buf), timestamp);
  }

  /** The frame for what the decoder still holds at the stream's end (U+FFFD), or undefined. */
  end(timestamp: string): Buffer | undefined {
    if (this.base64) return undefined;
    this.decoderEmpty = true;
    return this.decoded(this.decoder.end(), timestamp);
  }

  private decoded(s: string, timestamp: string): Buffer | undefined {
    if (s === "") return undefined;
    const json = Buffer.from(JSON.stringify(s), "utf8");
    return this.frame(timestamp, json.length, (out, at) => json.copy(out, at));
  }

  /** `{"timestamp":…,"type":…,"<kind>":P,"data":P[,"encoding":"base64"],"exit_code":0}\n` with P `payloadLen` bytes put by `put`. */
  private frame(timestamp: string, payloadLen: number, put: (out: Buffer, at: number) => void): Buffer {
    const head = `{"timestamp":${JSON.stringify(timestamp)}`;
    const headLen = Buffer.byteLength(head);
    const total = headLen + this.typeBytes.length + payloadLen + this.midBytes.length + payloadLen + this.tailBytes.length;
    const out = Buffer.allocUnsafe(total);
    let at = out.write(head, 0, "utf8");
    at += this.typeBytes.copy(out, at);
    put(out, at);
    at += payloadLen;
    at += this.midBytes.copy(out, at);
    put(out, at);
    at += payloadLen;
    this.tailBytes.copy(out, at);
    return out;
  }
}
