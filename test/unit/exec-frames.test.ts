/**
 * The exec stream's payload frames built as bytes (tenant-daemon/agent/exec-frames.ts) are
 * exactly the frames `JSON.stringify` of the same stream gives: ASCII, multi-byte characters
 * split across chunks, invalid UTF-8, bytes JSON escapes, base64, and the decoder's flush at
 * the end.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { StringDecoder } from "node:string_decoder";
import { PayloadFramer, needsJsonEscape } from "../../tenant-daemon/agent/exec-frames.js";

const TS = "2026-12-06T11:00:00.123Z";

/** The frames as the agent wrote them before exec-frames.ts: decode, then JSON.stringify. */
function reference(kind: "stdout" | "stderr", mode: "text" | "base64", chunks: Buffer[]): string {
  const dec = new StringDecoder("utf8");
  const enc = mode === "base64" ? { encoding: "base64" } : {};
  let out = "";
  const emit = (s: string): void => {
    if (s !== "") out += JSON.stringify({ timestamp: TS, type: kind, [kind]: s, data: s, ...enc, exit_code: 0 }) + "\n";
  };
  for (const c of chunks) emit(mode === "base64" ? c.toString("base64") : dec.write(c));
  if (mode === "text") emit(dec.end());
  return out;
}

function framed(kind: "stdout" | "stderr", mode: "text" | "base64", chunks: Buffer[]): string {
  const f = new PayloadFramer(kind, mode);
  const parts: Buffer[] = [];
  for (const c of chunks) {
    const b = f.chunk(c, TS);
    if (b) parts.push(b);
  }
  const last = f.end(TS);
  if (last) parts.push(last);
  return Buffer.concat(parts).toString("utf8");
}

/** `buf` cut into pieces of `size` bytes. */
function cut(buf: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

describe("agent: exec payload frames as bytes", () => {
  const text = Buffer.from("plain ascii line\nquote \" back\\slash \t tab, é ü 日本語 🎉 and \u0001 control\n".repeat(20));
  const cases: Record<string, Buffer> = {
    ascii: Buffer.alloc(70_000, "a"),
    "multi-byte text, nothing to escape": Buffer.from("é ü 日本語 🎉 plain ".repeat(400)),
    "utf-8 text with escapes": text,
    "invalid utf-8": Buffer.concat([Buffer.from("ok "), Buffer.from([0xe2, 0x82, 0x41, 0xff, 0xc3]), Buffer.from(" more"), Buffer.from([0xf0, 0x9f])]),
    random: randomBytes(50_000),
  };
  for (const [name, data] of Object.entries(cases)) {
    for (const size of [1, 2, 3, 7, 4096, 65_536]) {
      if (size < 4 && data.length > 5_000) continue;
      it(`${name}, ${size}-byte chunks: text and base64 equal JSON.stringify's frames`, () => {
        for (const kind of ["stdout", "stderr"] as const) {
          for (const mode of ["text", "base64"] as const) {
            expect(framed(kind, mode, cut(data, size))).to.equal(reference(kind, mode, cut(data, size)));
          }
        }
      });
    }
  }

  it("an empty chunk gives no frame; a split character waits for its rest", () => {
    const f = new PayloadFramer("stdout", "text");
    expect(f.chunk(Buffer.alloc(0), TS)).to.equal(undefined);
    expect(f.chunk(Buffer.from([0xc3]), TS)).to.equal(undefined);
    const frame = f.chunk(Buffer.from([0xa9, 0x61]), TS)?.toString("utf8");
    expect(JSON.parse(frame ?? "null")).to.deep.equal({ timestamp: TS, type: "stdout", stdout: "éa", data: "éa", exit_code: 0 });
    expect(f.end(TS)).to.equal(undefined);
  });

  it("needsJsonEscape finds a control byte, quote or backslash at any offset and alignment", () => {
    const base = Buffer.alloc(67, "x");
    expect(needsJsonEscape(base)).to.equal(false);
    expect(needsJsonEscape(Buffer.from("~\u007f é"))).to.equal(false);
    for (const bad of [0x00, 0x0a, 0x1f, 0x22, 0x5c]) {
      for (let at = 0; at < base.length; at++) {
        for (const start of [0, 1, 2, 3]) {
          const b = Buffer.from(base);
          b[at] = bad;
          expect(needsJsonEscape(b.subarray(start)), `byte ${bad} at ${at} from ${start}`).to.equal(at >= start);
        }
      }
    }
  });
});
