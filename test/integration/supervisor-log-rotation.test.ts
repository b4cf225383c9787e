/**
 * The supervisor's logs stay bounded (supervisor config `logs:`): a tenant daemon (played by
 * test/fixtures/echo-daemon) that floods its log has `logs/daemon.log` rotated by its
 * `paddock-nsutil logcap` reader at `daemon_log_bytes`, keeping `daemon_log_keep` files; the
 * reader exits with the daemon. `audit.log` rotates at `audit_log_bytes`, and
 * `GET /admin/v1/audit` is paged through the `Paddock-Next-Cursor` header.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import type { TestResponse } from "../helpers/http.js";
import { fileSize, logcapReaders } from "../helpers/log-files.js";
import { TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";
import { until } from "../helpers/wait.js";

const ROTATE = 64 * 1024;

const sizeOf = (f: string): Promise<number> => fileSize(f, -1);

describe("supervisor log rotation (integration)", function () {
  this.timeout(60_000);
  let sup: TestSupervisor | undefined;
  let stateDir = "";
  const tenant = "tlogrot";
  const admin = (method: string, p: string, body?: unknown): Promise<TestResponse> => (sup as TestSupervisor).adminReq(method, p, body);

  before(async () => {
    sup = await TestSupervisor.create({
      config: (p) => ({
        ...echoDaemonConfig(p),
        restart: { ready_timeout_ms: 20_000, stop_timeout_ms: 5000 },
        logs: { daemon_log_bytes: ROTATE, daemon_log_keep: 2, audit_log_bytes: ROTATE, audit_log_keep: 2 },
      }),
    });
    stateDir = sup.stateDir;
    process.env[`PDK_FIXTURE_LOG_BYTES_${tenant}`] = String(10 * ROTATE);
    await sup.start();
  });

  after(async () => {
    delete process.env[`PDK_FIXTURE_LOG_BYTES_${tenant}`];
    await sup?.destroy();
  });

  it("rotates daemon.log at logs.daemon_log_bytes keeping logs.daemon_log_keep files; the reader exits with the daemon", async () => {
    const created = await admin("POST", "/tenants", { id: tenant });
    expect(created.status, created.text).to.equal(201);
    const log = path.join(stateDir, "tenants", tenant, "logs", "daemon.log");
    // The flood (10 × the rotation size) ends with a "flood done" line in the newest file.
    await until("the flood's last line", async () => (await fs.readFile(log, "utf8").catch(() => "")).includes("flood done") || undefined, 20_000);
    const sizes = [await sizeOf(log), await sizeOf(`${log}.1`), await sizeOf(`${log}.2`), await sizeOf(`${log}.3`)];
    console.log(`      daemon.log after a ${10 * ROTATE}-byte flood: ${sizes.join(" / ")} bytes (rotate at ${ROTATE}, keep 2)`);
    // Positive control: it rotated (both kept files are full); and nothing past keep exists.
    expect(sizes[1]).to.equal(ROTATE);
    expect(sizes[2]).to.equal(ROTATE);
    expect(sizes[3], "daemon.log.3").to.equal(-1);
    expect(sizes[0]).to.be.within(1, ROTATE);
    // The admin logs view reads across the rotation: more lines than the short current file holds.
    const view = await admin("GET", `/tenants/${tenant}/logs?lines=50`);
    const lines = (view.json as { lines: string[] }).lines;
    expect(lines).to.have.length(50);
    expect(lines.at(-1)).to.include("flood done");
    const readers = await logcapReaders(log);
    expect(readers, "one logcap reader").to.have.length(1);
    expect((await admin("DELETE", `/tenants/${tenant}`)).status).to.be.oneOf([200, 204]);
    await until("the logcap reader to exit", async () => (await logcapReaders(log)).length === 0 || undefined, 10_000);
  });

  it("rotates audit.log at logs.audit_log_bytes and pages GET /audit with Paddock-Next-Cursor", async () => {
    // ~190-byte entries: enough token issues to rotate the audit log more than once.
    const id = "tlogaud";
    expect((await admin("POST", "/tenants", { id })).status).to.equal(201);
    for (let i = 0; i < 400; i++) {
      const r = await admin("POST", `/tenants/${id}/tokens`, { });
      expect(r.status, r.text).to.equal(201);
      await admin("DELETE", `/tenants/${id}/tokens/${(r.json as { id: string }).id}`);
    }
    const audit = path.join(stateDir, "supervisor", "audit.log");
    const sizes = [await sizeOf(audit), await sizeOf(`${audit}.1`), await sizeOf(`${audit}.2`), await sizeOf(`${audit}.3`)];
    console.log(`      audit.log after 800 token actions: ${sizes.join(" / ")} bytes (rotate at ${ROTATE}, keep 2)`);
    expect(sizes[1]).to.be.within(ROTATE - 1024, ROTATE);
    expect(sizes[0]).to.be.within(1, ROTATE);
    expect(sizes[3], "audit.log.3").to.equal(-1);
    // Page through the newest entries, 50 at a time, across the rotated files.
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 4; page++) {
      const r = await admin("GET", `/audit?tenant=${id}&limit=50${cursor === undefined ? "" : `&cursor=${cursor}`}`);
      expect(r.status, r.text).to.equal(200);
      const entries = r.json as { time: string; action: string }[];
      expect(entries).to.have.length(50);
      // Oldest first within a page; each page is older than the one before.
      const times = entries.map((e) => e.time);
      expect([...times].sort()).to.deep.equal(times);
      if (seen.length > 0) expect(times.at(-1)! <= seen[0]!).to.equal(true);
      seen.unshift(...times);
      cursor = r.headers["paddock-next-cursor"] as string | undefined;
      expect(cursor, "next cursor").to.match(/^\d+-\d+:\d+$/);
    }
    const newest = await admin("GET", `/audit?tenant=${id}&limit=1`);
    expect((newest.json as { action: string }[])[0]?.action).to.equal("token.revoke");
    expect((await admin("GET", "/audit?cursor=../etc")).status).to.equal(400);
  });
});
