/**
 * The reason of a failed daemon start (supervisor/daemon-start-reason.ts): the daemon's own
 * error-level NDJSON lines on one bounded line, plain text only as a fallback; and
 * supervisor/daemon-process.ts `spawnDaemon` reporting it for a real process (a small script in a
 * temp dir standing in for the daemon: it writes its log lines and exits 1).
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { daemonStartCode, daemonStartReason, START_REASON_MAX_CHARS } from "../../supervisor/daemon-start-reason.js";
import { spawnDaemon } from "../../supervisor/daemon-process.js";

const ndjson = (level: string, msg: string, fields: Record<string, unknown> = {}): string => JSON.stringify({ time: "2026-01-01T00:00:00.000Z", level, msg, tenant: "t1", ...fields });
const RUNC_WARNING = "WARNING: runc 1.1.5 is affected by CVE-2025-31133, CVE-2025-52565, CVE-2025-52881 (container escape); upgrade runc";

describe("daemon start reason (supervisor/daemon-start-reason.ts)", () => {
  it("is the msg and code of the error-level NDJSON line, not the warnings, info lines or plain text around it", () => {
    const lines = [
      RUNC_WARNING,
      ndjson("info", "starting", { hypervisor: "oci" }),
      ndjson("warn", "runc is affected by advisories"),
      ndjson("error", "network 198.18.0.0/22 overlaps tenant t2's 198.18.0.0/22", { code: "ERR_NETWORK_OVERLAP" }),
      "",
    ];
    expect(daemonStartReason(lines)).to.equal("network 198.18.0.0/22 overlaps tenant t2's 198.18.0.0/22 (ERR_NETWORK_OVERLAP)");
  });

  it("adds a serialised err's message and code; joins several error lines oldest first; one line", () => {
    const lines = [
      ndjson("error", "cleanup after a failed start failed", { err: { name: "PaddockError", message: "cannot remove link\npdk-x", code: "ERR_NETWORK_SETUP_FAILED", stack: "Error: …\n    at x" } }),
      ndjson("error", "image debian-13 not found\n\tin /var/lib/paddock/images", { code: "ERR_IMAGE_NOT_FOUND" }),
    ];
    expect(daemonStartReason(lines)).to.equal("cleanup after a failed start failed: cannot remove link pdk-x (ERR_NETWORK_SETUP_FAILED); image debian-13 not found in /var/lib/paddock/images (ERR_IMAGE_NOT_FOUND)");
  });

  it("falls back to the last non-empty line when no NDJSON error line is there; undefined for no output", () => {
    expect(daemonStartReason([ndjson("info", "starting"), "fixture: tenant t1 refuses to start", "  ", ""])).to.equal("fixture: tenant t1 refuses to start");
    expect(daemonStartReason([ndjson("info", "starting")])).to.equal(ndjson("info", "starting"));
    expect(daemonStartReason(["", "  "])).to.equal(undefined);
    expect(daemonStartReason([])).to.equal(undefined);
  });

  it("never breaks on lines that are not valid NDJSON (cut JSON, arrays, wrong types, invalid UTF-8, control bytes)", () => {
    const garbage = [
      '{"level":"error","msg":"cut',
      "[1,2,3]",
      '{"level":"error","msg":42}',
      '{"level":"error"}',
      "null",
      '{"level":"error","msg":"","err":null}',
      Buffer.from([0x7b, 0xff, 0xfe, 0x22, 0x0a]).toString("utf8"),
      "\u001b[31mpanic:\u0007 boom\r",
    ];
    expect(daemonStartReason(garbage)).to.equal("[31mpanic: boom");
    expect(daemonStartReason([...garbage, ndjson("error", "bad config", { code: 7 })])).to.equal("bad config");
  });

  it("is bounded: the last error lines are kept, a too long one is cut with …", () => {
    const long = "x".repeat(2000);
    const one = daemonStartReason([ndjson("error", long, { code: "ERR_CONFIG_INVALID" })]) as string;
    expect(one.length).to.equal(START_REASON_MAX_CHARS);
    expect(one.endsWith("…")).to.equal(true);
    const many = daemonStartReason(Array.from({ length: 20 }, (_, i) => ndjson("error", `failure number ${i} ${"y".repeat(40)}`)), 200) as string;
    expect(many.length).to.be.at.most(200);
    expect(many.startsWith("…; ")).to.equal(true);
    expect(many.endsWith(`failure number 19 ${"y".repeat(40)}`)).to.equal(true);
    expect(daemonStartReason([long], 100)).to.have.length(100);
  });
});

describe("daemon start code (supervisor/daemon-start-reason.ts daemonStartCode)", () => {
  it("is the code of the last error-level line (its own, else its err's), only when it looks like a Paddock code", () => {
    expect(daemonStartCode([ndjson("error", "first", { code: "ERR_NETWORK_SETUP_FAILED" }), ndjson("warn", "w", { code: "ERR_X" }), ndjson("error", "fatal", { err: { message: "m", code: "ERR_IMAGE_NOT_FOUND" } }), RUNC_WARNING])).to.equal("ERR_IMAGE_NOT_FOUND");
    expect(daemonStartCode([ndjson("error", "coded", { code: "ERR_CONFIG_INVALID" }), ndjson("error", "fatal without code")]), "the fatal line has none").to.equal(undefined);
    expect(daemonStartCode([ndjson("error", "errno", { code: "ENOENT" })]), "not a Paddock code").to.equal(undefined);
    expect(daemonStartCode(["plain text", ""])).to.equal(undefined);
  });
});

describe("spawnDaemon: a daemon that fails at start (supervisor/daemon-process.ts)", () => {
  let dir = "";
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-startreason-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("reports the daemon's own error on one line, not its raw log (which stays in details.stderr)", async () => {
    const entry = path.join(dir, "fake-daemon.cjs");
    const log = [RUNC_WARNING, ndjson("info", "starting"), ndjson("error", "tenant id t1 is held by a running daemon (pid 1, config /c.yaml)", { code: "ERR_TENANT_ID_IN_USE" })];
    await fs.writeFile(entry, `process.stderr.write(${JSON.stringify(log.join("\n") + "\n")}); process.exitCode = 1;\n`);
    const err = await spawnDaemon({
      tenantId: "t1", entry, configPath: path.join(dir, "config.yaml"), socketPath: path.join(dir, "api.sock"),
      logFile: path.join(dir, "logs", "daemon.log"), env: {},
    }, 10_000).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err) && err.code).to.equal("ERR_DAEMON_START_FAILED");
    expect((err as Error).message).to.equal("daemon of tenant t1 exited (exit 1) before it was ready: tenant id t1 is held by a running daemon (pid 1, config /c.yaml) (ERR_TENANT_ID_IN_USE)");
    expect(isPaddockError(err) && err.details).to.deep.equal({ stderr: log, tenant: "t1", daemon_code: "ERR_TENANT_ID_IN_USE" });
  });
});
