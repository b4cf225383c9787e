/**
 * The supervisor for real — registry, process manager, gateway and admin API — with tenant
 * daemons played by test/fixtures/echo-daemon (a real process serving HTTP on the real
 * tenant socket, started from the config the supervisor rendered). The real tenant daemon
 * with real VMs is exercised by test/privileged/supervisor-daemon.test.ts.
 */
import { existsSync, promises as fs } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { expect } from "chai";
import WebSocket from "ws";
import { sleep } from "../../shared/time.js";
import { request, type TestResponse } from "../helpers/http.js";
import { FAST_RESTART, TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";
import { pidAlive } from "../../shared/proc.js";
import { acquireTenantIdLock } from "../../shared/tenant-id-lock.js";
import { run } from "../../shared/exec.js";
import { cidrContains, cidrOverlaps, formatCidr, parseIpv4, type Cidr } from "../../shared/cidr.js";
import { listOwnRanges } from "../../shared/nft-cli.js";

/** Apply nft commands (`nft -f -`). */
async function runNft(text: string): Promise<void> {
  await run("nft", ["-f", "-"], { input: text });
}

/**
 * A /20 of 198.19.0.0/16 (picked at random among the free ones) that no tenant table on the host
 * claims (the tables' `own_ranges`, shared/nft-cli.ts listOwnRanges, which the block allocator
 * skips) and no interface address lies in, now: the blocks a test asserts must not depend on
 * what other supervisors and daemons on the host hold of a shared pool (the default
 * 169.254.0.0/16).
 * @throws Error when every /20 is taken.
 */
async function privatePool(): Promise<Cidr> {
  const claimed = [...(await listOwnRanges("")).values()].flat();
  const { stdout } = await run("ip", ["-4", "-o", "addr"]);
  const addrs = [...stdout.matchAll(/inet (\d+\.\d+\.\d+\.\d+)/g)].map((m) => parseIpv4(m[1] as string) as number);
  const free = Array.from({ length: 16 }, (_, n): Cidr => ({ base: parseIpv4(`198.19.${n * 16}.0`) as number, prefix: 20 }))
    .filter((pool) => !claimed.some((c) => cidrOverlaps(pool, c)) && !addrs.some((a) => cidrContains(pool, a)));
  const pool = free[Math.floor(Math.random() * free.length)];
  if (pool === undefined) throw new Error("no free /20 in 198.19.0.0/16 for this test's pool");
  return pool;
}

/** Block `i` (from 0) of `pool` in /24 blocks, `a.b.c.d/24`. Pure. */
function block24(pool: Cidr, i: number): string {
  return formatCidr({ base: pool.base + i * 256, prefix: 24 });
}

interface Env {
  sup: TestSupervisor;
  stateDir: string;
  runDir: string;
  purgeLog: string;
}

/** A supervisor (not started) with echo daemons, fast restarts and the metadata address denied. */
async function makeEnv(restart: Record<string, number> = {}, mode: "in-process" | "child" = "in-process", pool?: Cidr): Promise<Env> {
  const network = pool === undefined ? {} : { network: { pool: formatCidr(pool), block_prefix: 24 } };
  const sup = await TestSupervisor.create({ mode, config: (p) => ({ ...echoDaemonConfig(p), restart: { ...FAST_RESTART, ...restart }, deny: ["169.254.169.254/32"], ...network }) });
  const purgeLog = path.join(sup.dir, "purge.log");
  process.env.PDK_FIXTURE_PURGE_LOG = purgeLog;
  return { sup, stateDir: sup.stateDir, runDir: sup.runDir, purgeLog };
}

class Client {
  constructor(readonly sup: TestSupervisor) {}

  get adminToken(): string {
    return this.sup.adminToken;
  }

  admin(method: string, p: string, body?: unknown, token = this.adminToken): Promise<TestResponse> {
    return this.sup.adminReq(method, p, body, { authorization: `Bearer ${token}` });
  }

  gw(method: string, p: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<TestResponse> {
    return request(this.sup.gatewayTarget(), method, p, body, { ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}), ...headers });
  }

  async createTenant(body: Record<string, unknown>): Promise<{ id: string; token: string; token_id: string; socket_path: string; ranges: Array<{ cidr: string }>; daemon: { pid: number } }> {
    const r = await this.admin("POST", "/tenants", body);
    expect(r.status, r.text).to.equal(201);
    return r.json as never;
  }
}

async function start(env: Env): Promise<Client> {
  await env.sup.start();
  return new Client(env.sup);
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Send `text` as is on a new TCP connection; resolve with everything read until the server closes. */
function rawHttp(target: { host: string; port: number }, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(target.port, target.host, () => s.write(text));
    let out = "";
    s.on("data", (d: Buffer) => { out += d.toString("latin1"); });
    s.on("end", () => resolve(out));
    s.on("error", reject);
    s.setTimeout(10_000, () => { s.destroy(); reject(new Error(`no close after 10 s; read ${JSON.stringify(out.slice(0, 200))}`)); });
  });
}

/** Stop the supervisor and its daemons (also those a killed supervisor left), remove its dirs. */
async function cleanup(env: Env | undefined): Promise<void> {
  await env?.sup.destroy();
}

describe("supervisor with echo daemons (integration)", function () {
  this.timeout(120_000);

  describe("two tenants through the gateway", () => {
    let env: Env;
    let c: Client;
    let a: Awaited<ReturnType<Client["createTenant"]>>;
    let b: Awaited<ReturnType<Client["createTenant"]>>;
    /** This block's own pool, so the blocks asserted are not another supervisor's to take. */
    let pool: Cidr;

    before(async () => {
      pool = await privatePool();
      env = await makeEnv({}, "in-process", pool);
      c = await start(env);
      a = await c.createTenant({ id: "tga", labels: { plan: "pro" } });
      b = await c.createTenant({ id: "tgb", template: "workspace", limits: { max_vms: 5 } });
    });
    after(async () => { await cleanup(env); });

    it("gives each tenant its own blocks, socket and a pdk_ token shown once", async () => {
      expect(a.token).to.match(/^pdk_/);
      expect(a.ranges.map((r) => r.cidr)).to.deep.equal([block24(pool, 0)]);
      expect(b.ranges.map((r) => r.cidr)).to.deep.equal([block24(pool, 1), block24(pool, 2)]);
      const got = await c.admin("GET", "/tenants/tga");
      expect(got.text).to.not.include(a.token);
      expect(got.json).to.deep.include({ status: "active" });
      const reg = await fs.readFile(path.join(env.stateDir, "supervisor/registry.json"), "utf8");
      expect(reg).to.not.include(a.token);
      const cfg = await fs.readFile(path.join(env.stateDir, "tenants/tgb/config.yaml"), "utf8");
      expect(cfg).to.include("max_vms: 5").and.include("169.254.169.254/32");
    });

    it("admin API reads a JSON body whatever its Content-Type, never runs on defaults instead", async () => {
      for (const type of [undefined, "text/plain", "application/x-www-form-urlencoded"]) {
        const r = await request(c.sup.adminTarget(), "POST", "/admin/v1/tenants", JSON.stringify({ id: "tgx", template: "nonexistent" }), {
          authorization: `Bearer ${c.adminToken}`, ...(type !== undefined ? { "content-type": type } : {}),
        });
        expect(r.status, `${String(type)}: ${r.text}`).to.equal(400);
        expect(r.json, String(type)).to.include({ code: "ERR_TEMPLATE_NOT_FOUND" });
      }
      expect((await c.admin("GET", "/tenants")).text).to.not.include("tgx");
    });

    it("a too-large admin body is 413 ERR_BODY_TOO_LARGE naming the limit in bytes", async () => {
      const r = await c.admin("POST", "/tenants", { id: "tgy", labels: { pad: "x".repeat(300 * 1024) } });
      expect(r.status, r.text).to.equal(413);
      expect(r.json).to.deep.equal({ error: "request body is too large: at most 262144 bytes", code: "ERR_BODY_TOO_LARGE" });
    });

    it("each token only reaches its own daemon, whatever the path", async () => {
      expect((await c.gw("POST", "/hostgroup/sbox/nodes", a.token, {})).status).to.equal(201);
      expect((await c.gw("POST", "/hostgroup/sbox/nodes", b.token, {})).status).to.equal(201);
      const la = (await c.gw("GET", "/nodes", a.token)).json as Array<{ hostname: string }>;
      expect(la.map((n) => n.hostname)).to.deep.equal(["sbox-1"]);
      for (const p of ["/vm/sbox-1/exec?cmd=id", "/vm/..%2F..%2Ftgb%2Fapi.sock/exec", "//vm//sbox-1/../../x", "/vm/%2e%2e/%2e%2e/tenants/tgb"]) {
        const r = await c.gw("GET", p, a.token);
        expect((r.json as { tenant: string }).tenant, p).to.equal("tga");
        expect((r.json as { url: string }).url, "path forwarded unchanged").to.equal(p);
      }
    });

    it("removes the token, strips client X-Forwarded-* and sets its own, with a request id", async () => {
      const r = await c.gw("POST", "/echo?x=1", a.token, "hello", { "x-forwarded-for": "6.6.6.6", "x-real-ip": "6.6.6.6", forwarded: "for=6.6.6.6", "x-request-id": "mine" });
      const e = r.json as { headers: Record<string, string>; body_bytes: number; method: string };
      expect(e.method).to.equal("POST");
      expect(e.body_bytes).to.equal(5);
      expect(e.headers.authorization).to.equal(undefined);
      expect(e.headers["x-forwarded-for"]).to.equal("127.0.0.1");
      expect(e.headers["x-real-ip"]).to.equal(undefined);
      expect(e.headers.forwarded).to.equal(undefined);
      expect(e.headers["x-request-id"]).to.match(/^[0-9a-f-]{36}$/).and.equal(r.headers["x-request-id"]);
    });

    it("passes the daemon's answer on as sent: status, reason, every header line, plus its request id", async () => {
      const raw = await rawHttp(c.sup.gatewayTarget(), `GET /fixture/headers-out HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${a.token}\r\nConnection: close\r\n\r\n`);
      const head = raw.slice(0, raw.indexOf("\r\n\r\n")).split("\r\n");
      expect(head[0]).to.equal("HTTP/1.1 299 Fixture Reason");
      const lines = head.slice(1).map((l) => l.toLowerCase());
      expect(lines.filter((l) => l.startsWith("set-cookie:"))).to.deep.equal(["set-cookie: a=1", "set-cookie: b=2"]);
      expect(lines).to.include("x-fixture: yes");
      expect(lines.filter((l) => l.startsWith("x-request-id:"))).to.have.length(1);
      expect(raw.slice(raw.indexOf("\r\n\r\n") + 4)).to.equal("7\r\nheaders\r\n0\r\n\r\n");
    });

    it("HTTP/1.0 clients, bodyless DELETE and repeated request headers are forwarded like http-proxy did", async () => {
      const gw = c.sup.gatewayTarget();
      const r10 = await rawHttp(gw, `GET /echo HTTP/1.0\r\nHost: gw\r\nAuthorization: Bearer ${a.token}\r\nX-Dup: one\r\nX-Dup: two\r\n\r\n`);
      const head = r10.slice(0, r10.indexOf("\r\n\r\n")).toLowerCase();
      expect(head).to.match(/^http\/1\.1 200/);
      expect(head).to.include("connection: close");
      expect(head).to.not.include("transfer-encoding");
      const echoed = JSON.parse(r10.slice(r10.indexOf("\r\n\r\n") + 4)) as { headers: Record<string, string> };
      expect(echoed.headers["x-dup"]).to.equal("one, two");
      const del = (await c.gw("DELETE", "/echo", a.token)).json as { method: string; headers: Record<string, string> };
      expect(del.method).to.equal("DELETE");
      expect(del.headers["content-length"]).to.equal("0");
    });

    it("a daemon that drops the connection mid-answer resets the client's connection (the answer is cut, not hung)", async () => {
      const { host, port } = c.sup.gatewayTarget();
      const outcome = await new Promise<{ firstChunk: string; ended: boolean; error: string }>((resolve) => {
        let firstChunk = "";
        const req = http.request({ host, port, path: "/fixture/cut", headers: { authorization: `Bearer ${a.token}` } }, (res) => {
          res.on("data", (d: Buffer) => { firstChunk += d.toString(); });
          res.on("end", () => resolve({ firstChunk, ended: true, error: "" }));
          res.on("error", (err) => resolve({ firstChunk, ended: false, error: err.message }));
        });
        req.on("error", (err) => resolve({ firstChunk, ended: false, error: err.message }));
        req.end();
        setTimeout(() => { resolve({ firstChunk, ended: false, error: "hung: still open after 10 s" }); req.destroy(); }, 10_000).unref();
      });
      expect(outcome.firstChunk).to.equal('{"part":1}\n');
      expect(outcome.ended, "a cut answer must not look complete").to.equal(false);
      expect(outcome.error).to.match(/aborted|socket hang up|ECONNRESET/);
    });

    it("401 with one body for missing, unknown, malformed, revoked and expired tokens", async () => {
      const t2 = await c.admin("POST", "/tenants/tga/tokens", {});
      expect(t2.status).to.equal(201);
      const second = t2.json as { id: string; token: string };
      // Rotation with overlap: both tokens work.
      expect((await c.gw("GET", "/nodes", second.token)).status).to.equal(200);
      expect((await c.gw("GET", "/nodes", a.token)).status).to.equal(200);
      expect((await c.admin("DELETE", `/tenants/tga/tokens/${second.id}`)).status).to.equal(204);
      // Again: still revoked (idempotent), and the answer says it already was, and since when.
      const again = await c.admin("DELETE", `/tenants/tga/tokens/${second.id}`);
      expect(again.status, again.text).to.equal(200);
      const revokedAt = ((await c.admin("GET", "/tenants/tga")).json as { tokens: Array<{ id: string; revoked_at?: string }> }).tokens.find((k) => k.id === second.id)?.revoked_at;
      expect(again.json).to.deep.equal({ id: second.id, revoked_at: revokedAt, already_revoked: true });
      const short = (await c.admin("POST", "/tenants/tga/tokens", { expires_in_seconds: 1 })).json as { token: string };
      expect((await c.gw("GET", "/nodes", short.token)).status).to.equal(200);
      await sleep(1100);
      const bodies = new Set<string>();
      for (const tok of [undefined, "pdk_unknown", "garbage token", second.token, short.token, b.token + "x"]) {
        const r = await c.gw("GET", "/nodes", tok);
        expect(r.status, String(tok)).to.equal(401);
        bodies.add(r.text);
      }
      expect([...bodies]).to.have.length(1);
      expect(JSON.parse([...bodies][0] as string)).to.deep.equal({ error: "missing, invalid, expired or revoked token", code: "ERR_AUTH_REQUIRED" });
      expect((await c.gw("GET", "/nodes", a.token)).status).to.equal(200);
    });

    it("suspend answers 403 ERR_TENANT_SUSPENDED and pauses the VMs; resume undoes both", async () => {
      const s = await c.admin("POST", "/tenants/tgb/suspend", { reason: "invoice overdue" });
      expect(s.status, s.text).to.equal(200);
      expect(s.json).to.deep.include({ status: "suspended", status_reason: "invoice overdue", paused_vms: ["sbox-1"] });
      const r = await c.gw("GET", "/nodes", b.token);
      expect(r.status).to.equal(403);
      expect((r.json as { code: string }).code).to.equal("ERR_TENANT_SUSPENDED");
      const direct = await request({ socketPath: b.socket_path }, "GET", "/nodes");
      expect((direct.json as Array<{ status: string }>).map((n) => n.status)).to.deep.equal(["Paused"]);
      expect((await c.gw("GET", "/nodes", a.token)).status, "other tenant unaffected").to.equal(200);
      expect((await c.admin("POST", "/tenants/tgb/resume")).status).to.equal(200);
      const after = await c.gw("GET", "/nodes", b.token);
      expect(after.status).to.equal(200);
      expect((after.json as Array<{ status: string }>).map((n) => n.status)).to.deep.equal(["Running"]);
    });

    it("streams NDJSON incrementally and propagates a client abort to the daemon", async () => {
      const { host, port } = c.sup.gatewayTarget();
      const firstChunk = await new Promise<{ text: string; ended: boolean }>((resolve, reject) => {
        const req = http.request({ host, port, path: "/fixture/stream?n=100&ms=100", headers: { authorization: `Bearer ${a.token}` } }, (res) => {
          let ended = false;
          res.on("end", () => { ended = true; });
          res.once("data", (chunk: Buffer) => {
            resolve({ text: chunk.toString(), ended });
            req.destroy();
          });
        });
        req.on("error", (err) => { if (!req.destroyed) reject(err); });
        req.end();
      });
      expect(firstChunk.ended).to.equal(false);
      expect(firstChunk.text.trim().split("\n")).to.have.length(1);
      await until("the daemon to see the abort", async () => {
        const s = (await request({ socketPath: a.socket_path }, "GET", "/fixture/stats")).json as { aborts: number };
        return s.aborts >= 1 ? true : undefined;
      });
    });

    it("authenticates WebSocket upgrades the same way and relays frames", async () => {
      const url = `ws://${c.sup.gateway}/vm/sbox-1/shell`;
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${a.token}` } });
      const hello = await new Promise<string>((resolve, reject) => { ws.once("message", (d: Buffer) => resolve(d.toString())); ws.once("error", reject); });
      expect(JSON.parse(hello)).to.deep.equal({ tenant: "tga", url: "/vm/sbox-1/shell", authorization: null });
      ws.send(Buffer.from([1, 0, 0, 0, 1, 0x41]));
      const echo = await new Promise<Buffer>((resolve) => ws.once("message", (d: Buffer) => resolve(d)));
      expect([...echo]).to.deep.equal([1, 0, 0, 0, 1, 0x41]);
      ws.close();
      const denied = new WebSocket(url, { headers: { authorization: "Bearer pdk_nope" } });
      const status = await new Promise<number>((resolve) => {
        denied.once("unexpected-response", (_req, res) => { resolve(res.statusCode ?? 0); res.resume(); });
        denied.once("error", () => undefined);
      });
      expect(status).to.equal(401);
    });

    it("audits admin actions and tenants' VM creates; filters tenants; serves metrics", async () => {
      const audit = (await c.admin("GET", "/audit?tenant=tga")).json as Array<{ actor: string; action: string; status?: number }>;
      expect(audit.map((e) => e.action)).to.include.members(["tenant.create", "vm.create", "token.issue", "token.revoke"]);
      expect(audit.find((e) => e.action === "vm.create")).to.deep.include({ actor: "tenant:tga", status: 201 });
      const list = (await c.admin("GET", "/tenants?label=plan=pro")).json as Array<{ id: string }>;
      expect(list.map((t) => t.id)).to.deep.equal(["tga"]);
      expect(((await c.admin("GET", "/tenants?status=suspended")).json as unknown[]).length).to.equal(0);
      const m = await request(c.sup.adminTarget(), "GET", "/metrics", undefined, { authorization: `Bearer ${c.adminToken}` });
      expect(m.text).to.include('paddock_tenants{status="active"} 2').and.include('paddock_gateway_requests_total{tenant="tga",code="200"}');
      expect((await c.admin("GET", "/tenants", undefined, "wrong")).status).to.equal(401);
      // A known path with another method is 405 naming what it takes; an unknown path stays 404.
      const put = await c.admin("PUT", "/tenants");
      expect(put.status).to.equal(405);
      expect(put.json).to.include({ code: "ERR_METHOD_NOT_ALLOWED", error: "method PUT not allowed on /admin/v1/tenants" });
      expect(put.headers.allow).to.equal("GET, HEAD, POST");
      expect((await c.admin("POST", "/tenants/tga/logs")).headers.allow).to.equal("GET, HEAD");
      expect((await c.admin("GET", "/tenants/tga/nope")).status).to.equal(404);
      const logs = (await c.admin("GET", "/tenants/tga/logs?lines=5")).json as { lines: string[] };
      expect(logs.lines.join("\n")).to.include("echo daemon ready");
    });

    it("PATCH updates labels and re-renders limits for the next restart", async () => {
      const r = await c.admin("PATCH", "/tenants/tga", { labels: { plan: null, team: "x" }, limits: { max_vcpu: 4 } });
      expect(r.status, r.text).to.equal(200);
      expect(r.json).to.deep.include({ labels: { team: "x" }, pending_restart: true });
      expect(await fs.readFile(path.join(env.stateDir, "tenants/tga/config.yaml"), "utf8")).to.include("max_vcpu: 4");
      expect((await c.admin("PATCH", "/tenants/tga", { limits: { max_vms: -1 } })).status).to.equal(400);
    });

    it("a new tenant's block skips the range of a tenant table outside the registry (a standalone daemon's)", async () => {
      // The next free block is the pool's fourth (tga, tgb hold the first three): a foreign table claims it.
      const table = `paddock-pdkgw${process.pid}`;
      await runNft(`add table inet ${table}\nadd set inet ${table} own_ranges { type ipv4_addr; flags interval; }\nadd element inet ${table} own_ranges { ${block24(pool, 3)} }\n`);
      try {
        const t = await c.createTenant({ id: "tgr" });
        expect(t.ranges.map((r) => r.cidr)).to.deep.equal([block24(pool, 4)]);
        expect((await c.admin("DELETE", "/tenants/tgr")).status).to.equal(204);
        // Control: without the table the same block is handed out.
        await runNft(`delete table inet ${table}\n`);
        const u = await c.createTenant({ id: "tgs" });
        expect(u.ranges.map((r) => r.cidr)).to.deep.equal([block24(pool, 3)]);
        expect((await c.admin("DELETE", "/tenants/tgs")).status).to.equal(204);
      } finally {
        await runNft(`delete table inet ${table}\n`).catch(() => undefined);
      }
    });
  });

  describe("process manager", () => {
    let env: Env;
    let c: Client | undefined;
    afterEach(async () => {
      for (const k of Object.keys(process.env)) if (k.startsWith("PDK_FIXTURE_MODE_")) delete process.env[k];
      await cleanup(env);
      c = undefined;
    });

    it("kill -9 of a daemon: 503 with Retry-After meanwhile, then restarted", async () => {
      env = await makeEnv({ initial_backoff_ms: 1500, max_backoff_ms: 3000 });
      c = await start(env);
      const t = await c.createTenant({ id: "tpk" });
      process.kill(t.daemon.pid, "SIGKILL");
      const down = await until("503", async () => {
        const r = await c!.gw("GET", "/nodes", t.token);
        return r.status === 503 ? r : undefined;
      });
      expect(down.headers["retry-after"]).to.equal("2");
      expect((down.json as { code: string }).code).to.equal("ERR_TENANT_UNAVAILABLE");
      await until("restart", async () => ((await c!.gw("GET", "/nodes", t.token)).status === 200 ? true : undefined));
      const info = (await c.admin("GET", "/tenants/tpk")).json as { daemon: { pid: number; restarts: number; state: string } };
      expect(info.daemon.state).to.equal("running");
      expect(info.daemon.restarts).to.equal(1);
      expect(info.daemon.pid).to.not.equal(t.daemon.pid);
    });

    it("a crash loop marks the tenant failed; restart through the admin API recovers it", async () => {
      env = await makeEnv({ max_crashes: 3 });
      c = await start(env);
      process.env.PDK_FIXTURE_MODE_tcl = "crash";
      const t = await c.createTenant({ id: "tcl" });
      const failed = await until("failed", async () => {
        const r = (await c!.admin("GET", "/tenants/tcl")).json as { status: string; status_reason?: string; daemon: { state: string } };
        return r.status === "failed" ? r : undefined;
      });
      expect(failed.daemon.state).to.equal("failed");
      expect(failed.status_reason).to.match(/crash loop/);
      expect((await c.gw("GET", "/nodes", t.token)).status).to.equal(503);
      // Suspending it is refused (no daemon to pause; a resume would have made it active with none).
      const s = await c.admin("POST", "/tenants/tcl/suspend", { reason: "maintenance" });
      expect(s.status, s.text).to.equal(400);
      expect(s.json).to.deep.include({ code: "ERR_TENANT_INVALID" });
      expect((await c.admin("GET", "/tenants/tcl")).json).to.deep.include({ status: "failed", status_reason: failed.status_reason });
      delete process.env.PDK_FIXTURE_MODE_tcl;
      const r = await c.admin("POST", "/tenants/tcl/restart");
      expect(r.status, r.text).to.equal(200);
      expect(r.json).to.deep.include({ status: "active" });
    });

    it("a daemon that fails to start reports its stderr; the tenant is failed", async () => {
      env = await makeEnv();
      c = await start(env);
      process.env.PDK_FIXTURE_MODE_tfs = "fail";
      const r = await c.admin("POST", "/tenants", { id: "tfs" });
      expect(r.status).to.equal(500);
      expect(r.json).to.deep.include({ code: "ERR_DAEMON_START_FAILED", tenant: "tfs" });
      expect(r.json, "a fixture writing plain text has no daemon code").not.to.have.property("daemon_code");
      expect((r.json as { error: string }).error).to.include("refuses to start").and.include("exit 3");
      expect(((await c.admin("GET", "/tenants/tfs")).json as { status: string }).status).to.equal("failed");
      // It cannot be suspended (and so not resumed into `active` with no daemon); delete still works.
      const s = await c.admin("POST", "/tenants/tfs/suspend", {});
      expect(s.status, s.text).to.equal(400);
      expect((s.json as { error: string }).error).to.include("tenant tfs is failed").and.include("restart or delete it");
      expect(((await c.admin("GET", "/tenants/tfs")).json as { status: string }).status).to.equal("failed");
      expect((await c.admin("DELETE", "/tenants/tfs")).status).to.equal(204);
      expect((await c.admin("GET", "/tenants/tfs")).status).to.equal(404);
    });

    it("a request cut by the tenant's delete gets 404 ERR_TENANT_NOT_FOUND, not a retryable 503", async () => {
      env = await makeEnv();
      c = await start(env);
      const t = await c.createTenant({ id: "tdr" });
      const pending = c.gw("GET", "/fixture/slow?ms=30000", t.token);
      await sleep(300);
      expect((await c.admin("DELETE", "/tenants/tdr")).status).to.equal(204);
      const r = await pending;
      expect(r.status, r.text).to.equal(404);
      expect(r.json).to.include({ code: "ERR_TENANT_NOT_FOUND" });
      expect(r.headers["retry-after"]).to.equal(undefined);
    });

    it("delete stops the daemon, purges, removes its dirs and frees its block (idempotent)", async () => {
      env = await makeEnv();
      c = await start(env);
      const t = await c.createTenant({ id: "tdl" });
      expect((await c.admin("DELETE", "/tenants/tdl")).status).to.equal(204);
      expect((await c.admin("DELETE", "/tenants/tdl")).status).to.equal(204);
      expect(pidAlive(t.daemon.pid)).to.equal(false);
      expect(await fs.readFile(env.purgeLog, "utf8")).to.include("tdl ");
      expect(await fs.readdir(path.join(env.stateDir, "tenants"))).to.deep.equal([]);
      expect(await fs.readdir(path.join(env.runDir, "tenants"))).to.deep.equal([]);
      expect((await c.admin("GET", "/tenants/tdl")).status).to.equal(404);
      expect((await c.gw("GET", "/nodes", t.token)).status).to.equal(401);
      const again = await c.createTenant({ id: "tdm" });
      expect(again.ranges[0]?.cidr).to.equal(t.ranges[0]?.cidr);
    });

    it("a tenant id a standalone daemon holds: its state dir is no leftover at start, and a create of that id is 409 ERR_TENANT_ID_IN_USE", async () => {
      env = await makeEnv();
      // The standalone daemon is played by this process holding the id's host-global lock.
      const id = `solo${process.pid.toString(36)}`.slice(0, 12);
      const held = path.join(env.stateDir, "tenants", id);
      const gone = path.join(env.stateDir, "tenants", "zleftover");
      await fs.mkdir(held, { recursive: true });
      await fs.writeFile(path.join(held, "state.json"), "{}");
      await fs.mkdir(gone, { recursive: true });
      const release = await acquireTenantIdLock({ tenantId: id, configPath: path.join(env.sup.dir, "solo.yaml"), purpose: "serve" });
      try {
        c = await start(env);
        expect(await fs.readFile(path.join(held, "state.json"), "utf8")).to.equal("{}");
        // Control: a directory no live daemon holds is removed as a leftover.
        expect(existsSync(gone)).to.equal(false);
        const r = await c.admin("POST", "/tenants", { id });
        expect([r.status, (r.json as { code?: string }).code], r.text).to.deep.equal([409, "ERR_TENANT_ID_IN_USE"]);
        expect(await fs.readFile(path.join(held, "state.json"), "utf8")).to.equal("{}");
        expect((await c.admin("GET", `/tenants/${id}`)).status).to.equal(404);
      } finally {
        await release();
      }
    });

    it("kill -9 of the supervisor: the next one adopts the live daemon (same pid, VMs intact)", async () => {
      env = await makeEnv({}, "child");
      const sup = env.sup;
      await sup.start();
      const adm = (m: string, p: string, body?: unknown) => sup.adminReq(m, p, body, { "content-type": "application/json" });
      const created = await adm("POST", "/tenants", { id: "tad" });
      expect(created.status, created.text).to.equal(201);
      const t = created.json as { token: string; socket_path: string; daemon: { pid: number; started_at: string; version?: string } };
      // The daemon's build, as the supervisor's (one build: shared/build-info.ts).
      const host = (await adm("GET", "/host")).json as { supervisor?: { version?: string } };
      expect(host.supervisor?.version).to.match(/^\d+\.\d+\.\d+\+[0-9a-f]{12}$/);
      expect(t.daemon.version).to.equal(host.supervisor?.version);
      await request({ socketPath: t.socket_path }, "POST", "/hostgroup/sbox/nodes", {});
      const killedAt = Date.now();
      await sup.kill9();
      expect(pidAlive(t.daemon.pid), "daemon survives the supervisor").to.equal(true);
      // The ownership lock of the killed supervisor goes stale; the new one waits for it.
      await sup.start();
      const info = await until("adoption", async () => {
        const r = await adm("GET", "/tenants/tad").catch(() => undefined);
        return r?.status === 200 ? (r.json as { daemon: { pid: number; state: string; started_at: string; uptime_seconds: number; version?: string }; vms: { total: number } | null }) : undefined;
      }, 60_000);
      expect(info.daemon.state).to.equal("running");
      expect(info.daemon.pid).to.equal(t.daemon.pid);
      // Start time and uptime are the process's (/proc), not the adoption's; the build is the one recorded at its spawn.
      const startedMs = Date.parse(info.daemon.started_at);
      expect(Math.abs(startedMs - Date.parse(t.daemon.started_at)), `${info.daemon.started_at} vs ${t.daemon.started_at}`).to.be.at.most(1000);
      expect(startedMs).to.be.below(killedAt);
      // uptime_seconds counts from started_at (whole seconds, read just before the answer).
      expect(Math.abs(info.daemon.uptime_seconds * 1000 - (Date.now() - startedMs))).to.be.at.most(3000);
      expect(info.daemon.version).to.equal(t.daemon.version);
      expect(info.vms?.total).to.equal(1);
      await sup.stop();
      expect(pidAlive(t.daemon.pid), "a stopping supervisor leaves daemons running").to.equal(true);
    });
  });
});
