/**
 * Guest agent background exec (`POST /v1/exec?background=true`, `/v1/exec/<id>…`): launch,
 * list, info, logs (replay, follow, from_id, gap), kill with escalation, wait-exit, reap, and
 * the 400/404/409/410/503 rules.
 */
import { expect } from "chai";
import { call, ndjson, startTestAgent, type TestAgent } from "./agent-fixture.js";

describe("guest agent: background exec", function () {
  let agent: TestAgent;
  before(async () => {
    agent = await startTestAgent();
  });
  after(async () => {
    await agent?.stop();
  });

  const launch = async (query: string): Promise<Record<string, unknown>> => {
    const r = await call(agent.socket, "POST", `/v1/exec?background=true&${query}`);
    expect(r.status, r.text).to.equal(201);
    return r.json() as Record<string, unknown>;
  };
  const get = (p: string) => call(agent.socket, "GET", `/v1/exec${p}`);

  it("runs the full lifecycle: launch, list, logs, kill, wait-exit, reap, 410", async () => {
    const l = await launch("cmd=/bin/sh&args=-c&args=echo%20started-ok;%20exec%20sleep%20600&uid=0&ring_bytes=4096&stdio=base64");
    expect(l.exec_id).to.match(/^ex_/);
    expect(l.pid as number).to.be.greaterThan(0);
    expect(l.ring_bytes).to.equal(4096);
    expect(l.started_at).to.be.a("string");
    const id = l.exec_id as string;

    const list = (await get("")).json() as Record<string, unknown>[];
    const mine = list.find((e) => e.exec_id === id) as Record<string, unknown>;
    expect(mine).to.include({ running: true, command: "/bin/sh", uid: 0, exit_code: null, ended_at: null });
    expect(mine.args).to.deep.equal(["-c", "echo started-ok; exec sleep 600"]);

    const waited = (await get(`/${id}/wait-exit?timeout=1`)).json() as Record<string, unknown>;
    expect(waited).to.include({ running: true, timed_out: true });

    // Logs replay: started frame id 1, then the echo (base64 in data and stdout).
    let frames: Record<string, unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      frames = ndjson((await get(`/${id}/logs`)).text);
      if (frames.length >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(frames[0]).to.include({ id: 1, type: "started", encoding: "base64" });
    expect(Buffer.from(frames[1]?.data as string, "base64").toString()).to.equal("started-ok\n");
    expect(frames[1]?.stdout).to.equal(frames[1]?.data);

    expect((await call(agent.socket, "DELETE", `/v1/exec/${id}`)).status).to.equal(409);

    const k = await call(agent.socket, "POST", `/v1/exec/${id}/kill`, { body: "{}" });
    expect(k.status).to.equal(200);
    expect(String((k.json() as Record<string, unknown>).signal_sent).toUpperCase()).to.contain("TERM");

    const done = (await get(`/${id}/wait-exit?timeout=30`)).json() as Record<string, unknown>;
    expect(done).to.include({ running: false, timed_out: false, signal: "TERM" });
    expect(done.ended_at).to.be.a("string");

    const all = ndjson((await get(`/${id}/logs?from_id=2`)).text);
    expect(all[0]?.id).to.equal(2);
    expect(all.at(-1)).to.include({ type: "exit", signal: "TERM" });

    const again = await call(agent.socket, "POST", `/v1/exec/${id}/kill`);
    expect((again.json() as Record<string, unknown>).running).to.equal(false);

    const reap = await call(agent.socket, "DELETE", `/v1/exec/${id}`);
    expect(reap.status).to.equal(200);
    expect(reap.json()).to.deep.equal({ exec_id: id, reaped: true });
    for (const p of [`/${id}`, `/${id}/logs`, `/${id}/wait-exit`]) expect((await get(p)).status).to.equal(410);
    expect((await call(agent.socket, "DELETE", `/v1/exec/${id}`)).status).to.equal(410);
    expect((await get("/ex_doesnotexist")).status).to.equal(404);
  });

  it("follows logs live until the exit frame", async () => {
    const l = await launch("cmd=/bin/sh&args=-c&args=for%20i%20in%201%202%203;%20do%20echo%20line$i;%20sleep%200.2;%20done");
    const frames = ndjson((await get(`/${l.exec_id as string}/logs?follow=true`)).text);
    expect(frames[0]?.type).to.equal("started");
    expect(frames.at(-1)).to.include({ type: "exit", exit_code: 0 });
    expect(frames.filter((f) => f.type === "stdout").map((f) => f.data).join("")).to.equal("line1\nline2\nline3\n");
    const ids = frames.map((f) => f.id as number);
    expect(ids).to.deep.equal([...ids].sort((a, b) => a - b));
    await call(agent.socket, "DELETE", `/v1/exec/${l.exec_id as string}`);
  });

  it("evicts old frames and reports a gap", async () => {
    const l = await launch("cmd=/bin/sh&args=-c&args=i=0;%20while%20[%20$i%20-lt%20300%20];%20do%20echo%20xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx;%20i=$((i%2B1));%20done&ring_bytes=2048");
    const id = l.exec_id as string;
    await get(`/${id}/wait-exit?timeout=30`);
    const frames = ndjson((await get(`/${id}/logs`)).text);
    expect(frames[0]?.type).to.equal("gap");
    expect(frames[0]?.dropped_frames as number).to.be.greaterThan(0);
    expect(frames.at(-1)?.type).to.equal("exit");
    const info = (await get(`/${id}`)).json() as Record<string, unknown>;
    expect(info.bytes_written).to.equal(300 * 53);
    expect(info.bytes_dropped as number).to.be.greaterThan(0);
    await call(agent.socket, "DELETE", `/v1/exec/${id}`);
  });

  it("escalates TERM to KILL after grace_ms", async () => {
    const l = await launch("cmd=/bin/sh&args=-c&args=trap%20''%20TERM;%20sleep%20600");
    const id = l.exec_id as string;
    await new Promise((r) => setTimeout(r, 200)); // let the shell install its trap
    await call(agent.socket, "POST", `/v1/exec/${id}/kill`, { body: JSON.stringify({ signal: "SIGTERM", grace_ms: 300 }) });
    const done = (await get(`/${id}/wait-exit?timeout=30`)).json() as Record<string, unknown>;
    expect(done).to.include({ running: false, signal: "KILL" });
    await call(agent.socket, "DELETE", `/v1/exec/${id}`);
  });

  it("enforces the request rules and the ring budget", async () => {
    const post = (q: string) => call(agent.socket, "POST", `/v1/exec?background=true&${q}`);
    expect((await post("cmd=true&stdin=true")).status).to.equal(400);
    expect((await post("cmd=true&buffered=true")).status).to.equal(400);
    expect((await post("cmd=true&ring_bytes=-1")).status).to.equal(400);
    expect((await post(`cmd=true&ring_bytes=${256 * 1024 * 1024 + 1}`)).status).to.equal(400);
    expect((await post("cmd=no-such-binary-xyz")).status).to.equal(400);
    const big = await launch(`cmd=sleep&args=600&ring_bytes=${256 * 1024 * 1024}`);
    expect((await post("cmd=true")).status).to.equal(503);
    await call(agent.socket, "POST", `/v1/exec/${big.exec_id as string}/kill`, { body: JSON.stringify({ signal: "KILL" }) });
    await get(`/${big.exec_id as string}/wait-exit?timeout=30`);
    expect((await call(agent.socket, "DELETE", `/v1/exec/${big.exec_id as string}`)).status).to.equal(200);
    const ok = await launch("cmd=true");
    await get(`/${ok.exec_id as string}/wait-exit?timeout=30`);
    await call(agent.socket, "DELETE", `/v1/exec/${ok.exec_id as string}`);
    expect((await call(agent.socket, "POST", "/v1/exec/ex_x/kill", { body: '{"signal":"BOGUS"}' })).status).to.equal(404);
  });
});
