/**
 * A hostile tenant API client against the supervisor's access line (shared/logger.ts formats it
 * by hand) and its per-record socket path cache (supervisor/tenant-service.ts gatewayTarget):
 * a real supervisor (child process, its real batched logger at info) with echo daemons. Raw
 * request targets carrying quotes, backslashes, a forged JSON record after an encoded newline,
 * bytes >= 0x80 (latin1 to node, so U+0080..U+00FF), UTF-8 of U+2028 and lone-surrogate-shaped
 * bytes, and a target near the header size limit: every line the supervisor writes must parse as
 * one JSON object, each request must give exactly one access line carrying its path, and no
 * line may be a record the client wrote. A tenant deleted and created again under the same id,
 * and a suspended tenant, must be routed by their current record (no stale cache entry).
 */
import net from "node:net";
import { expect } from "chai";
import { request } from "../helpers/http.js";
import { FAST_RESTART, TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";
import { sleep } from "../../shared/time.js";

/** Send `bytes` on a new TCP connection; resolve with the answer's status line once the server closes. */
function raw(target: { host: string; port: number }, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(target.port, target.host, () => s.write(bytes));
    let out = "";
    s.on("data", (d: Buffer) => { out += d.toString("latin1"); });
    s.on("end", () => resolve(out.split("\r\n")[0] ?? ""));
    s.on("error", reject);
    s.setTimeout(10_000, () => { s.destroy(); reject(new Error("no close after 10 s")); });
  });
}

describe("hostile tenant client: access lines and gateway routing (security, echo daemons)", function () {
  this.timeout(120_000);
  let sup: TestSupervisor | undefined;

  after(async () => { await sup?.destroy(); });

  it("every supervisor line stays one JSON object whatever the request target; one access line per request", async () => {
    sup = await TestSupervisor.create({ mode: "child", config: (p) => ({ ...echoDaemonConfig(p), restart: FAST_RESTART }) });
    await sup.start();
    const admin = (method: string, p: string, body?: unknown) => (sup as TestSupervisor).adminReq(method, p, body, { authorization: `Bearer ${(sup as TestSupervisor).adminToken}` });
    const created = await admin("POST", "/tenants", { id: "hlog" });
    expect(created.status, created.text).to.equal(201);
    const token = (created.json as { token: string }).token;
    const [host, port] = sup.gateway.split(":") as [string, string];
    const target = { host, port: Number(port) };
    const forged = '"}\n{"time":"2026-01-01T00:00:00.000Z","level":"error","msg":"forged"}';
    const paths: Buffer[] = [
      Buffer.from(`/nodes/${encodeURIComponent(forged)}`),
      Buffer.from('/nodes/"\\"}{"level":"error"'),
      Buffer.concat([Buffer.from("/nodes/"), Buffer.from([0x80, 0x85, 0xa0, 0xff, 0xe2, 0x80, 0xa8, 0xed, 0xa0, 0x80, 0xc0, 0xaf])]),
      Buffer.from("/nodes/\u2028\u2029"),
      Buffer.from(`/nodes/${"a".repeat(15_000)}`),
      Buffer.from("/nodes?q=\"\\\u0001"),
    ];
    const statuses: string[] = [];
    for (const p of paths) {
      const head = Buffer.concat([Buffer.from("GET "), p, Buffer.from(` HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nX-Evil: "}\u2028\r\nConnection: close\r\n\r\n`, "latin1")]);
      statuses.push(await raw(target, head));
    }
    // Control: the same client's well-formed request gives its access line too.
    const ok = await request(sup.gatewayTarget(), "GET", "/nodes", undefined, { authorization: `Bearer ${token}` });
    expect(ok.status).to.equal(200);
    await sleep(300); // batched info lines are written at most 25 ms late (shared/logger.ts LOG_BATCH_MS)
    const lines = sup.output.split("\n").filter((l) => l !== "");
    const records = lines.map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        throw new Error(`a supervisor output line is not JSON: ${JSON.stringify(l.slice(0, 300))}`);
      }
    });
    expect(records.every((r) => r !== null && typeof r === "object" && !Array.isArray(r) && typeof r.time === "string")).to.equal(true);
    expect(records.filter((r) => r.msg === "forged"), "a client-written record").to.deep.equal([]);
    const access = records.filter((r) => r.msg === "request" && r.tenant === "hlog");
    // Node's parser answers 400 itself to a target with bytes >= 0x80 or control characters (no
    // access line: the request never reaches the gateway); every other request gives one line.
    const reached = statuses.filter((st) => st.startsWith("HTTP/1.1 ") && !st.startsWith("HTTP/1.1 400 Bad Request")).length;
    expect(reached, `statuses ${JSON.stringify(statuses)}`).to.be.at.least(3);
    expect(access.length, `statuses ${JSON.stringify(statuses)}`).to.equal(reached + 1);
    expect(access.some((r) => r.path === `/nodes/${encodeURIComponent(forged)}`)).to.equal(true);
    expect(access.some((r) => r.path === "/nodes" && r.status === 200), "control line").to.equal(true);
  });

  it("a tenant deleted and created again, or suspended, is routed by its current record", async () => {
    const s = sup as TestSupervisor;
    const admin = (method: string, p: string, body?: unknown) => s.adminReq(method, p, body, { authorization: `Bearer ${s.adminToken}` });
    const gw = (token: string, p = "/fixture/stats") => request(s.gatewayTarget(), "GET", p, undefined, { authorization: `Bearer ${token}` });
    const first = (await admin("POST", "/tenants", { id: "hcache" })).json as { token: string; daemon: { pid: number } };
    const r1 = await gw(first.token);
    expect(r1.status, r1.text).to.equal(200);
    expect((await admin("POST", "/tenants/hcache/suspend", { reason: "h8" })).status).to.equal(200);
    const suspended = await gw(first.token);
    expect(suspended.status).to.equal(403);
    expect((suspended.json as { code: string }).code).to.equal("ERR_TENANT_SUSPENDED");
    expect((await admin("DELETE", "/tenants/hcache")).status).to.equal(204);
    expect((await gw(first.token)).status, "old token after delete").to.equal(401);
    const second = (await admin("POST", "/tenants", { id: "hcache" })).json as { token: string; daemon: { pid: number } };
    const r2 = await gw(second.token);
    expect(r2.status, r2.text).to.equal(200);
    expect((r2.json as { pid: number }).pid, "the new daemon answers").to.equal(second.daemon.pid);
    expect(second.daemon.pid).to.not.equal(first.daemon.pid);
    expect((await gw(first.token)).status, "old token after re-create").to.equal(401);
  });
});
