/**
 * Tenant events and webhooks end to end (supervisor/events/, supervisor/webhooks/): a real
 * supervisor with the real tenant daemon and real runc VMs, a real receiver on 127.0.0.1 and a
 * real SSE client on GET /admin/v1/events. The receiver gets the VM's created/ready/deleted and
 * the tenant's suspended/resumed in order, signed so that the genuine body verifies and a
 * tampered body or a wrong secret does not; a 500 is retried and the delivery log shows both
 * attempts; a supervisor restarted while the receiver is down delivers, once the receiver is
 * back, what was pending and what the daemon emitted while the supervisor was down; deleting the
 * tenant delivers `tenant.deleted` and removes its webhook state. Needs root and the debian-12 image.
 */
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { expect } from "chai";
import { verifyWebhook } from "../../supervisor/webhooks/signer.js";
import { request, type TestResponse } from "../helpers/http.js";
import { SseClient } from "../helpers/sse.js";
import { until } from "../helpers/wait.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";

/** One request the receiver got. */
interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  json: { event: string; event_id: string; tenant: string; hostname?: string; type: string };
  status: number;
}

/** A webhook receiver on 127.0.0.1: answers each POST with the next status of `plan` (200 when empty). */
class Receiver {
  readonly got: Received[] = [];
  plan: number[] = [];
  private server: http.Server | undefined;
  port = 0;

  async listen(port = 0): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const status = this.plan.shift() ?? 200;
        this.got.push({ headers: req.headers, body, json: JSON.parse(body) as Received["json"], status });
        res.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "ok" : "nope");
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Stop listening (connections are refused: the receiver is down). */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** The answered-200 requests' event types, in arrival order. */
  delivered(): string[] {
    return this.got.filter((g) => g.status === 200).map((g) => g.json.event);
  }

  waitFor(what: string, pred: (g: Received) => boolean, timeoutMs = 90_000): Promise<Received> {
    return until(what, () => Promise.resolve(this.got.find((g) => g.status === 200 && pred(g))), timeoutMs, 50);
  }
}

describeWhenReady(missingPrerequisites(), "tenant events and signed webhooks (privileged)", function () {
  this.timeout(300_000);
  const id = `wh${Math.random().toString(36).slice(2, 6)}`;
  const receiver = new Receiver();
  let sup: TestSupervisor;
  let token: string;
  let socketPath: string;
  let adminEvents: SseClient | undefined;
  let webhook: { id: string; secret: string };

  const admin = (method: string, p: string, body?: unknown): Promise<TestResponse> => sup.adminReq(method, p, body);
  const deliveries = async (): Promise<Array<Record<string, unknown>>> => {
    const r = await admin("GET", `/tenants/${id}/webhooks/${webhook.id}/deliveries?limit=1000`);
    expect(r.status, r.text).to.equal(200);
    return r.json as Array<Record<string, unknown>>;
  };

  before(async () => {
    await receiver.listen();
    sup = await TestSupervisor.create({ config: () => ({ ...realDaemonConfig(), webhooks: { initial_backoff_ms: 200, max_backoff_ms: 1000, timeout_ms: 5000 } }) });
    await sup.start();
    adminEvents = await SseClient.open(sup.adminTarget(), "/admin/v1/events", { authorization: `Bearer ${sup.adminToken}` });
    token = await sup.createTenant(id, "sandbox", { limits: { max_vms: 3 } });
    socketPath = path.join(sup.runDir, "tenants", id, "api.sock");
  });

  after(async () => {
    adminEvents?.close();
    await receiver.close();
    await sup?.destroy([id]);
  });

  it("GET /admin/v1/events needs the admin token and streams the tenant's creation", async () => {
    const created = await adminEvents!.waitFor((e) => e.event === "created" && e.json?.tenant === id);
    expect(created.json).to.include({ type: "created", tenant: id, reason: "operator" });
    expect(created.id).to.equal(String(created.json?.id));
    const anon = await SseClient.open(sup.adminTarget(), "/admin/v1/events").catch((err: Error) => err);
    expect(anon instanceof SseClient ? anon.status : 0, "no token").to.equal(401);
    if (anon instanceof SseClient) anon.close();
  });

  it("a webhook URL must be http(s) without credentials; the secret is shown once, never listed", async () => {
    for (const url of ["ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "not a url", "/relative"]) {
      const r = await admin("POST", `/tenants/${id}/webhooks`, { url });
      expect(r.status, url).to.equal(400);
      expect((r.json as { code: string }).code).to.equal("ERR_WEBHOOK_INVALID");
    }
    expect((await admin("POST", `/tenants/${id}/webhooks`, { url: `http://127.0.0.1:${receiver.port}/`, events: ["vm.nope"] })).status).to.equal(400);
    for (const t of ["nosuch1", "__proto__", "constructor", "..%2Fx"]) expect((await admin("POST", `/tenants/${t}/webhooks`, { url: `http://127.0.0.1:${receiver.port}/` })).status, t).to.equal(404);
    const r = await admin("POST", `/tenants/${id}/webhooks`, { url: `http://127.0.0.1:${receiver.port}/hook` });
    expect(r.status, r.text).to.equal(201);
    webhook = r.json as { id: string; secret: string };
    expect(webhook.secret).to.match(/^whsec_/);
    const list = await admin("GET", `/tenants/${id}/webhooks`);
    expect(list.json).to.have.length(1);
    expect(list.text).to.not.include(webhook.secret);
    expect((await admin("GET", `/tenants/${id}/webhooks/wh_nosuch/deliveries`)).status).to.equal(404);
    const audited = await until("webhook.create in the audit log", async () => ((await admin("GET", `/audit?tenant=${id}&action=webhook.`)).json as Array<{ action: string; details: { webhook_id: string } }>)[0]);
    expect(audited).to.deep.include({ action: "webhook.create" });
    expect(audited.details.webhook_id).to.equal(webhook.id);
    expect(JSON.stringify(audited)).to.not.include(webhook.secret);
  });

  it("the receiver gets vm created/ready/deleted and tenant suspended/resumed in order, signed with the secret", async () => {
    const gw = (method: string, p: string, body?: unknown): Promise<TestResponse> => sup.gw(token, method, p, body);
    const c = await gw("POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", {});
    expect(c.status, c.text).to.be.oneOf([200, 201]);
    const host = (c.json as { hostname: string }).hostname;
    expect((await gw("DELETE", `/hostgroup/sbox/nodes/${host}`)).status).to.be.oneOf([200, 204]);
    await receiver.waitFor("vm.deleted", (g) => g.json.event === "vm.deleted" && g.json.hostname === host);
    expect((await admin("POST", `/tenants/${id}/suspend`, {})).status).to.equal(200);
    expect((await admin("POST", `/tenants/${id}/resume`, {})).status).to.equal(200);
    await receiver.waitFor("tenant.resumed", (g) => g.json.event === "tenant.resumed");
    const seq = receiver.delivered().filter((t) => ["vm.created", "vm.ready", "vm.deleted", "tenant.suspended", "tenant.resumed"].includes(t));
    expect(seq).to.deep.equal(["vm.created", "vm.ready", "vm.deleted", "tenant.suspended", "tenant.resumed"]);
    for (const g of receiver.got) {
      expect(g.json.tenant).to.equal(id);
      expect(g.headers["paddock-event-id"]).to.equal(g.json.event_id);
      expect(g.headers["paddock-delivery-id"]).to.match(/^dlv_[0-9a-f]{24}$/);
      const sig = g.headers["paddock-signature"] as string;
      // The positive control: the genuine body verifies with the secret ...
      expect(verifyWebhook(webhook.secret, g.body, sig), `genuine ${g.json.event}`).to.equal(true);
      // ... and the detection works: a changed body or another secret does not.
      expect(verifyWebhook(webhook.secret, g.body.replace(id, "tother"), sig), "tampered body").to.equal(false);
      expect(verifyWebhook(webhook.secret + "x", g.body, sig), "wrong secret").to.equal(false);
    }
  });

  it("a receiver answering 500 then 200 gets the event again; the delivery log shows two attempts", async () => {
    receiver.plan = [500];
    const before = receiver.got.length;
    expect((await admin("POST", `/tenants/${id}/suspend`, { reason: "retry test" })).status).to.equal(200);
    const ok = await receiver.waitFor("tenant.suspended after a 500", (g) => g.json.event === "tenant.suspended" && receiver.got.indexOf(g) >= before);
    const tries = receiver.got.filter((g) => g.json.event_id === ok.json.event_id);
    expect(tries.map((g) => [g.status, g.headers["paddock-delivery-attempt"]])).to.deep.equal([[500, "1"], [200, "2"]]);
    expect(tries[0]?.headers["paddock-delivery-id"]).to.equal(tries[1]?.headers["paddock-delivery-id"]);
    const d = await until("the delivery logged as delivered", async () => (await deliveries()).find((x) => x.event_id === ok.json.event_id && x.state === "delivered"));
    expect(d).to.include({ attempts: 2, last_status: 200, event_type: "tenant.suspended" });
    expect(d.delivered_at).to.be.a("string");
    const metrics = await request(sup.adminTarget(), "GET", "/metrics", undefined, { authorization: `Bearer ${sup.adminToken}` });
    expect(metrics.text).to.match(/paddock_webhook_deliveries_total\{result="retry"\} [1-9]/);
    expect(metrics.text).to.match(/paddock_webhook_outbox_depth \d/);
    expect((await admin("POST", `/tenants/${id}/resume`, {})).status).to.equal(200);
    await receiver.waitFor("tenant.resumed after the retry", (g) => g.json.event === "tenant.resumed" && receiver.got.indexOf(g) > receiver.got.indexOf(ok));
  });

  it("a supervisor restarted while the receiver is down delivers what was pending and what the daemon emitted meanwhile", async () => {
    const port = receiver.port;
    await receiver.close();
    const mark = receiver.got.length;
    expect((await admin("POST", `/tenants/${id}/suspend`, { reason: "down test" })).status).to.equal(200);
    const pending = await until("a failed attempt at tenant.suspended", async () => (await deliveries()).find((x) => x.event_type === "tenant.suspended" && x.state === "pending" && (x.attempts as number) >= 1));
    expect(pending.last_error).to.match(/ECONNREFUSED/);
    await sup.stop({ stopDaemons: false });
    // While the supervisor is down, the daemon (still running) emits created and ready.
    const c = await request({ socketPath }, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", {}, { "content-type": "application/json" });
    expect(c.status, c.text).to.be.oneOf([200, 201]);
    const host = (c.json as { hostname: string }).hostname;
    await sup.start();
    await receiver.listen(port);
    await receiver.waitFor("vm.ready of the VM made while down", (g) => g.json.event === "vm.ready" && g.json.hostname === host);
    const after = receiver.got.slice(mark).filter((g) => g.status === 200).map((g) => `${g.json.event}${g.json.hostname ? ` ${g.json.hostname}` : ""}`);
    expect(after.slice(0, 3)).to.deep.equal(["tenant.suspended", `vm.created ${host}`, `vm.ready ${host}`]);
    expect((await admin("POST", `/tenants/${id}/resume`, {})).status).to.equal(200);
  });

  it("a daemon killed with SIGKILL: daemon_restarted (crash) is streamed and delivered, and the lost VM events are logged as a gap", async () => {
    // The restart ended the first admin stream; resuming from its last id in a new supervisor run is a reset.
    const lastId = adminEvents!.events.filter((e) => e.id !== undefined).pop()?.id ?? "1";
    adminEvents!.close();
    adminEvents = await SseClient.open(sup.adminTarget(), `/admin/v1/events?tenant=${id}`, { authorization: `Bearer ${sup.adminToken}`, "last-event-id": lastId });
    await adminEvents.waitFor((e) => e.event === "reset");
    const pid = ((await admin("GET", `/tenants/${id}`)).json as { daemon: { pid: number } }).daemon.pid;
    process.kill(pid, "SIGKILL");
    const restarted = await adminEvents.waitFor((e) => e.event === "daemon_restarted");
    expect(restarted.json).to.include({ tenant: id, reason: "crash" });
    // An adopted daemon is not our child: its end is seen, not its signal ("daemon process gone").
    expect(restarted.json?.exit).to.be.a("string").that.matches(/daemon/);
    await receiver.waitFor("tenant.daemon_restarted", (g) => g.json.event === "tenant.daemon_restarted");
    // The new daemon run's ids are above the old run's: the stream resets and the gap is logged.
    const gap = await until("a gap in the delivery log", async () => (await deliveries()).find((x) => x.state === "gap"));
    expect(gap.last_error).to.match(/may be lost/);
  });

  it("deleting the tenant delivers tenant.deleted, streams deleted, and removes its webhook state", async () => {
    const dir = path.join(sup.stateDir, "supervisor", "webhooks", id);
    expect(existsSync(dir), "webhook state before").to.equal(true);
    expect((await admin("DELETE", `/tenants/${id}`)).status).to.equal(204);
    await adminEvents!.waitFor((e) => e.event === "deleted" && e.json?.tenant === id);
    await receiver.waitFor("tenant.deleted", (g) => g.json.event === "tenant.deleted");
    await until("the webhook state removed", () => Promise.resolve(existsSync(dir) ? undefined : true), 30_000);
  });
});
