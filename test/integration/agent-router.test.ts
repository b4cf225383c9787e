/**
 * The daemon's agent router (tenant-daemon/api/agent-routes.ts) served alone on a Unix socket
 * (node:http with the API server's request classes), forwarding to a real agent process: streamed exec, cp, health, error mapping
 * (404 unknown VM or one deleted under its request, 409 paused, 503 agent down), secrets CRUD and their delivery to the VM.
 */
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, readFileSync, statSync, writeFileSync } from "node:fs";
import http, { type Server } from "node:http";
import os from "node:os";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { createAgentRouter } from "../../tenant-daemon/api/agent-routes.js";
import { createApiServer } from "../../tenant-daemon/api/http-util.js";
import { agentHealth, syncSecretsToAgent } from "../../tenant-daemon/agent-client/agent-http.js";
import { SecretStore } from "../../tenant-daemon/secrets/secret-store.js";
import { call, ndjson, startTestAgent, type TestAgent } from "./agent-fixture.js";

describe("daemon agent router (real agent behind it)", function () {
  let agent: TestAgent;
  let dir: string;
  let server: Server;
  let sock: string;
  let secrets: SecretStore;
  let goneAsked = false;
  /** vm-1's boot-time secret delivery, as the router sees it (settled unless a test holds it). */
  let settled: Promise<unknown> = Promise.resolve();

  before(async () => {
    agent = await startTestAgent();
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-router-"));
    sock = path.join(dir, "api.sock");
    secrets = new SecretStore(path.join(dir, "state", "secrets"));
    const app = createApiServer(
      createAgentRouter({
        resolveAgent: (h) => {
          if (h === "vm-1") return agent.endpoint;
          // The same agent, but the daemon expects another VM's proof: its answers must be refused.
          if (h === "vm-other") return { ...agent.endpoint, hostname: "vm-other", proof: "ab".repeat(32) };
          if (h === "vm-down") return { ...agent.endpoint, socketPath: path.join(dir, "no-agent.sock") };
          // Deleted while the request ran: found at first, its agent gone, then not found.
          if (h === "vm-gone" && !goneAsked) {
            goneAsked = true;
            return { ...agent.endpoint, hostname: "vm-gone", socketPath: path.join(dir, "no-agent.sock") };
          }
          if (h === "vm-paused") throw new PaddockError("ERR_VM_PAUSED", "VM vm-paused is paused");
          throw new PaddockError("ERR_VM_NOT_FOUND", `VM ${h} not found`);
        },
        secrets,
        logger: silentLogger,
        // vm-1's boot delivery ends when the test says so (the other VMs have none pending).
        secretsSettled: (h) => (h === "vm-1" ? settled : undefined),
      }),
    );
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(sock, () => resolve(s));
    });
  });
  after(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server?.closeAllConnections();
    await agent?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("forwards health (GET and HEAD) and agentHealth reads it", async () => {
    const g = await call(sock, "GET", "/vm/vm-1/health");
    expect(g.status).to.equal(200);
    expect((g.json() as Record<string, unknown>).hostname).to.equal("test-vm-1");
    expect((await call(sock, "HEAD", "/vm/vm-1/health")).status).to.equal(200);
    const h = await agentHealth(agent.endpoint, 2000);
    expect(h.agent_uptime).to.be.greaterThan(0);
    let failed: unknown;
    await agentHealth({ ...agent.endpoint, socketPath: path.join(dir, "no-agent.sock") }, 500).catch((e: unknown) => (failed = e));
    expect(failed).to.be.instanceOf(PaddockError);
  });

  it("refuses an answer without the VM's proof (503, header never passed on); the right proof passes", async () => {
    const bad = await call(sock, "POST", "/vm/vm-other/exec?cmd=echo&args=leak&buffered=true");
    expect(bad.status).to.equal(503);
    expect((bad.json() as Record<string, unknown>).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
    expect(bad.text).to.not.include("leak");
    let failed: unknown;
    await agentHealth({ ...agent.endpoint, proof: "ab".repeat(32) }, 2000).catch((e: unknown) => (failed = e));
    expect((failed as PaddockError).code).to.equal("ERR_VM_AGENT_UNAVAILABLE");
    // Positive control: the same request with the right proof runs, and the proof header is stripped.
    const good = await call(sock, "POST", "/vm/vm-1/exec?cmd=echo&args=leak&buffered=true");
    expect(good.status).to.equal(200);
    expect(good.text).to.include("leak");
    expect(good.headers["x-paddock-agent-proof"]).to.equal(undefined);
  });

  it("holds an exec until the VM's boot-time secret delivery has ended; health answers at once", async () => {
    const flag = path.join(dir, "secrets-landed");
    let land!: () => void;
    settled = new Promise<void>((resolve) => (land = resolve));
    try {
      const q = new URLSearchParams({ cmd: "/bin/sh", buffered: "true", uid: "0" });
      for (const a of ["-c", `cat ${flag}`]) q.append("args", a);
      const exec = call(sock, "POST", `/vm/vm-1/exec?${q.toString()}`);
      // Health is not held (clients poll it while a VM boots).
      expect((await call(sock, "GET", "/vm/vm-1/health")).status).to.equal(200);
      // What the delivery writes; the exec can only see it when it runs after the delivery.
      writeFileSync(flag, "landed");
      land();
      const r = await exec;
      expect(r.status, r.text).to.equal(200);
      expect(r.json()).to.include({ exit_code: 0, stdout: "landed" });
    } finally {
      land();
      settled = Promise.resolve();
    }
  });

  it("maps unknown, paused and unreachable VMs to 404, 409 and 503", async () => {
    const nf = await call(sock, "POST", "/vm/nope/exec?cmd=true");
    expect(nf.status).to.equal(404);
    expect(nf.json()).to.include({ code: "ERR_VM_NOT_FOUND" });
    expect((await call(sock, "GET", "/vm/vm-paused/cp?path=/x")).status).to.equal(409);
    const down = await call(sock, "GET", "/vm/vm-down/health");
    expect(down.status).to.equal(503);
    expect(down.json()).to.include({ code: "ERR_VM_AGENT_UNAVAILABLE" });
    // A VM deleted while its request ran: 404 (a 503 would tell the client to retry).
    const gone = await call(sock, "POST", "/vm/vm-gone/exec?cmd=true&buffered=true");
    expect(gone.status, gone.text).to.equal(404);
    expect(gone.json()).to.include({ code: "ERR_VM_NOT_FOUND", error: "VM vm-gone was deleted while this request ran" });
    expect((await call(sock, "PUT", "/vm/vm-1/exec")).status).to.equal(405);
    expect((await call(sock, "GET", "/vm/vm-1/unknown")).status).to.equal(404);
  });

  it("streams exec frames, stdin and agent errors through", async () => {
    const s = ndjson((await call(sock, "POST", "/vm/vm-1/exec?cmd=cat&stdin=true&stdio=base64", { body: "via router\n" })).text);
    expect(Buffer.from(s[1]?.stdout as string, "base64").toString()).to.equal("via router\n");
    expect(s.at(-1)).to.include({ type: "exit", exit_code: 0 });
    const bad = await call(sock, "POST", "/vm/vm-1/exec");
    expect(bad.status).to.equal(400);
    expect((bad.json() as Record<string, unknown>).error).to.contain("cmd");
    const bg = await call(sock, "POST", "/vm/vm-1/exec?background=true&cmd=true");
    expect(bg.status).to.equal(201);
    const id = (bg.json() as Record<string, unknown>).exec_id as string;
    expect((await call(sock, "GET", `/vm/vm-1/exec/${id}/wait-exit?timeout=30`)).status).to.equal(200);
    expect((await call(sock, "DELETE", `/vm/vm-1/exec/${id}`)).status).to.equal(200);
    expect((await call(sock, "GET", `/vm/vm-1/exec/${id}`)).status).to.equal(410);
  });

  it("a stdin exec whose command exits without reading its stdin answers, and the rest of the upload is taken and dropped", async () => {
    // 8 MiB: more than the pipes and socket buffers between the client and the command hold,
    // so the upload is still being sent when the answer ends. The control is the same upload
    // read by `wc -c`, which must see every byte.
    const body = randomBytes(8 << 20);
    const read = ndjson((await call(sock, "POST", "/vm/vm-1/exec?cmd=wc&args=-c&stdin=true", { body })).text);
    expect(read.filter((f) => f.type === "stdout").map((f) => String(f.stdout)).join("").trim()).to.equal(String(body.length));
    // The whole request must go: before the daemon took and dropped the rest of the body, the
    // agent stopped reading it, and the client's upload ended in ECONNRESET seconds later.
    const r = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      let answer: { status: number; text: string } | undefined;
      let sent = false;
      const done = (): void => {
        if (answer && sent) resolve(answer);
      };
      const rq = http.request({ socketPath: sock, method: "POST", path: "/vm/vm-1/exec?cmd=true&stdin=true" }, (rs) => {
        const parts: Buffer[] = [];
        rs.on("data", (c: Buffer) => parts.push(c));
        rs.on("end", () => {
          answer = { status: rs.statusCode ?? 0, text: Buffer.concat(parts).toString() };
          done();
        });
      });
      rq.on("error", reject);
      rq.on("finish", () => {
        // Written to the socket; an error after this (a reset) still rejects before `close`.
        rq.once("close", () => {
          sent = true;
          done();
        });
      });
      rq.end(body);
    });
    expect(r.status).to.equal(200);
    expect(ndjson(r.text).at(-1)).to.include({ type: "exit", exit_code: 0 });
  });

  it("exec /bin/true through the router: 20 runs in a row all exit 0 (its latency is figure 2 of npm run bench)", async () => {
    for (let i = 0; i < 20; i++) {
      const r = await call(sock, "POST", "/vm/vm-1/exec?cmd=/bin/true&buffered=true");
      expect((r.json() as Record<string, unknown>).exit_code, `run ${i}`).to.equal(0);
    }
  });

  it("copies 32 MiB in and out through the router byte-identically", async () => {
    const data = randomBytes(32 << 20);
    const dest = path.join(agent.dir, "via-router.bin");
    const up = await call(sock, "POST", `/vm/vm-1/cp?path=${encodeURIComponent(dest)}&mode=binary`, { body: data });
    expect(up.status, up.text).to.equal(200);
    const down = await call(sock, "GET", `/vm/vm-1/cp?path=${encodeURIComponent(dest)}`);
    expect(createHash("sha256").update(down.body).digest("hex")).to.equal(createHash("sha256").update(data).digest("hex"));
    expect((await call(sock, "GET", `/vm/vm-1/fs/stat?path=${encodeURIComponent(dest + ".none")}`)).status).to.equal(404);
  });

  it("implements secrets CRUD with the Slicer status codes", async () => {
    const post = (b: unknown) => call(sock, "POST", "/secrets", { body: JSON.stringify(b), headers: { "Content-Type": "application/json" } });
    expect((await post({ name: "s", data: "aGVsbG8=" })).status).to.equal(201);
    expect((await post({ name: "s", data: "aGVsbG8=" })).status).to.equal(409);
    expect((await post({ name: "a/b", data: "aGVsbG8=" })).status).to.equal(400);
    expect((await post({ name: "..", data: "aGVsbG8=" })).status).to.equal(400);
    expect((await post({ name: "x", data: "not base64!" })).status).to.equal(400);
    expect((await post({ name: "x" })).status).to.equal(400);
    expect((await post({ name: "own", data: "b3du", permissions: "0644", uid: 65534, gid: 65534 })).status).to.equal(201);
    const list = (await call(sock, "GET", "/secrets")).json() as Record<string, unknown>[];
    expect(list.map((s) => s.name)).to.deep.equal(["own", "s"]);
    expect(list[1]).to.include({ name: "s", size: 5, permissions: "0600", uid: 0, gid: 0 });
    expect(list[1]?.modified_at).to.equal(list[1]?.mod_time);
    expect(JSON.stringify(list)).to.not.contain("aGVsbG8");
    const patch = (n: string, b: unknown) => call(sock, "PATCH", `/secrets/${n}`, { body: JSON.stringify(b) });
    expect((await patch("s", { data: "", permissions: "0640" })).status).to.equal(200);
    let s = ((await call(sock, "GET", "/secrets")).json() as Record<string, unknown>[]).find((x) => x.name === "s");
    expect(s).to.include({ size: 5, permissions: "0640" });
    expect((await patch("s", { data: "d29ybGQh", uid: 0 })).status).to.equal(200);
    s = ((await call(sock, "GET", "/secrets")).json() as Record<string, unknown>[]).find((x) => x.name === "s");
    expect(s).to.include({ size: 6, uid: 0 });
    expect((await patch("missing", { data: "" })).status).to.equal(404);
    const files = path.join(dir, "state", "secrets");
    expect(statSync(files).mode & 0o777).to.equal(0o700);
    expect(statSync(path.join(files, "s.secret")).mode & 0o777).to.equal(0o600);

    const synced = await syncSecretsToAgent(agent.endpoint, secrets, ["own"]);
    expect(synced).to.deep.equal(["own"]);
    expect(readFileSync(path.join(agent.secretsDir, "own"), "utf8")).to.equal("own");
    const st = statSync(path.join(agent.secretsDir, "own"));
    expect([st.mode & 0o777, st.uid]).to.deep.equal([0o644, 65534]);
    expect(await syncSecretsToAgent(agent.endpoint, secrets, undefined)).to.deep.equal(["own", "s"]);
    expect(readFileSync(path.join(agent.secretsDir, "s"), "utf8")).to.equal("world!");

    expect((await call(sock, "DELETE", "/secrets/s")).status).to.equal(200);
    expect((await call(sock, "DELETE", "/secrets/s")).status).to.equal(404);
    expect((await call(sock, "PUT", "/secrets")).status).to.equal(405);
  });
});
