/**
 * cli/events-command.ts, pure: the SSE parser across chunk boundaries (comments, retry, CRLF,
 * multi-line data) and the NDJSON line of each frame (VM events as sent; reset and dropped get
 * their event name as `type`).
 */
import { expect } from "chai";
import { SseParser, frameLine } from "../../cli/events-command.js";

describe("paddock events (cli/events-command.ts, pure)", () => {
  it("parses frames split across chunks, skips comments, keeps retry", () => {
    const p = new SseParser();
    expect(p.push("retry: 2000\n\n: keep-alive\n\nid: 7\nevent: crea")).to.deep.equal([]);
    const out = p.push('ted\r\ndata: {"id":7,"type":"created"}\r\n\r\nevent: reset\ndata: {"reason":"retention",\ndata: "first_id":5}\n\n');
    expect(out).to.deep.equal([
      { id: "7", event: "created", data: '{"id":7,"type":"created"}' },
      { id: undefined, event: "reset", data: '{"reason":"retention",\n"first_id":5}' },
    ]);
    expect(p.retryMs).to.equal(2000);
  });

  it("prints a VM event as sent, and names reset/dropped frames in `type`", () => {
    expect(frameLine({ id: "7", event: "oom", data: '{"id":7,"type":"oom","reason":"oom","oom_kills":1}' })).to.equal('{"id":7,"type":"oom","reason":"oom","oom_kills":1}\n');
    expect(frameLine({ id: undefined, event: "reset", data: '{"reason":"retention","first_id":5}' })).to.equal('{"type":"reset","reason":"retention","first_id":5}\n');
    expect(frameLine({ id: undefined, event: "message", data: "not json" })).to.equal('{"type":"message","data":"not json"}\n');
  });
});
