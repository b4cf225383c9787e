/**
 * The NDJSON logger (shared/logger.ts) — level filter, `enabled`, and the batched sink the
 * supervisor uses for its per-request access lines (one write per batch, at most
 * LOG_BATCH_MS late, warn/error at once, order kept, flushed at exit) — and the supervisor's request metrics (supervisor/metrics.ts).
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { Writable } from "node:stream";
import { expect } from "chai";
import { LOG_BATCH_MS, createLogger, silentLogger } from "../../shared/logger.js";
import { LATENCY_BUCKETS_S, SupervisorMetrics } from "../../supervisor/metrics.js";
import { parseExposition, sampleValue, series } from "../helpers/prometheus.js";
import { Counter, Histogram, Registry } from "prom-client";

/** A stream that records each write call separately. */
function recorder(): { stream: Writable; writes: string[] } {
  const writes: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(chunk.toString());
      cb();
    },
  });
  return { stream, writes };
}

const lines = (writes: string[]): Array<Record<string, unknown>> => writes.join("").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe("logger", () => {
  it("writes one JSON line per call with bound fields, drops lines below the level, and says so in enabled()", () => {
    const { stream, writes } = recorder();
    const log = createLogger({ stream, level: "info", fields: { component: "x" } }).child({ req: "r1" });
    log.debug("hidden");
    log.info("shown", { n: 1, err: new Error("boom") });
    expect(writes).to.have.length(1);
    const [line] = lines(writes);
    expect(line).to.deep.include({ level: "info", msg: "shown", component: "x", req: "r1", n: 1 });
    expect((line?.err as { message: string }).message).to.equal("boom");
    expect(log.enabled("debug")).to.equal(false);
    expect(log.enabled("info")).to.equal(true);
    expect(log.enabled("error")).to.equal(true);
    expect(silentLogger.enabled("error")).to.equal(false);
  });

  it("writes exactly the text JSON.stringify gives the line object (key order, replaced keys, index keys, undefined, errors, escapes)", () => {
    const err = Object.assign(new Error("bo\"om"), { code: "E1" });
    const cases: Array<{ bound: Record<string, unknown>; fields?: Record<string, unknown>; msg: string }> = [
      { bound: { component: "supervisor" }, msg: "request", fields: { req: "id", tenant: "t1", method: "GET", path: "/a\"b\\c\u0001é", status: 200, ms: 3, aborted: false } },
      { bound: { component: "s", tenant: "t1" }, msg: "replaced", fields: { tenant: "t2", n: 1 } },
      { bound: {}, msg: "own keys", fields: { msg: "m2", time: "t", level: "x", z: 1 } },
      { bound: { a: 1 }, msg: "index keys", fields: { b: 2, "10": "ten", "2": "two", "0x": 3 } },
      { bound: { "1": "one", obj: { k: [1, 2] } }, msg: "bound index key and object" },
      { bound: {}, msg: "undefined and functions", fields: { u: undefined, f: () => 1, nul: null, nested: { u: undefined, d: new Date(0) } } },
      { bound: {}, msg: "errors", fields: { err, other: new TypeError("t"), e2: "not an error" } },
      { bound: {}, msg: "no fields" },
    ];
    for (const c of cases) {
      const { stream, writes } = recorder();
      const log = createLogger({ stream, level: "info", fields: c.bound });
      log.info(c.msg, c.fields);
      const text = writes.join("");
      const time = (JSON.parse(text) as { time: string }).time;
      // The line object as shared/logger.ts built it before lines were formatted directly.
      const obj: Record<string, unknown> = { time, level: "info", msg: c.msg, ...c.bound };
      for (const k in c.fields ?? {}) {
        const v = c.fields?.[k];
        obj[k] = k === "err" || v instanceof Error ? JSON.parse(JSON.stringify({ name: (v as Error).name, message: (v as Error).message, stack: (v as Error).stack, ...("code" in (v as object) ? { code: (v as { code: unknown }).code } : {}) })) : v;
      }
      expect(text, c.msg).to.equal(JSON.stringify(obj) + "\n");
      if (c.fields?.time === undefined) expect(time).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
  });

  it("batched: info lines go out together in one write, in order, at most LOG_BATCH_MS later", async () => {
    const { stream, writes } = recorder();
    const log = createLogger({ stream, batch: true });
    const child = log.child({ req: "a" });
    log.info("one");
    child.info("two");
    log.debug("dropped");
    log.info("three");
    // Checked before yielding to the event loop: the batch goes out only from a timer, so this
    // holds however late the loop turns (a wall-clock check raced the 25 ms timer under load).
    expect(writes, "nothing written before the batch delay").to.have.length(0);
    await new Promise((r) => setTimeout(r, LOG_BATCH_MS + 20));
    expect(writes).to.have.length(1);
    expect(lines(writes).map((l) => l.msg)).to.deep.equal(["one", "two", "three"]);
    expect(lines(writes)[1]).to.deep.include({ req: "a", level: "info" });
    log.info("four");
    await new Promise((r) => setTimeout(r, LOG_BATCH_MS + 20));
    expect(writes).to.have.length(2);
    expect(lines(writes).map((l) => l.msg)).to.deep.equal(["one", "two", "three", "four"]);
  });

  it("batched: a warn or error line is written at once, after the info lines queued before it", () => {
    const { stream, writes } = recorder();
    const log = createLogger({ stream, batch: true });
    log.info("queued");
    log.warn("now");
    expect(writes).to.have.length(1);
    expect(lines(writes).map((l) => l.msg)).to.deep.equal(["queued", "now"]);
    log.error("again");
    expect(writes).to.have.length(2);
  });

  it("batched: 64 KiB queued are written at once, without waiting for the turn", () => {
    const { stream, writes } = recorder();
    const log = createLogger({ stream, batch: true });
    const big = "x".repeat(1000);
    for (let i = 0; i < 70; i++) log.info("bulk", { big, i });
    expect(writes.length).to.be.greaterThan(0);
    expect(writes[0]?.length).to.be.at.least(65_536);
  });

  it("batched: lines queued when the process exits are still written (process.exit in the same turn)", () => {
    const logger = path.resolve(import.meta.dirname, "../../shared/logger.js");
    const script = `import { createLogger } from ${JSON.stringify(logger)}; const log = createLogger({ batch: true }); log.info("last words", { n: 42 }); process.exit(3);`;
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 20_000 });
    expect(r.status).to.equal(3);
    const out = r.stderr.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(out).to.have.length(1);
    expect(out[0]).to.deep.include({ msg: "last words", n: 42 });
  });
});

describe("supervisor metrics", () => {
  it("counts requests per tenant and code, with cumulative latency buckets (prom-client text, parsed)", async () => {
    const m = new SupervisorMetrics();
    m.observeRequest("t1", 200, 0.0005);
    m.observeRequest("t1", 200, 0.02);
    m.observeRequest("-", 401, 0.0001);
    m.observeAuthFailure();
    const f = parseExposition(await m.render({ active: 1, suspended: 0 }, { t1: 3 }));
    expect(f.get("paddock_gateway_requests_total")?.type).to.equal("COUNTER");
    expect(sampleValue(f, "paddock_gateway_requests_total", { tenant: "t1", code: "200" })).to.equal(2);
    expect(sampleValue(f, "paddock_gateway_requests_total", { tenant: "-", code: "401" })).to.equal(1);
    expect(sampleValue(f, "paddock_gateway_auth_failures_total")).to.equal(1);
    expect(sampleValue(f, "paddock_tenants", { status: "active" })).to.equal(1);
    expect(sampleValue(f, "paddock_tenants", { status: "suspended" })).to.equal(0);
    expect(f.get("paddock_daemon_restarts_total")?.type).to.equal("COUNTER");
    expect(sampleValue(f, "paddock_daemon_restarts_total", { tenant: "t1" })).to.equal(3);
    expect(f.get("paddock_gateway_request_duration_seconds")?.type).to.equal("HISTOGRAM");
    const h = series(f, "paddock_gateway_request_duration_seconds", { tenant: "t1", code: "200" });
    expect(h.buckets).to.include({ "0.001": "1", "0.01": "1", "0.025": "2", "60": "2", "+Inf": "2" });
    expect(Object.keys(h.buckets ?? {})).to.have.length(LATENCY_BUCKETS_S.length + 1);
    expect(Number(h.count)).to.equal(2);
    expect(Number(h.sum)).to.be.closeTo(0.0205, 1e-9);
  });

  it("writes the request counter and latency histogram exactly as prom-client's own Counter and Histogram would", async () => {
    const m = new SupervisorMetrics();
    // The reference: the same families as prom-client metrics, fed the same requests.
    const ref = new Registry();
    const c = new Counter({ name: "paddock_gateway_requests_total", help: "Requests through the gateway by tenant and status code (aborted: the client left before any answer head).", labelNames: ["tenant", "code"], registers: [ref] });
    const h = new Histogram({ name: "paddock_gateway_request_duration_seconds", help: "Gateway request latency (until the response ends).", labelNames: ["tenant", "code"], buckets: LATENCY_BUCKETS_S, registers: [ref] });
    const seen: Array<[string, number, number]> = [["t1", 200, 0.0005], ["t1", 200, 0.001], ["-", 401, 0.0001], ["t2", 502, 61], ["t1", 200, 0.02], ["t2", 404, 60]];
    for (const [tenant, code, s] of seen) {
      m.observeRequest(tenant, code, s);
      c.inc({ tenant, code: String(code) });
      h.observe({ tenant, code: String(code) }, s);
    }
    const family = (text: string, name: string): string => text.split("\n\n").find((b) => b.includes(`# TYPE ${name} `)) ?? "";
    const ours = await m.render({}, {});
    const theirs = await ref.metrics();
    for (const name of ["paddock_gateway_requests_total", "paddock_gateway_request_duration_seconds"]) {
      expect(family(ours, name), name).to.not.equal("");
      expect(family(ours, name).trim(), name).to.equal(family(theirs, name).trim());
    }
  });

  it("keeps each supervisor's series in its own registry, and a scrape reflects the registry's current counts", async () => {
    const a = new SupervisorMetrics();
    const b = new SupervisorMetrics();
    a.observeRequest("t1", 200, 0.1);
    expect(parseExposition(await b.render({}, {})).get("paddock_gateway_requests_total")?.metrics).to.deep.equal([]);
    await a.render({ active: 2 }, { t1: 1 });
    const f = parseExposition(await a.render({ failed: 1 }, { t1: 4 }));
    expect(() => series(f, "paddock_tenants", { status: "active" }), "a status gone from the registry is gone from the scrape").to.throw(/0 series/);
    expect(sampleValue(f, "paddock_daemon_restarts_total", { tenant: "t1" })).to.equal(4);
  });
});
