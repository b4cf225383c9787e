/**
 * Guest root taking over its own VM's guest agent, for the security tests: SIGUSR1 opens the
 * agent's node inspector on the guest's loopback, and `Runtime.evaluate` patches its HTTP
 * server, so the daemon gets whatever answer guest root writes on the agent's channel, with
 * this VM's valid proof (the technique of test/security/hostile-review.test.ts).
 */
import type { TestDaemon } from "../helpers/daemon.js";
import { execIn, sh } from "./guest-exec.js";

/**
 * Guest side, run by the guest's node (`node -e <this> <expression> <agent pid>`): send SIGUSR1
 * to the agent (node opens its inspector on 127.0.0.1:9229 in the guest), connect to it with a
 * minimal WebSocket client and print the value of `Runtime.evaluate(<expression>)`.
 */
export const INSPECT_CLIENT = String.raw`
const net = require("net"), crypto = require("crypto"), http = require("http");
const [, expr, pid] = process.argv;
process.kill(Number(pid), "SIGUSR1");
const list = (tries) => http.get("http://127.0.0.1:9229/json/list", (res) => {
  let b = ""; res.on("data", (c) => (b += c)); res.on("end", () => attach(new URL(JSON.parse(b)[0].webSocketDebuggerUrl)));
}).on("error", (e) => (tries > 0 ? setTimeout(() => list(tries - 1), 100) : (console.error("inspector: " + e.message), process.exit(4))));
list(100);
function attach(u) {
  const s = net.connect(9229, "127.0.0.1", () => s.write("GET " + u.pathname + " HTTP/1.1\r\nHost: 127.0.0.1:9229\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + crypto.randomBytes(16).toString("base64") + "\r\nSec-WebSocket-Version: 13\r\n\r\n"));
  let buf = Buffer.alloc(0), up = false;
  const send = (t) => {
    const p = Buffer.from(t), m = crypto.randomBytes(4);
    let h;
    if (p.length < 126) h = Buffer.from([0x81, 0x80 | p.length]);
    else { h = Buffer.alloc(4); h[0] = 0x81; h[1] = 0x80 | 126; h.writeUInt16BE(p.length, 2); }
    const x = Buffer.alloc(p.length);
    for (let i = 0; i < p.length; i++) x[i] = p[i] ^ m[i & 3];
    s.write(Buffer.concat([h, m, x]));
  };
  s.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    if (!up) {
      const i = buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      up = true; buf = buf.subarray(i + 4);
      send(JSON.stringify({ id: 1, method: "Runtime.evaluate", params: { expression: expr, returnByValue: true } }));
    }
    while (buf.length >= 2) {
      let len = buf[1] & 127, off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      if (buf.length < off + len) return;
      const msg = JSON.parse(buf.subarray(off, off + len).toString()); buf = buf.subarray(off + len);
      if (msg.id === 1) { process.stdout.write(JSON.stringify(msg.result.result.value ?? msg.result) + "\n"); s.destroy(); process.exit(0); }
    }
  });
}`;

/** The pid (in the guest) of VM `h`'s agent. */
export async function agentPid(d: TestDaemon, h: string): Promise<string> {
  return (await sh(d, h, "for p in /proc/[0-9]*; do grep -q 'agent[.]cjs' $p/cmdline 2>/dev/null && grep -qx node $p/comm && basename $p; done")).stdout.trim().split("\n")[0] ?? "";
}

/**
 * Evaluate `expression` inside VM `h`'s agent (pid `pid`) and return its value (JSON-decoded
 * when the expression returns a JSON string).
 * @throws Error when the guest side fails.
 */
export async function evalInAgent(d: TestDaemon, h: string, pid: string, expression: string): Promise<unknown> {
  const r = await execIn(d, h, ["/.paddock/bin/node", "-e", INSPECT_CLIENT, expression, pid]);
  if (r.exit_code !== 0) throw new Error(`agent takeover in ${h}: ${r.stderr}`);
  const v = JSON.parse(r.stdout) as unknown;
  return typeof v === "string" ? (JSON.parse(v) as unknown) : v;
}

/**
 * The expression that makes the agent's HTTP servers hand every request whose path is a key of
 * `modes` to that mode's writer instead of the agent: `modes[path]` is the source of a function
 * `(req, socket, proof, state) => void` run in the agent (`state`: an object it may keep
 * counters in, returned by every call as `{ state }`). `modes` replaces the previous modes;
 * `{}` gives every path back to the agent.
 */
export function takeoverExpression(modes: Record<string, string>): string {
  return String.raw`(() => {
  const rq = process.mainModule.require;
  const http = rq("http"), fs = rq("fs");
  const proof = JSON.parse(fs.readFileSync("/run/paddock-agent/boot.json", "utf8")).agent_proof;
  const g = globalThis;
  g.__takeover ??= { modes: {}, state: {} };
  g.__takeover.modes = {};
  for (const [p, src] of Object.entries(${JSON.stringify(modes)})) g.__takeover.modes[p] = (0, eval)("(" + src + ")");
  if (!g.__takeoverEmit) {
    g.__takeoverEmit = http.Server.prototype.emit;
    http.Server.prototype.emit = function (ev, req) {
      if (ev === "request") {
        const mode = g.__takeover.modes[new URL(req.url, "http://agent").pathname];
        if (mode) {
          mode(req, req.socket, proof, g.__takeover.state);
          return true;
        }
      }
      return g.__takeoverEmit.apply(this, arguments);
    };
  }
  return JSON.stringify({ state: g.__takeover.state });
})()`;
}
