/**
 * Malformed request targets and headers sent straight to a REAL tenant daemon's socket get a
 * 4xx with a code and leave no stack trace in its log: percent-escapes that do not decode
 * (`/vm/x%E0%A4%A` was a 500 with a URIError stack), on Express routes, on the agent-backed
 * routes, through the encoded-`?` shim and on a WebSocket upgrade; and headers Node's parser
 * refuses. Each next to a well-formed control.
 */
import net from "node:net";
import { expect } from "chai";
import { TestDaemon } from "../helpers/daemon.js";
import { request } from "../helpers/http.js";

describe("tenant daemon: malformed input gets a 4xx with a code (integration, real daemon)", function () {
  this.timeout(90_000);
  let d: TestDaemon;

  before(async () => {
    d = await TestDaemon.create();
    await d.start();
  });
  after(async () => {
    if (d) await d.destroy();
  });

  /** Raw bytes on the daemon socket; everything read until it closes. */
  const raw = (text: string): Promise<string> => new Promise((resolve, reject) => {
    const s = net.connect(d.socketPath, () => s.write(text));
    let out = "";
    s.on("data", (c: Buffer) => { out += c.toString("latin1"); });
    s.on("close", () => resolve(out));
    s.on("error", reject);
    s.setTimeout(10_000, () => s.destroy());
  });

  it("malformed percent-escapes get 400 ERR_URL_MALFORMED on every kind of route; well-formed ones are routed", async () => {
    const control = await d.get("/vm/x%41");
    expect([control.status, (control.json as { code?: string }).code], "a good escape (control)").to.deep.equal([404, "ERR_VM_NOT_FOUND"]);
    for (const [method, p] of [["GET", "/vm/x%E0%A4%A"], ["GET", "/vm/x%E0%A4%A/tags"], ["POST", "/vm/x%E0%A4%A/exec?cmd=true"], ["GET", "/vm/%zz/health"], ["GET", "/hostgroup/sbox/nodes%3Ftag=%E0%A4"], ["DELETE", "/secrets/%C0%AF"], ["GET", "/vm/x%"]] as const) {
      const r = await request({ socketPath: d.socketPath }, method, p);
      expect([r.status, (r.json as { code?: string } | undefined)?.code], `${method} ${p}: ${r.text}`).to.deep.equal([400, "ERR_URL_MALFORMED"]);
    }
    const up = await raw("GET /vm/x%E0%A4%A/shell HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    expect(up, "upgrade with a bad escape").to.match(/^HTTP\/1\.1 400 /);
    expect(up).to.include('"code":"ERR_URL_MALFORMED"');
    const upControl = await raw("GET /vm/nosuch/shell HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    expect(upControl, "upgrade control: routed, unknown VM").to.match(/^HTTP\/1\.1 404 /);
  });

  it("malformed headers get 400 ERR_HEADER_INVALID", async () => {
    for (const h of ["Content-Length: abc", "Bad Header: x", "Content-Length: 1\r\nContent-Length: 2", "Transfer-Encoding: chunked\r\nContent-Length: 3"]) {
      const out = await raw(`POST /hostgroup/sbox/nodes HTTP/1.1\r\nHost: x\r\n${h}\r\n\r\nabc`);
      expect(out, h).to.match(/^HTTP\/1\.1 400 /);
      expect(out, h).to.include('"code":"ERR_HEADER_INVALID"');
    }
    expect((await d.get("/healthz")).status, "control").to.equal(200);
  });

  it("the daemon's log has no stack trace and no 500 from any of it", () => {
    expect(d.stderr, "the daemon's log was captured").to.include('"level"');
    expect(d.stderr).to.not.match(/URIError|request failed|upgrade failed|\n\s+at /);
  });
});
