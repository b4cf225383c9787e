/**
 * The server name (SNI, RFC 6066 §3) of a TLS ClientHello, read from the first bytes a client
 * sends inside a CONNECT tunnel, before anything is forwarded. Bounded: one handshake record of
 * at most 16 KiB (RFC 8446 §5.1) is read; anything else is "not a ClientHello". No npm
 * package parses a raw ClientHello and is maintained (the `sni` package is a 2015 one-off), so
 * this is a small reader of the fixed layout (RFC 8446 §4.1.2, §4.2), unit-tested with
 * malformed input.
 */

/** What {@link parseClientHello} found. */
export type ClientHelloResult =
  /** More bytes are needed (`need`: total bytes of the first record). */
  | { kind: "incomplete"; need: number }
  /** Not a TLS ClientHello (plain text, another record type, a malformed hello). */
  | { kind: "not_tls"; reason: string }
  /** A ClientHello; `serverName` is the host_name entry, lower-case, or undefined when absent. */
  | { kind: "hello"; serverName: string | undefined };

/** Largest TLS record payload, bytes (RFC 8446 §5.1: 2^14). */
export const MAX_RECORD_BYTES = 16_384;

/**
 * Parse the start of a TLS stream. The ClientHello must fit in the first record (every client
 * sends it so unless it carries post-quantum key shares larger than 16 KiB; those are refused
 * as `not_tls`).
 */
export function parseClientHello(buf: Buffer): ClientHelloResult {
  if (buf.length < 5) return { kind: "incomplete", need: 5 };
  if (buf[0] !== 0x16) return { kind: "not_tls", reason: "not a TLS handshake record" };
  if (buf[1] !== 0x03) return { kind: "not_tls", reason: "unknown record version" };
  const recLen = buf.readUInt16BE(3);
  if (recLen < 4 || recLen > MAX_RECORD_BYTES) return { kind: "not_tls", reason: "bad record length" };
  if (buf.length < 5 + recLen) return { kind: "incomplete", need: 5 + recLen };
  const rec = buf.subarray(5, 5 + recLen);
  if (rec[0] !== 0x01) return { kind: "not_tls", reason: "not a ClientHello" };
  const helloLen = (rec[1] as number) << 16 | (rec[2] as number) << 8 | (rec[3] as number);
  if (helloLen + 4 > rec.length) return { kind: "not_tls", reason: "ClientHello split over records" };
  const r = new Reader(rec.subarray(4, 4 + helloLen));
  try {
    r.skip(2 + 32); // legacy_version, random
    r.skip(r.u8()); // legacy_session_id
    r.skip(r.u16()); // cipher_suites
    r.skip(r.u8()); // legacy_compression_methods
    if (r.left() === 0) return { kind: "hello", serverName: undefined }; // no extensions
    const ext = new Reader(r.take(r.u16()));
    let serverName: string | undefined;
    let seen = false;
    while (ext.left() > 0) {
      const type = ext.u16();
      const body = ext.take(ext.u16());
      if (type !== 0) continue;
      if (seen) return { kind: "not_tls", reason: "two server_name extensions" };
      seen = true;
      serverName = readServerName(new Reader(body));
    }
    return { kind: "hello", serverName };
  } catch (err) {
    return { kind: "not_tls", reason: (err as Error).message };
  }
}

/** The host_name of a server_name extension body (RFC 6066 §3); one entry of type 0 at most. */
function readServerName(r: Reader): string | undefined {
  const list = new Reader(r.take(r.u16()));
  if (r.left() !== 0) throw new Error("trailing bytes in server_name");
  let name: string | undefined;
  while (list.left() > 0) {
    const type = list.u8();
    const value = list.take(list.u16());
    if (type !== 0) continue;
    if (name !== undefined) throw new Error("two host_name entries");
    if (value.length === 0 || value.length > 255) throw new Error("bad host_name length");
    for (const b of value) if (b < 0x21 || b > 0x7e) throw new Error("host_name is not printable ASCII");
    name = value.toString("latin1").toLowerCase().replace(/\.$/, "");
  }
  return name;
}

/** A bounds-checked big-endian reader; every overrun throws. */
class Reader {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  left(): number {
    return this.buf.length - this.off;
  }
  u8(): number {
    if (this.left() < 1) throw new Error("truncated ClientHello");
    return this.buf[this.off++] as number;
  }
  u16(): number {
    if (this.left() < 2) throw new Error("truncated ClientHello");
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  take(n: number): Buffer {
    if (this.left() < n) throw new Error("truncated ClientHello");
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }
  skip(n: number): void {
    this.take(n);
  }
}
