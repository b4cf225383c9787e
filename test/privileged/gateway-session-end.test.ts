/**
 * Revocation ends live sessions to a REAL VM through the REAL supervisor gateway (`paddock up`
 * as a child process): revoking a token ends the shell it opened while another token's shell
 * stays open and answers. (Suspension and deletion ending streams and WebSockets are covered
 * with echo daemons in test/integration/gateway-limits.test.ts.)
 * "Within a second" is checked with 2 s of slack (this shared 2-core box is loaded).
 */
import { expect } from "chai";
import WebSocket from "ws";
import { openWs } from "../helpers/ws.js";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { privilegedReady, rid } from "../reliability/helpers.js";

const DATA = 0x01;
const WINDOW = 0x02;

function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(payload.length, 1);
  return Buffer.concat([h, payload]);
}

/** A shell through the gateway: `run` types a line and resolves once `marker` is printed. */
async function openShell(url: string, token: string): Promise<{ ws: WebSocket; run: (line: string, marker: string) => Promise<void> }> {
  const ws = await openWs(url, { authorization: `Bearer ${token}` });
  let out = "";
  let wake: (() => void) | undefined;
  ws.on("message", (d: Buffer) => {
    if (d[0] === DATA) out += d.subarray(5).toString("utf8");
    wake?.();
  });
  const size = Buffer.alloc(8);
  size.writeUInt32BE(80, 0);
  size.writeUInt32BE(24, 4);
  ws.send(frame(WINDOW, size));
  const run = (line: string, marker: string): Promise<void> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${marker} within 15 s; got ${JSON.stringify(out.slice(-300))}`)), 15_000);
    wake = () => {
      if (out.includes(marker)) {
        clearTimeout(timer);
        resolve();
      }
    };
    ws.send(frame(DATA, Buffer.from(line + "\n")));
  });
  return { ws, run };
}

function closedWithin(ws: WebSocket, limitMs: number): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`shell still open ${limitMs} ms after the admin call`)), limitMs);
    ws.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

(privilegedReady ? describe : describe.skip)("revocation ends live VM sessions through the gateway (privileged)", function () {
  this.timeout(180_000);
  const id = rid("se");
  let sup: TestSupervisor;
  let token = "";
  let h = "";

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
  });

  it("revoking a token ends its open shell within a second (2 s allowed); another token's shell stays open and answers", async () => {
    const t2 = await sup.adminReq("POST", `/tenants/${id}/tokens`, {});
    expect(t2.status, t2.text).to.equal(201);
    const t3 = await sup.adminReq("POST", `/tenants/${id}/tokens`, {});
    const revoked = t2.json as { token: string; id: string };
    const kept = (t3.json as { token: string }).token;
    const url = `ws://${sup.gateway}/vm/${h}/shell?uid=0&shell=/bin/bash`;
    const a = await openShell(url, revoked.token);
    const b = await openShell(url, kept);
    try {
      await a.run("echo A''live", "Alive");
      await b.run("echo B''live", "Blive");
      const closed = closedWithin(a.ws, 2000);
      const rv = await sup.adminReq("DELETE", `/tenants/${id}/tokens/${revoked.id}`);
      expect(rv.status, rv.text).to.be.oneOf([200, 204]);
      await closed;
      await b.run("echo B''still", "Bstill");
    } finally {
      a.ws.terminate();
      b.ws.terminate();
    }
  });
});
