/**
 * The WebSocket endpoints (`/vm/{h}/shell` and `/vm/{h}/forward`) through the REAL supervisor
 * gateway (`paddock up` as a child process) with a tenant token, to a real runc VM: a shell
 * session (`echo hi`, Shutdown ⇒ SessionClose/close), a byte-exact TCP forward to a listener
 * inside the VM, a wrong token refused with 401 before any upgrade, and `paddock vm shell`
 * (the CLI) with a piped stdin. Ends with scripts/leaks.sh clean for the tenant.
 */
import { echoThroughWs, openWs } from "../helpers/ws.js";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { expect } from "chai";
import { CLI_MAIN, TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { leaksOf, rid } from "../reliability/helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const DATA = 0x01;
const WINDOW = 0x02;
const SHUTDOWN = 0x03;
const SESSION_CLOSE = 0x05;

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

describeWhenReady(missingPrerequisites(), "shell and forward WebSockets through the supervisor gateway (privileged)", function () {
  this.timeout(120_000);
  const id = rid("ws");
  let sup: TestSupervisor;
  let token = "";
  let h = "";
  const wsUrl = (p: string): string => `ws://${sup.gateway}${p}`;

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    token = await sup.createTenant(id, "sandbox");
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", {});
    expect(r.status, r.text).to.be.oneOf([200, 201]);
    h = (r.json as { hostname: string }).hostname;
  });

  after(async () => {
    if (sup) await sup.destroy([id]);
    expect(await leaksOf(id), "leaks.sh --tenant").to.deep.equal([]);
  });

  it("a wrong token on the upgrade gets 401 before any upgrade", async () => {
    for (const auth of [{ authorization: "Bearer pdk_wrong" }, {} as Record<string, string>]) {
      const err = await openWs(wsUrl(`/vm/${h}/shell`), auth).then((ws) => {
        ws.terminate();
        return undefined;
      }, (e: { status?: number; body?: string }) => e);
      expect(err?.status, "upgrade refused").to.equal(401);
      expect(JSON.parse(err?.body ?? "{}")).to.have.property("code", "ERR_AUTH_REQUIRED");
    }
  });

  it("runs a shell: WindowSize, Data `echo hi`, Data back, Shutdown ⇒ a SessionClose frame, then close 1000 \"session closed\"", async () => {
    const ws = await openWs(wsUrl(`/vm/${h}/shell?uid=0&shell=/bin/bash`), { authorization: `Bearer ${token}` });
    try {
      let out = "";
      let sessionClosed = false;
      let onOut: (() => void) | undefined;
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        expect(isBinary).to.equal(true);
        expect(data.length).to.equal(5 + data.readUInt32BE(1));
        if (data[0] === DATA) out += data.subarray(5).toString("utf8");
        if (data[0] === SESSION_CLOSE) sessionClosed = true;
        onOut?.();
      });
      const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once("close", (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })));
      const size = Buffer.alloc(8);
      size.writeUInt32BE(80, 0);
      size.writeUInt32BE(24, 4);
      ws.send(frame(WINDOW, size));
      ws.send(frame(DATA, Buffer.from("echo h''i\n")));
      // The typed line echoes as `echo h''i`; only the command's output is a bare `hi` line.
      await new Promise<void>((resolve) => {
        onOut = () => /[\r\n]hi\r\n/.test(out) && resolve();
        onOut();
      });
      ws.send(frame(SHUTDOWN));
      // The shell exits on Shutdown: the agent's SessionClose frame is relayed, then a normal
      // close (tenant-daemon/agent-client/agent-ws.ts `relay`: 1000 "session closed").
      const { code, reason } = await closed;
      expect(sessionClosed, "a SessionClose frame arrived before the close").to.equal(true);
      expect({ code, reason }).to.deep.equal({ code: 1000, reason: "session closed" });
    } finally {
      ws.terminate();
    }
  });

  it("forwards to a TCP listener inside the VM, bytes round-trip", async () => {
    const script = "require('net').createServer((s)=>s.pipe(s)).listen(7777,'127.0.0.1',()=>console.log('listening'))";
    const l = await sup.gw(token, "POST", `/vm/${h}/exec?background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(script)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    const execId = (l.json as { exec_id: string }).exec_id;
    // Follow the listener's log through the gateway until it is listening.
    const { host, port } = sup.gatewayTarget();
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ host, port, path: `/vm/${h}/exec/${execId}/logs?follow=true`, method: "GET", headers: { authorization: `Bearer ${token}` } }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => {
          text += c.toString();
          if (text.includes("listening")) {
            req.destroy();
            resolve();
          }
        });
        res.on("end", () => reject(new Error(`log stream ended before 'listening' (${res.statusCode}): ${text}`)));
      });
      req.on("error", () => undefined);
      req.end();
    });
    const ws = await openWs(wsUrl(`/vm/${h}/forward`), { authorization: `Bearer ${token}`, "X-Inlets-Upstream": "127.0.0.1:7777", "X-Inlets-Mode": "local", "User-Agent": "slicer-forward/1.0" });
    try {
      const sent = randomBytes(256 << 10);
      const got = await echoThroughWs(ws, sent, 16 << 10);
      expect(got.equals(sent), "echoed bytes equal the sent bytes").to.equal(true);
      const closed = new Promise<number>((resolve) => ws.once("close", (c: number) => resolve(c)));
      ws.close();
      await closed;
    } finally {
      ws.terminate();
    }
  });

  it("`paddock vm shell` through the gateway runs piped commands and exits 0 when stdin ends", async () => {
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [CLI_MAIN, "vm", "shell", h, "--uid", "0", "--shell", "/bin/bash", "--url", `http://${sup.gateway}`, "--token", token], { timeout: 60_000 }, (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }));
      child.stdin?.end("echo c''li-$((6*7))\n"); // no `exit`: the end of stdin ends the shell
    });
    expect(r.stdout, r.stderr).to.include("cli-42");
    expect(r.code, r.stderr).to.equal(0);
  });

  it("`paddock vm shell` with a shell the VM does not have prints the server's message and code", async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [CLI_MAIN, "vm", "shell", h, "--shell", "/bin/nope", "--url", `http://${sup.gateway}`, "--token", token], { timeout: 60_000 }, (_err, _stdout, stderr) => resolve({ code: child.exitCode, stderr }));
      child.stdin?.end();
    });
    expect(r.code, r.stderr).to.not.equal(0);
    expect(r.stderr).to.include("/bin/nope");
    expect(r.stderr).to.include("ERR_QUERY_INVALID");
  });
});
