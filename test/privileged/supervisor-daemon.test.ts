/**
 * The supervisor with the real tenant daemon (dist/tenant-daemon/main.js) and real runc
 * VMs from the debian-12 base image: two tenants isolated through the gateway, streamed
 * exec, suspend/resume pausing real VMs, kill -9 of a daemon with a persistent VM, and
 * delete leaving nothing on the host (scripts/leaks.sh), and what the daemon receives from the
 * gateway (its access log). Needs root and
 * /var/lib/paddock/images/debian-12.
 */
import { existsSync, promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { RETRY_AFTER_S } from "../../supervisor/gateway.js";
import { SseClient } from "../helpers/sse.js";
import { request, type TestResponse } from "../helpers/http.js";
import { until } from "../helpers/wait.js";
import { TEST_IMAGE_DIR, describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { LEAKS_SH, TestSupervisor } from "../helpers/supervisor.js";

describeWhenReady(missingPrerequisites(), "supervisor with the real tenant daemon (privileged)", function () {
  this.timeout(300_000);
  const suffix = Math.random().toString(36).slice(2, 6);
  const ids = { a: `ts${suffix}`, b: `tw${suffix}` };
  let stateDir: string;
  let runDir: string;
  let sup: TestSupervisor;
  const tokens: Record<string, string> = {};
  const sockets: Record<string, string> = {};

  const admin = (method: string, p: string, body?: unknown): Promise<TestResponse> =>
    sup.adminReq(method, p, body, { "content-type": "application/json" });
  const gw = (id: string, method: string, p: string, body?: unknown): Promise<TestResponse> =>
    request(sup.gatewayTarget(), method, p, body, { authorization: `Bearer ${tokens[id]}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) });

  before(async () => {
    sup = await TestSupervisor.create({ flags: { gateway: "127.0.0.1:0", admin: "127.0.0.1:0" }, env: { PADDOCK_IMAGE_DIR: TEST_IMAGE_DIR } });
    stateDir = sup.stateDir;
    runDir = sup.runDir;
    await sup.start();
    for (const [key, template] of [["a", "sandbox"], ["b", "workspace"]] as const) {
      const id = ids[key];
      const r = await admin("POST", "/tenants", { id, template, limits: { max_vms: 3 } });
      expect(r.status, r.text).to.equal(201);
      const body = r.json as { token: string; socket_path: string };
      tokens[id] = body.token;
      sockets[id] = body.socket_path;
    }
  });

  after(async () => {
    await sup?.destroy(Object.values(ids));
  });

  it("each tenant token sees and touches only its own VMs", async () => {
    const va = await gw(ids.a, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
    expect(va.status, va.text).to.be.oneOf([200, 201]);
    const lb = await until("ctrl-1 of the workspace", async () => {
      const r = await gw(ids.b, "GET", "/nodes");
      const list = r.json as Array<{ hostname: string; status: string }>;
      return list.some((n) => n.hostname === "ctrl-1" && n.status === "Running") ? list : undefined;
    });
    expect(lb.map((n) => n.hostname)).to.deep.equal(["ctrl-1"]);
    const la = (await gw(ids.a, "GET", "/nodes")).json as Array<{ hostname: string }>;
    expect(la.map((n) => n.hostname)).to.deep.equal(["sbox-1"]);
    // Tenant a cannot reach b's ctrl-1, whatever the path spelling.
    for (const p of ["/vm/ctrl-1/exec?cmd=id&buffered=true", "/vm/ctrl-1%2F..%2Fctrl-1/exec?cmd=id&buffered=true", "//vm//ctrl-1/exec?cmd=id&buffered=true", "/hostgroup/ctrl/nodes/ctrl-1"]) {
      const r = await gw(ids.a, p.startsWith("/hostgroup") ? "DELETE" : "POST", p);
      expect(r.status, `${p}: ${r.text}`).to.be.oneOf([400, 404]);
    }
    expect(((await gw(ids.b, "GET", "/nodes")).json as unknown[]).length).to.equal(1);
  });

  it("a client that aborts a streamed exec through the gateway ends the guest's process (the abort reaches the real daemon and agent)", async () => {
    const { host, port } = sup.gatewayTarget();
    const marker = `abort${suffix}`;
    // A foreground exec that would run for 5 min, recognisable by its argument.
    const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `echo started; exec sleep 300 ${marker}`], ["uid", "0"]]);
    const running = (): Promise<boolean> =>
      gw(ids.a, "POST", `/vm/sbox-1/exec?${new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -cx '${marker}' || true`], ["uid", "0"], ["buffered", "true"]])}`)
        .then((r) => String((r.json as { stdout?: string }).stdout ?? "").trim() !== "0");
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ host, port, method: "POST", path: `/vm/sbox-1/exec?${q}`, headers: { authorization: `Bearer ${tokens[ids.a]}` } }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => {
          text += c.toString();
          if (text.includes("started")) {
            req.destroy(); // the client goes away mid-stream
            resolve();
          }
        });
        res.on("end", () => reject(new Error(`the exec ended before the client aborted: ${res.statusCode} ${text}`)));
        res.on("error", () => undefined);
      });
      req.on("error", () => undefined);
      req.setTimeout(60_000, () => reject(new Error("no output from the exec within 60 s")));
      req.end();
    });
    // Positive control: the probe sees such a process while it runs (a second exec, left running).
    const control = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `exec sleep 300 ${marker}`], ["uid", "0"], ["background", "true"]]);
    await until("the abort to reach the guest (the first sleep gone)", async () => ((await running()) ? undefined : true), 15_000);
    const bg = await gw(ids.a, "POST", `/vm/sbox-1/exec?${control}`);
    expect(bg.status, bg.text).to.equal(201);
    await until("the control process seen by the probe", async () => ((await running()) ? true : undefined), 15_000);
    const execId = (bg.json as { exec_id: string }).exec_id;
    expect((await gw(ids.a, "POST", `/vm/sbox-1/exec/${execId}/kill`)).status).to.be.oneOf([200, 202, 204]);
  });

  it("streams exec output through the gateway as it is produced", async () => {
    const { host, port } = sup.gatewayTarget();
    const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", "echo one; sleep 2; echo two"]]);
    const chunks = await new Promise<Array<{ text: string; ended: boolean }>>((resolve, reject) => {
      const out: Array<{ text: string; ended: boolean }> = [];
      let ended = false;
      const req = http.request({ host, port, method: "POST", path: `/vm/sbox-1/exec?${q}`, headers: { authorization: `Bearer ${tokens[ids.a]}` } }, (res) => {
        res.on("data", (c: Buffer) => out.push({ text: c.toString(), ended }));
        res.on("end", () => { ended = true; resolve(out); });
      });
      req.on("error", reject);
      req.end();
    });
    const all = chunks.map((c) => c.text).join("");
    expect(all).to.include("one").and.include("two");
    const firstWithOne = chunks.findIndex((c) => c.text.includes("one"));
    const firstWithTwo = chunks.findIndex((c) => c.text.includes("two"));
    expect(firstWithOne, "'one' arrived in an earlier chunk than 'two'").to.be.lessThan(firstWithTwo);
  });

  it("GET /events streams the tenant's lifecycle events through the gateway as they happen (tenant token required)", async () => {
    expect((await request(sup.gatewayTarget(), "GET", "/events")).status, "no token").to.equal(401);
    const s = await SseClient.open(sup.gatewayTarget(), "/events", { authorization: `Bearer ${tokens[ids.a]}` });
    try {
      expect(s.status).to.equal(200);
      expect(s.headers["content-type"]).to.match(/^text\/event-stream/);
      const created = await gw(ids.a, "POST", "/hostgroup/sbox/nodes", {});
      expect(created.status, created.text).to.equal(201);
      const h = (created.json as { hostname: string }).hostname;
      // Seen while the response is still open: the gateway does not buffer the stream.
      const first = await s.waitFor((e) => e.event === "created", 30_000);
      expect(first.json).to.include({ hostname: h, reason: "warm_pool" === first.json?.reason ? "warm_pool" : "api" });
      expect((await gw(ids.a, "DELETE", `/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
      const gone = await s.waitFor((e) => e.event === "deleted", 30_000);
      expect(gone.json).to.include({ hostname: h, reason: "api" });
      expect(s.ended).to.equal(false);
    } finally {
      s.close();
    }
  });

  it("the real daemon receives the gateway's request id and forwarded-for, never the ones a client sent (a direct request on the socket is the control)", async () => {
    const id = ids.a;
    const spoofed = { "x-request-id": `client-chosen-${suffix}`, "x-forwarded-for": "198.18.99.99", "x-real-ip": "198.18.99.99", forwarded: "for=198.18.99.99" };
    const viaGateway = await request(sup.gatewayTarget(), "GET", "/nodes", undefined, { authorization: `Bearer ${tokens[id]}`, ...spoofed });
    expect(viaGateway.status, viaGateway.text).to.equal(200);
    const gatewayId = viaGateway.headers["x-request-id"];
    expect(gatewayId).to.be.a("string").and.match(/^[0-9a-f-]{36}$/);
    // Control: the same headers sent straight to the daemon's socket do show up in its log,
    // so the log would have shown the client's values had the gateway let them through.
    const direct = await request({ socketPath: sockets[id] as string }, "GET", "/nodes", undefined, { "x-request-id": `direct-control-${suffix}`, "x-forwarded-for": "198.18.99.98" });
    expect(direct.status, direct.text).to.equal(200);
    const logFile = path.join(stateDir, "tenants", id, "logs", "daemon.log");
    type Line = { msg?: string; request_id?: string; forwarded_for?: string; path?: string; status?: number };
    const lines = await until("both access lines in the daemon log", async () => {
      const all = (await fs.readFile(logFile, "utf8")).split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line).filter((l) => l.msg === "request");
      const ids2 = new Set(all.map((l) => l.request_id));
      return ids2.has(gatewayId as string) && ids2.has(`direct-control-${suffix}`) ? all : undefined;
    });
    const control = lines.find((l) => l.request_id === `direct-control-${suffix}`);
    expect(control?.forwarded_for, "control: the daemon logs the forwarded-for it receives").to.equal("198.18.99.98");
    const proxied = lines.find((l) => l.request_id === gatewayId);
    expect(proxied).to.include({ path: "/nodes", status: 200, forwarded_for: "127.0.0.1" });
    expect(lines.filter((l) => l.request_id === spoofed["x-request-id"]), "the client's request id reached the daemon").to.have.length(0);
    expect(lines.filter((l) => l.forwarded_for === "198.18.99.99"), "the client's forwarded-for reached the daemon").to.have.length(0);
  });

  it("suspend pauses the tenant's real VMs and the gateway refuses it; resume restores both", async () => {
    const s = await admin("POST", `/tenants/${ids.a}/suspend`, { reason: "test" });
    expect(s.status, s.text).to.equal(200);
    expect((s.json as { paused_vms: string[] }).paused_vms).to.deep.equal(["sbox-1"]);
    expect((await gw(ids.a, "GET", "/nodes")).status).to.equal(403);
    const direct = (await request({ socketPath: sockets[ids.a] as string }, "GET", "/nodes")).json as Array<{ status: string }>;
    expect(direct.map((n) => n.status)).to.deep.equal(["Paused"]);
    expect((await admin("POST", `/tenants/${ids.a}/resume`)).status).to.equal(200);
    const after = (await gw(ids.a, "GET", "/nodes")).json as Array<{ status: string }>;
    expect(after.map((n) => n.status)).to.deep.equal(["Running"]);
    // Resuming it again (active) is a no-op 200, as a second suspend is.
    const again = await admin("POST", `/tenants/${ids.a}/resume`);
    expect(again.status, again.text).to.equal(200);
    expect(again.json).to.include({ status: "active" });
    expect((again.json as { resumed_vms: string[] }).resumed_vms).to.deep.equal([]);
  });

  it("the daemon enforces the tenant's limits (max_vms 3) with a 4xx naming the limit", async () => {
    let last: TestResponse | undefined;
    for (let i = 0; i < 3; i++) {
      last = await gw(ids.a, "POST", "/hostgroup/sbox/nodes", {});
      if (last.status >= 400) break;
    }
    expect(last?.status, last?.text).to.be.within(400, 499);
    expect(last?.text).to.match(/max_vms|limit/i);
  });

  it("changed limits wait for the restart (pending_restart), which applies them and clears the flag", async () => {
    const refused = async (): Promise<string> => {
      const r = await gw(ids.a, "POST", "/hostgroup/sbox/nodes", {});
      expect(r.status, r.text).to.equal(403);
      return (r.json as { code?: string }).code ?? r.text;
    };
    // The previous test filled max_vms 3. Raising it is only recorded until the restart.
    const p = await admin("PATCH", `/tenants/${ids.a}`, { limits: { max_vms: 4 } });
    expect(p.status, p.text).to.equal(200);
    expect(p.json).to.deep.include({ pending_restart: true });
    expect((p.json as { limits: { max_vms: number } }).limits.max_vms).to.equal(4);
    expect(await refused(), "the running daemon keeps max_vms 3").to.equal("ERR_LIMIT_EXCEEDED");
    const before = ((await admin("GET", `/tenants/${ids.a}`)).json as { daemon: { pid: number } }).daemon.pid;
    const r = await admin("POST", `/tenants/${ids.a}/restart`);
    expect(r.status, r.text).to.equal(200);
    expect(r.json).to.deep.include({ pending_restart: false });
    const t = (await admin("GET", `/tenants/${ids.a}`)).json as { pending_restart: boolean; daemon: { pid: number } };
    expect(t.pending_restart).to.equal(false);
    expect(t.daemon.pid, "a new daemon").to.not.equal(before);
    // Ephemeral VMs did not survive it; the new daemon admits 4 and refuses the fifth.
    expect(((await gw(ids.a, "GET", "/nodes")).json as unknown[]).length).to.equal(0);
    for (let i = 0; i < 4; i++) {
      const c = await gw(ids.a, "POST", "/hostgroup/sbox/nodes", {});
      expect(c.status, c.text).to.equal(201);
    }
    expect(await refused(), "max_vms 4 in force").to.equal("ERR_LIMIT_EXCEEDED");
  });

  it("GET /admin/v1/host: the host's capacity and what the tenants' listed VMs commit", async () => {
    expect((await request(sup.adminTarget(), "GET", "/admin/v1/host")).status, "no token").to.equal(401);
    const r = await admin("GET", "/host");
    expect(r.status, r.text).to.equal(200);
    const h = r.json as { cpu: { cores: number }; memory: { total_bytes: number }; capacity: { vcpu: number; ram_bytes: number }; committed: { vcpu: number; ram_bytes: number; tenants_reporting: number; tenants_total: number } };
    expect(h.cpu.cores).to.equal(os.cpus().length);
    expect(Math.abs(h.memory.total_bytes - os.totalmem()) / os.totalmem(), "memory total vs os.totalmem()").to.be.below(0.02);
    expect(h.capacity).to.include({ vcpu: h.cpu.cores, ram_bytes: h.memory.total_bytes });
    // The commitment is the sum over the daemons' own lists (Stopped VMs excluded).
    let vcpu = 0, ram = 0;
    for (const id of Object.values(ids)) {
      for (const n of (await request({ socketPath: sockets[id] as string }, "GET", "/nodes")).json as Array<{ status: string; cpus: number; ram_bytes: number }>) {
        if (n.status === "Stopped") continue;
        vcpu += n.cpus;
        ram += n.ram_bytes;
      }
    }
    expect(vcpu, "the tenants have VMs").to.be.greaterThan(0);
    expect(h.committed).to.deep.include({ vcpu, ram_bytes: ram, tenants_reporting: 2, tenants_total: 2 });
  });

  it("kill -9 of a daemon: 503 meanwhile, restarted, the persistent ctrl-1 intact", async () => {
    const before = (await admin("GET", `/tenants/${ids.b}`)).json as { daemon: { pid: number } };
    process.kill(before.daemon.pid, "SIGKILL");
    // Asked at once, the gateway cannot have a new daemon yet (a restart re-attaches ctrl-1 and
    // takes well over a second): the first answer must be the retryable 503.
    const seen: string[] = [];
    const list = await until("restart", async () => {
      const r = await gw(ids.b, "GET", "/nodes");
      if (r.status !== 200) seen.push(`${r.status} ${(r.json as { code?: string } | undefined)?.code ?? r.text.slice(0, 80)} retry-after=${String(r.headers["retry-after"])}`);
      return r.status === 200 ? (r.json as Array<{ hostname: string; status: string }>) : undefined;
    }, 60_000, 50);
    expect(seen.length, "answers while the daemon was down").to.be.greaterThan(0);
    expect([...new Set(seen)], "every answer meanwhile").to.deep.equal([`503 ERR_TENANT_UNAVAILABLE retry-after=${RETRY_AFTER_S}`]);
    expect(list.map((n) => `${n.hostname}:${n.status}`)).to.deep.equal(["ctrl-1:Running"]);
    const after = (await admin("GET", `/tenants/${ids.b}`)).json as { daemon: { pid: number; restarts: number } };
    expect(after.daemon.pid).to.not.equal(before.daemon.pid);
    expect(after.daemon.restarts).to.equal(1);
  });

  it("300 sequential GET /healthz through the gateway and 300 on the socket all answer 200 (its overhead is figure 3 of npm run bench)", async () => {
    for (let i = 0; i < 300; i++) {
      expect((await request({ socketPath: sockets[ids.a] as string }, "GET", "/healthz")).status).to.equal(200);
      expect((await gw(ids.a, "GET", "/healthz")).status).to.equal(200);
    }
  });

  it("deleting a tenant leaves nothing on the host and frees its blocks", async () => {
    for (const id of Object.values(ids)) {
      const r = await admin("DELETE", `/tenants/${id}`);
      expect(r.status, r.text).to.equal(204);
    }
    // scripts/leaks.sh --tenant does not filter mounts and loop devices by tenant (other
    // engineers' tenants show up), so keep only lines naming this tenant or our dirs.
    for (const id of Object.values(ids)) {
      const leaks = await execa(LEAKS_SH, ["--tenant", id], { reject: false });
      const mine = leaks.stdout.split("\n").filter((l) => [`pdk-${id}-`, `paddock-${id}`, `paddock/${id}/`, stateDir, runDir].some((needle) => l.includes(needle)));
      expect(mine, `leftovers of ${id}`).to.deep.equal([]);
      expect(existsSync(path.join(stateDir, "tenants", id))).to.equal(false);
      expect(existsSync(path.join(runDir, "tenants", id))).to.equal(false);
    }
    expect(((await admin("GET", "/tenants")).json as unknown[]).length).to.equal(0);
  });
});
