/**
 * The reverse agent channel (tenant-daemon/agent/reverse-transport.ts and
 * tenant-daemon/agent-client/agent-dial-pool.ts) with the REAL agent bundle (dist/toolbox/agent.cjs)
 * running as a host process in dial mode, behind the daemon's agent router and WebSocket
 * handler: health, buffered and streaming exec, cp, a shell session, 10 requests in parallel,
 * the agent restarting, answers without the VM's proof (from the agent itself and from a
 * stranger process on the listener) refused, the listener's ownership, and teardown.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { encodeFrame, FrameType } from "../../shared/slicer/shell-frames.js";
import { AgentDialPool } from "../../tenant-daemon/agent-client/agent-dial-pool.js";
import type { AgentEndpoint } from "../../tenant-daemon/agent-client/agent-endpoint.js";
import { agentHealth } from "../../tenant-daemon/agent-client/agent-http.js";
import { createAgentRouter } from "../../tenant-daemon/api/agent-routes.js";
import { createApiServer } from "../../tenant-daemon/api/http-util.js";
import { createAgentUpgradeHandler, type AgentUpgradeHandler } from "../../tenant-daemon/api/ws-upgrade.js";
import { SecretStore } from "../../tenant-daemon/secrets/secret-store.js";
import { VmPaths } from "../../tenant-daemon/vm/vm-paths.js";
import type { VmRecord } from "../../tenant-daemon/vm/vm-types.js";
import type { PaddockSettings } from "../../shared/tenant-config.js";
import { call, ndjson, startTestAgent, type TestAgent } from "./agent-fixture.js";

/** Resolves once `cond()` holds, checked whenever `pool` may have changed (every 20 ms). */
async function eventually(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1500; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`never happened: ${what}`);
}

/**
 * A process that is not the agent: it dials `socketPath` once and answers whatever request
 * comes with a 200 JSON health answer without any proof header. Resolves once it is connected.
 */
async function startStranger(socketPath: string): Promise<ChildProcess> {
  const src = `
    const net = require("node:net");
    const s = net.connect(${JSON.stringify(socketPath)}, () => process.stdout.write("connected\\n"));
    s.on("data", () => {
      const body = JSON.stringify({ hostname: "stranger", agent_uptime: 1, userdata_ran: true, stolen: "leak" });
      s.end("HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: " + body.length + "\\r\\nConnection: close\\r\\n\\r\\n" + body);
    });
    s.on("close", () => process.exit(0));`;
  const proc = spawn(process.execPath, ["-e", src], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout?.on("data", (c: Buffer) => {
      if (c.toString().includes("connected")) resolve();
    });
    proc.once("exit", (code) => reject(new Error(`stranger exited with ${code}`)));
  });
  return proc;
}

describe("reverse agent channel: the agent bundle dials a host pool (agent-reverse)", function () {
  this.timeout(120_000);
  let dir: string;
  let dialPath: string;
  let pool: AgentDialPool;
  let agent: TestAgent;
  let endpoint: AgentEndpoint;
  const proof = randomBytes(32).toString("hex");
  let api: http.Server;
  let apiSock: string;
  let wsServer: http.Server;
  let wsHandler: AgentUpgradeHandler;
  let wsPort = 0;
  const extra: Array<() => Promise<void>> = [];

  const startAgent = (): Promise<TestAgent> => startTestAgent({ dial: dialPath, bundle: true, proof, defaultUser: null });

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-reverse-"));
    dialPath = path.join(dir, "vms", "vm-1", "agent-dial", "agent.sock");
    pool = await AgentDialPool.listen({ hostname: "vm-1", socketPath: dialPath });
    agent = await startAgent();
    endpoint = { hostname: "vm-1", socketPath: dialPath, proof, dial: pool };
    apiSock = path.join(dir, "api.sock");
    const secrets = new SecretStore(path.join(dir, "state", "secrets"));
    const app = createApiServer(createAgentRouter({
      resolveAgent: (h) => {
        if (h === "vm-1") return endpoint;
        if (h === "vm-other") return { ...endpoint, hostname: "vm-other", proof: "ab".repeat(32) };
        throw new PaddockError("ERR_VM_NOT_FOUND", `VM ${h} not found`);
      },
      secrets,
      logger: silentLogger,
    }));
    api = await new Promise<http.Server>((resolve) => {
      const s = app.listen(apiSock, () => resolve(s));
    });
    wsHandler = createAgentUpgradeHandler({ authToken: undefined, logger: silentLogger, resolveAgent: () => endpoint });
    wsServer = http.createServer((_req, res) => res.end());
    wsServer.on("upgrade", (req, socket, head) => wsHandler.handle(req, socket, head as Buffer));
    await new Promise<void>((resolve) => wsServer.listen(0, "127.0.0.1", resolve));
    wsPort = (wsServer.address() as AddressInfo).port;
  });

  after(async () => {
    wsHandler?.closeAll();
    await new Promise<void>((resolve) => (wsServer ? wsServer.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (api ? api.close(() => resolve()) : resolve()));
    api?.closeAllConnections();
    for (const f of extra) await f().catch(() => undefined);
    await pool?.close();
    await agent?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("answers health over dialed connections; the agent does not listen anywhere", async () => {
    const h = await agentHealth(endpoint, 10_000);
    expect(h.hostname).to.equal("test-vm-1");
    const g = await call(apiSock, "GET", "/vm/vm-1/health");
    expect(g.status).to.equal(200);
    expect(g.headers["x-paddock-agent-proof"]).to.equal(undefined);
    expect(existsSync(path.join(agent.dir, "agent.sock")), "no agent listener in dial mode").to.equal(false);
    expect(agent.output()).to.include(`dialing ${dialPath}`);
    // The agent keeps a small pool of idle connections open, refilled after every request.
    await eventually(() => pool.idleCount() === 3, "3 idle connections");
  });

  it("runs a buffered exec and a streaming exec with stdin", async () => {
    const b = await call(apiSock, "POST", "/vm/vm-1/exec?cmd=echo&args=over-reverse&buffered=true");
    expect(b.status).to.equal(200);
    expect(b.json()).to.include({ exit_code: 0 });
    expect(b.text).to.include("over-reverse");
    const s = ndjson((await call(apiSock, "POST", "/vm/vm-1/exec?cmd=cat&stdin=true&stdio=base64", { body: "via dial\n" })).text);
    expect(Buffer.from(s[1]?.stdout as string, "base64").toString()).to.equal("via dial\n");
    expect(s.at(-1)).to.include({ type: "exit", exit_code: 0 });
  });

  it("copies 8 MiB in and out byte-identically", async () => {
    const data = randomBytes(8 << 20);
    const dest = path.join(agent.dir, "rev.bin");
    const up = await call(apiSock, "POST", `/vm/vm-1/cp?path=${encodeURIComponent(dest)}&mode=binary`, { body: data });
    expect(up.status, up.text).to.equal(200);
    expect(readFileSync(dest).equals(data)).to.equal(true);
    const down = await call(apiSock, "GET", `/vm/vm-1/cp?path=${encodeURIComponent(dest)}&mode=binary`);
    expect(down.status).to.equal(200);
    expect(down.body.equals(data)).to.equal(true);
  });

  it("runs a WebSocket shell session until SessionClose", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${wsPort}/vm/vm-1/shell?uid=0&shell=/bin/sh`);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    let out = "";
    let sessionClosed = false;
    const closed = new Promise<number>((resolve) => ws.once("close", (c: number) => resolve(c)));
    const saw42 = new Promise<void>((resolve) =>
      ws.on("message", (d: Buffer) => {
        if (d[0] === FrameType.Data) out += d.subarray(5).toString();
        if (d[0] === FrameType.SessionClose) sessionClosed = true;
        if (/rev-42/.test(out)) resolve();
      }),
    );
    ws.send(encodeFrame(FrameType.Data, Buffer.from("echo rev-$((6*7))\n")));
    await saw42;
    ws.send(encodeFrame(FrameType.Data, Buffer.from("exit\n")));
    expect(await closed).to.equal(1000);
    expect(sessionClosed).to.equal(true);
  });

  it("serves 10 requests in parallel, each on its own connection", async () => {
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => call(apiSock, "POST", `/vm/vm-1/exec?cmd=echo&args=par-${i}&buffered=true`)),
    );
    answers.forEach((a, i) => {
      expect(a.status).to.equal(200);
      expect(a.text).to.include(`par-${i}`);
    });
    await eventually(() => pool.idleCount() === 3, "the pool refilled to 3 idle connections");
  });

  it("refuses the agent's answers when they do not carry the expected proof", async () => {
    const bad = await call(apiSock, "POST", "/vm/vm-other/exec?cmd=echo&args=leak&buffered=true");
    expect(bad.status).to.equal(503);
    expect(bad.json()).to.include({ code: "ERR_VM_AGENT_UNAVAILABLE" });
    expect(bad.text).to.not.include("leak");
  });

  it("recovers when the agent restarts; a request made meanwhile waits for it; none arrives ⇒ 503", async () => {
    await agent.stop();
    await eventually(() => pool.openCount() === 0, "the dead agent's connections dropped");
    let failed: unknown;
    await agentHealth(endpoint, 300).catch((e: unknown) => (failed = e));
    expect((failed as PaddockError).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
    expect((failed as Error).message).to.match(/did not connect|timed out/);
    const pending = agentHealth(endpoint, 30_000);
    agent = await startAgent();
    const h = await pending;
    expect(h.hostname).to.equal("test-vm-1");
    const r = await call(apiSock, "POST", "/vm/vm-1/exec?cmd=echo&args=back&buffered=true");
    expect(r.text).to.include("back");
  });

  it("refuses a stranger process that dials the listener and answers without the proof", async () => {
    const strangerPath = path.join(dir, "vms", "vm-2", "agent-dial", "agent.sock");
    const strangerPool = await AgentDialPool.listen({ hostname: "vm-2", socketPath: strangerPath });
    extra.push(() => strangerPool.close());
    const strangerEndpoint: AgentEndpoint = { hostname: "vm-2", socketPath: strangerPath, proof, dial: strangerPool };
    const stranger = await startStranger(strangerPath);
    extra.push(async () => {
      stranger.kill("SIGKILL");
    });
    await eventually(() => strangerPool.idleCount() === 1, "the stranger's connection is idle in the pool");
    let failed: unknown;
    const answer = await agentHealth(strangerEndpoint, 5000).catch((e: unknown) => (failed = e));
    expect(answer).to.be.instanceOf(PaddockError);
    expect((failed as PaddockError).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
    expect((failed as Error).message).to.include("proof");
    // The same through the router: 503, nothing of the stranger's body reaches the client.
    const stranger2 = await startStranger(strangerPath);
    extra.push(async () => {
      stranger2.kill("SIGKILL");
    });
    await eventually(() => strangerPool.idleCount() === 1, "the second stranger's connection is idle");
    const app = createApiServer(createAgentRouter({ resolveAgent: () => strangerEndpoint, secrets: new SecretStore(path.join(dir, "state", "s2")), logger: silentLogger }));
    const sock2 = path.join(dir, "api2.sock");
    const srv = await new Promise<http.Server>((resolve) => {
      const s = app.listen(sock2, () => resolve(s));
    });
    try {
      const r = await call(sock2, "GET", "/vm/vm-2/health");
      expect(r.status).to.equal(503);
      expect(r.json()).to.include({ code: "ERR_VM_AGENT_UNAVAILABLE" });
      expect(r.text).to.not.include("leak");
    } finally {
      await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
  });

  it("drops a connection that talks while idle, and closes surplus connections", async () => {
    const p = path.join(dir, "vms", "vm-3", "agent-dial", "agent.sock");
    const small = await AgentDialPool.listen({ hostname: "vm-3", socketPath: p, maxIdle: 2 });
    extra.push(() => small.close());
    const socks = [0, 1, 2].map(() => net.connect(p));
    extra.push(async () => socks.forEach((s) => s.destroy()));
    socks.forEach((s) => s.on("error", () => undefined));
    const closed = socks.map((s) => new Promise<void>((resolve) => s.once("close", () => resolve())));
    // One of the three is over maxIdle and closed by the pool.
    await Promise.race(closed);
    expect(small.idleCount()).to.equal(2);
    // An idle connection that sends bytes (e.g. an answer planted ahead of a request) is dropped.
    const live = socks.filter((s) => !s.destroyed && !s.readableEnded);
    live[0]?.write("HTTP/1.1 200 OK\r\n\r\n");
    await eventually(() => small.idleCount() === 1, "the talking connection dropped");
    // The silent one is still handed out.
    const taken = await small.take(1000);
    expect(taken.remotePort === undefined && !taken.destroyed).to.equal(true);
    taken.destroy();
    let failed: unknown;
    await small.take(200).catch((e: unknown) => (failed = e));
    expect((failed as PaddockError).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
  });

  it("binds the socket for the VM's root uid only when given an owner", async function () {
    if (process.getuid?.() !== 0) this.skip();
    const p = path.join(dir, "vms", "vm-4", "agent-dial", "agent.sock");
    const owned = await AgentDialPool.listen({ hostname: "vm-4", socketPath: p, owner: { uid: 2_000_000, gid: 2_000_000 } });
    extra.push(() => owned.close());
    const st = statSync(p);
    expect([st.uid, st.gid, st.mode & 0o777]).to.deep.equal([2_000_000, 2_000_000, 0o600]);
    const ds = statSync(path.dirname(p));
    expect([ds.uid, ds.gid, ds.mode & 0o777]).to.deep.equal([0, 2_000_000, 0o710]);
    // Another uid (another tenant's range) cannot connect; the VM's root can.
    const tryAs = (uid: number): Promise<string> =>
      new Promise((resolve) => {
        const c = spawn(process.execPath, ["-e", `require("node:net").connect(${JSON.stringify(p)}).on("connect", () => { console.log("ok"); process.exit(0); }).on("error", (e) => { console.log(e.code); process.exit(0); })`], { uid, gid: uid, stdio: ["ignore", "pipe", "inherit"], cwd: "/" });
        let out = "";
        c.stdout?.on("data", (d: Buffer) => (out += d.toString()));
        c.once("exit", () => resolve(out.trim()));
      });
    // The temp dir's ancestors must be traversable for the test: mkdtemp makes 0700 dirs.
    const { chmodSync } = await import("node:fs");
    chmodSync(dir, 0o711);
    chmodSync(path.join(dir, "vms"), 0o711);
    chmodSync(path.join(dir, "vms", "vm-4"), 0o711);
    expect(await tryAs(3_000_000)).to.equal("EACCES");
    expect(await tryAs(2_000_000)).to.equal("ok");
  });

  it("VmPaths.endpoint picks the VM's pool while it has one, else the inherited listener's path", async () => {
    const paths = new VmPaths({ tenantId: "t1", runDir: path.join(dir, "run"), stateDir: path.join(dir, "state") } as PaddockSettings);
    const record = { hostname: "vm-5", agentProof: proof } as VmRecord;
    expect(paths.endpoint(record)).to.deep.equal({ hostname: "vm-5", socketPath: path.join(dir, "run", "vms", "vm-5", "agent.sock"), proof });
    const sock = paths.agentDialSocket("vm-5");
    expect(sock).to.equal(path.join(dir, "run", "vms", "vm-5", "agent-dial", "agent.sock"));
    await paths.dialPools.open({ hostname: "vm-5", socketPath: sock });
    extra.push(() => paths.dialPools.closeAll());
    const second = await startTestAgent({ dial: sock, bundle: true, proof, defaultUser: null });
    extra.push(() => second.stop());
    const ep = paths.endpoint(record);
    expect(ep.dial).to.equal(paths.dialPools.get("vm-5"));
    expect(ep.socketPath).to.equal(sock);
    expect((await agentHealth(ep, 10_000)).hostname).to.equal("test-vm-1");
    await paths.dialPools.close("vm-5");
    expect(paths.endpoint(record).dial).to.equal(undefined);
    expect(existsSync(sock)).to.equal(false);
  });

  it("teardown closes the listener and every connection and removes the socket", async () => {
    await eventually(() => pool.idleCount() > 0, "idle connections before teardown");
    await pool.close();
    expect(existsSync(dialPath), "socket file removed").to.equal(false);
    expect(pool.openCount()).to.equal(0);
    let failed: unknown;
    await pool.take(100).catch((e: unknown) => (failed = e));
    expect((failed as PaddockError).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
    const err = await new Promise<string>((resolve) => net.connect(dialPath).on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "")).on("connect", () => resolve("connected")));
    expect(err).to.equal("ENOENT");
    // The agent keeps retrying without a listener, but nothing is served.
    expect(agent.proc.exitCode).to.equal(null);
  });
});
