/**
 * Pure parts of VM expiry and the lifecycle event log: the Go duration parser against the
 * table of Go's own tests (https://github.com/golang/go/blob/master/src/time/time_test.go
 * parseDurationTests / parseDurationErrorTests), the RFC 3339 parser, the deadline rules of
 * tenant-daemon/vm/vm-expiry.ts, and the event ring's resume/reset decisions.
 */
import { expect } from "chai";
import { isPaddockError, type PaddockError } from "../../shared/errors.js";
import type { HostGroupConfig } from "../../shared/tenant-config.js";
import { MIN_VM_TTL_MS, parseGoDurationNs, parseRfc3339Ms } from "../../shared/time.js";
import { EventLog } from "../../tenant-daemon/events/event-log.js";
import { checkPatchedDeadline, deadlineOf, expiryPolicy, parseTtl, tagsWithDeadline } from "../../tenant-daemon/vm/vm-expiry.js";
import type { VmRecord } from "../../tenant-daemon/vm/vm-types.js";

const S = 1_000_000_000n, MS = 1_000_000n, US = 1_000n, MIN = 60n * S, H = 60n * MIN;
const MAX = (1n << 63n) - 1n, MIN64 = -(1n << 63n);

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (err) {
    return isPaddockError(err) ? err.code : "not a PaddockError";
  }
  return undefined;
};

describe("Go duration parser (Go's own test table)", () => {
  const good: [string, bigint][] = [
    ["0", 0n], ["5s", 5n * S], ["30s", 30n * S], ["1478s", 1478n * S],
    ["-5s", -5n * S], ["+5s", 5n * S], ["-0", 0n], ["+0", 0n],
    ["5.0s", 5n * S], ["5.6s", 5n * S + 600n * MS], ["5.s", 5n * S], [".5s", 500n * MS], ["1.0s", S], ["1.00s", S],
    ["1.004s", S + 4n * MS], ["1.0040s", S + 4n * MS], ["100.00100s", 100n * S + MS],
    ["10ns", 10n], ["11us", 11n * US], ["12µs", 12n * US], ["12μs", 12n * US], ["13ms", 13n * MS], ["14s", 14n * S], ["15m", 15n * MIN], ["16h", 16n * H],
    ["3h30m", 3n * H + 30n * MIN], ["10.5s4m", 4n * MIN + 10n * S + 500n * MS], ["-2m3.4s", -(2n * MIN + 3n * S + 400n * MS)],
    ["1h2m3s4ms5us6ns", H + 2n * MIN + 3n * S + 4n * MS + 5n * US + 6n], ["39h9m14.425s", 39n * H + 9n * MIN + 14n * S + 425n * MS],
    ["52763797000ns", 52763797000n], ["0.3333333333333333333h", 20n * MIN], ["9007199254740993ns", (1n << 53n) + 1n],
    ["9223372036854775807ns", MAX], ["9223372036854775.807us", MAX], ["9223372036s854ms775us807ns", MAX],
    ["-9223372036854775808ns", MIN64], ["-9223372036854775.808us", MIN64], ["-9223372036s854ms775us808ns", MIN64],
    ["-2562047h47m16.854775808s", MIN64], ["0.100000000000000000000h", 6n * MIN],
    ["0.830103483285477580700h", 49n * MIN + 48n * S + 372539827n],
  ];
  for (const [text, ns] of good) it(`parses ${JSON.stringify(text)}`, () => expect(parseGoDurationNs(text)).to.equal(ns));

  const bad = ["", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "\x85\x85", "\xffff", "hello \xffff world", " 5s", "5s ", "5 s",
    "9223372036854775810ns", "9223372036854775808ns", "-9223372036854775809ns", "9223372036854776us", "3000000h",
    "9223372036854775.808us", "9223372036854ms775us808ns"];
  for (const text of bad) it(`refuses ${JSON.stringify(text)}`, () => expect(codeOf(() => parseGoDurationNs(text, "ttl", "ERR_TTL_INVALID"))).to.equal("ERR_TTL_INVALID"));
});

describe("RFC 3339 parser", () => {
  it("reads Z, offsets, fractions and lower-case t/z", () => {
    expect(parseRfc3339Ms("2026-12-06T09:30:00Z", "t", "ERR_EXPIRES_AT_INVALID")).to.equal(Date.UTC(2026, 11, 6, 9, 30));
    expect(parseRfc3339Ms("2026-12-06T10:30:00.250+01:00", "t", "ERR_EXPIRES_AT_INVALID")).to.equal(Date.UTC(2026, 11, 6, 9, 30, 0, 250));
    expect(parseRfc3339Ms("2026-12-06t04:00:00.123456789-05:30", "t", "ERR_EXPIRES_AT_INVALID")).to.equal(Date.UTC(2026, 11, 6, 9, 30, 0, 123));
    expect(parseRfc3339Ms("2028-02-29T00:00:00z", "t", "ERR_EXPIRES_AT_INVALID")).to.equal(Date.UTC(2028, 1, 29));
  });
  for (const text of ["2026-12-06", "2026-12-06T09:30Z", "2026-12-06 09:30:00Z", "2026-02-29T00:00:00Z", "2026-12-06T24:00:00Z", "2026-12-06T09:60:00Z",
    "2026-12-06T09:30:60Z", "2026-00-06T09:30:00Z", "2026-12-06T09:30:00+0100", "2026-12-06T09:30:00", "2026-12-06T09:30:00+24:00", "+2026-12-06T09:30:00Z"]) {
    it(`refuses ${JSON.stringify(text)}`, () => expect(codeOf(() => parseRfc3339Ms(text, "t", "ERR_EXPIRES_AT_INVALID"))).to.equal("ERR_EXPIRES_AT_INVALID"));
  }
});

describe("deadline rules (vm-expiry.ts)", () => {
  const group = (expiry: Partial<HostGroupConfig["expiry"]> = {}): HostGroupConfig => ({
    name: "sbox", count: 0, vcpu: 1, ramBytes: 2 ** 28, storage: "image", storageSizeBytes: 2 ** 28, persistent: false, userdata: undefined, userdataFile: undefined,
    dnsServers: [], gpuCount: 0, network: { mode: "isolated", range: undefined, drop: [], allow: [] }, expiry: { action: "shutdown", defaultTtlMs: undefined, maxTtlMs: undefined, ...expiry }, egressProxy: undefined,
  });
  const now = Date.UTC(2026, 11, 6, 9, 0);
  const none = { defaultTtlMs: undefined, maxTtlMs: undefined };

  it("parseTtl: a positive Go duration in ms; zero, negative, numbers and junk are ERR_TTL_INVALID", () => {
    expect(parseTtl("1h30m")).to.equal(90 * 60_000);
    expect(parseTtl("1.5s")).to.equal(1500);
    expect(parseTtl(undefined)).to.equal(undefined);
    for (const v of ["0", "-1s", 90, "90", true]) expect(codeOf(() => parseTtl(v)), String(v)).to.equal("ERR_TTL_INVALID");
  });

  it("parseTtl: below the 1s minimum (500ms, 999ms, 1ns) is ERR_TTL_INVALID naming the minimum; 1s is taken", () => {
    for (const v of ["500ms", "999ms", "1ns", "0.5s"]) {
      let err: unknown;
      try {
        parseTtl(v);
      } catch (e) {
        err = e;
      }
      expect((err as PaddockError | undefined)?.code, v).to.equal("ERR_TTL_INVALID");
      expect((err as Error).message, v).to.contain("at least 1s").and.contain(JSON.stringify(v));
    }
    expect(parseTtl("1s")).to.equal(MIN_VM_TTL_MS);
    expect(parseTtl("1000ms")).to.equal(1000);
  });

  it("policy: the smaller max wins; the default falls back to the tenant's, then to the max", () => {
    expect(expiryPolicy(group({ maxTtlMs: 5000 }), { defaultTtlMs: undefined, maxTtlMs: 3000 })).to.deep.equal({ action: "shutdown", defaultTtlMs: 3000, maxTtlMs: 3000 });
    expect(expiryPolicy(group({ defaultTtlMs: 1000 }), { defaultTtlMs: 2000, maxTtlMs: undefined })).to.deep.equal({ action: "shutdown", defaultTtlMs: 1000, maxTtlMs: undefined });
    expect(expiryPolicy(group(), { defaultTtlMs: 2000, maxTtlMs: undefined }).defaultTtlMs).to.equal(2000);
    expect(expiryPolicy(group({ action: "delete" }), none)).to.deep.equal({ action: "delete", defaultTtlMs: undefined, maxTtlMs: undefined });
  });

  it("tagsWithDeadline: ttl or default becomes one expires_at= tag; over max, or ttl with a tag, is refused", () => {
    const p = expiryPolicy(group({ maxTtlMs: 3600_000 }), none);
    expect(tagsWithDeadline(["a"], 90_000, p, now)).to.deep.equal(["a", "expires_at=2026-12-06T09:01:30.000Z"]);
    expect(tagsWithDeadline([], undefined, p, now)).to.deep.equal(["expires_at=2026-12-06T10:00:00.000Z"]);
    expect(tagsWithDeadline([], undefined, expiryPolicy(group(), none), now)).to.deep.equal([]);
    expect(tagsWithDeadline(["expires_at=2026-12-06T09:10:00Z"], undefined, p, now)).to.deep.equal(["expires_at=2026-12-06T09:10:00Z"]);
    expect(codeOf(() => tagsWithDeadline([], 3600_001, p, now))).to.equal("ERR_TTL_OVER_MAX");
    expect(codeOf(() => tagsWithDeadline(["expires_at=2026-12-06T10:00:01Z"], undefined, p, now))).to.equal("ERR_TTL_OVER_MAX");
    expect(codeOf(() => tagsWithDeadline(["expires_at=2026-12-06T09:10:00Z"], 1000, p, now))).to.equal("ERR_TTL_INVALID");
    expect(codeOf(() => deadlineOf(["expires_at=2026-12-06T09:10:00Z", "expires_at=2026-12-06T09:11:00Z"]))).to.equal("ERR_EXPIRES_AT_INVALID");
  });

  it("checkPatchedDeadline: within creation + max; not removable under a max; config VMs take none", () => {
    const record = { hostname: "sbox-1", hostGroup: "sbox", protected: false, createdAt: new Date(now).toISOString(), tags: [] } as unknown as VmRecord;
    const p = expiryPolicy(group({ maxTtlMs: 3600_000 }), none);
    expect(checkPatchedDeadline(record, ["expires_at=2026-12-06T09:30:00Z"], p)).to.equal(Date.UTC(2026, 11, 6, 9, 30));
    expect(codeOf(() => checkPatchedDeadline(record, ["expires_at=2026-12-06T10:00:01Z"], p))).to.equal("ERR_TTL_OVER_MAX");
    expect(codeOf(() => checkPatchedDeadline(record, [], p))).to.equal("ERR_TTL_OVER_MAX");
    expect(checkPatchedDeadline(record, [], expiryPolicy(group(), none))).to.equal(undefined);
    expect(codeOf(() => checkPatchedDeadline({ ...record, protected: true }, ["expires_at=2026-12-06T09:30:00Z"], expiryPolicy(group(), none)))).to.equal("ERR_EXPIRES_AT_INVALID");
  });
});

describe("event log ring (event-log.ts)", () => {
  const ev = { type: "created", hostname: "sbox-1", hostgroup: "sbox", reason: "api" } as const;

  it("ids increase by one from a start above any earlier run's; subscribers get every event", () => {
    let t = 1_000_000;
    const a = new EventLog({ now: () => t });
    const got: number[] = [];
    const off = a.subscribe((e) => got.push(e.id));
    const first = a.emit(ev).id;
    a.emit(ev);
    off();
    a.emit(ev);
    expect(got).to.deep.equal([first, first + 1]);
    t += 1;
    const b = new EventLog({ now: () => t });
    expect(b.emit(ev).id).to.be.above(first + 2);
  });

  it("resumes exactly after a held id; resets for a dropped, foreign or junk id", () => {
    const log = new EventLog({ maxEvents: 3 });
    const ids = [1, 2, 3, 4, 5].map(() => log.emit(ev).id);
    const r = log.since(ids[2]);
    expect(r.kind).to.equal("resume");
    expect(r.events.map((e) => e.id)).to.deep.equal([ids[3], ids[4]]);
    // ids[1] is the newest dropped: everything after it is held.
    expect(log.since(ids[1]).kind).to.equal("resume");
    expect(log.since(ids[0])).to.include({ kind: "reset" });
    expect(log.since(ids[0]).events.map((e) => e.id)).to.deep.equal(ids.slice(2));
    expect(log.since(1).kind).to.equal("reset");
    expect(log.since(NaN).kind).to.equal("reset");
    expect(log.since((ids[4] as number) + 10).kind).to.equal("reset");
    expect(log.since(undefined)).to.deep.equal({ kind: "resume", events: [] });
  });

  it("drops events older than the age bound", () => {
    let t = 5_000_000;
    const log = new EventLog({ maxAgeMs: 1000, now: () => t });
    const old = log.emit(ev).id;
    t += 2000;
    const fresh = log.emit(ev).id;
    expect(log.since(old - 1).kind).to.equal("reset");
    expect(log.since(old)).to.deep.include({ kind: "resume" });
    expect(log.since(old).events.map((e) => e.id)).to.deep.equal([fresh]);
  });
});
