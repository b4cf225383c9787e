/**
 * A hostile guest agent against the daemon's byte-level relay of chunked answers
 * (tenant-daemon/agent-client/chunked-relay.ts, used by agent-stream.ts `streamToAgent`), run
 * for real: node:http on Unix sockets and a stand-in agent that answers with the VM's proof
 * (what guest root's taken-over agent does in test/security/hostile-relay.test.ts), written
 * byte for byte. The API client reads the daemon's raw bytes on one keep-alive connection.
 *
 * - control: a well-formed chunked answer arrives complete with the agent's own framing (the
 *   byte-level path: its zero-padded size line is kept), and the connection serves a next request;
 * - an early last chunk followed by a fake second response: the client's answer ends at the
 *   last chunk, no byte of the fake reaches the connection, and the next request gets its own answer;
 * - malformed, oversized (endless) and zero-padded-past-the-bound size lines, a chunk
 *   extension, a huge declared chunk then close, no last chunk, bad trailers: the client sees a
 *   cut answer (its connection closed before a last chunk), never a complete one;
 * - a client that stops reading an endless answer: the agent's writer is held back (bounded
 *   bytes sent), and the stream flows again once read (control);
 * - Content-Length answers (binary cp out, relayed raw too: length-relay.ts): a well-formed one
 *   arrives complete with the same Content-Length, not chunked (control, also of 8 MiB,
 *   sha256-exact), and the agent's connection is dropped after it (the byte-level path); a fake
 *   second response after the declared length in the same write never reaches the client; fewer
 *   bytes then close, and a huge length then a stall, are cut answers (the stall's agent
 *   connection goes once the client leaves); Content-Length with Transfer-Encoding, duplicate,
 *   signed, spaced or garbled lengths are refused (503) or cut, never relayed as declared;
 *   HEAD, HTTP/1.0 and pipelined requests (the old path) get their answers;
 * - every case gives the body relay's budget back.
 *
 * Every case runs on a plain agent route and on a cp download (its large-read connection).
 * No VM, no daemon, a few seconds.
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { errorResponse, type PaddockError } from "../../shared/errors.js";
import { relayBodyBudget, streamToAgent } from "../../tenant-daemon/agent-client/agent-stream.js";
import { untilTrue } from "../helpers/wait.js";

const MiB = 1024 * 1024;
const PROOF = "b".repeat(64);
const HEAD = `HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n`;
/** The head of a `Content-Length` answer (binary cp out) with these length header lines. */
const lengthHead = (lines: string): string => `HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-type: application/octet-stream\r\n${lines}\r\n`;

/** What the stand-in agent does on a connection whose request asked for `/v1/<name>`. */
type Behaviour = (s: net.Socket) => void;

/** Write `body` after the head and keep the connection open (as a keep-alive agent would). */
const answer = (body: string): Behaviour => (s) => void s.write(HEAD + body);
/** Write `body` after the head and close. */
const answerAndClose = (body: string): Behaviour => (s) => void s.end(HEAD + body);

/** The daemon's side of one API connection, read raw. */
class RawClient {
  readonly sock: net.Socket;
  private got = Buffer.alloc(0);
  closed = false;
  constructor(socketPath: string) {
    this.sock = net.connect(socketPath);
    this.sock.on("data", (d: Buffer) => (this.got = Buffer.concat([this.got, d])));
    this.sock.on("error", () => undefined);
    this.sock.on("close", () => (this.closed = true));
  }
  /** Bytes received so far (latin1), and forget them. */
  take(): string {
    const s = this.got.toString("latin1");
    this.got = Buffer.alloc(0);
    return s;
  }
  get text(): string {
    return this.got.toString("latin1");
  }
  get(name: string, method = "GET"): void {
    this.sock.write(`${method} /${name} HTTP/1.1\r\nhost: x\r\n\r\n`);
  }
}

/** The body of one raw chunked response (strict, as the daemon writes it); undefined when it has no last chunk yet. */
function dechunk(raw: string): { body: string; rest: string } | undefined {
  let i = raw.indexOf("\r\n\r\n");
  if (i < 0) return undefined;
  i += 4;
  let body = "";
  for (;;) {
    const eol = raw.indexOf("\r\n", i);
    if (eol < 0) return undefined;
    const n = parseInt(raw.slice(i, eol), 16);
    if (n === 0) {
      if (!raw.startsWith("\r\n", eol + 2)) return undefined;
      return { body, rest: raw.slice(eol + 4) };
    }
    if (raw.length < eol + 2 + n + 2) return undefined;
    body += raw.slice(eol + 2, eol + 2 + n);
    i = eol + 2 + n + 2;
  }
}

/** One raw `Content-Length` response off the front of `raw` (latin1): its head, body and the bytes after it; undefined while incomplete. */
function oneLengthAnswer(raw: string): { head: string; body: string; rest: string } | undefined {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const head = raw.slice(0, end + 2);
  const n = Number(/\r\ncontent-length: ([0-9]+)\r\n/i.exec(head)?.[1] ?? NaN);
  if (!(n >= 0) || raw.length < end + 4 + n) return undefined;
  return { head, body: raw.slice(end + 4, end + 4 + n), rest: raw.slice(end + 4 + n) };
}

/**
 * Each case runs on two routes: `/v1/<name>` (an agent connection from Node's HTTP agent) and
 * `/v1/cp?at=/<name>` (a GET there is a download: a new agent connection that reads 256 KiB at a
 * time, agent-client/large-read.ts).
 */
const ROUTES = [
  { route: "agent", agentPath: (url: string): string => `/v1${url}` },
  { route: "cp download", agentPath: (url: string): string => `/v1/cp?at=${url}` },
] as const;

for (const { route, agentPath } of ROUTES) describe(`security: a guest agent's raw chunked answers against the daemon's byte-level relay (real sockets, no VM; ${route} route)`, function () {
  this.timeout(30_000);
  let dir = "";
  let agent: net.Server;
  let api: http.Server;
  const behaviours = new Map<string, Behaviour>();
  const agentSockets = new Set<net.Socket>();
  const clients: RawClient[] = [];
  const apiSocket = (): string => path.join(dir, "api.sock");
  const client = (): RawClient => {
    const c = new RawClient(apiSocket());
    clients.push(c);
    return c;
  };
  let budget = 0;

  before(async () => {
    budget = relayBodyBudget.freeBytes;
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-relay-raw-"));
    agent = net.createServer((s) => {
      agentSockets.add(s);
      s.once("close", () => agentSockets.delete(s));
      s.on("error", () => undefined);
      let head = "";
      const onData = (d: Buffer): void => {
        head += d.toString("latin1");
        if (!head.includes("\r\n\r\n")) return;
        s.off("data", onData);
        const name = /^[A-Z]+ \/v1\/(?:cp\?at=\/)?(\S+) /.exec(head)?.[1] ?? "";
        (behaviours.get(name) ?? answerAndClose("0\r\n\r\n"))(s);
      };
      s.on("data", onData);
    });
    await new Promise<void>((resolve) => agent.listen(path.join(dir, "agent.sock"), resolve));
    const endpoint = { hostname: "vm-1", socketPath: path.join(dir, "agent.sock"), proof: PROOF };
    api = http.createServer((req, res) => streamToAgent(endpoint, req, res, agentPath(req.url ?? "/"), (err: PaddockError) => {
      const r = errorResponse(err);
      res.writeHead(r.status, { "content-type": "application/json" }).end(JSON.stringify(r.body));
    }));
    await new Promise<void>((resolve) => api.listen(apiSocket(), resolve));
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.sock.destroy();
    for (const s of agentSockets) s.destroy();
    behaviours.clear();
    await untilTrue("the relay's budget is whole again", () => relayBodyBudget.freeBytes === budget);
  });

  after(async () => {
    api.closeAllConnections();
    await new Promise((r) => api.close(r));
    await new Promise((r) => agent.close(r));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("control: a well-formed answer arrives complete in the agent's own framing, and the connection serves the next request", async () => {
    behaviours.set("a", answer("005\r\nhello\r\n1\r\n\n\r\n0\r\nx-t: 1\r\n\r\n"));
    behaviours.set("b", answer("6\r\nsecond\r\n0\r\n\r\n"));
    const c = client();
    c.get("a");
    await untilTrue("the first answer is complete", () => dechunk(c.text) !== undefined);
    const first = c.take();
    expect(first, "the agent's zero-padded size line is relayed as it was (the byte-level path)").to.include("\r\n005\r\nhello\r\n1\r\n\n\r\n0\r\n\r\n");
    expect(first).to.not.include("x-t");
    expect(dechunk(first)).to.deep.equal({ body: "hello\n", rest: "" });
    c.get("b");
    await untilTrue("the second answer is complete", () => dechunk(c.text) !== undefined);
    expect(dechunk(c.take())).to.deep.equal({ body: "second", rest: "" });
    expect(c.closed).to.equal(false);
  });

  it("an early last chunk followed by a fake second response: the answer ends there, no byte of the fake reaches the client, the next request gets its own answer", async () => {
    const fake = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nevil";
    behaviours.set("a", answer(`5\r\nhello\r\n0\r\n\r\n${fake}`));
    behaviours.set("b", answer("6\r\nsecond\r\n0\r\n\r\n"));
    const c = client();
    c.get("a");
    await untilTrue("the first answer is complete", () => dechunk(c.text) !== undefined);
    await new Promise((r) => setTimeout(r, 200));
    const first = c.take();
    expect(dechunk(first)).to.deep.equal({ body: "hello", rest: "" });
    expect(first).to.not.include("evil");
    c.get("b");
    await untilTrue("the second answer is complete", () => dechunk(c.text) !== undefined);
    const second = c.take();
    expect(dechunk(second)).to.deep.equal({ body: "second", rest: "" });
    expect(second).to.not.include("evil");
  });

  it("an answer complete within its head (Content-Length 0, 204, a HEAD request) with bytes after it in the same write: relayed as it is, the daemon stays up, the next request gets its own answer", async () => {
    // Node's HTTP client frees its parser once an answer is complete; the tap once fed it the
    // bytes after the head anyway, and node's assertion threw out of the socket's `data` event.
    const fake = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil";
    const cases: [string, string, string, RegExp][] = [
      ["Content-Length 0", "GET", `HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ncontent-length: 0\r\n\r\n${fake}`, /^HTTP\/1\.1 200 OK\r\ncontent-length: 0\r\n/],
      ["204", "GET", `HTTP/1.1 204 No Content\r\nx-paddock-agent-proof: ${PROOF}\r\n\r\n${fake}`, /^HTTP\/1\.1 204 No Content\r\n/],
      ["a HEAD request", "HEAD", `HTTP/1.1 200 OK\r\nx-paddock-agent-proof: ${PROOF}\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, /^HTTP\/1\.1 200 OK\r\n/],
    ];
    for (const [what, method, raw, head] of cases) {
      behaviours.set("a", (s) => void s.write(raw));
      behaviours.set("b", answer("6\r\nsecond\r\n0\r\n\r\n"));
      const c = client();
      c.get("a", method);
      await untilTrue(`${what}: the answer's head arrived`, () => c.text.includes("\r\n\r\n"));
      await new Promise((r) => setTimeout(r, 100));
      const first = c.take();
      expect(first, what).to.match(head);
      expect(first, what).to.not.include("evil");
      expect(first, what).to.not.include("hello");
      c.get("b");
      await untilTrue(`${what}: the next answer is complete`, () => dechunk(c.text) !== undefined);
      expect(dechunk(c.take()), what).to.deep.equal({ body: "second", rest: "" });
      expect(c.closed, what).to.equal(false);
    }
  });

  it("malformed, oversized and endless size lines, extensions, a huge chunk then close, no last chunk, bad trailers: a cut answer, never a complete one", async () => {
    const cases: [string, Behaviour][] = [
      ["a non-hex size", answer("5\r\nhello\r\nZZ\r\nmore\r\n0\r\n\r\n")],
      ["a signed size", answer("5\r\nhello\r\n-5\r\nhello\r\n0\r\n\r\n")],
      ["a chunk extension", answer("5;a=b\r\nhello\r\n0\r\n\r\n")],
      ["an LF-only size line", answer("5\nhello\r\n0\r\n\r\n")],
      ["a size with a space before CRLF", answer("5 \r\nhello\r\n0\r\n\r\n")],
      ["a zero-padded size of 13 digits", answer("0000000000005\r\nhello\r\n0\r\n\r\n")],
      ["an endless size line (1 MiB of digits)", answer("5\r\nhello\r\n" + "f".repeat(MiB))],
      ["data longer than its size, ending in a last chunk", answer("3\r\nhello\r\n0\r\n\r\n")],
      ["a huge declared chunk, then close", answerAndClose("ffffffffff\r\nonly a few bytes")],
      ["no last chunk, then close", answerAndClose("5\r\nhello\r\n")],
      ["a last chunk without its empty line, then close", answerAndClose("5\r\nhello\r\n0\r\n")],
      ["a bare CR in a trailer", answer("5\r\nhello\r\n0\r\nx: a\rHTTP/1.1 200 OK\r\n\r\n")],
      ["endless trailers", answer("5\r\nhello\r\n0\r\nx: " + "a".repeat(64 * 1024) + "\r\n\r\n")],
    ];
    for (const [what, b] of cases) {
      behaviours.set("a", b);
      const c = client();
      c.get("a");
      await untilTrue(`${what}: the client's connection is closed`, () => c.closed);
      const got = c.text;
      expect(got, what).to.match(/^HTTP\/1\.1 200 OK\r\n/);
      expect(dechunk(got), `${what}: ${JSON.stringify(got.slice(-80))}`).to.equal(undefined);
    }
  });

  for (const [framing, head, frame] of [
    ["chunked", HEAD, Buffer.concat([Buffer.from("10000\r\n"), Buffer.alloc(65536, 97), Buffer.from("\r\n")])],
    ["Content-Length", lengthHead("content-length: 1000000000000\r\n"), Buffer.alloc(65536, 97)],
  ] as const) it(`a client that stops reading an endless ${framing} answer holds the agent's writer back; it flows again once read (control)`, async () => {
    const st = { sent: 0 };
    behaviours.set("endless", (s) => {
      s.write(head);
      const pump = (): void => {
        while (!s.destroyed) {
          st.sent += 65536;
          if (!s.write(frame)) return void s.once("drain", pump);
        }
      };
      pump();
    });
    // Counted, not kept: the stream is endless.
    const c = net.connect(apiSocket());
    c.on("error", () => undefined);
    let read = 0;
    c.on("data", (d: Buffer) => (read += d.length));
    c.pause();
    c.write("GET /endless HTTP/1.1\r\nhost: x\r\n\r\n");
    await untilTrue("the agent started writing", () => st.sent > 0);
    await new Promise((r) => setTimeout(r, 1000));
    const held = st.sent;
    await new Promise((r) => setTimeout(r, 500));
    // Socket buffers on both sides and one read in flight, not the stream: a few MiB at most.
    expect(st.sent - held, "the agent is held back").to.equal(0);
    expect(held, "bytes the agent got out while the client did not read").to.be.below(16 * MiB);
    c.resume();
    try {
      await untilTrue("control: the stream flows once read", () => st.sent > held + 32 * MiB && read > 32 * MiB);
    } finally {
      c.destroy();
    }
  });

  /**
   * Ask `/a` on a new API connection, the agent writing `raw` (and keeping its connection open,
   * or closing it); `agentClosed`: that agent connection closed; `reused`: a later request came
   * on it (Node's client keeps the connection of an answer it parsed to its end; the byte-level
   * path drops it).
   */
  const lengthCase = (raw: string, keepOpen = true): { c: RawClient; agentClosed: () => boolean; reused: () => boolean } => {
    let closed = false;
    let again = false;
    behaviours.set("a", (s) => {
      s.once("close", () => (closed = true));
      s.on("data", () => (again = true));
      if (keepOpen) s.write(raw);
      else s.end(raw);
    });
    const c = client();
    c.get("a");
    return { c, agentClosed: () => closed, reused: () => again };
  };
  const FAKE = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil";

  it("Content-Length answers: a well-formed one arrives exact, not chunked, on the byte-level path (the agent's connection dropped after it); a fake second response after the declared length never reaches the client, the next request gets its own answer", async () => {
    for (const [what, raw] of [["control", lengthHead("content-length: 5\r\n") + "hello"], ["a fake second response in the same write", lengthHead("content-length: 5\r\n") + "hello" + FAKE]] as const) {
      behaviours.set("b", answer("6\r\nsecond\r\n0\r\n\r\n"));
      const { c, reused } = lengthCase(raw);
      await untilTrue(`${what}: the answer is complete`, () => oneLengthAnswer(c.text) !== undefined);
      await new Promise((r) => setTimeout(r, 100));
      const first = c.take();
      const r = oneLengthAnswer(first);
      expect(r?.head, what).to.match(/^HTTP\/1\.1 200 OK\r\n/).and.include("\r\ncontent-length: 5\r\n").and.not.match(/transfer-encoding/i);
      expect(r?.body, what).to.equal("hello");
      expect(r?.rest, what).to.equal("");
      c.get("b");
      await untilTrue(`${what}: the next answer is complete`, () => dechunk(c.text) !== undefined || reused());
      expect(reused(), `${what}: the next request went on a new agent connection (the byte-level path dropped the first; Node's client would keep it)`).to.equal(false);
      expect(dechunk(c.take()), what).to.deep.equal({ body: "second", rest: "" });
      expect(c.closed, what).to.equal(false);
    }
  });

  it("a Content-Length answer of 8 MiB in many writes arrives byte for byte (sha256), its length declared as the agent's", async () => {
    const body = crypto.randomBytes(8 * MiB);
    behaviours.set("big", (s) => {
      s.write(lengthHead(`content-length: ${body.length}\r\n`));
      for (let i = 0; i < body.length; i += 100_000) s.write(body.subarray(i, i + 100_000));
    });
    const c = net.connect(apiSocket());
    const parts: Buffer[] = [];
    let n = 0;
    c.on("data", (d: Buffer) => {
      parts.push(d);
      n += d.length;
    });
    c.on("error", () => undefined);
    try {
      c.write("GET /big HTTP/1.1\r\nhost: x\r\n\r\n");
      await untilTrue("the whole answer arrived", () => n >= body.length);
      await new Promise((r) => setTimeout(r, 100));
      const got = Buffer.concat(parts);
      const end = got.indexOf("\r\n\r\n") + 4;
      expect(got.subarray(0, end).toString("latin1")).to.include(`\r\ncontent-length: ${body.length}\r\n`);
      expect(got.length - end, "exactly the declared bytes").to.equal(body.length);
      const sha = (b: Buffer): string => crypto.createHash("sha256").update(b).digest("hex");
      expect(sha(got.subarray(end))).to.equal(sha(body));
    } finally {
      c.destroy();
    }
  });

  it("a Content-Length answer cut short (fewer bytes, then close) is a cut answer; the same bytes with their length arrive complete (control)", async () => {
    const cases: [string, string, boolean][] = [
      ["control: 10 bytes of 10, then close", lengthHead("content-length: 10\r\n") + "helloworld", true],
      ["5 bytes of 10, then close", lengthHead("content-length: 10\r\n") + "hello", false],
    ];
    for (const [what, raw, complete] of cases) {
      const { c } = lengthCase(raw, false);
      await untilTrue(`${what}: an answer's head arrived`, () => c.text.includes("\r\n\r\n"));
      if (complete) {
        await untilTrue(`${what}: complete`, () => oneLengthAnswer(c.text) !== undefined);
        await new Promise((r) => setTimeout(r, 100));
        expect(oneLengthAnswer(c.text), what).to.deep.include({ body: "helloworld", rest: "" });
        expect(c.closed, what).to.equal(false);
      } else {
        await untilTrue(`${what}: the client's connection is closed`, () => c.closed);
        expect(c.text, what).to.match(/^HTTP\/1\.1 200 OK\r\n/).and.include("\r\ncontent-length: 10\r\n");
        expect(oneLengthAnswer(c.text), what).to.equal(undefined);
      }
    }
  });

  it("a huge Content-Length, a few bytes, then a stall: the client holds a cut answer; once it leaves, the agent's connection and the budget go (control: the same bytes with their length arrive complete)", async () => {
    const control = lengthCase(lengthHead("content-length: 5\r\n") + "hello");
    await untilTrue("control: complete", () => oneLengthAnswer(control.c.text) !== undefined);
    const { c, agentClosed } = lengthCase(lengthHead("content-length: 1000000000000\r\n") + "hello");
    await untilTrue("the bytes sent arrived", () => c.text.endsWith("\r\n\r\nhello"));
    await new Promise((r) => setTimeout(r, 200));
    expect(c.closed).to.equal(false);
    expect(agentClosed(), "the agent's connection is held while the client waits").to.equal(false);
    c.sock.destroy();
    await untilTrue("the agent's connection goes with the client", agentClosed);
  });

  it("Content-Length with Transfer-Encoding, duplicate, signed, spaced, garbled or out-of-form lengths: refused (503) or cut, never relayed as declared (control: a plain length is)", async () => {
    const body = "5\r\nhello\r\n0\r\n\r\n" + FAKE;
    const cases: [string, string, "ok" | "503" | "cut"][] = [
      ["control: a plain length", "content-length: 5\r\n", "ok"],
      ["Content-Length and Transfer-Encoding", "content-length: 5\r\ntransfer-encoding: chunked\r\n", "503"],
      ["Transfer-Encoding and Content-Length", "transfer-encoding: chunked\r\ncontent-length: 5\r\n", "503"],
      ["two equal Content-Lengths", "content-length: 5\r\ncontent-length: 5\r\n", "503"],
      ["two Content-Lengths", "content-length: 5\r\ncontent-length: 7\r\n", "503"],
      ["a list", "content-length: 5, 5\r\n", "503"],
      ["a signed length", "content-length: +5\r\n", "503"],
      ["a negative length", "content-length: -5\r\n", "503"],
      ["a length with a letter", "content-length: 5x\r\n", "503"],
      ["a hex length", "content-length: 0x5\r\n", "503"],
      ["a length of 20 digits", "content-length: 99999999999999999999\r\n", "503"],
      ["a length of 16 digits (past the raw form: Node's client relays it), then close", "content-length: 1000000000000005\r\n", "cut"],
    ];
    for (const [what, lines, want] of cases) {
      const { c } = lengthCase(lengthHead(lines) + body, want !== "cut");
      if (want === "cut") {
        await untilTrue(`${what}: the client's connection is closed`, () => c.closed);
        expect(c.text, what).to.match(/^HTTP\/1\.1 200 OK\r\n/);
        expect(oneLengthAnswer(c.text), what).to.equal(undefined);
        continue;
      }
      if (want === "ok") {
        await untilTrue(`${what}: an answer`, () => oneLengthAnswer(c.text) !== undefined);
        await new Promise((r) => setTimeout(r, 100));
        expect(oneLengthAnswer(c.text), what).to.deep.include({ body: "5\r\nhe", rest: "" });
      } else {
        // The 503 (the test server's `fail`) is chunked.
        await untilTrue(`${what}: an answer`, () => dechunk(c.text) !== undefined);
        await new Promise((r) => setTimeout(r, 100));
        expect(c.text, what).to.match(/^HTTP\/1\.1 503 /);
        expect(dechunk(c.text)?.body, what).to.include("ERR_VM_AGENT_UNAVAILABLE").and.not.include("hello");
        expect(dechunk(c.text)?.rest, what).to.equal("");
      }
    }
  });

  it("HEAD, HTTP/1.0 and pipelined requests with Content-Length answers (Node's client as before) get exactly their answers", async () => {
    // Each closes after its answer: Node's client keeps the agent connection of a complete
    // answer for its next request, which this stand-in agent would not read.
    behaviours.set("head", (s) => void s.end(lengthHead("content-length: 5\r\n")));
    behaviours.set("one", (s) => void s.end(lengthHead("content-length: 3\r\n") + "one"));
    behaviours.set("two", (s) => void s.end(lengthHead("content-length: 3\r\n") + "two"));
    const c = client();
    c.get("head", "HEAD");
    await untilTrue("HEAD: the head arrived", () => c.text.includes("\r\n\r\n"));
    await new Promise((r) => setTimeout(r, 100));
    const head = c.take();
    expect(head).to.include("\r\ncontent-length: 5\r\n").and.match(/\r\n\r\n$/);
    c.sock.write("GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\n\r\n");
    await untilTrue("pipelined: both answers", () => oneLengthAnswer(oneLengthAnswer(c.text)?.rest ?? "") !== undefined);
    await new Promise((r) => setTimeout(r, 100));
    const first = oneLengthAnswer(c.take());
    expect(first?.body).to.equal("one");
    expect(oneLengthAnswer(first?.rest ?? "")).to.deep.include({ body: "two", rest: "" });
    const old = client();
    old.sock.write("GET /one HTTP/1.0\r\n\r\n");
    await untilTrue("HTTP/1.0: the answer, then the daemon closes", () => old.closed);
    expect(oneLengthAnswer(old.text)).to.deep.include({ body: "one", rest: "" });
    expect(c.closed).to.equal(false);
  });
});
