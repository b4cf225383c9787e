/**
 * The webhook outbox journal (supervisor/webhooks/outbox.ts) on real files, and the pure parts of
 * delivery: replay after a reopen (pending deliveries, attempts, cursor), a torn last line
 * ignored, a corrupt middle line refused, duplicate event ids not queued twice; the signature
 * check (supervisor/webhooks/signer.ts) and the backoff bounds (supervisor/webhooks/dispatcher.ts).
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { TenantOutbox } from "../../supervisor/webhooks/outbox.js";
import { signWebhook, verifyWebhook } from "../../supervisor/webhooks/signer.js";
import { backoffMs } from "../../supervisor/webhooks/dispatcher.js";
import { readVmEvent } from "../../supervisor/webhooks/daemon-event-feed.js";

describe("webhook outbox journal and signatures", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-wh-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const hook = { id: "wh_1", url: "http://127.0.0.1:1/", events: null, secret: "whsec_test", createdAt: new Date().toISOString() };

  it("a reopened outbox has its webhooks, pending deliveries with their attempts, and the VM cursor", async () => {
    const o = await TenantOutbox.open("ta1", dir);
    await o.addWebhook(hook);
    const [d] = await o.enqueue({ eventId: "vm-7", eventType: "vm.created", body: '{"a":1}' }, { vmCursor: 7 });
    expect(await o.enqueue({ eventId: "vm-7", eventType: "vm.created", body: '{"a":1}' }), "same event id").to.deep.equal([]);
    await o.recordAttempt(d!, { kind: "retry", status: 500, error: "receiver answered 500", nextAttemptAtMs: 1234 });
    await o.enqueue({ eventId: "tenant-9", eventType: "tenant.suspended", body: '{"b":2}' });
    await o.close();
    const r = await TenantOutbox.open("ta1", dir);
    expect(r.webhooks().map((h) => h.secret)).to.deep.equal(["whsec_test"]);
    expect(r.vmCursor()).to.equal(7);
    expect(r.pendingCount()).to.equal(2);
    expect(r.head("wh_1")).to.include({ eventId: "vm-7", attempts: 1, lastStatus: 500, nextAttemptAtMs: 1234, body: '{"a":1}' });
    await r.close();
  });

  it("a torn last line is ignored; a bad line in the middle refuses the load", async () => {
    const o = await TenantOutbox.open("ta1", dir);
    await o.addWebhook(hook);
    await o.enqueue({ eventId: "vm-1", eventType: "vm.created", body: "{}" });
    await o.close();
    const file = path.join(dir, "journal.ndjson");
    await fs.appendFile(file, '{"op":"enq","d":{"id":');
    const r = await TenantOutbox.open("ta1", dir);
    expect(r.pendingCount()).to.equal(1);
    await r.close();
    await fs.writeFile(file, 'garbage\n' + (await fs.readFile(file, "utf8")));
    const err = await TenantOutbox.open("ta1", dir).catch((e: unknown) => e);
    expect(err).to.have.property("code", "ERR_STATE_CORRUPT");
  });

  it("a signature verifies only with the same body, secret and a recent timestamp", () => {
    const body = '{"event":"vm.created"}';
    const sig = signWebhook("whsec_a", body);
    expect(verifyWebhook("whsec_a", body, sig)).to.equal(true);
    expect(verifyWebhook("whsec_a", body + " ", sig)).to.equal(false);
    expect(verifyWebhook("whsec_b", body, sig)).to.equal(false);
    expect(verifyWebhook("whsec_a", body, signWebhook("whsec_a", body, Math.floor(Date.now() / 1000) - 3600))).to.equal(false);
    expect(verifyWebhook("whsec_a", body, undefined)).to.equal(false);
  });

  it("backoff doubles from the initial delay, stays within 50-100 % of it, and is capped", () => {
    const p = { initialBackoffMs: 1000, maxBackoffMs: 3_600_000 };
    expect([1, 2, 3].map((n) => backoffMs(p, n, () => 1))).to.deep.equal([1000, 2000, 4000]);
    expect(backoffMs(p, 3, () => 0)).to.equal(2000);
    expect(backoffMs(p, 30, () => 1)).to.equal(3_600_000);
  });

  it("a daemon's VM event keeps its optional fields (oom_kills, an idle fallback's fallback_from and refusal), bounded", () => {
    const base = { id: 4, type: "paused", hostname: "dev-2", hostgroup: "dev", reason: "idle", time: "2026-12-07T22:00:00Z" };
    expect(readVmEvent(JSON.stringify({ ...base, fallback_from: "suspend", refusal: "VM dev-2 holds 1 TCP socket(s)" }))).to.deep.equal({ ...base, fallback_from: "suspend", refusal: "VM dev-2 holds 1 TCP socket(s)" });
    expect(readVmEvent(JSON.stringify({ ...base, fallback_from: "pause", refusal: "x" })), "unknown fallback").to.deep.equal(base);
    expect(readVmEvent(JSON.stringify({ ...base, fallback_from: "suspend", refusal: "x".repeat(2000) })), "refusal too long").to.deep.equal({ ...base, fallback_from: "suspend" });
    expect(readVmEvent(JSON.stringify({ ...base, type: "exited", reason: "oom", oom_kills: 2 }))).to.deep.include({ oom_kills: 2 });
  });
});
