/**
 * The 409 a request to a client-paused VM gets (tenant-daemon/vm/vm-power.ts vmPausedError, thrown
 * by VmService.resolveAgent for every agent route): code and status as docs/slicer-api.md says,
 * and a message naming the resume route and CLI command. test/privileged/vm-idle-wake.test.ts
 * checks the same answer from a real paused VM through the gateway.
 */
import { expect } from "chai";
import { errorResponse } from "../../shared/errors.js";
import { vmPausedError } from "../../tenant-daemon/vm/vm-power.js";

describe("a request to a paused VM (vm-power.ts vmPausedError)", () => {
  it("answers 409 ERR_VM_PAUSED saying how to resume: the route and the CLI command", () => {
    const { status, body } = errorResponse(vmPausedError("sbox-1"));
    expect(status).to.equal(409);
    expect(body.code).to.equal("ERR_VM_PAUSED");
    expect(body.error).to.equal("VM paused: sbox-1 was paused by a client; resume it with POST /vm/sbox-1/resume (CLI: paddock vm resume sbox-1), then retry");
  });
});
