import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { daemonExitCode } from "../../tenant-daemon/main.js";

describe("daemon up|purge exit codes", () => {
  it("a conflict exits 4, as `paddock up` does (cli/cli-errors.ts EXIT.CONFLICT)", () => {
    for (const code of ["ERR_STATE_LOCKED", "ERR_SOCKET_IN_USE", "ERR_TENANT_ID_IN_USE"] as const) {
      expect(daemonExitCode(new PaddockError(code, "held")), code).to.equal(4);
    }
  });

  it("a refused config exits 2; anything else 1", () => {
    expect(daemonExitCode(new PaddockError("ERR_CONFIG_INVALID", "bad"))).to.equal(2);
    expect(daemonExitCode(new PaddockError("ERR_CONFIG_UNSUPPORTED", "bad"))).to.equal(2);
    expect(daemonExitCode(new PaddockError("ERR_STORAGE_FAILED", "disk"))).to.equal(1);
    expect(daemonExitCode(new Error("plain"))).to.equal(1);
    expect(daemonExitCode("text")).to.equal(1);
  });
});
