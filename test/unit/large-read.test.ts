/**
 * Agent connections with large reads (tenant-daemon/agent-client/large-read.ts), on a real Unix
 * socket: a read takes everything queued up to the read size in one `data` chunk (Node's own
 * sockets stop at 64 KiB), the bytes arrive exact over many reads, and a chunk handed on is
 * never written over by a later read (short reads are copied out, long ones keep their buffer).
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { LARGE_READ_BYTES, largeReadConnection } from "../../tenant-daemon/agent-client/large-read.js";
import { untilTrue } from "../helpers/wait.js";

const KiB = 1024;

describe("largeReadConnection (large-read.ts)", function () {
  this.timeout(20_000);
  let dir = "";
  let server: net.Server;
  let peer: net.Socket | undefined;
  const sockets: net.Socket[] = [];
  const sockPath = (): string => path.join(dir, "s.sock");

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-large-read-"));
    server = net.createServer((s) => {
      peer = s;
      s.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(sockPath(), resolve));
  });

  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    peer?.destroy();
    peer = undefined;
    await new Promise((r) => server.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Connect with `make`, paused; the server writes `bytes` and they are in the socket before the client reads. */
  async function queued(make: () => net.Socket, bytes: Buffer): Promise<Buffer[]> {
    const c = make();
    sockets.push(c);
    c.pause();
    await untilTrue("connected", () => peer !== undefined);
    await new Promise<void>((resolve, reject) => (peer as net.Socket).write(bytes, (err) => (err ? reject(err) : resolve())));
    const chunks: Buffer[] = [];
    let n = 0;
    c.on("data", (d: Buffer) => {
      chunks.push(d);
      n += d.length;
    });
    c.resume();
    await untilTrue("all bytes read", () => n >= bytes.length);
    return chunks;
  }

  it("takes 150 KiB queued on the socket in one read; Node's own socket takes it in 64 KiB reads (control)", async () => {
    const body = crypto.randomBytes(150 * KiB);
    const large = await queued(() => largeReadConnection(sockPath()), body);
    expect(large.map((c) => c.length)).to.deep.equal([body.length]);
    expect(Buffer.concat(large).equals(body)).to.equal(true);
    peer?.destroy();
    peer = undefined;
    const plain = await queued(() => net.createConnection(sockPath()), body);
    expect(Math.max(...plain.map((c) => c.length))).to.be.at.most(64 * KiB);
    expect(Buffer.concat(plain).equals(body)).to.equal(true);
  });

  it("delivers 8 MiB written in pieces of every size byte for byte, and no chunk handed on is written over by a later read", async () => {
    const body = crypto.randomBytes(8 * 1024 * KiB);
    const c = largeReadConnection(sockPath());
    sockets.push(c);
    const chunks: Buffer[] = [];
    const copies: Buffer[] = [];
    let n = 0;
    c.on("data", (d: Buffer) => {
      chunks.push(d);
      copies.push(Buffer.from(d));
      n += d.length;
    });
    await untilTrue("connected", () => peer !== undefined);
    const p = peer as net.Socket;
    // Pieces from 1 byte to past the read size, so reads are short (copied) and long (kept).
    let off = 0;
    for (let size = 1; off < body.length; size = size >= LARGE_READ_BYTES * 2 ? 1 : size * 3 + 7) {
      const piece = body.subarray(off, off + size);
      off += piece.length;
      if (!p.write(piece)) await new Promise((r) => p.once("drain", r));
    }
    await untilTrue("all bytes read", () => n >= body.length);
    expect(n).to.equal(body.length);
    const sha = (b: Buffer): string => crypto.createHash("sha256").update(b).digest("hex");
    expect(sha(Buffer.concat(chunks)), "the chunks as they are now, after every later read").to.equal(sha(body));
    expect(sha(Buffer.concat(copies))).to.equal(sha(body));
    expect(Math.max(...chunks.map((d) => d.length)), "some read was longer than Node's 64 KiB").to.be.above(64 * KiB);
    expect(Math.max(...chunks.map((d) => d.length))).to.be.at.most(LARGE_READ_BYTES);
  });

  it("emits end when the peer closes, and errors on a path nobody listens on", async () => {
    const c = largeReadConnection(sockPath());
    sockets.push(c);
    let ended = false;
    c.on("data", () => undefined);
    c.on("end", () => (ended = true));
    await untilTrue("connected", () => peer !== undefined);
    (peer as net.Socket).end("bye");
    await untilTrue("end", () => ended);
    const bad = largeReadConnection(path.join(dir, "nobody.sock"));
    sockets.push(bad);
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => bad.once("error", resolve));
    expect(err.code).to.equal("ENOENT");
  });
});
