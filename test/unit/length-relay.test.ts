/**
 * The check of an agent's raw Content-Length answer body (tenant-daemon/agent-client/length-relay.ts):
 * `LengthPassThrough` lets exactly the declared bytes through, at every split, as slices, never a
 * byte past them; `plainContentLength` takes only the plain form.
 */
import { expect } from "chai";
import { LengthPassThrough, MAX_LENGTH_DIGITS, plainContentLength } from "../../tenant-daemon/agent-client/length-relay.js";

describe("LengthPassThrough (length-relay.ts)", () => {
  it("lets exactly the declared bytes through at every split into three pieces, never what follows them", () => {
    const all = Buffer.from("helloworld" + "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil", "latin1");
    for (let i = 0; i <= all.length; i++) {
      for (let j = i; j <= all.length; j++) {
        const p = new LengthPassThrough(10);
        const out: Buffer[] = [];
        let done = false;
        for (const part of [all.subarray(0, i), all.subarray(i, j), all.subarray(j)]) {
          const r = p.push(part);
          out.push(...r.pieces);
          done = r.done;
          if (done) break;
        }
        expect({ out: Buffer.concat(out).toString("latin1"), done }, `${i},${j}`).to.deep.equal({ out: "helloworld", done: true });
      }
    }
  });

  it("passes slices of the pushed buffer (no copy), and refuses a push after the end", () => {
    const p = new LengthPassThrough(4);
    const d = Buffer.from("abcdef");
    const r = p.push(d);
    expect(r.done).to.equal(true);
    expect(r.pieces).to.have.length(1);
    expect(r.pieces[0]?.buffer).to.equal(d.buffer);
    expect(r.pieces[0]?.toString()).to.equal("abcd");
    expect(() => p.push(Buffer.from("x"))).to.throw().with.property("code", "ERR_VM_AGENT_UNAVAILABLE");
  });

  it("reads only a plain length of 1 to MAX_LENGTH_DIGITS digits, at least 1; a plain one is read (control)", () => {
    expect(plainContentLength("5")).to.equal(5);
    expect(plainContentLength("0000104857600")).to.equal(104857600);
    expect(plainContentLength("9".repeat(MAX_LENGTH_DIGITS))).to.equal(999999999999999);
    for (const v of [undefined, "", "0", "000", "+5", "-5", " 5", "5 ", "5x", "0x5", "5, 5", "1e3", "5.0", "9".repeat(MAX_LENGTH_DIGITS + 1), ["5", "5"]]) {
      expect(plainContentLength(v), JSON.stringify(v)).to.equal(undefined);
    }
  });
});
