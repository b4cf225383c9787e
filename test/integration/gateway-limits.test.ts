/**
 * The gateway's per-tenant bounds and session ending, hit for real: an in-process supervisor
 * (real gateway, admin API, registry) with tenant daemons played by test/fixtures/echo-daemon
 * (real processes on the real tenant sockets; WebSocket echo, slow answers, NDJSON streams).
 * Each bound is hit next to a positive control: the other tenant, or the same tenant before.
 * Real VM shells are ended in test/privileged/gateway-session-end.test.ts.
 */
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { expect } from "chai";
import WebSocket from "ws";
import { listDaemonNodes, MAX_DAEMON_ANSWER_BYTES } from "../../supervisor/daemon-client.js";
import { readNofileLimit } from "../../supervisor/gateway-admission.js";
import { PaddockError } from "../../shared/errors.js";
import { sleep } from "../../shared/time.js";
import { request, type TestResponse } from "../helpers/http.js";
import { FAST_RESTART, TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";

/** Each describe's supervisor: echo daemons, fast restarts, the given `gateway:` keys. */
type Lab = TestSupervisor;

async function startLab(gateway: Record<string, unknown>): Promise<Lab> {
  const lab = await TestSupervisor.create({ config: (p) => ({ ...echoDaemonConfig(p), gateway: { address: "127.0.0.1:0", ...gateway }, restart: FAST_RESTART }) });
  try {
    await lab.start();
  } catch (err) {
    await lab.destroy();
    throw err;
  }
  return lab;
}

async function stopLab(lab: Lab | undefined): Promise<void> {
  await lab?.destroy();
}

function gwTarget(lab: Lab): { host: string; port: number } {
  return lab.gatewayTarget();
}

function admin(lab: Lab, method: string, p: string, body?: unknown): Promise<TestResponse> {
  return lab.adminReq(method, p, body);
}

async function createTenant(lab: Lab, id: string): Promise<{ token: string; tokenId: string }> {
  const r = await admin(lab, "POST", "/tenants", { id });
  expect(r.status, r.text).to.equal(201);
  const j = r.json as { token: string; token_id: string };
  return { token: j.token, tokenId: j.token_id };
}

function gw(lab: Lab, token: string, p: string, method = "GET"): Promise<TestResponse> {
  return request(gwTarget(lab), method, p, undefined, { authorization: `Bearer ${token}` });
}

function code(r: TestResponse): string | undefined {
  return (r.json as { code?: string } | undefined)?.code;
}

/** Open a WebSocket through the gateway; a refused upgrade resolves with its status and body. */
function openWs(lab: Lab, token: string, p = "/vm/x/shell"): Promise<WebSocket | { status: number; body: string; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${lab.gateway}${p}`, { headers: { authorization: `Bearer ${token}` } });
    ws.once("open", () => {
      // The echo daemon greets first; consume it so echo checks read their own message.
      ws.once("message", () => resolve(ws));
    });
    ws.once("unexpected-response", (_req, res: http.IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => {
        ws.terminate();
        resolve({ status: res.statusCode ?? 0, body, retryAfter: res.headers["retry-after"] as string | undefined });
      });
    });
    ws.once("error", reject);
  });
}

function isWs(x: unknown): x is WebSocket {
  return x instanceof WebSocket;
}

async function echo(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no echo within 5 s")), 5000);
    ws.once("message", (d: Buffer) => {
      clearTimeout(timer);
      resolve(d.toString());
    });
    ws.send(text);
  });
}

/** Resolves with the ms until `ws` closes; rejects after `limitMs`. */
function closedWithin(ws: WebSocket, limitMs: number): Promise<number> {
  const t0 = Date.now();
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve(0);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`WebSocket still open after ${limitMs} ms`)), limitMs);
    ws.once("close", () => {
      clearTimeout(timer);
      resolve(Date.now() - t0);
    });
  });
}

/** A long NDJSON stream through the gateway; `ended` resolves when the client side sees it end or reset. */
function openStream(lab: Lab, token: string): Promise<{ ended: Promise<void>; lines: () => number }> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const req = http.request({ ...gwTarget(lab), path: "/fixture/stream?n=100000&ms=50", headers: { authorization: `Bearer ${token}` } }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream answered ${res.statusCode}`));
      const ended = new Promise<void>((done) => {
        res.on("close", () => done());
        res.on("error", () => done());
      });
      res.on("data", (c: Buffer) => { n += c.toString().split("\n").length - 1; });
      resolve({ ended, lines: () => n });
    });
    req.on("error", () => undefined);
    req.end();
  });
}

async function within<T>(p: Promise<T>, limitMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${limitMs} ms`)), limitMs); });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

describe("gateway bounds and session ending (integration, echo daemons)", function () {
  this.timeout(120_000);

  describe("rate limit", () => {
    let lab: Lab | undefined;
    let a = "";
    let b = "";
    before(async () => {
      lab = await startLab({ limits: { requests_per_second: 5, burst: 10 } });
      a = (await createTenant(lab, "rla")).token;
      b = (await createTenant(lab, "rlb")).token;
    });
    after(() => stopLab(lab));

    it("a request flood from tenant A gets 429 ERR_RATE_LIMITED with Retry-After while tenant B stays at 200", async () => {
      const l = lab as Lab;
      expect((await gw(l, a, "/echo")).status, "A before the flood").to.equal(200);
      const flood = await Promise.all(Array.from({ length: 40 }, () => gw(l, a, "/echo")));
      const limited = flood.filter((r) => r.status === 429);
      expect(limited.length, "429s in a flood of 40 at 5/s burst 10").to.be.at.least(25);
      expect(flood.filter((r) => r.status === 200).length).to.be.at.most(11);
      for (const r of limited) {
        expect(code(r)).to.equal("ERR_RATE_LIMITED");
        expect(Number(r.headers["retry-after"]), "Retry-After seconds").to.be.at.least(1);
      }
      expect((await gw(l, b, "/echo")).status, "B right after A's flood").to.equal(200);
      // The bucket refills: after Retry-After, A is served again.
      await sleep(1000 * Number(limited[0]?.headers["retry-after"] ?? 1) + 100);
      expect((await gw(l, a, "/echo")).status, "A after Retry-After").to.equal(200);
    });
  });

  describe("connections (a WebSocket holds one)", () => {
    let lab: Lab | undefined;
    let a = "";
    let b = "";
    before(async () => {
      lab = await startLab({ limits: { max_connections: 3, max_requests: 100 } });
      a = (await createTenant(lab, "cna")).token;
      b = (await createTenant(lab, "cnb")).token;
    });
    after(() => stopLab(lab));

    it("the 4th connection of tenant A is refused with 429 ERR_TOO_MANY_CONNECTIONS; its 3 WebSockets and tenant B keep working", async () => {
      const l = lab as Lab;
      const open: WebSocket[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          const ws = await openWs(l, a);
          expect(isWs(ws), `WebSocket ${i + 1} of 3: ${JSON.stringify(ws)}`).to.equal(true);
          open.push(ws as WebSocket);
        }
        const extra = await openWs(l, a);
        expect(isWs(extra), "4th WebSocket refused").to.equal(false);
        if (isWs(extra)) return;
        expect(extra.status).to.equal(429);
        expect(JSON.parse(extra.body)).to.have.property("code", "ERR_TOO_MANY_CONNECTIONS");
        expect(Number(extra.retryAfter)).to.be.at.least(1);
        const plain = await gw(l, a, "/echo");
        expect([plain.status, code(plain)], "a plain request on a 4th connection").to.deep.equal([429, "ERR_TOO_MANY_CONNECTIONS"]);
        for (const [i, ws] of open.entries()) expect(await echo(ws, `m${i}`), `WebSocket ${i + 1} still echoes`).to.equal(`m${i}`);
        const bws = await openWs(l, b);
        expect(isWs(bws), "tenant B's WebSocket").to.equal(true);
        if (isWs(bws)) bws.terminate();
        // Closing one frees its connection.
        open.shift()?.close();
        await sleep(300);
        expect((await gw(l, a, "/echo")).status, "A after one WebSocket closed").to.equal(200);
      } finally {
        for (const ws of open) ws.terminate();
      }
    });
  });

  describe("concurrent requests (a WebSocket holds one)", () => {
    let lab: Lab | undefined;
    let a = "";
    let b = "";
    before(async () => {
      lab = await startLab({ limits: { max_connections: 50, max_requests: 2 } });
      a = (await createTenant(lab, "cra")).token;
      b = (await createTenant(lab, "crb")).token;
    });
    after(() => stopLab(lab));

    it("with a WebSocket and a slow request in flight, tenant A's third request gets 429 ERR_TOO_MANY_REQUESTS; B gets 200", async () => {
      const l = lab as Lab;
      const ws = await openWs(l, a);
      expect(isWs(ws)).to.equal(true);
      const slow = gw(l, a, "/fixture/slow?ms=1500");
      try {
        await sleep(200);
        const third = await gw(l, a, "/echo");
        expect([third.status, code(third)]).to.deep.equal([429, "ERR_TOO_MANY_REQUESTS"]);
        expect(Number(third.headers["retry-after"])).to.be.at.least(1);
        expect((await gw(l, b, "/echo")).status, "tenant B").to.equal(200);
        expect((await slow).status, "the slow request completes").to.equal(200);
        expect((await gw(l, a, "/echo")).status, "A once the slow request is done").to.equal(200);
      } finally {
        if (isWs(ws)) ws.terminate();
        await slow.catch(() => undefined);
      }
    });
  });

  describe("file-descriptor budget", () => {
    let lab: Lab | undefined;
    let a = "";
    let b = "";
    // RLIMIT_NOFILE of this process minus a reserve that leaves 100 for the gateway; a tenant may take half.
    const nofile = readNofileLimit();
    before(async () => {
      lab = await startLab({ fd_reserve: nofile - 100, tenant_fd_share_percent: 50, limits: { max_connections: 1000, max_requests: 1000 } });
      a = (await createTenant(lab, "fda")).token;
      b = (await createTenant(lab, "fdb")).token;
    });
    after(() => stopLab(lab));

    it("tenant A cannot take more than its share (429), B still connects; a spent global budget gives 503 ERR_GATEWAY_BUSY + Retry-After", async () => {
      const l = lab as Lab;
      const open: WebSocket[] = [];
      const idle: net.Socket[] = [];
      try {
        let refused: { status: number; body: string; retryAfter: string | undefined } | undefined;
        for (let i = 0; i < 40 && !refused; i++) {
          const ws = await openWs(l, a);
          if (isWs(ws)) open.push(ws);
          else refused = ws;
        }
        // Each WebSocket is 2 descriptors (client + daemon side): a 50-descriptor share holds 25.
        expect(open.length, "WebSockets of A within its share").to.equal(25);
        expect(refused?.status).to.equal(429);
        expect(JSON.parse(refused?.body ?? "{}")).to.have.property("code", "ERR_TOO_MANY_CONNECTIONS");
        expect(await echo(open[0] as WebSocket, "still"), "A's open WebSockets keep working").to.equal("still");
        const bws = await openWs(l, b);
        expect(isWs(bws), "tenant B connects while A is at its share").to.equal(true);
        if (isWs(bws)) open.push(bws);
        // Spend the rest of the global budget with idle, unauthenticated connections.
        for (let i = 0; i < 50; i++) {
          const s = net.connect(gwTarget(l));
          s.on("error", () => undefined);
          idle.push(s);
        }
        await Promise.all(idle.map((s) => new Promise((r) => s.once("connect", r))));
        await sleep(200);
        const busy = await gw(l, b, "/echo");
        expect([busy.status, code(busy)], busy.text).to.deep.equal([503, "ERR_GATEWAY_BUSY"]);
        expect(Number(busy.headers["retry-after"])).to.be.at.least(1);
        for (const s of idle) s.destroy();
        await sleep(300);
        expect((await gw(l, b, "/echo")).status, "B once the idle connections are gone").to.equal(200);
      } finally {
        for (const ws of open) ws.terminate();
        for (const s of idle) s.destroy();
      }
    });
  });

  describe("revocation, suspension and deletion end open sessions", () => {
    let lab: Lab | undefined;
    before(async () => {
      lab = await startLab({});
    });
    after(() => stopLab(lab));

    it("revoking a token ends its WebSocket and stream within a second (2 s allowed on this loaded box); another token's WebSocket stays open", async () => {
      const l = lab as Lab;
      const t1 = await createTenant(l, "rva");
      const r2 = await admin(l, "POST", "/tenants/rva/tokens", {});
      expect(r2.status, r2.text).to.equal(201);
      const t2 = r2.json as { token: string; id: string };
      const ws1 = await openWs(l, t1.token);
      const ws2 = await openWs(l, t2.token);
      expect(isWs(ws1) && isWs(ws2)).to.equal(true);
      const stream = await openStream(l, t1.token);
      await sleep(300);
      expect(stream.lines(), "stream flowing before the revoke").to.be.greaterThan(0);
      const closed1 = closedWithin(ws1 as WebSocket, 2000);
      const rv = await admin(l, "DELETE", `/tenants/rva/tokens/${t1.tokenId}`);
      expect(rv.status, rv.text).to.be.oneOf([200, 204]);
      await closed1;
      await within(stream.ended, 2000, "the revoked token's stream ends");
      expect(await echo(ws2 as WebSocket, "other token"), "the other token's WebSocket").to.equal("other token");
      expect((await gw(l, t1.token, "/echo")).status, "the revoked token").to.equal(401);
      (ws2 as WebSocket).terminate();
    });

    it("suspending a tenant ends its stream and WebSocket within 2 s; another tenant's WebSocket stays open", async () => {
      const l = lab as Lab;
      const s = await createTenant(l, "ssa");
      const other = await createTenant(l, "ssb");
      const ws = await openWs(l, s.token);
      const wsOther = await openWs(l, other.token);
      expect(isWs(ws) && isWs(wsOther)).to.equal(true);
      const stream = await openStream(l, s.token);
      const closed = closedWithin(ws as WebSocket, 2000);
      const r = await admin(l, "POST", "/tenants/ssa/suspend", { reason: "test" });
      expect(r.status, r.text).to.equal(200);
      await closed;
      await within(stream.ended, 2000, "the suspended tenant's stream ends");
      expect(await echo(wsOther as WebSocket, "b"), "another tenant's WebSocket").to.equal("b");
      expect(code(await gw(l, s.token, "/echo"))).to.equal("ERR_TENANT_SUSPENDED");
      (wsOther as WebSocket).terminate();
    });

    it("deleting a tenant ends its WebSocket within 2 s", async () => {
      const l = lab as Lab;
      const d = await createTenant(l, "dla");
      const ws = await openWs(l, d.token);
      expect(isWs(ws)).to.equal(true);
      const closed = closedWithin(ws as WebSocket, 2000);
      const del = admin(l, "DELETE", "/tenants/dla");
      await closed;
      const answer = await del;
      expect(answer.status, answer.text).to.be.oneOf([200, 204]);
    });
  });

  describe("malformed input through the gateway", () => {
    let lab: Lab | undefined;
    let a = "";
    before(async () => {
      lab = await startLab({});
      a = (await createTenant(lab, "mla")).token;
    });
    after(() => stopLab(lab));

    /** Raw bytes on a new connection; everything read until the server closes. */
    const raw = (text: string): Promise<string> => new Promise((resolve, reject) => {
      const s = net.connect(gwTarget(lab as Lab), () => s.write(text));
      let out = "";
      s.on("data", (d: Buffer) => { out += d.toString("latin1"); });
      s.on("close", () => resolve(out));
      s.on("error", reject);
      s.setTimeout(10_000, () => s.destroy());
    });

    it("malformed percent-escapes get 400 ERR_URL_MALFORMED (HTTP and upgrade); a good escape is forwarded", async () => {
      const l = lab as Lab;
      expect((await gw(l, a, "/vm/x%41")).status, "a good escape (control)").to.equal(200);
      for (const p of ["/vm/x%E0%A4%A", "/vm/%zz/exec", "/vm/x%", "/vm/%C0%AF"]) {
        const r = await gw(l, a, p);
        expect([r.status, code(r)], p).to.deep.equal([400, "ERR_URL_MALFORMED"]);
      }
      const up = await openWs(l, a, "/vm/x%E0%A4%A/shell");
      expect(isWs(up)).to.equal(false);
      if (!isWs(up)) {
        expect(up.status).to.equal(400);
        expect(JSON.parse(up.body)).to.have.property("code", "ERR_URL_MALFORMED");
      }
      const absolute = await raw(`GET http://x/vm/y HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a}\r\nConnection: close\r\n\r\n`);
      expect(absolute).to.match(/^HTTP\/1\.1 400 /);
      expect(absolute).to.include('"code":"ERR_URL_MALFORMED"');
    });

    it("malformed headers get 400 ERR_HEADER_INVALID", async () => {
      for (const h of ["Content-Length: abc", "Bad Header: x", "Content-Length: 1\r\nContent-Length: 2", "Transfer-Encoding: chunked\r\nContent-Length: 3"]) {
        const out = await raw(`POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a}\r\n${h}\r\n\r\nabc`);
        expect(out, h).to.match(/^HTTP\/1\.1 400 /);
        expect(out, h).to.include('"code":"ERR_HEADER_INVALID"');
      }
      expect((await gw(lab as Lab, a, "/echo")).status, "control").to.equal(200);
    });
  });

  describe("buffered daemon answers are capped", () => {
    let lab: Lab | undefined;
    before(async () => {
      process.env.PDK_FIXTURE_NODES_BYTES_bga = String(MAX_DAEMON_ANSWER_BYTES + 1024);
      lab = await startLab({});
      await createTenant(lab, "bga");
      await createTenant(lab, "bgb");
    });
    after(async () => {
      delete process.env.PDK_FIXTURE_NODES_BYTES_bga;
      await stopLab(lab);
    });

    it("a GET /nodes answer over the cap is refused with ERR_UPSTREAM_TOO_LARGE; a normal one is read (control)", async () => {
      const l = lab as Lab;
      const sock = (id: string): string => path.join(l.runDir, "tenants", id, "api.sock");
      expect(await listDaemonNodes(sock("bgb")), "control").to.deep.equal([]);
      const err = await listDaemonNodes(sock("bga")).then(() => undefined, (e: unknown) => e);
      expect(err).to.be.instanceOf(PaddockError);
      expect((err as PaddockError).code).to.equal("ERR_UPSTREAM_TOO_LARGE");
      // Suspension lists the VMs to pause: it reports the refusal instead of buffering.
      const s = await admin(l, "POST", "/tenants/bga/suspend", { reason: "test" });
      expect(s.status, s.text).to.equal(200);
      expect(JSON.stringify(s.json)).to.include(`more than ${MAX_DAEMON_ANSWER_BYTES} bytes`);
    });
  });
});
