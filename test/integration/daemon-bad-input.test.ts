/**
 * Malformed request targets and headers sent straight to a REAL tenant daemon's socket get a
 * 4xx with a code and leave no stack trace in its log: percent-escapes that do not decode
 * (`/vm/x%E0%A4%A` was a 500 with a URIError stack), on Express routes, on the agent-backed
 * routes, through the encoded-`?` shim and on a WebSocket upgrade; and headers Node's parser
 * refuses. Each next to a well-formed control.
 */
import net from "node:net";
import { readFileSync } from "node:fs";
import { brotliCompressSync, constants as zlibConstants, deflateSync, gzipSync } from "node:zlib";
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
  const raw = (text: string | Buffer): Promise<string> => new Promise((resolve, reject) => {
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
    const queryControl = await d.get("/hostgroup/sbox/nodes?tag=a%3Db");
    expect(queryControl.status, "a good escape in the query (control)").to.equal(200);
    for (const [method, p] of [["GET", "/vm/x%E0%A4%A"], ["GET", "/vm/x%E0%A4%A/tags"], ["POST", "/vm/x%E0%A4%A/exec?cmd=true"], ["GET", "/vm/%zz/health"], ["GET", "/hostgroup/sbox/nodes%3Ftag=%E0%A4"], ["DELETE", "/secrets/%C0%AF"], ["GET", "/vm/x%"], ["GET", "/hostgroup/sbox/nodes?tag=%ZZ"], ["GET", "/hostgroup/sbox/nodes?tag=%C3%28"]] as const) {
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

  it("answers bodies, HEAD and wrong methods byte for byte as the Express build did (node:http, json-body.ts, route-mount.ts)", async () => {
    const answer = async (head: string, body: Buffer | string = ""): Promise<string> => {
      const b = Buffer.from(body);
      const out = await raw(Buffer.concat([Buffer.from(`${head}\r\nHost: x\r\nConnection: close\r\n${b.length > 0 || head.startsWith("POST") ? `Content-Length: ${b.length}\r\n` : ""}\r\n`), b]));
      return out.replace(/^Date: .*\r\n/im, "");
    };
    const json = (status: string, body: string, extra = ""): string => `HTTP/1.1 ${status}\r\n${extra}Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const invalidJson = (m: string): string => json("400 Bad Request", JSON.stringify({ error: `invalid JSON body: ${m}`, code: "ERR_BODY_INVALID_JSON" }));
    const notBoolean = json("400 Bad Request", '{"error":"persistent must be true or false","code":"ERR_VM_INVALID_REQUEST"}');
    const create = "POST /hostgroup/sbox/nodes HTTP/1.1";
    const cases: [string, string, Buffer | string, string][] = [
      ["parsed (control)", create, '{"persistent":"x"}', notBoolean],
      ["not JSON", create, "{bad", invalidJson("Expected property name or '}' in JSON at position 1")],
      ["white space only", create, "   ", invalidJson("Unexpected end of JSON input")],
      ["a BOM is dropped", create, '\ufeff{"persistent":"x"}', notBoolean],
      ["gzip is inflated", `${create}\r\nContent-Encoding: gzip`, gzipSync('{"persistent":"x"}'), notBoolean],
      ["not the gzip it claims", `${create}\r\nContent-Encoding: gzip`, "{}", invalidJson("not valid gzip data (incorrect header check)")],
      ["unknown encoding", `${create}\r\nContent-Encoding: zstd`, "{}", invalidJson('unsupported content encoding "zstd"')],
      ["not a utf charset", `${create}\r\nContent-Type: text/plain; charset=latin1`, "{}", invalidJson('unsupported charset "LATIN1"')],
      ["over 1 MiB", create, `{"a":"${"x".repeat(1 << 20)}"}`, json("413 Payload Too Large", '{"error":"request body too large: at most 1048576 bytes (1 MiB, counted after any Content-Encoding is undone)","code":"ERR_BODY_TOO_LARGE"}')],
      ["GET answers HEAD, without the body", "HEAD /nodes HTTP/1.1", "", "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"],
      ["405 with Allow", "PUT /nodes HTTP/1.1", "", json("405 Method Not Allowed", '{"error":"method PUT not allowed on /nodes","code":"ERR_METHOD_NOT_ALLOWED"}', "Allow: GET\r\n")],
      ["secrets match loosely", "PUT /Secrets/abc/ HTTP/1.1", "", json("405 Method Not Allowed", '{"error":"method PUT not allowed on /secrets/{name}","code":"ERR_METHOD_NOT_ALLOWED"}')],
      ["agent HEAD is 405", "HEAD /vm/x/exec HTTP/1.1", "", "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 90\r\nConnection: close\r\n\r\n"],
      ["unknown path", "GET /nodes/ HTTP/1.1", "", json("404 Not Found", '{"error":"no route for GET /nodes/","code":"ERR_NOT_FOUND"}')],
    ];
    for (const [what, head, body, expected] of cases) expect(await answer(head, body), what).to.equal(expected);
  });

  it("compressed bodies that inflate to 256 MiB (gzip, deflate, br) get 413 after 1 MiB; the daemon's memory stays put (a small one is inflated: control)", async () => {
    const rssAnon = (): number => Number(/RssAnon:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.child?.pid as number}/status`, "utf8"))?.[1]) * 1024;
    const post = (encoding: string, body: Buffer): Promise<string> =>
      raw(Buffer.concat([Buffer.from(`POST /hostgroup/sbox/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Encoding: ${encoding}\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    const control = await post("gzip", gzipSync('{"persistent":"x"}'));
    expect(control, "control: inflated and parsed").to.include('"code":"ERR_VM_INVALID_REQUEST"');
    // 256 MiB of zeros each, made cheaply: gzip as 256 members of 1 MiB (gunzip reads
    // concatenated members), deflate and br at their fastest levels.
    const zeros = Buffer.alloc(256 * 1024 * 1024);
    const bombs: [string, Buffer][] = [
      ["gzip", Buffer.concat(Array.from({ length: 256 }, () => gzipSync(zeros.subarray(0, 1024 * 1024))))],
      ["deflate", deflateSync(zeros, { level: 1 })],
      ["br", brotliCompressSync(zeros, { params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 1 } })],
    ];
    const before = rssAnon();
    for (const [encoding, bomb] of bombs) {
      const out = await post(encoding, bomb);
      expect(out, encoding).to.match(/^HTTP\/1\.1 413 /);
      expect(out, encoding).to.include('"code":"ERR_BODY_TOO_LARGE"');
    }
    expect(rssAnon() - before, "daemon RssAnon growth").to.be.below(64 * 1024 * 1024);
  });

  it("a field Paddock cannot honour is 501 with its reason, logged as the client's doing", async () => {
    const r = await d.post("/hostgroup/sbox/nodes", { ssh_keys: ["ssh-ed25519 AAAA"] });
    expect(r.status).to.equal(501);
    expect(r.json).to.include({ code: "ERR_FIELD_UNSUPPORTED" });
    // Info lines are batched (at most 25 ms late, shared/logger.ts): poll for it.
    for (let i = 0; i < 100 && !d.stderr.includes("request refused: not supported"); i++) await new Promise((r) => setTimeout(r, 20));
    expect(d.stderr).to.include("request refused: not supported");
  });

  it("the daemon's log has no stack trace and no 500 from any of it", () => {
    expect(d.stderr, "the daemon's log was captured").to.include('"level"');
    expect(d.stderr).to.not.match(/URIError|request failed|upgrade failed|\n\s+at /);
  });
});
