/**
 * The supervisor's logs stay bounded (supervisor config `logs:`): a tenant daemon (played by
 * test/fixtures/echo-daemon) that floods its log has `logs/daemon.log` rotated by its
 * `paddock-nsutil logcap` reader at `daemon_log_bytes`, keeping `daemon_log_keep` files; the
 * reader exits with the daemon. `audit.log` rotates at `audit_log_bytes`, and
 * `GET /admin/v1/audit` is paged through the `Paddock-Next-Cursor` header.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { runSupervisor, type RunningSupervisor } from "../../supervisor/main.js";
import { silentLogger } from "../../shared/logger.js";
import { sleep } from "../../shared/time.js";
import { request, type TestResponse } from "../helpers/http.js";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const FIXTURE = path.join(ROOT, "dist/test/fixtures/echo-daemon.js");
const ROTATE = 64 * 1024;

/** Pids of `paddock-nsutil logcap` readers writing `file`. */
async function logcapReaders(file: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (argv[0]?.endsWith("paddock-nsutil") && argv[1] === "logcap" && argv[2] === file) out.push(Number(pid));
  }
  return out;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const sizeOf = (f: string): Promise<number> => fs.stat(f).then((s) => s.size, () => -1);

describe("supervisor log rotation (integration)", function () {
  this.timeout(60_000);
  let stateDir = "";
  let runDir = "";
  let sup: RunningSupervisor | undefined;
  let token = "";
  const tenant = "tlogrot";
  const admin = (method: string, p: string, body?: unknown): Promise<TestResponse> =>
    request({ socketPath: (sup as RunningSupervisor).adminAddress }, method, `/admin/v1${p}`, body, { authorization: `Bearer ${token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) });

  before(async () => {
    stateDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-sup-"));
    runDir = await fs.mkdtemp("/tmp/pdr-");
    const configFile = path.join(stateDir, "supervisor.yaml");
    await fs.writeFile(configFile, JSON.stringify({
      gateway: { address: "127.0.0.1:0" }, admin: { address: path.join(runDir, "admin.sock") },
      templates: { dir: path.join(ROOT, "templates") },
      daemon_entry: FIXTURE,
      restart: { ready_timeout_ms: 20_000, stop_timeout_ms: 5000 },
      logs: { daemon_log_bytes: ROTATE, daemon_log_keep: 2, audit_log_bytes: ROTATE, audit_log_keep: 2 },
    }));
    process.env[`PDK_FIXTURE_LOG_BYTES_${tenant}`] = String(10 * ROTATE);
    sup = await runSupervisor({ configFile, flags: { stateDir, runDir }, env: {}, logger: silentLogger });
    token = (await fs.readFile(sup.adminTokenFile, "utf8")).trim();
  });

  after(async () => {
    delete process.env[`PDK_FIXTURE_LOG_BYTES_${tenant}`];
    await sup?.close({ stopDaemons: true }).catch(() => undefined);
    await fs.rm(stateDir, { recursive: true, force: true });
    await fs.rm(runDir, { recursive: true, force: true });
  });

  it("rotates daemon.log at logs.daemon_log_bytes keeping logs.daemon_log_keep files; the reader exits with the daemon", async () => {
    const created = await admin("POST", "/tenants", { id: tenant });
    expect(created.status, created.text).to.equal(201);
    const log = path.join(stateDir, "tenants", tenant, "logs", "daemon.log");
    // The flood (10 × the rotation size) ends with a "flood done" line in the newest file.
    await until("the flood's last line", async () => (await fs.readFile(log, "utf8").catch(() => "")).includes("flood done"));
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
    await until("the logcap reader to exit", async () => (await logcapReaders(log)).length === 0, 10_000);
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
