/**
 * The cp data path's helpers on real files and streams: body chunks handed out without a copy
 * (tenant-daemon/agent/body-chunks.ts) and writes behind the reader (write-behind.ts) —
 * byte-exact across batches, continued after short writes, and failures surfaced.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { bodyChunks } from "../../tenant-daemon/agent/body-chunks.js";
import { WriteBehind } from "../../tenant-daemon/agent/write-behind.js";

describe("agent: cp body chunks and write-behind", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-copyio-"));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("hands out the source's own buffers where its async iterator joins them into a copy", async () => {
    const parts = Array.from({ length: 8 }, () => randomBytes(64 * 1024));
    const fill = (): PassThrough => {
      const s = new PassThrough({ highWaterMark: 1 << 20 });
      for (const p of parts) s.write(p);
      s.end();
      return s;
    };
    // Positive control: Readable's iterator returns one joined buffer, none of the originals.
    const joined: Buffer[] = [];
    for await (const c of fill()) joined.push(c as Buffer);
    expect(joined.length).to.be.lessThan(parts.length);
    expect(joined.some((c) => parts.some((p) => p === c))).to.equal(false);

    const got: Buffer[] = [];
    for await (const c of bodyChunks(fill())) got.push(c);
    expect(got.length).to.equal(parts.length);
    got.forEach((c, i) => expect(c === parts[i], `chunk ${i} is the source's buffer`).to.equal(true));
  });

  it("pauses the source while the consumer lags and throws when the source closes early", async () => {
    const s = new PassThrough();
    const it = bodyChunks(s);
    const first = it.next();
    for (let i = 0; i < 40; i++) s.write(Buffer.alloc(1024, i));
    expect((await first).value?.[0]).to.equal(0);
    expect(s.isPaused(), "paused with a full queue").to.equal(true);
    s.destroy();
    let err: unknown;
    try {
      for (;;) if ((await it.next()).done) break;
    } catch (e) {
      err = e;
    }
    expect((err as NodeJS.ErrnoException | undefined)?.code).to.equal("ERR_STREAM_PREMATURE_CLOSE");
  });

  it("writes many chunks in several batches byte-exactly, continuing short writes", async () => {
    const data = randomBytes(5 * 1024 * 1024 + 12345);
    for (const shortWrites of [false, true]) {
      const file = path.join(dir, `out-${shortWrites}`);
      const fh = await open(file, "w");
      let calls = 0;
      // A handle whose writev writes at most 100 000 bytes per call, as a full disk or a signal may.
      const target: FileHandle = shortWrites
        ? (Object.assign(Object.create(fh) as FileHandle, {
            writev: async (bufs: Buffer[]) => {
              calls++;
              const cut: Buffer[] = [];
              let room = 100_000;
              for (const b of bufs) {
                if (room === 0) break;
                cut.push(b.subarray(0, Math.min(room, b.length)));
                room -= Math.min(room, b.length);
              }
              return fh.writev(cut);
            },
          }))
        : fh;
      try {
        const w = new WriteBehind(target, 1024 * 1024);
        for await (const c of bodyChunks(Readable.from(chunksOf(data, 30_000)))) await w.add(c);
        await w.finish();
        expect(w.bytes).to.equal(data.length);
      } finally {
        await fh.close();
      }
      expect(readFileSync(file).equals(data), `file content (short writes: ${shortWrites})`).to.equal(true);
      if (shortWrites) expect(calls).to.be.greaterThan(data.length / 100_000);
    }
  });

  it("surfaces a failed write from finish and stops writing", async () => {
    const file = path.join(dir, "readonly");
    await (await open(file, "w")).close();
    const fh = await open(file, "r");
    try {
      const w = new WriteBehind(fh, 1024);
      await w.add(Buffer.alloc(2048));
      let err: unknown;
      await w.finish().catch((e: unknown) => (err = e));
      expect((err as NodeJS.ErrnoException | undefined)?.code).to.equal("EBADF");
      let again: unknown;
      await w.add(Buffer.alloc(10)).catch((e: unknown) => (again = e));
      expect(again).to.equal(err);
    } finally {
      await fh.close();
    }
  });
});

function chunksOf(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += size) out.push(data.subarray(off, off + size));
  return out;
}
