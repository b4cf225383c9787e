/**
 * cli/events-command.ts, pure: the SSE parser it uses (shared/events/sse-parser.ts) across chunk
 * boundaries (comments, retry, CRLF, multi-line data, the last event ID kept) and the NDJSON line of each frame (VM events as sent; reset and dropped get
 * their event name as `type`).
 */
import { expect } from "chai";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Readable, Writable } from "node:stream";
import { eventsCommand, frameLine } from "../../cli/events-command.js";
import { SseParser } from "../../shared/events/sse-parser.js";
import { ApiError } from "../../cli/cli-errors.js";

describe("paddock events (cli/events-command.ts, pure)", () => {
  it("parses frames split across chunks, skips comments, keeps retry", () => {
    const p = new SseParser();
    expect(p.push("retry: 2000\n\n: keep-alive\n\nid: 7\nevent: crea")).to.deep.equal([]);
    const out = p.push('ted\r\ndata: {"id":7,"type":"created"}\r\n\r\nevent: reset\ndata: {"reason":"retention",\ndata: "first_id":5}\n\n');
    expect(out).to.deep.equal([
      { id: "7", event: "created", data: '{"id":7,"type":"created"}' },
      // The last event ID stays what the last `id:` set (WHATWG "last event ID buffer").
      { id: "7", event: "reset", data: '{"reason":"retention",\n"first_id":5}' },
    ]);
    expect(p.retryMs).to.equal(2000);
    p.push("retry: soon\n\n");
    expect(p.retryMs, "a retry that is not digits is ignored").to.equal(2000);
  });

  it("prints a VM event as sent, and names reset/dropped frames in `type`", () => {
    expect(frameLine({ id: "7", event: "oom", data: '{"id":7,"type":"oom","reason":"oom","oom_kills":1}' })).to.equal('{"id":7,"type":"oom","reason":"oom","oom_kills":1}\n');
    expect(frameLine({ id: undefined, event: "reset", data: '{"reason":"retention","first_id":5}' })).to.equal('{"type":"reset","reason":"retention","first_id":5}\n');
    expect(frameLine({ id: undefined, event: "message", data: "not json" })).to.equal('{"type":"message","data":"not json"}\n');
  });
});

describe("paddock events: when to stop following", () => {
  it("a 4xx on a reconnect (the token revoked, the tenant deleted) ends the command with that error; the stream before it was printed", async () => {
    let requests = 0;
    const server = http.createServer((req, res) => {
      requests++;
      if (requests === 1) {
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end(`retry: 10\n\nid: 7\nevent: created\ndata: ${JSON.stringify({ id: 7, type: "created", hostname: "h-1", hostgroup: "h", reason: "api", time: "2026-01-01T00:00:00Z" })}\n\n`);
        return;
      }
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "unauthorized", code: "ERR_AUTH_REQUIRED" }));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const out: string[] = [];
    const stdout = new Writable({ write(chunk: Buffer, _e, cb) { out.push(chunk.toString()); cb(); } });
    try {
      const port = (server.address() as AddressInfo).port;
      const ctx = { env: {}, stdout, stderr: stdout, stdin: Readable.from([]), readTokenFile: () => undefined, kvmPresent: () => false };
      const outcome = await Promise.race([
        eventsCommand(ctx, ["--url", `http://127.0.0.1:${port}`, "--token", "pdk_x"]).then(() => "returned", (err: unknown) => err),
        new Promise((resolve) => setTimeout(() => resolve("still following after 5 s"), 5000)),
      ]);
      expect(outcome).to.be.instanceOf(ApiError);
      expect((outcome as ApiError).status).to.equal(401);
      expect(out.join("")).to.include("\"hostname\":\"h-1\"");
      expect(requests).to.equal(2);
    } finally {
      server.close();
    }
  });
});
