/**
 * The check of an agent's raw chunked answer body (tenant-daemon/agent-client/chunked-relay.ts
 * `ChunkedPassThrough`): what it lets through, split at every offset, is the body up to (not
 * including) the last chunk; anything not in the strict form is refused; held bytes are bounded.
 */
import { expect } from "chai";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { AnswerTap, ChunkedPassThrough, MAX_HEAD_BYTES, MAX_SIZE_DIGITS, MAX_TRAILER_BYTES } from "../../tenant-daemon/agent-client/chunked-relay.js";

/** Push `parts` in order; the bytes let through, joined, and whether the end was seen. */
function run(parts: Buffer[]): { out: string; done: boolean } {
  const p = new ChunkedPassThrough();
  const out: Buffer[] = [];
  let done = false;
  for (const part of parts) {
    const r = p.push(part);
    out.push(...r.pieces);
    done = r.done;
    if (done) break;
  }
  return { out: Buffer.concat(out).toString("latin1"), done };
}

/** `s` split at every pair of offsets (three pieces), plus byte by byte. */
function splits(s: string): Buffer[][] {
  const b = Buffer.from(s, "latin1");
  const all: Buffer[][] = [[...b].map((c) => Buffer.from([c]))];
  for (let i = 0; i <= b.length; i++) for (let j = i; j <= b.length; j++) all.push([b.subarray(0, i), b.subarray(i, j), b.subarray(j)]);
  return all;
}

describe("ChunkedPassThrough (chunked-relay.ts)", () => {
  it("lets every checked chunk through as it was and never the last chunk, its trailers or what follows, at every split", () => {
    const body = "5\r\nhello\r\n00a\r\n0123456789\r\nA\r\n\r\n0\r\nabcde\r\n";
    for (const [end, tail] of [["0\r\n\r\n", ""], ["000\r\nx-t: 1\r\ny: a b\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil"]] as const) {
      for (const parts of splits(body + end + tail)) {
        const r = run(parts);
        expect(r, JSON.stringify(parts.map(String))).to.deep.equal({ out: body, done: true });
      }
    }
  });

  it("passes chunk data on before the chunk is complete, and slices of the pushed buffer (no copy)", () => {
    const p = new ChunkedPassThrough();
    const d = Buffer.from("10\r\n0123456");
    const r = p.push(d);
    expect(r.done).to.equal(false);
    expect(r.pieces).to.have.length(1);
    expect(r.pieces[0]?.buffer).to.equal(d.buffer);
    expect(Buffer.concat(r.pieces).toString()).to.equal("10\r\n0123456");
  });

  it("holds an unfinished size line (at most its digits and CR) until its CRLF, and never lets a last chunk's line through", () => {
    const p = new ChunkedPassThrough();
    expect(Buffer.concat(p.push(Buffer.from("3\r\nabc\r\n1")).pieces).toString()).to.equal("3\r\nabc\r\n");
    expect(p.push(Buffer.from("0")).pieces).to.deep.equal([]);
    expect(Buffer.concat(p.push(Buffer.from("\r\n0123456789abcdef\r\n0")).pieces).toString()).to.equal("10\r\n0123456789abcdef\r\n");
    expect(p.push(Buffer.from("\r")).pieces).to.deep.equal([]);
    expect(p.push(Buffer.from("\n\r\n"))).to.deep.equal({ pieces: [], done: true });
    expect(() => p.push(Buffer.from("x"))).to.throw(/after the end/);
  });

  it("refuses anything that is not the strict form (ERR_VM_AGENT_UNAVAILABLE); a well-formed body is accepted (control)", () => {
    const bad: [string, string][] = [
      ["not hex", "zz\r\nab\r\n0\r\n\r\n"],
      ["a sign", "+5\r\nhello\r\n0\r\n\r\n"],
      ["negative", "-5\r\nhello\r\n0\r\n\r\n"],
      ["an extension", "5;x=y\r\nhello\r\n0\r\n\r\n"],
      ["whitespace after the size", "5 \r\nhello\r\n0\r\n\r\n"],
      ["whitespace before the size", " 5\r\nhello\r\n0\r\n\r\n"],
      ["an LF-only size line", "5\nhello\r\n0\r\n\r\n"],
      ["no digits", "\r\nhello\r\n0\r\n\r\n"],
      ["more data than declared", "5\r\nhello!\r\n0\r\n\r\n"],
      ["no CRLF after the data", "5\r\nhello0\r\n\r\n"],
      ["an LF-only terminator", "5\r\nhello\r\n0\n\n"],
      [`a size line of ${MAX_SIZE_DIGITS + 1} digits`, `${"0".repeat(MAX_SIZE_DIGITS)}5\r\nhello\r\n0\r\n\r\n`],
      ["a bare CR in the trailers", "0\r\nx: a\rb\r\n\r\n"],
      ["a folded trailer line", "0\r\nx: a\r\n b\r\n\r\n"],
      ["a trailer with no name", "0\r\n: a\r\n\r\n"],
      ["a control byte in the trailers", "0\r\nx: \u0000\r\n\r\n"],
      ["trailers past the bound", `0\r\nx: ${"a".repeat(MAX_TRAILER_BYTES)}\r\n\r\n`],
    ];
    for (const [what, body] of bad) {
      for (const parts of [[Buffer.from(body, "latin1")], [...Buffer.from(body, "latin1")].map((c) => Buffer.from([c]))]) {
        const p = new ChunkedPassThrough();
        let thrown: unknown;
        try {
          for (const part of parts) p.push(part);
        } catch (err) {
          thrown = err;
        }
        expect(thrown, what).to.be.an("error").with.property("code", "ERR_VM_AGENT_UNAVAILABLE");
      }
    }
    expect(run([Buffer.from(`${"0".repeat(MAX_SIZE_DIGITS - 1)}5\r\nhello\r\n0\r\nx: ${"a".repeat(MAX_TRAILER_BYTES - 20)}\r\n\r\n`)]).done, "control").to.equal(true);
  });

  it("an endless size line is refused after MAX_SIZE_DIGITS digits, whatever arrives after", () => {
    const p = new ChunkedPassThrough();
    for (let i = 0; i < MAX_SIZE_DIGITS; i++) expect(p.push(Buffer.from("f")).pieces).to.deep.equal([]);
    expect(() => p.push(Buffer.from("f".repeat(1 << 20)))).to.throw(/longer than/);
  });
});

describe("AnswerTap heads (chunked-relay.ts)", () => {
  /** A stand-in for a socket Node's HTTP client reads (its listener is named `socketOnData`): what reaches that listener, per call. */
  function tapped(): { socket: EventEmitter; fed: string[] } {
    const socket = Object.assign(new EventEmitter(), { destroyed: false, parser: {} });
    const fed: string[] = [];
    socket.on("data", function socketOnData(d: Buffer) {
      fed.push(d.toString("latin1"));
    });
    expect(AnswerTap.attach(socket as unknown as Socket)).to.not.equal(undefined);
    return { socket, fed };
  }
  const heads = ["HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 102 Processing\r\nx: \r\n\r\n", "HTTP/1.1 200 OK\r\na: b\r\n\r\n"];

  it("feeds Node's client each head whole, up to its CRLF CRLF, whatever the reads (every split in two, and a byte per read)", () => {
    const all = heads.join("");
    for (let cut = 0; cut <= all.length; cut++) {
      const { socket, fed } = tapped();
      for (const part of [all.slice(0, cut), all.slice(cut)]) if (part !== "") socket.emit("data", Buffer.from(part, "latin1"));
      expect(fed, `split at ${cut}`).to.deep.equal(heads);
    }
    const { socket, fed } = tapped();
    for (const c of all) socket.emit("data", Buffer.from(c, "latin1"));
    expect(fed).to.deep.equal(heads);
  });

  it("gives a head that does not end within MAX_HEAD_BYTES to Node's client (which refuses it), held bytes first", () => {
    const { socket, fed } = tapped();
    const big = "HTTP/1.1 200 OK\r\nx: " + "a".repeat(MAX_HEAD_BYTES);
    for (let i = 0; i < big.length; i += 1000) socket.emit("data", Buffer.from(big.slice(i, i + 1000), "latin1"));
    expect(fed.join("")).to.equal(big);
  });
});
