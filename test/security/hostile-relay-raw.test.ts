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
 * - every case gives the body relay's budget back.
 *
 * No VM, no daemon, a few seconds.
 */
import { expect } from "chai";
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

describe("security: a guest agent's raw chunked answers against the daemon's byte-level relay (real sockets, no VM)", function () {
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
        const name = /^[A-Z]+ \/v1\/(\S+) /.exec(head)?.[1] ?? "";
        (behaviours.get(name) ?? answerAndClose("0\r\n\r\n"))(s);
      };
      s.on("data", onData);
    });
    await new Promise<void>((resolve) => agent.listen(path.join(dir, "agent.sock"), resolve));
    const endpoint = { hostname: "vm-1", socketPath: path.join(dir, "agent.sock"), proof: PROOF };
    api = http.createServer((req, res) => streamToAgent(endpoint, req, res, `/v1${req.url ?? "/"}`, (err: PaddockError) => {
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

  it("a client that stops reading an endless answer holds the agent's writer back; it flows again once read (control)", async () => {
    const st = { sent: 0 };
    const frame = Buffer.concat([Buffer.from("10000\r\n"), Buffer.alloc(65536, 97), Buffer.from("\r\n")]);
    behaviours.set("endless", (s) => {
      s.write(HEAD);
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
});
