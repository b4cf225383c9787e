/**
 * The guest agent inside a real runc VM behind a real tenant daemon: exec (stream, buffered,
 * base64), userdata with TARGET_USER, secrets delivered at start, cp in/out,
 * fs, background exec, paused VM ⇒ 409, health's system_uptime the VM's own, plus the idle agent RSS and exec latency figures.
 */
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { call, ndjson } from "../integration/agent-fixture.js";

describe("guest agent in a real runc VM (privileged)", function () {
  let d: TestDaemon;
  let h = "";
  /** Date.now() just before the VM's create. */
  let createdAtMs = 0;

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    expect((await call(d.socketPath, "POST", "/secrets", { body: JSON.stringify({ name: "tok", data: Buffer.from("t0ken").toString("base64"), permissions: "0640" }) })).status).to.equal(201);
    expect((await call(d.socketPath, "POST", "/secrets", { body: JSON.stringify({ name: "other", data: "eA==" }) })).status).to.equal(201);
    createdAtMs = Date.now();
    const r = await call(d.socketPath, "POST", "/hostgroup/sbox/nodes?wait=userdata&timeout=120s", {
      // 8 MB written to the console as fast as the script can: it must not fail on the console
      // pipe (a shared non-blocking stdout once made such writes fail with EAGAIN).
      body: JSON.stringify({ userdata: "#!/bin/sh\nset -e\nhead -c 8000000 /dev/zero | tr '\\0' x\necho \"userdata for $TARGET_USER\" > /root/ud.txt\n", secrets: ["tok"] }),
    });
    expect(r.status, r.text).to.equal(201);
    h = (r.json() as { hostname: string }).hostname;
  });

  after(async function () {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => d && id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  const exec = (q: string, body?: string) => call(d.socketPath, "POST", `/vm/${h}/exec?${q}`, body === undefined ? {} : { body });

  it("reports health and ran userdata as root with TARGET_USER, its fast console output included (exit 0)", async () => {
    const health = (await call(d.socketPath, "GET", `/vm/${h}/health`)).json() as Record<string, unknown>;
    expect(health).to.include({ hostname: h, userdata_ran: true, userdata_exit_code: 0 });
    // system_uptime is the VM's (since its sandbox started), not the host kernel's: no more
    // than the time since the create (+1 s for /proc's 10 ms ticks), no less than the agent's.
    const sinceCreateNs = (Date.now() - createdAtMs + 1000) * 1e6;
    expect(health.system_uptime, "system_uptime (ns)").to.be.a("number").within((health.agent_uptime as number) - 50e6, sinceCreateNs);
    const ud = (await exec("cmd=cat&args=/root/ud.txt&uid=0&buffered=true")).json() as Record<string, unknown>;
    expect(ud.stdout).to.match(/^userdata for \S+\n$/);
  });

  it("execs inside the VM's namespaces (hostname, streamed, base64)", async () => {
    const b = (await exec("cmd=hostname&buffered=true")).json() as Record<string, unknown>;
    expect(b.stdout).to.equal(`${h}\n`);
    const frames = ndjson((await exec("cmd=/bin/sh&args=-c&args=echo%20out;%20echo%20err%20>%262;%20exit%207&stdio=base64")).text);
    expect(frames.map((f) => f.type)).to.deep.equal(["started", "stdout", "stderr", "exit"]);
    expect(frames.at(-1)?.exit_code).to.equal(7);
    const pid1 = (await exec("cmd=cat&args=/proc/1/comm&uid=0&buffered=true")).json() as Record<string, unknown>;
    expect(String(pid1.stdout)).to.match(/tini/);
  });

  it("delivered only the granted secrets with their mode", async () => {
    const r = (await exec("cmd=/bin/sh&args=-c&args=stat%20-c%20%25a%20/run/slicer/secrets/tok;%20cat%20/run/slicer/secrets/tok;%20ls%20/run/slicer/secrets&uid=0&buffered=true")).json() as Record<string, unknown>;
    expect(r.stdout).to.equal("640\nt0kentok\n");
  });

  it("copies files in and out and serves fs", async () => {
    const data = randomBytes(8 << 20);
    expect((await call(d.socketPath, "POST", `/vm/${h}/cp?path=%2Ftmp%2Fblob&mode=binary`, { body: data })).status).to.equal(200);
    const back = await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Ftmp%2Fblob&mode=binary`);
    expect(createHash("sha256").update(back.body).digest("hex")).to.equal(createHash("sha256").update(data).digest("hex"));
    const st = (await call(d.socketPath, "GET", `/vm/${h}/fs/stat?path=%2Ftmp%2Fblob`)).json() as Record<string, unknown>;
    expect(st).to.include({ name: "blob", type: "file", size: 8 << 20 });
    expect((await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Fnope`)).status).to.equal(404);
    const tar = await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Fetc%2Fapt&mode=tar`);
    expect(tar.body.subarray(257, 262).toString()).to.equal("ustar");
  });

  it("runs background execs", async () => {
    const l = await exec("background=true&cmd=/bin/sh&args=-c&args=echo%20bg&stdio=base64");
    expect(l.status).to.equal(201);
    const id = (l.json() as Record<string, unknown>).exec_id as string;
    const w = (await call(d.socketPath, "GET", `/vm/${h}/exec/${id}/wait-exit?timeout=30`)).json() as Record<string, unknown>;
    expect(w).to.include({ running: false, exit_code: 0 });
    const logs = ndjson((await call(d.socketPath, "GET", `/vm/${h}/exec/${id}/logs`)).text);
    expect(Buffer.from(logs[1]?.data as string, "base64").toString()).to.equal("bg\n");
    expect((await call(d.socketPath, "DELETE", `/vm/${h}/exec/${id}`)).status).to.equal(200);
  });

  it("ten execs of /bin/true in a row all exit 0 (the agent's memory and exec latency are measured by npm run bench)", async () => {
    for (let i = 0; i < 10; i++) {
      const r = (await exec("cmd=/bin/true&buffered=true")).json() as Record<string, unknown>;
      expect(r.exit_code, `exec ${i}`).to.equal(0);
    }
  });

  it("the default image has the everyday tools: ps, free, top, ip, ping, curl with CA certificates, less, vi", async () => {
    const script = "set -e; ps aux >/dev/null; free -m >/dev/null; top -bn1 >/dev/null; ip -brief addr >/dev/null; command -v ping; curl --version >/dev/null; test -s /etc/ssl/certs/ca-certificates.crt; less --version >/dev/null; command -v vi; echo tools-ok";
    const r = (await exec(`cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&buffered=true`)).json() as Record<string, unknown>;
    expect(r.stderr, String(r.stderr)).to.equal("");
    expect(r.exit_code, String(r.stdout)).to.equal(0);
    expect(String(r.stdout)).to.match(/tools-ok\n$/);
  });

  it("answers 409 for a paused VM", async () => {
    const p = await call(d.socketPath, "POST", `/vm/${h}/pause`);
    expect(p.status, p.text).to.equal(200);
    try {
      expect((await exec("cmd=true")).status).to.equal(409);
    } finally {
      await call(d.socketPath, "POST", `/vm/${h}/resume`);
    }
    expect((await exec("cmd=true&buffered=true")).status).to.equal(200);
  });
});
