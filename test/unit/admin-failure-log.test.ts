/**
 * How the admin API logs a 5xx (supervisor/admin-api.ts `logAdminFailure`): a 507 refusal for
 * want of room (e.g. a tenant create over the host's pid budget) is one warning with its code and
 * message and no stack; any other 5xx stays an error line with the error's stack.
 */
import { Writable } from "node:stream";
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { createLogger } from "../../shared/logger.js";
import { logAdminFailure } from "../../supervisor/admin-api.js";

function capture(): { log: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({ write(c: Buffer, _e, cb) { chunks.push(c.toString()); cb(); } });
  const log = createLogger({ stream, level: "debug" });
  return { log, lines: () => chunks.join("").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe("admin API: how a 5xx is logged", () => {
  it("a 507 (no room: pids budget) is a warning with code and message, no stack", () => {
    const { log, lines } = capture();
    const err = new PaddockError("ERR_PIDS_BUDGET_EXCEEDED", "the host's pid budget has 24576 left; the template asks 32768");
    logAdminFailure(log, err, 507);
    const [line, ...rest] = lines();
    expect(rest).to.have.length(0);
    expect(line).to.deep.include({ level: "warn", msg: "admin request refused: no room", code: "ERR_PIDS_BUDGET_EXCEEDED", error: err.message });
    expect(JSON.stringify(line)).not.to.contain("stack").and.not.to.contain("    at ");
  });

  it("any other 5xx is an error line with the error and its stack", () => {
    const { log, lines } = capture();
    logAdminFailure(log, new PaddockError("ERR_DAEMON_START_FAILED", "tenant daemon t1 did not start"), 500);
    logAdminFailure(log, new Error("boom"), 500);
    const got = lines();
    expect(got.map((l) => [l.level, l.msg])).to.deep.equal([["error", "admin request failed"], ["error", "admin request failed"]]);
    expect(JSON.stringify(got[1])).to.contain("boom").and.to.contain("stack");
  });
});
