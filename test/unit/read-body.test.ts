/**
 * The bounded JSON body reader (shared/http/read-body.ts) that the tenant daemon's secrets
 * routes and the guest agent share: lenient empty body, the size bound (and that reading stops
 * there), and the two ways a body is not a JSON object. The routes over real sockets are
 * test/privileged/disk-bounds.test.ts (secrets, 413) and test/integration/agent-*.test.ts.
 */
import { Readable } from "node:stream";
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { readJsonObjectBounded } from "../../shared/http/read-body.js";
import { rejection } from "../helpers/rejection.js";

/** A stream of `chunks`, recording how many were pulled and whether it was destroyed. */
function chunked(chunks: string[]): { stream: Readable; pulled: () => number } {
  let i = 0;
  const stream = new Readable({
    read() {
      const c = chunks[i++];
      this.push(c === undefined ? null : Buffer.from(c));
    },
  });
  return { stream, pulled: () => i };
}

describe("bounded JSON body reader (shared/http/read-body.ts)", () => {
  it("parses a JSON object sent in several chunks; an empty or blank body is {}", async () => {
    expect(await readJsonObjectBounded(chunked(['{"a":', ' 1, "b"', ': ["x"]}']).stream, 1024)).to.deep.equal({ a: 1, b: ["x"] });
    expect(await readJsonObjectBounded(chunked([]).stream, 1024)).to.deep.equal({});
    expect(await readJsonObjectBounded(chunked([" \n\t "]).stream, 1024)).to.deep.equal({});
  });

  it("accepts a body of exactly maxBytes; one byte more is ERR_BODY_TOO_LARGE (413), and reading stops there", async () => {
    const exact = '{"k":"' + "v".repeat(10) + '"}';
    expect(await readJsonObjectBounded(chunked([exact]).stream, exact.length)).to.deep.equal({ k: "v".repeat(10) });
    const big = chunked(['{"k":"', "x".repeat(8), "y".repeat(8), "never read", "never read"]);
    const err = await rejection(readJsonObjectBounded(big.stream, 16));
    expect(err).to.be.instanceOf(PaddockError);
    expect(err).to.include({ code: "ERR_BODY_TOO_LARGE", status: 413 });
    expect(big.stream.destroyed, "the stream is destroyed, not drained").to.equal(true);
    expect(big.pulled()).to.be.lessThan(5);
  });

  it("refuses text that is not JSON, and JSON that is not an object (array, null, number), with ERR_BODY_INVALID_JSON (400)", async () => {
    for (const text of ["{not json", "[1,2]", "null", "42", '"s"']) {
      const err = await rejection(readJsonObjectBounded(chunked([text]).stream, 1024));
      expect(err, text).to.include({ code: "ERR_BODY_INVALID_JSON", status: 400 });
    }
  });
});
