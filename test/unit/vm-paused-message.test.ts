/**
 * The 409 a request to a client-paused VM gets (tenant-daemon/vm/vm-power.ts vmPausedError, thrown
 * by VmService.resolveAgent for every agent route): code and status as docs/slicer-api.md says,
 * and a message naming the resume route and CLI command. test/privileged/vm-idle-wake.test.ts
 * checks the same answer from a real paused VM through the gateway. And what an agent route to a
 * suspended or stopped VM answers (vm-service.ts resolveAgent).
 */
import { expect } from "chai";
import { errorResponse } from "../../shared/errors.js";
import { VmPower, vmNotRunningError, vmPausedError } from "../../tenant-daemon/vm/vm-power.js";
import { VmService } from "../../tenant-daemon/vm/vm-service.js";

describe("a request to a paused VM (vm-power.ts vmPausedError)", () => {
  it("answers 409 ERR_VM_PAUSED saying how to resume: the route and the CLI command", () => {
    const { status, body } = errorResponse(vmPausedError("sbox-1"));
    expect(status).to.equal(409);
    expect(body.code).to.equal("ERR_VM_PAUSED");
    expect(body.error).to.equal("VM paused: sbox-1 was paused by a client; resume it with POST /vm/sbox-1/resume (CLI: paddock vm resume sbox-1), then retry");
  });
});

describe("a pause or resume of a VM in no state for it (vm-power.ts vmNotRunningError)", () => {
  it("keeps 409 ERR_VM_NOT_RUNNING; a suspended VM is told to restore, a stopped one to relaunch (route and CLI command)", () => {
    const resume = errorResponse(vmNotRunningError("sbox-1", "resume", "suspended"));
    expect(resume.status).to.equal(409);
    expect(resume.body.code).to.equal("ERR_VM_NOT_RUNNING");
    expect(resume.body.error).to.equal("VM sbox-1 is not paused: it is suspended (checkpointed to disk); bring it back with POST /vm/sbox-1/restore (CLI: paddock vm restore sbox-1)");
    expect(errorResponse(vmNotRunningError("sbox-1", "pause", "suspended")).body.error).to.equal("VM sbox-1 is not running: it is suspended (checkpointed to disk); bring it back with POST /vm/sbox-1/restore (CLI: paddock vm restore sbox-1)");
    expect(errorResponse(vmNotRunningError("sbox-2", "resume", "stopped")).body.error).to.equal("VM sbox-2 is not paused: it is stopped; boot it again with POST /vm/sbox-2/relaunch (CLI: paddock vm relaunch sbox-2)");
    expect(errorResponse(vmNotRunningError("sbox-3", "resume", "creating")).body.error).to.equal("VM sbox-3 is not paused");
  });

  it("is what VmPower answers a resume of a suspended VM and a pause of a stopped one", async () => {
    const power = new VmPower({ table: { withLock: async (_h: string, fn: () => Promise<void>) => fn() } as never, launcher: {} as never, runtime: {} as never, paths: {} as never });
    const vm = (hostname: string, phase: string) => ({ record: { hostname }, phase, pid: undefined }) as never;
    const resume = await power.resume(vm("sbox-1", "suspended")).then(() => undefined, (e: unknown) => e);
    expect(errorResponse(resume)).to.deep.equal(errorResponse(vmNotRunningError("sbox-1", "resume", "suspended")));
    expect((resume as Error).message).to.include("POST /vm/sbox-1/restore");
    const pause = await power.pause(vm("sbox-2", "stopped")).then(() => undefined, (e: unknown) => e);
    expect((pause as Error).message).to.include("POST /vm/sbox-2/relaunch");
  });
});

describe("an agent route (exec, cp, fs) to a suspended or stopped VM (vm-service.ts resolveAgent)", () => {
  it("keeps 409 ERR_VM_NOT_RUNNING with its status, and names the way back", () => {
    const refusal = (phase: string): unknown => {
      const self = { table: { live: (hostname: string) => ({ record: { hostname }, phase, pid: undefined }) }, paths: {} };
      try {
        VmService.prototype.resolveAgent.call(self as never, "sbox-1");
      } catch (err) {
        return err;
      }
      return undefined;
    };
    const suspended = errorResponse(refusal("suspended"));
    expect(suspended.status).to.equal(409);
    expect(suspended.body).to.deep.equal({ code: "ERR_VM_NOT_RUNNING", error: "VM sbox-1 is not running (status Suspended): it is suspended (checkpointed to disk); bring it back with POST /vm/sbox-1/restore (CLI: paddock vm restore sbox-1)" });
    expect(errorResponse(refusal("stopped")).body.error).to.equal("VM sbox-1 is not running (status Stopped): it is stopped; boot it again with POST /vm/sbox-1/relaunch (CLI: paddock vm relaunch sbox-1)");
  });
});
