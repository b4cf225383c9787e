/**
 * VM expiry and the lifecycle event stream on a real tenant daemon with real runc VMs: a real
 * SSE client on GET /events sees a VM with `ttl` go created → ready → expired → deleted
 * (reason `expired`); an `expires_at=` tag PATCH moves a deadline earlier; a persistent VM of a
 * group with the default `expiry_action: shutdown` is stopped, not deleted; a deadline survives a
 * daemon restart; `Last-Event-ID` resumes with exactly the missed events; bad `ttl`, a ttl over
 * `max_ttl` and a bad `expires_at=` are refused with their codes. Why a VM exited
 * (tenant-daemon/vm/vm-exit-reason.ts): a guest process OOM-killed by the VM's memory limit is an
 * `oom` event while the VM runs on; an OOM kill that ends the init is `exited`/`deleted` with
 * reason `oom`; the init ending on SIGTERM is `guest_exit`; a guest that ignores SIGTERM past
 * `stop_timeout_seconds` at a DELETE is `exited` with reason `reaped`.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import type { TestResponse } from "../helpers/http.js";
import { SseClient, type SseEvent } from "../helpers/sse.js";

interface Node { hostname: string; tags: string[]; status: string }

describe("VM expiry and lifecycle events (privileged, real daemon and runc)", function () {
  this.timeout(240_000);
  let d: TestDaemon;
  const streams: SseClient[] = [];

  before(async () => {
    const group = (name: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
      name, count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() }, ...extra,
    });
    d = await TestDaemon.create({
      hostGroups: [group("sbox", { max_ttl: "1h" }), group("pdel", { expiry_action: "delete" }), group("oomg", { ram_mb: 128 })],
      // A DELETE gives the guest stop_timeout_seconds (2) before SIGKILL: the `reaped` case.
      config: { graceful_shutdown: true },
    });
    await d.start();
  });

  afterEach(() => {
    for (const s of streams.splice(0)) s.close();
  });

  after(async () => {
    for (const s of streams.splice(0)) s.close();
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  const open = async (headers: Record<string, string> = {}): Promise<SseClient> => {
    const s = await SseClient.open({ socketPath: d.socketPath }, "/events", headers);
    streams.push(s);
    expect(s.status).to.equal(200);
    expect(s.headers["content-type"]).to.match(/^text\/event-stream/);
    return s;
  };
  const create = async (group: string, body: Record<string, unknown>): Promise<string> => {
    const r = await d.post(`/hostgroup/${group}/nodes`, body);
    expect(r.status, r.text).to.equal(201);
    return (r.json as { hostname: string }).hostname;
  };
  const of = (s: SseClient, h: string): SseEvent[] => s.events.filter((e) => e.json?.hostname === h);
  const refused = (r: TestResponse, code: string): void => {
    expect(r.status, r.text).to.equal(400);
    expect(r.json, r.text).to.include({ code });
  };
  const deadlineTag = async (h: string): Promise<string[]> => ((await d.get(`/vm/${h}`)).json as Node).tags.filter((t) => t.startsWith("expires_at="));

  it("a VM with ttl 3s: created, ready, expired, deleted (reason expired), in order; its deadline is its expires_at= tag", async () => {
    const s = await open();
    const before = Date.now();
    const h = await create("pdel", { ttl: "3s" });
    const tags = await deadlineTag(h);
    expect(tags).to.have.length(1);
    const deadline = Date.parse((tags[0] as string).slice("expires_at=".length));
    expect(deadline).to.be.within(before + 3000, Date.now() + 3000);
    await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 60_000);
    expect(of(s, h).map((e) => `${e.event}:${String(e.json?.reason)}`)).to.deep.equal(["created:api", "ready:agent", "expired:expired", "deleted:expired"]);
    expect(of(s, h)[2]?.json).to.include({ action: "delete", hostgroup: "pdel" });
    const ids = s.events.map((e) => Number(e.id));
    expect(ids, "ids increase by one").to.deep.equal(ids.map((_, i) => (ids[0] as number) + i));
    expect((await d.get(`/vm/${h}`)).status).to.equal(404);
    const line = d.stderr.split("\n").find((l) => l.includes("vm expired") && l.includes(h));
    expect(line, "the daemon log names the reason").to.include('"reason":"expired"');
  });

  it("a tags PATCH with an earlier expires_at= moves the deadline (the max_ttl default is replaced, not doubled)", async () => {
    const s = await open();
    const h = await create("sbox", {});
    // No ttl: the group's max_ttl (1h) is its default.
    const first = await deadlineTag(h);
    expect(first).to.have.length(1);
    expect(Date.parse((first[0] as string).slice(11)) - Date.now()).to.be.above(50 * 60_000);
    const soon = new Date(Date.now() + 2000).toISOString();
    const r = await d.patch(`/vm/${h}/tags`, { add: [`expires_at=${soon}`] });
    expect(r.status, r.text).to.equal(200);
    expect((r.json as { tags: string[] }).tags.filter((t) => t.startsWith("expires_at="))).to.deep.equal([`expires_at=${soon}`]);
    const gone = await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 60_000);
    expect(gone.json).to.include({ reason: "expired" });
  });

  it("a persistent VM of a group with the default expiry_action is shut down (Stopped, kept), not deleted", async () => {
    const s = await open();
    const h = await create("sbox", { persistent: true, ttl: "3s" });
    const stopped = await s.waitFor((e) => e.event === "stopped" && e.json?.hostname === h, 60_000);
    expect(stopped.json).to.include({ reason: "expired" });
    expect(of(s, h).find((e) => e.event === "expired")?.json).to.include({ action: "shutdown" });
    expect(of(s, h).some((e) => e.event === "deleted")).to.equal(false);
    const vm = await d.get(`/vm/${h}`);
    expect(vm.status).to.equal(200);
    expect((vm.json as Node).status).to.equal("Stopped");
    expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
  });

  it("Last-Event-ID resumes with exactly the events missed while disconnected", async () => {
    const h = await create("sbox", {});
    const s1 = await open();
    // Something to have seen: this VM's pause.
    expect((await d.post(`/vm/${h}/pause`)).status).to.equal(200);
    const seen = await s1.waitFor((e) => e.event === "paused" && e.json?.hostname === h);
    s1.close();
    expect((await d.post(`/vm/${h}/resume`)).status).to.equal(200);
    expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
    const s2 = await open({ "last-event-id": seen.id as string });
    await s2.waitFor((e) => e.event === "deleted" && e.json?.hostname === h);
    // A `ready` may come between them: the VM was paused before its agent first answered (the
    // create did not wait), and a resume answers once the agent took its secrets.
    expect(s2.events.map((e) => `${e.event}:${String(e.json?.reason)}`).filter((e) => e !== "ready:agent")).to.deep.equal(["resumed:api", "deleted:api"]);
    expect(Number(s2.events[0]?.id)).to.equal(Number(seen.id) + 1);
    // Positive control: an id the ring no longer holds (from before this daemon run) gets a reset and every held event.
    const s3 = await open({ "last-event-id": "1" });
    await s3.waitFor((e) => e.event === "deleted" && e.json?.hostname === h);
    expect(s3.events[0]?.event).to.equal("reset");
    expect(s3.events.length).to.be.above(s2.events.length);
  });

  it("a deadline survives a daemon restart: a persistent VM is deleted at its deadline after the restart", async () => {
    const h = await create("pdel", { persistent: true, ttl: "10s" });
    const deadline = Date.parse(((await deadlineTag(h))[0] as string).slice(11));
    await d.stop();
    await d.start();
    // Re-attached with its deadline (unless the restart took longer than the ttl).
    if (Date.now() < deadline - 1000) expect((await d.get(`/vm/${h}`)).status, "still there before its deadline").to.equal(200);
    const s = await open({ "last-event-id": "1" });
    const gone = await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 90_000);
    expect(gone.json).to.include({ reason: "expired" });
    expect(Date.parse(gone.json?.time as string)).to.be.at.least(deadline);
    expect((await d.get(`/vm/${h}`)).status).to.equal(404);
  });

  it("refuses a bad ttl, a ttl over max_ttl and a bad expires_at= with 400 and their codes, creating nothing", async () => {
    const before = ((await d.get("/nodes")).json as Node[]).length;
    for (const ttl of ["90", "abc", "-5s", "0", "1d", " 5s", 5]) refused(await d.post("/hostgroup/sbox/nodes", { ttl }), "ERR_TTL_INVALID");
    refused(await d.post("/hostgroup/sbox/nodes", { ttl: "2h" }), "ERR_TTL_OVER_MAX");
    refused(await d.post("/hostgroup/sbox/nodes", { tags: [`expires_at=${new Date(Date.now() + 3 * 3600_000).toISOString()}`] }), "ERR_TTL_OVER_MAX");
    for (const v of ["tomorrow", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-12-06 09:00:00Z"]) {
      refused(await d.post("/hostgroup/sbox/nodes", { tags: [`expires_at=${v}`] }), "ERR_EXPIRES_AT_INVALID");
    }
    expect(((await d.get("/nodes")).json as Node[]).length).to.equal(before);
    const h = await create("sbox", { ttl: "10m" });
    refused(await d.patch(`/vm/${h}/tags`, { add: ["expires_at=soon"] }), "ERR_EXPIRES_AT_INVALID");
    refused(await d.patch(`/vm/${h}/tags`, { add: [`expires_at=${new Date(Date.now() + 2 * 3600_000).toISOString()}`] }), "ERR_TTL_OVER_MAX");
    refused(await d.patch(`/vm/${h}/tags`, { replace: ["role=x"] }), "ERR_TTL_OVER_MAX");
    // Positive control: a valid move within max_ttl is taken.
    expect((await d.patch(`/vm/${h}/tags`, { add: [`expires_at=${new Date(Date.now() + 20 * 60_000).toISOString()}`] })).status).to.equal(200);
    expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
  });

  describe("why a VM exited", () => {
    /** Run `script` as root in the guest and wait for its answer. */
    const sh = async (h: string, script: string): Promise<{ exit_code?: number; stdout?: string; stderr?: string }> => {
      const r = await d.post(`/vm/${h}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&gid=0&buffered=true`);
      expect(r.status, r.text).to.equal(200);
      return r.json as { exit_code?: number };
    };
    /** Start `script` in the guest and do not wait: it ends the VM (and so its own exec stream). */
    const fire = (h: string, script: string): void => {
      void d.post(`/vm/${h}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&gid=0&buffered=true`).catch(() => undefined);
    };
    // dd's one 1 GiB buffer, filled from /dev/zero, passes the group's 128 MiB limit.
    const HOG = "dd if=/dev/zero of=/dev/null bs=1G count=1 2>/dev/null";
    const reasons = (s: SseClient, h: string): string[] => of(s, h).map((e) => `${e.event}:${String(e.json?.reason)}`);

    it("a guest process OOM-killed is an `oom` event and the VM runs on; an OOM kill of its init is exited/deleted with reason oom", async () => {
      const s = await open();
      const h = await create("oomg", {});
      const hog = await sh(h, HOG);
      expect(hog.exit_code, "the hog was SIGKILLed").to.equal(137);
      const oom = await s.waitFor((e) => e.event === "oom" && e.json?.hostname === h, 30_000);
      expect(oom.json).to.include({ reason: "oom", hostgroup: "oomg" });
      expect(oom.json?.oom_kills).to.be.a("number").and.at.least(1);
      expect(((await d.get(`/vm/${h}`)).json as Node).status).to.equal("Running");
      expect((await sh(h, "echo alive")).stdout).to.equal("alive\n");
      // Now the OOM killer prefers the init (tini, oom_score_adj raised from inside): the VM ends.
      fire(h, `echo 1000 > /proc/1/oom_score_adj && ${HOG}`);
      const gone = await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 60_000);
      expect(gone.json).to.include({ reason: "oom" });
      const exited = of(s, h).find((e) => e.event === "exited");
      expect(exited?.json).to.include({ reason: "oom" });
      expect(exited?.json?.oom_kills, "only kills not reported by the earlier oom event").to.be.a("number").and.at.least(1);
      expect(reasons(s, h).filter((r) => r.startsWith("oom:")), "one oom event: the fatal kill is the exit's").to.deep.equal(["oom:oom"]);
    });

    it("the init ending on SIGTERM (a guest poweroff) is exited/deleted with reason guest_exit", async () => {
      const s = await open();
      const h = await create("sbox", {});
      fire(h, "kill -TERM 1");
      await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 60_000);
      expect(reasons(s, h).slice(-2)).to.deep.equal(["exited:guest_exit", "deleted:guest_exit"]);
      expect(of(s, h).find((e) => e.event === "exited")?.json).to.not.have.property("oom_kills");
    });

    it("a guest that ignores SIGTERM past stop_timeout_seconds at a DELETE is exited with reason reaped", async () => {
      const s = await open();
      const h = await create("sbox", {});
      // Stop the agent (the init's only child, which tini forwards SIGTERM to), from a detached shell.
      expect((await sh(h, "setsid sh -c 'sleep 0.3; kill -STOP $(cat /proc/1/task/1/children)' </dev/null >/dev/null 2>&1 &")).exit_code).to.equal(0);
      // Poll the host's view until the agent is stopped (state T).
      const init = (JSON.parse((await run("runc", ["state", `pdk-${d.tenantId}-${h}`])).stdout) as { pid: number }).pid;
      const agentStopped = async (): Promise<boolean> => {
        const kids = (await fs.readFile(`/proc/${init}/task/${init}/children`, "utf8")).trim().split(/\s+/).filter(Boolean);
        return kids.length > 0 && (await Promise.all(kids.map(async (k) => / T /.test(await fs.readFile(`/proc/${k}/stat`, "utf8"))))).every(Boolean);
      };
      for (let i = 0; i < 200 && !(await agentStopped()); i++) await new Promise((r) => setTimeout(r, 50));
      expect(await agentStopped(), "the agent is stopped").to.equal(true);
      expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
      await s.waitFor((e) => e.event === "deleted" && e.json?.hostname === h, 30_000);
      expect(reasons(s, h).slice(-2)).to.deep.equal(["exited:reaped", "deleted:api"]);
    });
  });
});
