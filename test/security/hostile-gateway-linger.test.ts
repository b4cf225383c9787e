/**
 * A token-less client against the gateway's descriptor budget: it sends a request the gateway
 * refuses on the raw socket (a malformed header: Node's parser refuses it, `clientError`; an
 * upgrade without a token: 401 from the upgrade handler), then never reads and never closes.
 * Was: the gateway answered with `socket.end()` alone, which half-closes and waits for the
 * client's end (HTTP servers are allowHalfOpen, and no server timeout is left on such a
 * socket), so each one held a gateway descriptor for as long as the client liked: from a real
 * supervisor with `RLIMIT_NOFILE` 2048, 1 600 such connections (one byte sent, then the 30 s
 * header timeout's 408) held 1 535 sockets for over 65 s and tenant B's `GET /nodes` with a
 * valid token got 503 `ERR_GATEWAY_BUSY` the whole time. Now every such socket is closed
 * within END_AND_CLOSE_LINGER_MS of its answer (shared/http-input.ts `endAndClose`).
 *
 * A real gateway (supervisor/gateway.ts `createGatewayServer`) on loopback, a real HTTP server
 * on a Unix socket standing in for the tenant daemon; only the token → tenant resolution is a
 * stub. Controls: the held sockets are counted by the gateway (so the check sees them held), a
 * client that reads gets the whole answer with its code, and a valid request still goes through.
 */
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { AuditLog } from "../../supervisor/audit-log.js";
import { SupervisorMetrics } from "../../supervisor/metrics.js";
import { GatewayAdmission } from "../../supervisor/gateway-admission.js";
import { createGatewayServer } from "../../supervisor/gateway.js";
import type { TenantResolver } from "../../supervisor/gateway-route.js";

const HELD = 16;
const MALFORMED = "GET /nodes HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n";
const UPGRADE_NO_TOKEN = "GET /vm/x/shell HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/** Poll `probe` until true; fails with `what` after `ms` (a liveness bound, not a speed check). */
async function until(what: string, probe: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (probe()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

describe("security: a token-less client that never reads nor closes cannot hold the gateway's sockets", function () {
  this.timeout(60_000);
  let dir: string;
  let upstream: http.Server;
  let gateway: http.Server;
  let admission: GatewayAdmission;
  let port: number;
  const clients: net.Socket[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-gwlinger-"));
    const socketPath = path.join(dir, "daemon.sock");
    upstream = http.createServer((_req, res) => res.end("[]"));
    await new Promise<void>((resolve) => upstream.listen(socketPath, resolve));
    const tenants: TenantResolver = {
      authenticate: (token) => (token === "tok-b" ? { tenantId: "b", tokenId: "k1" } : undefined),
      gatewayTarget: (tenantId) => (tenantId === "b" ? { tenantId, status: "active", socketPath, daemonUp: true } : undefined),
    };
    admission = new GatewayAdmission({ maxConnections: 64, maxRequests: 64, requestsPerSecond: 1000, burst: 1000 }, { reserve: 64, tenantSharePercent: 100 }, { nofile: 4096 });
    gateway = createGatewayServer({ tenants, metrics: new SupervisorMetrics(), audit: new AuditLog(path.join(dir, "audit.log")), log: silentLogger, admission });
    await new Promise<void>((resolve) => gateway.listen(0, "127.0.0.1", resolve));
    port = (gateway.address() as AddressInfo).port;
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.destroy();
  });
  after(async () => {
    gateway?.closeAllConnections();
    upstream?.closeAllConnections();
    await Promise.all([gateway, upstream].map((s) => new Promise<void>((resolve) => (s ? s.close(() => resolve()) : resolve()))));
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Open `n` connections that each send `bytes`, then never read (paused) and never close. */
  async function holdSilent(n: number, bytes: string): Promise<void> {
    await Promise.all(Array.from({ length: n }, () => new Promise<void>((resolve, reject) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.write(bytes);
        resolve();
      });
      c.pause();
      c.on("error", reject);
      clients.push(c);
    })));
  }

  /** The raw answer to `bytes` for a client that reads it to the end. */
  function readAnswer(bytes: string): Promise<string> {
    return new Promise((resolve) => {
      const c = net.connect(port, "127.0.0.1", () => c.write(bytes));
      let text = "";
      c.on("data", (d: Buffer) => (text += d.toString()));
      c.on("error", () => undefined);
      c.on("close", () => resolve(text));
    });
  }

  for (const [what, bytes, status, code] of [
    ["a malformed header (the parser's clientError)", MALFORMED, 400, "ERR_HEADER_INVALID"],
    ["an upgrade without a token (the upgrade handler's refusal)", UPGRADE_NO_TOKEN, 401, "ERR_AUTH_REQUIRED"],
  ] as const) {
    it(`closes every socket answered for ${what}`, async () => {
      // Control: a client that reads gets the whole answer and its code.
      const answer = await readAnswer(bytes);
      expect(answer, answer).to.match(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(answer).to.include(`"code":"${code}"`);
      await until("the control's socket closed", () => admission.fdsInUse() === 0, 10_000);

      await holdSilent(HELD, bytes);
      // Control: the gateway counts them (the check below could see them held).
      await until("the held sockets counted", () => admission.fdsInUse() === HELD, 10_000);
      // Was: all HELD stayed, for as long as the client kept them.
      await until("the gateway closed every silent client's socket", () => admission.fdsInUse() === 0, 20_000);

      // A tenant's request still goes through.
      const ok = await new Promise<number>((resolve, reject) => {
        http.get({ host: "127.0.0.1", port, path: "/nodes", headers: { authorization: "Bearer tok-b" }, agent: false }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on("error", reject);
      });
      expect(ok).to.equal(200);
    });
  }
});
