/**
 * Idle pause and wake on request (tenant-daemon/vm/vm-idle.ts, tenant-daemon/api/wake.ts) on a
 * REAL supervisor (`paddock up`, child) and tenant daemon with runc VMs, driven through the
 * supervisor gateway with the tenant's token: a VM of a group with `idle_pause_after: "2s"` is
 * paused (GET /vm/{h} `Paused`, SSE `paused` reason `idle`); GET /vm/{h} and /nodes do not wake
 * it; an exec wakes it and returns its output (SSE `resumed` reason `wake`); a shell WebSocket
 * wakes it too and, while open, keeps it awake past the idle time; a VM a client paused with
 * POST /pause is not woken (exec answers 409 ERR_VM_PAUSED as before; the pause of an idle-paused
 * VM answers `Paddock-Idle-Claimed: pause`); the wake metrics count.
 * Config: a bad `idle_pause_after`, and `idle_action: suspend` under runc, are refused with
 * ERR_CONFIG_INVALID and their YAML path.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import { missingPrerequisites, describeWhenReady } from "../helpers/prerequisites.js";
import { SseClient, type SseEvent } from "../helpers/sse.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { sleepMs, until } from "../helpers/wait.js";
import { openWs } from "../helpers/ws.js";
import { leaksOf, rid } from "../reliability/helpers.js";

const DATA = 0x01;
const SHUTDOWN = 0x03;
const IDLE = "2s";

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

describe("idle config: idle_pause_after, idle_cpu_threshold, idle_action", () => {
  const parse = (group: Record<string, unknown>, hypervisor = "oci"): unknown => parseTenantConfig(
    { config: { host_groups: [{ name: "sbox", ...group }], hypervisor, api: { bind_address: "/tmp/x.sock" } }, paddock: { tenant_id: "t1" } },
    "test.yaml", { baseDir: "/tmp", env: {} },
  );
  const refused = (group: Record<string, unknown>, where: string, hypervisor?: string): void => {
    let err: { code?: string; message?: string } | undefined;
    try {
      parse(group, hypervisor);
    } catch (e) {
      err = e as { code?: string; message?: string };
    }
    expect(err?.code, JSON.stringify(group)).to.equal("ERR_CONFIG_INVALID");
    expect(err?.message).to.include(`config.host_groups[0].${where}`);
  };

  it("reads the idle rule, and refuses a bad duration, a bad threshold, suspend under runc and settings without idle_pause_after", () => {
    const ok = parse({ idle_pause_after: "5m", idle_cpu_threshold: "50m" }) as { hostGroups: { idle?: unknown }[] };
    expect(ok.hostGroups[0]?.idle).to.deep.equal({ afterMs: 300_000, cpuMilli: 50, action: "pause" });
    expect((parse({}) as { hostGroups: { idle?: unknown }[] }).hostGroups[0]?.idle).to.equal(undefined);
    for (const v of ["5", "abc", "-2s", "0s", "500ms", 5]) refused({ idle_pause_after: v }, "idle_pause_after");
    for (const v of ["50", "5%", "0m", 50, "m"]) refused({ idle_pause_after: "1m", idle_cpu_threshold: v }, "idle_cpu_threshold");
    refused({ idle_pause_after: "1m", idle_action: "stop" }, "idle_action");
    refused({ idle_pause_after: "1m", idle_action: "suspend" }, "idle_action");
    refused({ idle_action: "pause" }, "idle_action");
    refused({ idle_cpu_threshold: "10m" }, "idle_cpu_threshold");
  });
});

describeWhenReady(missingPrerequisites(), "idle pause and wake on request through the supervisor gateway (privileged)", function () {
  this.timeout(180_000);
  const id = rid("idl");
  let sup: TestSupervisor;
  let token = "";
  let events: SseClient;
  let h = "";
  const auth = (): Record<string, string> => ({ authorization: `Bearer ${token}` });
  const status = async (): Promise<string> => {
    const r = await sup.gw(token, "GET", `/vm/${h}`);
    expect(r.status, r.text).to.equal(200);
    return (r.json as { status: string }).status;
  };
  const exec = (cmd: string) => sup.gw(token, "POST", `/vm/${h}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(cmd)}&uid=0&buffered=true`);
  const mine = (e: SseEvent): boolean => e.json?.hostname === h;
  /** The next event of VM h after index `from` of the stream with `type` and `reason`. */
  const next = (type: string, reason: string, from: number): Promise<SseEvent> => events.waitFor((e) => mine(e) && e.event === type && e.json?.reason === reason, 60_000, from);

  before(async () => {
    sup = await TestSupervisor.create({
      mode: "child",
      config: (p) => ({ ...realDaemonConfig(), templates: { dir: path.join(p.dir, "templates"), default: "idle" } }),
    });
    // The sandbox template with the idle rule on its group.
    const sandbox = await fs.readFile(path.join(PROJECT_ROOT, "templates", "sandbox.yaml"), "utf8");
    const idle = sandbox.replace("      count: 0\n", `      count: 0\n      idle_pause_after: "${IDLE}"\n`);
    expect(idle).to.include("idle_pause_after");
    await fs.mkdir(path.join(sup.dir, "templates"));
    await fs.writeFile(path.join(sup.dir, "templates", "idle.yaml"), idle);
    await sup.start();
    token = await sup.createTenant(id, "idle");
    events = await SseClient.open(sup.gatewayTarget(), "/events", auth());
    expect(events.status).to.equal(200);
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
    expect(r.status, r.text).to.equal(201);
    h = (r.json as { hostname: string }).hostname;
  });

  after(async () => {
    events?.close();
    if (sup) await sup.destroy([id]);
    expect(await leaksOf(id), "leaks.sh --tenant").to.deep.equal([]);
  });

  it("pauses an idle VM (Paused, SSE paused reason idle); GET /vm/{h} and /nodes do not wake it", async () => {
    const paused = await next("paused", "idle", 0);
    expect(paused.json).to.include({ hostgroup: "sbox" });
    expect(await status()).to.equal("Paused");
    const nodes = await sup.gw(token, "GET", "/nodes");
    expect((nodes.json as { hostname: string; status: string }[]).find((n) => n.hostname === h)?.status).to.equal("Paused");
    // A wake happens before the request's answer: had these woken it, it would be Running now.
    expect(await status()).to.equal("Paused");
    expect(events.events.some((e) => mine(e) && e.event === "resumed"), "no resumed event").to.equal(false);
  });

  it("an exec through the gateway wakes it and returns its output (SSE resumed reason wake), then it idles out again", async () => {
    const from = events.events.length;
    const r = await exec("echo woke-$((6*7))");
    expect(r.status, r.text).to.equal(200);
    expect(r.json).to.include({ stdout: "woke-42\n", exit_code: 0 });
    const resumed = await next("resumed", "wake", from);
    expect(resumed.json).to.include({ hostgroup: "sbox" });
    await next("paused", "idle", from);
    expect(await status()).to.equal("Paused");
    const m = await sup.gw(token, "GET", "/metrics");
    expect(m.text).to.match(/^paddock_vm_wakes_total\{hostgroup="sbox",action="pause"\} [1-9]/m);
    expect(m.text).to.match(/^paddock_vm_idle_total\{hostgroup="sbox",action="pause"\} [2-9]/m);
    expect(m.text).to.match(/^paddock_vm_wake_seconds_count\{action="pause"\} [1-9]/m);
  });

  it("a shell WebSocket through the gateway wakes it, and while open keeps it awake past the idle time", async () => {
    const from = events.events.length;
    const ws = await openWs(`ws://${sup.gateway}/vm/${h}/shell?uid=0&shell=/bin/sh`, auth());
    try {
      const opened = Date.now();
      let out = "";
      const seen = (want: string): Promise<void> => new Promise((resolve) => {
        const check = (): void => {
          if (out.includes(want)) resolve();
        };
        ws.on("message", (m: Buffer) => {
          if (m[0] === DATA) out += m.subarray(5).toString();
          check();
        });
        check();
      });
      ws.send(frame(DATA, Buffer.from("echo sh-$((6*7))\n")));
      await seen("sh-42");
      await next("resumed", "wake", from);
      // Held open (and quiet) for longer than idle_pause_after: still running.
      await sleepMs(Math.max(0, opened + 3500 - Date.now()));
      expect(await status()).to.equal("Running");
      expect(events.events.slice(from).some((e) => mine(e) && e.event === "paused"), "not paused while the shell is open").to.equal(false);
      ws.send(frame(DATA, Buffer.from("echo still-$((6*7))\n")));
      await seen("still-42");
      ws.send(frame(SHUTDOWN));
    } finally {
      ws.terminate();
    }
    // Closed: it idles out again.
    await next("paused", "idle", from);
  });

  it("a VM paused by POST /pause is not woken by requests: exec answers 409 ERR_VM_PAUSED, as without idle", async () => {
    // It is idle-paused now: an explicit pause makes the pause the client's, and says so.
    await next("paused", "idle", 0);
    expect(await status()).to.equal("Paused");
    const claim = await sup.gw(token, "POST", `/vm/${h}/pause`);
    expect(claim.status).to.equal(200);
    expect(claim.headers).to.include({ "paddock-already": "paused", "paddock-idle-claimed": "pause" });
    const from = events.events.length;
    const r = await exec("echo no");
    expect(r.status, r.text).to.equal(409);
    expect(r.json).to.include({ code: "ERR_VM_PAUSED" });
    expect(String((r.json as { error?: string }).error)).to.contain(`POST /vm/${h}/resume`).and.contain(`paddock vm resume ${h}`);
    expect(await status()).to.equal("Paused");
    // The same from running: resume, pause, exec.
    expect((await sup.gw(token, "POST", `/vm/${h}/resume`)).status).to.equal(200);
    const again = await sup.gw(token, "POST", `/vm/${h}/pause`);
    expect(again.status).to.equal(200);
    expect(again.headers, "not idle-paused: no claim header").to.not.have.property("paddock-idle-claimed");
    const r2 = await exec("echo no");
    expect(r2.status, r2.text).to.equal(409);
    expect(events.events.slice(from).filter(mine).map((e) => `${e.event}:${String(e.json?.reason)}`)).to.not.include("resumed:wake");
    // Resumed by the client, it idles out again by itself.
    expect((await sup.gw(token, "POST", `/vm/${h}/resume`)).status).to.equal(200);
    await until("idle pause after an API resume", async () => ((await status()) === "Paused" ? true : undefined), 60_000, 250);
    expect((await exec("echo back")).json).to.include({ stdout: "back\n" });
  });

  it("a request to a preview URL of an idle VM wakes it: the app inside answers through the gateway (SSE resumed reason wake)", async () => {
    const app = "require('http').createServer((q, s) => s.end('pv-' + q.url)).listen(8080, '127.0.0.1')";
    const l = await sup.gw(token, "POST", `/vm/${h}/exec?background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(app)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    const preview = (rest: string) => sup.gw(token, "GET", `/preview/${id}/${h}/8080/${rest}`);
    await until("the app answers through the preview URL", async () => ((await preview("up")).status === 200 ? true : undefined), 60_000, 200);
    const from = events.events.length;
    await next("paused", "idle", from);
    expect(await status()).to.equal("Paused");
    const r = await preview("hello");
    expect(r.status, r.text).to.equal(200);
    expect(r.text).to.equal("pv-/hello");
    await next("resumed", "wake", from);
  });
});
