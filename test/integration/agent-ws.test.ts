/**
 * The daemon's WebSocket upgrade handler (agent-client/agent-ws.ts) with the real guest agent
 * running as a host process: bearer auth on the upgrade, errors before the upgrade (404, 409,
 * 400, agent 400 relayed), a shell held until the VM's boot-time secret delivery has ended
 * (as the agent routes hold exec), malformed shell frames ⇒ 1002, forward to a loopback listener with
 * upstream-close ⇒ WebSocket close, and the agent's fs/watch edge cases (one_shot, patterns,
 * chmod vs write, remove, heartbeat-free close on timeout).
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import path from "node:path";
import WebSocket from "ws";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { createAgentUpgradeHandler, type AgentUpgradeHandler } from "../../tenant-daemon/api/ws-upgrade.js";
import { call, startTestAgent, type TestAgent } from "./agent-fixture.js";

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

interface Refusal {
  status: number;
  body: string;
}

function open(port: number, p: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${p}`, { headers });
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (_req, res: http.IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode ?? 0, body } satisfies Refusal)));
    });
    ws.once("error", reject);
  });
}

async function refusal(port: number, p: string, headers: Record<string, string> = {}): Promise<Refusal> {
  try {
    (await open(port, p, headers)).terminate();
    return { status: 101, body: "" };
  } catch (err) {
    return err as Refusal;
  }
}

describe("daemon WebSocket endpoints over a real agent (agent-ws)", function () {
  let agent: TestAgent;
  let server: http.Server;
  let handler: AgentUpgradeHandler;
  let port = 0;
  const auth = { Authorization: "Bearer s3cret" };
  /** vm-1's boot-time secret delivery while a test holds it, and what it calls when the handler asks for it. */
  let held: { settled: Promise<void>; asked: () => void } | undefined;

  before(async function () {
    agent = await startTestAgent({ defaultUser: null });
    handler = createAgentUpgradeHandler({
      authToken: "s3cret",
      logger: silentLogger,
      resolveAgent: (h) => {
        if (h === "vm-1") return agent.endpoint;
        if (h === "paused-1") throw new PaddockError("ERR_VM_PAUSED", "VM paused");
        throw new PaddockError("ERR_VM_NOT_FOUND", "VM not found");
      },
      secretsSettled: (h) => {
        if (h !== "vm-1" || held === undefined) return undefined;
        held.asked();
        return held.settled;
      },
    });
    server = http.createServer((_req, res) => res.end());
    server.on("upgrade", (req, socket, head) => handler.handle(req, socket, head as Buffer));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async function () {
    handler?.closeAll();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await agent?.stop();
  });

  it("authenticates the upgrade and answers errors before it", async () => {
    expect((await refusal(port, "/vm/vm-1/shell")).status).to.equal(401);
    expect((await refusal(port, "/vm/vm-1/shell", { Authorization: "Bearer wrong" })).status).to.equal(401);
    expect((await refusal(port, "/vm/nope/shell", auth)).status).to.equal(404);
    expect((await refusal(port, "/vm/paused-1/shell", auth)).status).to.equal(409);
    expect((await refusal(port, "/vm/vm-1/other", auth)).status).to.equal(404);
    const bad = await refusal(port, "/vm/vm-1/shell?cwd=/no/such/dir", auth);
    expect(bad.status).to.equal(400);
    expect(JSON.parse(bad.body)).to.include({ code: "ERR_PATH_INVALID" });
    expect((await refusal(port, "/vm/vm-1/forward", { ...auth, "X-Inlets-Upstream": "unix:relative" })).status).to.equal(400);
  });

  it("opens a shell only once the VM's boot-time secret delivery has ended", async () => {
    const flag = path.join(agent.dir, "secrets-landed");
    const probe = path.join(agent.dir, "probe-shell.sh");
    // The "shell" reads at its start what the delivery writes.
    writeFileSync(probe, `#!/bin/sh\ncat ${flag} 2>/dev/null || echo missing\necho probe-done\n`, { mode: 0o755 });
    let land!: () => void;
    let asked!: () => void;
    const wasAsked = new Promise<string>((resolve) => (asked = () => resolve("held")));
    held = { settled: new Promise<void>((resolve) => (land = resolve)), asked };
    try {
      // Output is collected from the start: the probe may end before `open` is seen.
      const ws = new WebSocket(`ws://127.0.0.1:${port}/vm/vm-1/shell?uid=0&shell=${encodeURIComponent(probe)}`, { headers: auth });
      let output = "";
      ws.on("message", (d: Buffer) => {
        if (d[0] === 0x01) output += d.subarray(5).toString("utf8");
      });
      const closed = new Promise<void>((resolve) => ws.once("close", () => resolve()));
      const opening = new Promise<string>((resolve, reject) => {
        ws.once("open", () => resolve("opened"));
        ws.once("error", reject);
      });
      opening.catch(() => undefined);
      const first = await Promise.race([wasAsked, opening]);
      expect(first, "the shell was opened without waiting for the delivery").to.equal("held");
      writeFileSync(flag, "landed");
      land();
      await opening;
      await closed;
      expect(output).to.include("landed").and.to.include("probe-done").and.not.include("missing");
    } finally {
      land();
      held = undefined;
      rmSync(flag, { force: true });
      rmSync(probe, { force: true });
    }
  });

  it("closeAll (daemon stop) also ends an upgrade still under way, and refuses later ones; a live session is closed 1001 (control)", async () => {
    // A handler of its own: closeAll leaves it refusing, and the other tests share `handler`.
    let land!: () => void;
    let asked!: () => void;
    const settled = new Promise<void>((resolve) => (land = resolve));
    const wasAsked = new Promise<void>((resolve) => (asked = resolve));
    const h2 = createAgentUpgradeHandler({
      authToken: "s3cret", logger: silentLogger, resolveAgent: () => agent.endpoint,
      secretsSettled: (h) => {
        if (h !== "held") return undefined;
        asked();
        return settled;
      },
    });
    const s2 = http.createServer((_req, res) => res.end());
    s2.on("upgrade", (req, socket, head) => h2.handle(req, socket, head as Buffer));
    await new Promise<void>((resolve) => s2.listen(0, "127.0.0.1", resolve));
    const p2 = (s2.address() as AddressInfo).port;
    try {
      const live = await open(p2, "/vm/vm-1/shell?uid=0&shell=/bin/sh", auth);
      const liveClosed = new Promise<number>((resolve) => live.once("close", (c: number) => resolve(c)));
      const ws = new WebSocket(`ws://127.0.0.1:${p2}/vm/held/shell?uid=0&shell=/bin/sh`, { headers: auth });
      const outcome = new Promise<string>((resolve) => {
        ws.once("open", () => resolve("opened"));
        ws.once("error", () => resolve("refused"));
        ws.once("close", () => resolve("refused"));
      });
      await wasAsked;
      h2.closeAll();
      land();
      expect(await liveClosed, "control: the live session").to.equal(1001);
      expect(await outcome, "the upgrade under way at the stop").to.equal("refused");
      const late = (await refusal(p2, "/vm/vm-1/shell?uid=0&shell=/bin/sh", auth)) as Refusal & { code?: string };
      expect(late.code, "an upgrade after the stop: its socket destroyed").to.equal("ECONNRESET");
      // Nothing holds the server open (before the fix the late session did, as long as its client liked).
      await new Promise<void>((resolve) => s2.close(() => resolve()));
      ws.terminate();
    } finally {
      land();
      s2.closeAllConnections();
      s2.close();
    }
  });

  it("closes a shell with 1002 on a malformed frame", async () => {
    const ws = await open(port, "/vm/vm-1/shell?uid=0&shell=/bin/sh", auth);
    const closed = new Promise<number>((resolve) => ws.once("close", (c: number) => resolve(c)));
    const bad = frame(0x01, Buffer.from("echo x\n"));
    bad.writeUInt32BE(99, 1); // declared length ≠ message length
    ws.send(bad);
    expect(await closed).to.equal(1002);
  });

  it("forwards to a loopback TCP listener and closes the WebSocket when the upstream closes", async () => {
    const received: Buffer[] = [];
    const upstream = net.createServer((s) => {
      s.on("data", (c: Buffer) => {
        received.push(c);
        if (Buffer.concat(received).length >= 4) s.end("bye!");
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    try {
      const target = `127.0.0.1:${(upstream.address() as AddressInfo).port}`;
      const ws = await open(port, "/vm/vm-1/forward", { ...auth, "X-Inlets-Upstream": target });
      const got: Buffer[] = [];
      ws.on("message", (d: Buffer) => got.push(d));
      const closed = new Promise<number>((resolve) => ws.once("close", (c: number) => resolve(c)));
      ws.send(Buffer.from("ping"));
      expect(await closed).to.equal(1000);
      expect(Buffer.concat(got).toString()).to.equal("bye!");
      expect(Buffer.concat(received).toString()).to.equal("ping");
    } finally {
      upstream.close();
    }
  });

  it("forwards to a Unix socket upstream", async () => {
    const sock = path.join(agent.dir, "up.sock");
    const upstream = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => upstream.listen(sock, resolve));
    try {
      const ws = await open(port, "/vm/vm-1/forward", { ...auth, "X-Inlets-Upstream": `unix:${sock}` });
      const data = randomBytes(64 << 10);
      const got: Buffer[] = [];
      const all = new Promise<void>((resolve) =>
        ws.on("message", (d: Buffer) => {
          got.push(d);
          if (Buffer.concat(got).length >= data.length) resolve();
        }),
      );
      ws.send(data);
      await all;
      expect(Buffer.concat(got).equals(data)).to.equal(true);
      ws.close();
      await new Promise<void>((resolve) => ws.once("close", () => resolve()));
    } finally {
      upstream.close();
    }
  });

  describe("fs/watch on the agent", () => {
    const dir = (): string => path.join(agent.dir, "watched");
    /** Open a watch; `act(n)` runs once the stream is up (n = 0) and after each event n (event-driven, no sleeps). */
    const watch = (query: string, act: (n: number) => void): Promise<Record<string, unknown>[]> =>
      new Promise((resolve, reject) => {
        const req = http.request({ socketPath: agent.socket, method: "GET", path: `/v1/fs/watch?${query}` }, (res) => {
          if (res.statusCode !== 200) {
            reject(new Error(`status ${res.statusCode}`));
            return;
          }
          let raw = "";
          const events = (): Record<string, unknown>[] =>
            raw.split("\n\n").filter((b) => b.endsWith("}")).flatMap((b) => b.split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)) as Record<string, unknown>));
          let seen = 0;
          res.on("data", (c: Buffer) => {
            raw += c.toString();
            const n = raw.split("\n\n").length - 1;
            while (seen < n) act(++seen);
          });
          res.on("end", () => resolve(events()));
          act(0);
        });
        req.on("error", reject);
        req.end();
      });

    beforeEach(() => {
      rmSync(dir(), { recursive: true, force: true });
      mkdirSync(dir());
      writeFileSync(path.join(dir(), "a.txt"), "1");
    });

    it("one_shot with patterns delivers only the first matching event", async () => {
      const ev = await watch(`paths=${encodeURIComponent(dir())}&patterns=*.log&one_shot=true&debounce=0s`, (n) => {
        if (n > 0) return;
        writeFileSync(path.join(dir(), "skip.txt"), "x");
        writeFileSync(path.join(dir(), "take.log"), "x");
      });
      expect(ev.map((e) => [e.id, e.type, path.basename(String(e.path))])).to.deep.equal([[1, "create", "take.log"]]);
    });

    it("tells chmod from write, and reports removes", async () => {
      const f = path.join(dir(), "a.txt");
      const ev = await watch(`paths=${encodeURIComponent(f)}&events=chmod&events=write&events=remove&max_events=3&debounce=20ms`, (n) => {
        if (n === 0) chmodSync(f, 0o600);
        if (n === 1) writeFileSync(f, "22");
        if (n === 2) rmSync(f);
      });
      expect(ev.map((e) => e.type)).to.deep.equal(["chmod", "write", "remove"]);
      expect(ev[1]?.size).to.equal(2);
    });

    it("a move inside the watch is rename (old path) then create (new path); a delete is remove", async () => {
      const a = path.join(dir(), "a.txt");
      const b = path.join(dir(), "b.txt");
      const ev = await watch(`paths=${encodeURIComponent(dir())}&events=create&events=remove&events=rename&max_events=3&debounce=0s`, (n) => {
        if (n === 0) renameSync(a, b);
        if (n === 2) rmSync(b);
      });
      expect(ev.map((e) => [e.type, path.basename(String(e.path)), e.isDir])).to.deep.equal([["rename", "a.txt", false], ["create", "b.txt", false], ["remove", "b.txt", false]]);
    });

    it("a move out of the watch is a rename alone; a directory moved inside a recursive watch keeps being watched under its new name", async () => {
      const outside = path.join(agent.dir, "outside.txt");
      mkdirSync(path.join(dir(), "d1"));
      const ev = await watch(`paths=${encodeURIComponent(dir())}&recursive=true&max_events=4&debounce=0s`, (n) => {
        if (n === 0) renameSync(path.join(dir(), "a.txt"), outside);
        if (n === 1) renameSync(path.join(dir(), "d1"), path.join(dir(), "d2"));
        if (n === 3) writeFileSync(path.join(dir(), "d2", "in.txt"), "x");
      });
      rmSync(outside, { force: true });
      expect(ev.map((e) => [e.type, path.relative(dir(), String(e.path)), e.isDir])).to.deep.equal([
        ["rename", "a.txt", false],
        ["rename", "d1", true],
        ["create", "d2", true],
        ["create", path.join("d2", "in.txt"), false],
      ]);
    });

    it("closes the stream at its timeout", async () => {
      const ev = await watch(`paths=${encodeURIComponent(dir())}&timeout=300ms`, () => undefined);
      expect(ev).to.deep.equal([]);
    });

    it("validates Last-Event-ID, events and durations", async () => {
      const q = `/v1/fs/watch?paths=${encodeURIComponent(dir())}`;
      expect((await call(agent.socket, "GET", q, { headers: { "Last-Event-ID": "18446744073709551616" } })).status).to.equal(400);
      expect((await call(agent.socket, "GET", `${q}&events=bogus`)).status).to.equal(400);
      expect((await call(agent.socket, "GET", `${q}&debounce=5x`)).status).to.equal(400);
      expect((await call(agent.socket, "GET", `${q}&timeout=1ms`, { headers: { "Last-Event-ID": "18446744073709551615" } })).status).to.equal(200);
    });
  });
});
