/**
 * The WebSocket, SSE and stats endpoints against a REAL tenant daemon and runc VM:
 * an interactive shell on a guest PTY (`echo`, `stty size` after a resize, SessionClose on
 * exit), TCP forwarding to a listener inside the VM, fs/watch, NodeStat snapshots, the
 * guest-symlink-to-/etc/shadow cp check, a full guest disk ⇒ 507, and a stopped VM ⇒ 4xx.
 */
import { echoThroughWs } from "../helpers/ws.js";
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import http from "node:http";
import WebSocket from "ws";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { call } from "../integration/agent-fixture.js";

const DATA = 0x01;
const WINDOW = 0x02;
const SESSION_CLOSE = 0x05;

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}
function windowSize(cols: number, rows: number): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(cols, 0);
  p.writeUInt32BE(rows, 4);
  return frame(WINDOW, p);
}

/** A client of `/vm/{h}/shell`: accumulates Data output; `until` resolves when it matches. */
class ShellClient {
  output = "";
  sessionClosed = false;
  closed: Promise<number>;
  private waiters: { test: () => boolean }[] = [];

  constructor(readonly ws: WebSocket) {
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      expect(isBinary).to.equal(true);
      const len = data.readUInt32BE(1);
      expect(data.length).to.equal(5 + len);
      if (data[0] === DATA) this.output += data.subarray(5).toString("utf8");
      if (data[0] === SESSION_CLOSE) this.sessionClosed = true;
      this.check();
    });
    this.closed = new Promise((resolve) => ws.once("close", (code: number) => resolve(code)));
  }

  private check(): void {
    this.waiters = this.waiters.filter((w) => !w.test());
  }

  /** Resolves with the first match of `re` in the output so far (now or when more arrives). */
  until(re: RegExp): Promise<RegExpExecArray> {
    return new Promise((resolve) => {
      this.waiters.push({
        test: () => {
          const m = re.exec(this.output);
          if (m) resolve(m);
          return m !== null;
        },
      });
      this.check();
    });
  }

  /** Resolves once the output is longer than `n` characters. */
  longerThan(n: number): Promise<void> {
    return new Promise((resolve) => {
      this.waiters.push({
        test: () => {
          if (this.output.length > n) resolve();
          return this.output.length > n;
        },
      });
      this.check();
    });
  }

  type(text: string): void {
    this.ws.send(frame(DATA, Buffer.from(text)));
  }
}

/** Open a WebSocket over the daemon's Unix socket; rejects with the HTTP status of a refused upgrade. */
function openWs(socketPath: string, p: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${socketPath}:${p}`, { headers });
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (_req, res: http.IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
    });
    ws.once("error", reject);
  });
}

async function refusedStatus(socketPath: string, p: string, headers: Record<string, string> = {}): Promise<number> {
  try {
    const ws = await openWs(socketPath, p, headers);
    ws.terminate();
    return 101;
  } catch (err) {
    return (err as { status?: number }).status ?? 0;
  }
}

describe("shell, forward, fs/watch and stats in a real runc VM (privileged)", function () {
  let d: TestDaemon;
  let h = "";
  const exec = (q: string) => call(d.socketPath, "POST", `/vm/${h}/exec?${q}`);
  const sh = async (script: string): Promise<Record<string, unknown>> =>
    (await exec(`cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&buffered=true`)).json() as Record<string, unknown>;

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    const r = await call(d.socketPath, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", { body: JSON.stringify({ persistent: true }) });
    expect(r.status, r.text).to.equal(201);
    h = (r.json() as { hostname: string }).hostname;
  });

  after(async function () {
    await d?.destroy();
    // runc's state dir, not `runc list` (which fails when another test deletes a container meanwhile).
    const left = (await fs.readdir("/run/runc").catch(() => [] as string[])).filter((id) => d && id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  it("runs a shell on a guest PTY: echo, resize changes stty size, SessionClose on exit", async () => {
    const client = new ShellClient(await openWs(d.socketPath, `/vm/${h}/shell?uid=0&shell=/bin/bash`));
    try {
      client.ws.send(windowSize(80, 24));
      client.type("echo h''i; tty\n");
      await client.until(/[\r\n]hi\r\n/); // bash may emit `ESC[?2004l\r` before the output
      await client.until(/\/dev\/pts\/\d+/);
      client.ws.send(windowSize(132, 43));
      client.ws.send(frame(0x04)); // heartbeat: ignored
      client.ws.send("text is ignored");
      client.type("stty size\n");
      await client.until(/[\r\n]43 132\r\n/);
      // Keystroke echo round trip (client → daemon → agent → PTY → back), for the report.
      const rounds = 20;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) {
        const len = client.output.length;
        client.type("z");
        await client.longerThan(len);
      }
      const echoMs = Number(process.hrtime.bigint() - t0) / 1e6 / rounds;
      console.log(`      shell keystroke echo round trip ${echoMs.toFixed(2)} ms`);
      client.type("\u0015"); // Ctrl-U: drop the typed z's
      client.type("hostname; exit 3\n");
      await client.until(new RegExp(`[\\r\\n]${h}\\r\\n`));
      expect(await client.closed).to.equal(1000);
      expect(client.sessionClosed).to.equal(true);
    } finally {
      client.ws.terminate();
    }
  });

  it("shell defaults to the guest's default user and answers errors before the upgrade", async () => {
    const client = new ShellClient(await openWs(d.socketPath, `/vm/${h}/shell`));
    try {
      client.type("echo U=$(id -u) G=$(id -G); exit\n");
      const m = await client.until(/[\r\n]U=(\d+) G=([\d ]+)\r\n/);
      expect(Number(m[1])).to.not.equal(0);
      expect((m[2] ?? "").split(" "), "no root supplementary group leaks into a user shell").to.not.include("0");
      await client.closed;
    } finally {
      client.ws.terminate();
    }
    expect(await refusedStatus(d.socketPath, "/vm/nope-9/shell")).to.equal(404);
    expect(await refusedStatus(d.socketPath, `/vm/${h}/shell?shell=/no/such/shell`)).to.equal(400);
    expect(await refusedStatus(d.socketPath, `/vm/${h}/shell?uid=abc`)).to.equal(400);
    expect((await call(d.socketPath, "GET", `/vm/${h}/shell`)).status).to.equal(400);
  });

  it("forwards a WebSocket to a TCP listener inside the VM, byte-exact", async () => {
    const script = "require('net').createServer((s)=>s.pipe(s)).listen(7777,'127.0.0.1',()=>console.log('listening'))";
    const l = await exec(`background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(script)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    const id = (l.json() as { exec_id: string }).exec_id;
    try {
      // follow=true streams the logs until the line appears.
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ socketPath: d.socketPath, path: `/vm/${h}/exec/${id}/logs?follow=true`, method: "GET" }, (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
            if (text.includes("listening")) {
              req.destroy();
              resolve();
            }
          });
          res.on("end", () => reject(new Error(`log stream ended before 'listening': ${text}`)));
        });
        req.on("error", () => undefined);
        req.end();
      });
      expect(await refusedStatus(d.socketPath, `/vm/${h}/forward`)).to.equal(400);
      expect(await refusedStatus(d.socketPath, `/vm/${h}/forward`, { "X-Inlets-Upstream": "no-port" })).to.equal(400);

      const ws = await openWs(d.socketPath, `/vm/${h}/forward`, { "X-Inlets-Upstream": "127.0.0.1:7777", "X-Inlets-Mode": "local" });
      const sent = randomBytes(8 << 20);
      const t0 = process.hrtime.bigint();
      const got = await echoThroughWs(ws, sent, 64 << 10);
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      console.log(`      forward echo of ${sent.length >> 20} MiB: ${((sent.length / 1e6) / s).toFixed(1)} MB/s each way`);
      expect(createHash("sha256").update(got).digest("hex")).to.equal(createHash("sha256").update(sent).digest("hex"));
      const closed = new Promise<number>((resolve) => ws.once("close", (c: number) => resolve(c)));
      ws.close();
      await closed;

      // A refused dial closes the WebSocket after the upgrade (the forward is already accepted).
      const bad = await openWs(d.socketPath, `/vm/${h}/forward`, { "X-Inlets-Upstream": "127.0.0.1:1" });
      await new Promise<void>((resolve) => bad.once("close", () => resolve()));
    } finally {
      await call(d.socketPath, "POST", `/vm/${h}/exec/${id}/kill`, { body: JSON.stringify({ signal: "SIGKILL" }) });
    }
  });

  it("fs/watch streams creates, recursively into new directories, and a guest mv as rename + create", async () => {
    expect((await call(d.socketPath, "POST", `/vm/${h}/fs/mkdir`, { body: JSON.stringify({ path: "/tmp/w", recursive: true }) })).status).to.equal(200);
    expect((await call(d.socketPath, "GET", `/vm/${h}/fs/watch?paths=%2Ftmp%2Fnope`)).status).to.equal(404);
    expect((await call(d.socketPath, "GET", `/vm/${h}/fs/watch?paths=%2Ftmp%2Fw`, { headers: { "Last-Event-ID": "x1" } })).status).to.equal(400);
    expect((await call(d.socketPath, "GET", `/vm/${h}/fs/watch`)).status).to.equal(400);
    const events: Record<string, unknown>[] = [];
    let raw = "";
    const ended = new Promise<void>((resolve, reject) => {
      const req = http.request(
        { socketPath: d.socketPath, method: "GET", path: `/vm/${h}/fs/watch?paths=%2Ftmp%2Fw&recursive=true&events=create,rename&debounce=50ms&max_events=4&patterns=*`, headers: { Accept: "text/event-stream", "Last-Event-ID": "41" } },
        (res) => {
          expect(res.statusCode).to.equal(200);
          expect(res.headers["content-type"]).to.match(/^text\/event-stream/);
          // The stream is established (watchers are set up before the 200): make the changes.
          void sh("mkdir /tmp/w/sub && sleep 0.2 && echo x > /tmp/w/sub/f && sleep 0.2 && mv /tmp/w/sub/f /tmp/w/sub/g");
          res.on("data", (c: Buffer) => (raw += c.toString()));
          res.on("end", () => resolve());
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end();
    });
    await ended;
    for (const block of raw.split("\n\n")) {
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (data) events.push(JSON.parse(data.slice(6)) as Record<string, unknown>);
    }
    expect(events.map((e) => [e.id, e.type, e.path, e.isDir])).to.deep.equal([
      [1, "create", "/tmp/w/sub", true],
      [2, "create", "/tmp/w/sub/f", false],
      [3, "rename", "/tmp/w/sub/f", false],
      [4, "create", "/tmp/w/sub/g", false],
    ]);
    expect(raw).to.match(/^id: 1\nevent: watch\ndata: /);
    expect(events[0]?.timestamp).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$/);
  });

  it("cp of a guest symlink to /etc/shadow returns the guest's file, never the host's", async () => {
    const r = await sh("ln -sf /etc/shadow /tmp/shadow-link && ln -sf /etc/paddock-host-only /tmp/host-only-link && echo ok");
    expect(r.stdout).to.equal("ok\n");
    const guest = await sh("cat /etc/shadow");
    const host = await fs.readFile("/etc/shadow", "utf8");
    const viaLink = await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Ftmp%2Fshadow-link&uid=0`);
    expect(viaLink.status).to.equal(200);
    expect(viaLink.text).to.equal(guest.stdout);
    expect(viaLink.text).to.not.equal(host);
    // A path that exists only on the host (the daemon's own state file) is not reachable.
    const hostOnly = await call(d.socketPath, "GET", `/vm/${h}/cp?path=${encodeURIComponent(`${d.stateDir}/state.json`)}&uid=0`);
    expect(hostOnly.status).to.equal(404);
    expect((await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Ftmp%2Fhost-only-link&uid=0`)).status).to.equal(404);
    expect((await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Ftmp%2F..%2F..%2Fetc%2Fshadow&uid=0`)).text).to.equal(guest.stdout);
  });

  it("a cp upload into a full guest disk answers 507 ERR_VM_DISK_FULL", async () => {
    await sh("dd if=/dev/zero of=/root/fill bs=4M 2>/dev/null; sync; true");
    try {
      const r = await call(d.socketPath, "POST", `/vm/${h}/cp?path=%2Froot%2Fbig&mode=binary&uid=0`, { body: randomBytes(8 << 20) });
      expect(r.status, r.text).to.equal(507);
      expect(r.json()).to.include({ code: "ERR_VM_DISK_FULL" });
      expect((await sh("ls -a /root | grep -c paddock-upload || true")).stdout).to.equal("0\n");
    } finally {
      await sh("rm -f /root/fill /root/big");
    }
  });

  it("reports NodeStat snapshots from the VM's cgroup, disk and agent", async () => {
    const all = await call(d.socketPath, "GET", "/nodes/stats");
    expect(all.status).to.equal(200);
    const list = all.json() as { hostname: string; snapshot: Record<string, unknown> | null; error: string; created_at: string }[];
    const mine = list.find((s) => s.hostname === h);
    expect(mine, all.text).to.not.equal(undefined);
    const s = mine?.snapshot as Record<string, number | string>;
    expect(mine?.error, all.text).to.equal("");
    for (const k of ["totalCpus", "totalMemory", "memoryUsed", "memoryAvailable", "diskIOInflight", "openConnections", "openFiles", "entropy", "diskSpaceTotal", "diskSpaceUsed", "diskSpaceFree"]) {
      expect(Number.isInteger(s[k]) && (s[k] as number) >= 0, `${k}=${s[k]}`).to.equal(true);
    }
    expect(s.totalCpus).to.equal(1);
    expect(s.totalMemory).to.equal(256 << 20);
    expect(s.memoryUsed).to.be.greaterThan(1 << 20).and.lessThan(256 << 20);
    expect((s.memoryUsed as number) + (s.memoryAvailable as number)).to.equal(256 << 20);
    expect(s.diskSpaceTotal).to.be.greaterThan(200e6).and.lessThan(300e6);
    expect(s.diskSpaceUsed).to.be.greaterThan(0);
    expect(s.openFiles).to.be.greaterThan(3);
    expect(s.uptime).to.match(/^(\d+h)?(\d+m)?\d+s$/);
    expect(s.diskWriteTotal).to.be.greaterThan(0);
    expect(s.timestamp).to.match(/^\d{4}-\d\d-\d\dT/);
    const one = await call(d.socketPath, "GET", `/node/${h}/stats`);
    expect(one.status).to.equal(200);
    expect((one.json() as unknown[]).length).to.equal(1);
    expect((await call(d.socketPath, "GET", "/node/nope-9/stats")).status).to.equal(404);
    expect((await call(d.socketPath, "POST", "/nodes/stats")).status).to.equal(405);
  });

  it("a stopped VM answers stats with snapshot null and agent endpoints with 409", async () => {
    const r = await call(d.socketPath, "POST", `/vm/${h}/shutdown`);
    expect(r.status, r.text).to.equal(200);
    const st = (await call(d.socketPath, "GET", `/node/${h}/stats`)).json() as { snapshot: unknown; error: string }[];
    expect(st[0]?.snapshot).to.equal(null);
    expect(st[0]?.error).to.match(/not running/);
    const e = await exec("cmd=true&buffered=true");
    expect(e.status).to.equal(409);
    expect(e.json()).to.include({ code: "ERR_VM_NOT_RUNNING" });
    expect((await call(d.socketPath, "GET", `/vm/${h}/fs/watch?paths=%2Ftmp`)).status).to.equal(409);
    expect(await refusedStatus(d.socketPath, `/vm/${h}/shell`)).to.equal(409);
  });
});
