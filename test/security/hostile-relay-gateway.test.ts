/**
 * A hostile guest agent's raw answers through the whole path an API client uses: the
 * supervisor's gateway forwarder (supervisor/gateway-forward.ts `HttpForwarder`, on its
 * keep-alive upstream pools, supervisor/gateway-upstream.ts) in front of two tenants' daemon relays
 * (tenant-daemon/agent-client/agent-stream.ts `streamToAgent`, byte-level for chunked and
 * Content-Length answers: chunked-relay.ts, length-relay.ts), each with a stand-in agent that answers with its VM's proof (what guest
 * root's taken-over agent does, test/security/agent-takeover.ts), written byte for byte.
 *
 * One API client keeps one connection to the gateway and asks, in turn, tenant A (whose agent is
 * hostile), tenant B, and tenant A again: every answer must be exactly one response with its own
 * body, nothing after it, and the connection must stay open. A desync of the client's or of the
 * gateway's pooled daemon connection would show as a fake or another tenant's body in a later
 * answer, or bytes after an answer. The control is a well-formed answer from A. An answer A's
 * agent cuts short (fewer bytes than its Content-Length, then close) reaches the client cut
 * (its connection closed), and a next connection gets B's and A's answers whole (control: the
 * same bytes with their length, then close, arrive whole).
 *
 * No VM, no daemon process, a few seconds.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { errorResponse, type PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { HttpForwarder, createUpstreamAgent } from "../../supervisor/gateway-forward.js";
import { UpstreamPools } from "../../supervisor/gateway-upstream.js";
import type { GatewayTarget } from "../../supervisor/tenant-service.js";
import { streamToAgent } from "../../tenant-daemon/agent-client/agent-stream.js";
import { untilTrue } from "../helpers/wait.js";

const PROOF = "c".repeat(64);
const head = (extra: string, status = "200 OK"): string => `HTTP/1.1 ${status}\r\nx-paddock-agent-proof: ${PROOF}\r\n${extra}\r\n`;
const chunkedAnswer = (body: string): string => head("transfer-encoding: chunked\r\n") + `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
/** A second response a hostile agent appends, hoping it answers someone's next request. */
const FAKE = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil";

/** One response parsed off the front of `raw` (latin1): its status, decoded body and the bytes after it; undefined while incomplete. */
function oneResponse(raw: string): { status: number; body: string; rest: string } | undefined {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const lines = raw.slice(0, end).split("\r\n");
  const status = Number(lines[0]?.split(" ")[1]);
  const header = (name: string): string | undefined => lines.slice(1).find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
  let i = end + 4;
  if (header("transfer-encoding") === "chunked") {
    let body = "";
    for (;;) {
      const eol = raw.indexOf("\r\n", i);
      if (eol < 0) return undefined;
      const n = parseInt(raw.slice(i, eol), 16);
      if (n === 0) return raw.startsWith("\r\n", eol + 2) ? { status, body, rest: raw.slice(eol + 4) } : undefined;
      if (raw.length < eol + 2 + n + 2) return undefined;
      body += raw.slice(eol + 2, eol + 2 + n);
      i = eol + 2 + n + 2;
    }
  }
  const n = Number(header("content-length") ?? 0);
  return raw.length < i + n ? undefined : { status, body: raw.slice(i, i + n), rest: raw.slice(i + n) };
}

describe("security: a guest agent's raw answers through the gateway and two tenants' daemon relays on kept-alive connections (real sockets, no VM)", function () {
  this.timeout(30_000);
  let dir = "";
  const servers: net.Server[] = [];
  const agentSockets = new Set<net.Socket>();
  /** What tenant A's agent writes for the next request (tenant B's always answers well). */
  let answerA = "";
  /** Whether tenant A's agent closes its connection after writing (else keeps it open). */
  let closeA = false;
  let gatewaySocket = "";
  let pools: UpstreamPools | undefined;

  /** A stand-in agent writing `answer()` to each request, and a daemon relay in front of it; returns the relay's socket. */
  async function tenant(name: string, answer: () => string, close = (): boolean => false): Promise<string> {
    const agent = net.createServer((s) => {
      agentSockets.add(s);
      s.once("close", () => agentSockets.delete(s));
      s.on("error", () => undefined);
      s.once("data", () => (close() ? s.end(answer()) : s.write(answer())));
    });
    servers.push(agent);
    await new Promise<void>((resolve) => agent.listen(path.join(dir, `${name}-agent.sock`), resolve));
    const endpoint = { hostname: `vm-${name}`, socketPath: path.join(dir, `${name}-agent.sock`), proof: PROOF };
    const api = http.createServer((req, res) => streamToAgent(endpoint, req, res, "/v1/health", (err: PaddockError) => {
      const r = errorResponse(err);
      res.writeHead(r.status, { "content-type": "application/json" }).end(JSON.stringify(r.body));
    }));
    servers.push(api);
    await new Promise<void>((resolve) => api.listen(path.join(dir, `${name}-api.sock`), resolve));
    return path.join(dir, `${name}-api.sock`);
  }

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-relay-gw-"));
    const sockets = { a: await tenant("a", () => answerA, () => closeA), b: await tenant("b", () => chunkedAnswer("tenant-b")) };
    pools = new UpstreamPools();
    const forwarder = new HttpForwarder(pools, createUpstreamAgent(), {
      authenticate: () => undefined,
      gatewayTarget: (tenantId: string): GatewayTarget => ({ tenantId, status: "active", socketPath: "", daemonUp: true }),
    }, silentLogger);
    const gateway = http.createServer((req, res) => {
      const t = req.url?.startsWith("/a/") === true ? "a" : "b";
      forwarder.forward(req, res, { ok: true, tenantId: t, tokenId: "tok", socketPath: sockets[t] }, "req-1");
    });
    servers.push(gateway);
    gatewaySocket = path.join(dir, "gateway.sock");
    await new Promise<void>((resolve) => gateway.listen(gatewaySocket, resolve));
  });

  after(async () => {
    pools?.destroy();
    for (const s of agentSockets) s.destroy();
    for (const s of servers) {
      if (s instanceof http.Server) s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  const cases: [string, string, { status: number; body: string }][] = [
    ["a well-formed chunked answer (control)", chunkedAnswer("tenant-a"), { status: 200, body: "tenant-a" }],
    ["an early last chunk, then a fake response", head("transfer-encoding: chunked\r\n") + `5\r\nhello\r\n0\r\n\r\n${FAKE}`, { status: 200, body: "hello" }],
    ["a last chunk with trailers, then a fake response", head("transfer-encoding: chunked\r\n") + `5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n${FAKE}`, { status: 200, body: "hello" }],
    ["a 100 Continue, an early last chunk, then a fake response", "HTTP/1.1 100 Continue\r\n\r\n" + head("transfer-encoding: chunked\r\n") + `5\r\nhello\r\n0\r\n\r\n${FAKE}`, { status: 200, body: "hello" }],
    ["Content-Length 0, then a fake response in the same write", head("content-length: 0\r\n") + FAKE, { status: 200, body: "" }],
    ["a 204, then a fake response in the same write", head("", "204 No Content") + FAKE, { status: 204, body: "" }],
    ["a Content-Length answer, then a fake response", head("content-length: 5\r\n") + `hello${FAKE}`, { status: 200, body: "hello" }],
    ["a Content-Length answer of 256 KiB, then a fake response", head("content-length: 262144\r\n") + "x".repeat(262144) + FAKE, { status: 200, body: "x".repeat(262144) }],
  ];
  for (const [what, hostile, expected] of cases) {
    it(`${what}: A gets exactly its answer, then B and A again theirs on the same client connection`, async () => {
      const c = net.connect(gatewaySocket);
      let got = "";
      let closed = false;
      c.on("data", (d: Buffer) => (got += d.toString("latin1")));
      c.on("error", () => undefined);
      c.on("close", () => (closed = true));
      try {
        const ask = async (p: string): Promise<{ status: number; body: string }> => {
          got = "";
          c.write(`GET ${p} HTTP/1.1\r\nhost: gw\r\n\r\n`);
          await untilTrue(`${what}: an answer to ${p}`, () => oneResponse(got) !== undefined || closed);
          // Time for bytes that should not come (a fake response after the answer).
          await new Promise((r) => setTimeout(r, 100));
          const r = oneResponse(got);
          expect(r, `${what}: ${p}: ${JSON.stringify(got)}`).to.not.equal(undefined);
          expect(r?.rest, `${what}: ${p}: bytes after the answer`).to.equal("");
          return { status: r?.status ?? 0, body: r?.body ?? "" };
        };
        answerA = hostile;
        expect(await ask("/a/1"), what).to.deep.equal(expected);
        answerA = chunkedAnswer("tenant-a");
        expect(await ask("/b/1"), `${what}: B next`).to.deep.equal({ status: 200, body: "tenant-b" });
        expect(await ask("/a/2"), `${what}: A next`).to.deep.equal({ status: 200, body: "tenant-a" });
        expect(closed, `${what}: the client's connection stays open`).to.equal(false);
      } finally {
        c.destroy();
      }
    });
  }

  for (const [what, raw, whole] of [
    ["control: 10 bytes of a Content-Length of 10, then close", head("content-length: 10\r\n") + "helloworld", true],
    ["5 bytes of a Content-Length of 10, then close", head("content-length: 10\r\n") + "hello", false],
  ] as const) {
    it(`${what}: the client gets ${whole ? "the whole answer" : "a cut answer (its connection closed)"}; a next connection gets B's and A's answers whole`, async () => {
      const conns: net.Socket[] = [];
      const ask = async (p: string): Promise<{ got: () => string; closed: () => boolean }> => {
        const c = net.connect(gatewaySocket);
        conns.push(c);
        let got = "";
        let closed = false;
        c.on("data", (d: Buffer) => (got += d.toString("latin1")));
        c.on("error", () => undefined);
        c.on("close", () => (closed = true));
        c.write(`GET ${p} HTTP/1.1\r\nhost: gw\r\n\r\n`);
        await untilTrue(`${what}: an answer to ${p}`, () => oneResponse(got) !== undefined || closed);
        await new Promise((r) => setTimeout(r, 100));
        return { got: () => got, closed: () => closed };
      };
      try {
        answerA = raw;
        closeA = true;
        const first = await ask("/a/1");
        if (whole) {
          expect(oneResponse(first.got()), what).to.deep.equal({ status: 200, body: "helloworld", rest: "" });
          expect(first.closed(), what).to.equal(false);
        } else {
          expect(first.closed(), `${what}: the client's connection is closed`).to.equal(true);
          expect(first.got(), what).to.match(/^HTTP\/1\.1 200 /);
          expect(oneResponse(first.got()), `${what}: ${JSON.stringify(first.got())}`).to.equal(undefined);
        }
        answerA = chunkedAnswer("tenant-a");
        closeA = false;
        const b = await ask("/b/1");
        expect(oneResponse(b.got()), `${what}: B next`).to.deep.equal({ status: 200, body: "tenant-b", rest: "" });
        const a = await ask("/a/2");
        expect(oneResponse(a.got()), `${what}: A next`).to.deep.equal({ status: 200, body: "tenant-a", rest: "" });
      } finally {
        closeA = false;
        for (const c of conns) c.destroy();
      }
    });
  }
});
