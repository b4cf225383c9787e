/**
 * Pure parts of the shell/forward/watch/stats endpoints: the shell frame codec, forward
 * upstream parsing, fs/watch query parsing and the stats parsers; the relay's body loop.
 */
import { expect } from "chai";
import { PassThrough, Writable } from "node:stream";
import { relayBody, type RelayBudget } from "../../tenant-daemon/agent-client/agent-stream.js";
import { FrameDecoder, FrameType, decodeWindowSize, encodeFrame, isWholeFrame } from "../../shared/slicer/shell-frames.js";
import { parseUpstream } from "../../tenant-daemon/agent/forward.js";
import { matchesPatterns, parseWatchSpec } from "../../tenant-daemon/agent/fs-watch.js";
import { countEstablished, parseNetDev, pid1UptimeSeconds } from "../../tenant-daemon/agent/guest-stats.js";
import { UserDirectory } from "../../tenant-daemon/agent/users.js";
import { goDurationString, parseBlockStat, parseKeyValues, parseMountinfo } from "../../tenant-daemon/api/vm-stats.js";

describe("shell frames", () => {
  it("encodes type + u32 BE length + payload and decodes across chunk boundaries", () => {
    const a = encodeFrame(FrameType.Data, Buffer.from("hello"));
    expect([...a.subarray(0, 5)]).to.deep.equal([1, 0, 0, 0, 5]);
    const ws = Buffer.alloc(8);
    ws.writeUInt32BE(120, 0);
    ws.writeUInt32BE(40, 4);
    const b = encodeFrame(FrameType.WindowSize, ws);
    const c = encodeFrame(FrameType.SessionClose);
    const all = Buffer.concat([a, b, c]);
    const dec = new FrameDecoder();
    const frames = [all.subarray(0, 3), all.subarray(3, 12), all.subarray(12)].flatMap((chunk) => dec.push(chunk));
    expect(frames.map((f) => f.type)).to.deep.equal([1, 2, 5]);
    expect(frames[0]?.payload.toString()).to.equal("hello");
    expect(decodeWindowSize(frames[1]?.payload ?? Buffer.alloc(0))).to.deep.equal({ cols: 120, rows: 40 });
    expect(decodeWindowSize(Buffer.alloc(4))).to.equal(undefined);
  });
  it("accepts exactly one whole frame per message and refuses oversized payloads", () => {
    expect(isWholeFrame(encodeFrame(FrameType.Heartbeat))).to.equal(true);
    expect(isWholeFrame(Buffer.from([1, 0, 0, 0, 2, 65]))).to.equal(false);
    expect(isWholeFrame(Buffer.concat([encodeFrame(1, Buffer.from("a")), encodeFrame(1, Buffer.from("b"))]))).to.equal(false);
    expect(() => new FrameDecoder().push(Buffer.from([1, 0xff, 0xff, 0xff, 0xff]))).to.throw(/exceeds/);
  });
});

describe("forward upstream", () => {
  it("parses host:port, [v6]:port and unix:/path", () => {
    expect(parseUpstream("127.0.0.1:80")).to.deep.equal({ kind: "tcp", host: "127.0.0.1", port: 80 });
    expect(parseUpstream("localhost:8080")).to.deep.equal({ kind: "tcp", host: "localhost", port: 8080 });
    expect(parseUpstream("[::1]:22")).to.deep.equal({ kind: "tcp", host: "::1", port: 22 });
    expect(parseUpstream("unix:/var/run/docker.sock")).to.deep.equal({ kind: "unix", path: "/var/run/docker.sock" });
  });
  it("rejects missing or malformed upstreams with 400", () => {
    for (const bad of [undefined, "", "host", "host:0", "host:70000", ":80", "unix:rel", "[zz]:1", "a b:1"]) {
      expect(() => parseUpstream(bad), String(bad)).to.throw().with.property("status", 400);
    }
  });
});

describe("fs/watch query", () => {
  const users = new UserDirectory("/nonexistent", null);
  const q = (s: string): URLSearchParams => new URLSearchParams(s);
  it("defaults: all events, 200ms debounce, no timeout; ~ resolves against root", () => {
    const s = parseWatchSpec(q("paths=~/x&paths=/tmp/"), undefined, users);
    expect(s.paths).to.deep.equal(["/root/x", "/tmp"]);
    expect([...s.events].sort()).to.deep.equal(["chmod", "create", "remove", "rename", "write"]);
    expect(s).to.include({ debounceMs: 200, timeoutMs: 0, maxEvents: 0, recursive: false, oneShot: false });
  });
  it("parses events, durations and limits; validates Last-Event-ID as uint64", () => {
    const s = parseWatchSpec(q("paths=/a&events=create&events=remove&debounce=1.5s&timeout=2m0s&max_events=3&one_shot=true&recursive=true"), "7", users);
    expect([...s.events]).to.deep.equal(["create", "remove"]);
    expect(s).to.include({ debounceMs: 1500, timeoutMs: 120_000, maxEvents: 3, recursive: true, oneShot: true });
    expect(() => parseWatchSpec(q("paths=/a"), "-1", users)).to.throw().with.property("status", 400);
    expect(() => parseWatchSpec(q("paths=/a"), "18446744073709551616", users)).to.throw().with.property("status", 400);
    expect(() => parseWatchSpec(q(""), undefined, users)).to.throw(/paths is required/);
    expect(() => parseWatchSpec(q("paths=rel"), undefined, users)).to.throw().with.property("status", 400);
  });
  it("matches patterns against the full path and the basename", () => {
    const s = parseWatchSpec(q("paths=/a&patterns=*.go&patterns=/a/**/gen/*"), undefined, users);
    expect(matchesPatterns(s.patterns, "/a/b/main.go")).to.equal(true);
    expect(matchesPatterns(s.patterns, "/a/x/y/gen/z.txt")).to.equal(true);
    expect(matchesPatterns(s.patterns, "/a/b/main.rs")).to.equal(false);
    expect(matchesPatterns([], "/anything")).to.equal(true);
  });
});

describe("stats parsers", () => {
  it("formats Go durations of whole seconds", () => {
    expect([0, 45, 413, 7205].map(goDurationString)).to.deep.equal(["0s", "45s", "6m53s", "2h0m5s"]);
  });
  it("parses mountinfo, cgroup key/values and block stats", () => {
    const mi = [
      "36 35 98:0 / /mnt/disk\\040x rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue",
      "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory",
    ].join("\n");
    const m = parseMountinfo(mi);
    expect(m[0]).to.deep.include({ mountPoint: "/mnt/disk x", fsType: "ext4", source: "/dev/loop3" });
    expect(m[1]?.superOptions).to.include("memory");
    expect(parseKeyValues("cache 10\ntotal_inactive_file 4096\nbad x\n").get("total_inactive_file")).to.equal(4096);
    expect(parseBlockStat("  100 0 2048 5 200 0 4096 9 2 10 14 0 0 0 0")).to.deep.equal({ readBytes: 2048 * 512, writeBytes: 4096 * 512, inflight: 2 });
  });
  it("reads guest counters from /proc text", () => {
    const dev = "Inter-|   Receive\n face |bytes packets\n    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
    expect(parseNetDev(dev)).to.deep.equal({ rx: 1000, tx: 2000 });
    const tcp = "  sl  local_address rem_address   st\n   0: 0100007F:1E61 00000000:0000 0A 0\n   1: 0100007F:1E61 0100007F:9C40 01 0\n";
    expect(countEstablished(tcp)).to.equal(1);
    const stat = "1 (tini (x)) S 0 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 50000 1000 100";
    expect(pid1UptimeSeconds("1000.50 900.0", stat)).to.be.closeTo(500.5, 1e-6);
  });
});

describe("relayBody (agent-stream.ts)", () => {
  it("relays every chunk in order and pauses the source while the writer is over its mark", async () => {
    const source = new PassThrough();
    const got: Buffer[] = [];
    let pausedSeen = false;
    const sink = new Writable({
      highWaterMark: 4,
      write(chunk: Buffer, _enc, cb) {
        got.push(chunk);
        setImmediate(() => {
          if (source.isPaused()) pausedSeen = true;
          cb();
        });
      },
    });
    const done = new Promise((resolve) => sink.once("finish", resolve));
    relayBody(source, sink, 16);
    const sent = Array.from({ length: 50 }, (_, i) => Buffer.from(`chunk ${i};`));
    for (const b of sent) source.write(b);
    source.end();
    await done;
    expect(Buffer.concat(got).toString()).to.equal(Buffer.concat(sent).toString());
    expect(pausedSeen, "source paused while the sink was full").to.equal(true);
  });
  it("keeps taking the source's chunks past the writer's own mark until more than markBytes wait, then pauses it; everything arrives", async () => {
    const KiB = 1024;
    const source = new PassThrough({ highWaterMark: 4 << 20 });
    const held: (() => void)[] = [];
    const got: Buffer[] = [];
    // The agent request as the daemon has it: Node's 16 KiB mark, a socket that takes nothing yet.
    const sink = new Writable({
      highWaterMark: 16 * KiB,
      write(chunk: Buffer, _enc, cb) {
        got.push(chunk);
        held.push(cb);
      },
      writev(chunks, cb) {
        for (const c of chunks) got.push(c.chunk as Buffer);
        held.push(cb);
      },
    });
    const done = new Promise((resolve) => sink.once("finish", resolve));
    relayBody(source, sink, 256 * KiB);
    const sent = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * KiB, i));
    for (const b of sent) source.write(b);
    await new Promise((resolve) => setImmediate(resolve));
    expect(source.isPaused(), "source paused once over markBytes").to.equal(true);
    // Pausing at the writer's 16 KiB mark would stop after the first 64 KiB chunk.
    expect(sink.writableLength, "bytes waiting in the writer").to.be.above(256 * KiB).and.at.most(256 * KiB + 64 * KiB);
    source.end();
    while (!sink.writableFinished) {
      held.splice(0).forEach((cb) => cb());
      await new Promise((resolve) => setImmediate(resolve));
    }
    await done;
    expect(Buffer.concat(got).equals(Buffer.concat(sent))).to.equal(true);
  });
  it("relays sharing a budget hold past their writers' marks only what the budget has; all of it comes back (control: an unbounded budget lets each hold markBytes)", async () => {
    const KiB = 1024;
    /** 8 relays into writers that take nothing yet; 8 × 64 KiB sent to each. */
    const fill = async (budget: RelayBudget): Promise<{ waiting: number[]; release: () => Promise<void> }> => {
      const held: (() => void)[][] = Array.from({ length: 8 }, () => []);
      const sinks = Array.from({ length: 8 }, (_, i) => new Writable({
        highWaterMark: 16 * KiB,
        write(_c: Buffer, _e, cb) {
          held[i]?.push(cb);
        },
        writev(_c, cb) {
          held[i]?.push(cb);
        },
      }));
      const sources = sinks.map((sink) => {
        const source = new PassThrough({ highWaterMark: 4 << 20 });
        relayBody(source, sink, 256 * KiB, budget);
        for (let i = 0; i < 8; i++) source.write(Buffer.alloc(64 * KiB, i));
        return source;
      });
      await new Promise((resolve) => setImmediate(resolve));
      const release = async (): Promise<void> => {
        sinks[0]?.destroy();
        // An agent request whose connection could not be made: `error` alone, never `close`.
        sinks[1]?.on("error", () => undefined).emit("error", new Error("no agent connection"));
        for (const [i, s] of sources.entries()) if (i !== 1) s.end();
        while (sinks.some((k, i) => i !== 1 && !k.destroyed && !k.writableFinished)) {
          for (const [i, h] of held.entries()) if (i !== 1) h.splice(0).forEach((cb) => cb());
          await new Promise((resolve) => setImmediate(resolve));
        }
      };
      return { waiting: sinks.map((k) => k.writableLength), release };
    };
    const bounded: RelayBudget = { freeBytes: 512 * KiB };
    const a = await fill(bounded);
    const sum = a.waiting.reduce((x, y) => x + y, 0);
    expect(a.waiting.filter((n) => n > 64 * KiB), "relays past their writer's mark").to.have.length(2);
    expect(sum, "bytes waiting in all writers").to.be.at.most(512 * KiB + 8 * 64 * KiB);
    expect(bounded.freeBytes).to.equal(0);
    await a.release();
    expect(bounded.freeBytes, "the budget after every writer finished or was destroyed").to.equal(512 * KiB);
    const unbounded: RelayBudget = { freeBytes: Number.POSITIVE_INFINITY };
    const b = await fill(unbounded);
    expect(b.waiting.every((n) => n > 256 * KiB), "each relay past markBytes").to.equal(true);
    await b.release();
  });
  it("writes what arrives before the loop's check phase with one writev (corked)", async () => {
    const source = new PassThrough();
    const calls: number[] = [];
    const sink = new Writable({
      highWaterMark: 1 << 20,
      write(_chunk: Buffer, _enc, cb) {
        calls.push(1);
        setImmediate(cb);
      },
      writev(chunks, cb) {
        calls.push(chunks.length);
        setImmediate(cb);
      },
    });
    const done = new Promise((resolve) => sink.once("finish", resolve));
    relayBody(source, sink);
    for (let i = 0; i < 5; i++) source.write(Buffer.from(`piece ${i}`));
    await new Promise((resolve) => setImmediate(resolve));
    source.end();
    await done;
    expect(calls[0], "the first flush carries all five pieces").to.equal(5);
  });
  it("ends the writer at once when the source was already read to its end", async () => {
    const source = new PassThrough();
    source.resume();
    source.end("read by a body parser");
    await new Promise((resolve) => source.once("end", resolve));
    const sink = new PassThrough();
    relayBody(source, sink);
    expect(sink.writableEnded).to.equal(true);
  });
  it("writes nothing once the writer is destroyed", () => {
    const source = new PassThrough();
    const sink = new PassThrough();
    relayBody(source, sink);
    sink.destroy();
    expect(() => source.write("after the client went away")).to.not.throw();
    expect(sink.readableLength).to.equal(0);
  });
});
