/**
 * The runsc driver reaps only its tenant's cgroups (tenant-daemon/runtime/runsc-reap.ts
 * `cgroupPathWithin` in oci-cgroups.ts, used by runsc-driver.ts `destroy` and `update`): pure checks. The driver
 * against a fake runsc and a real scratch cgroup: test/privileged/runsc-cgroup-guard.test.ts.
 */
import { expect } from "chai";
import { cgroupPathWithin } from "../../tenant-daemon/runtime/oci-cgroups.js";
import { RunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import type { OciToolbox } from "../../tenant-daemon/runtime/oci-spec.js";

describe("runsc driver: only the tenant's own cgroups are reaped (oci-cgroups.ts cgroupPathWithin)", () => {
  it("accepts a cgroup strictly below the tenant's parent", () => {
    expect(cgroupPathWithin("/paddock/t1", "/paddock/t1/sbox-1")).to.equal(true);
    expect(cgroupPathWithin("/paddock/t1", "/paddock/t1/sbox-1/sub")).to.equal(true);
    expect(cgroupPathWithin("/paddock-test-g1", "/paddock-test-g1/h-1")).to.equal(true);
  });

  it("refuses the parent itself, siblings, prefixes, other trees, and paths with .., ., // or a trailing /", () => {
    for (const p of [
      "/paddock/t1", "/paddock/t10/sbox-1", "/paddock/t1x", "/paddock", "/", "", "/system.slice", "/user.slice/user-0.slice",
      "/paddock/t2/sbox-1", "/paddock/t1/../t2/sbox-1", "/paddock/t1/..", "/paddock/t1/./sbox-1", "/paddock/t1//sbox-1",
      "/paddock/t1/sbox-1/", "paddock/t1/sbox-1", "//paddock/t1/sbox-1", "/paddock//t1/sbox-1",
    ]) {
      expect(cgroupPathWithin("/paddock/t1", p), p).to.equal(false);
    }
    // A parent that is no cgroup of its own accepts nothing.
    for (const parent of ["/", "", "paddock/t1", "/paddock/../x", "/paddock/t1/", "/paddock//t1"]) {
      expect(cgroupPathWithin(parent, "/paddock/t1/sbox-1"), parent).to.equal(false);
    }
  });

  it("the driver refuses a cgroup parent that is not one", () => {
    const toolbox = { nodePath: "/n", tiniPath: "/t", toolboxDir: "/d" } as unknown as OciToolbox;
    for (const cgroupParent of ["/", "", "paddock/t1", "/paddock/../x"]) {
      expect(() => new RunscDriver({ binary: "/bin/false", stateRoot: "/run/pdk-none", cgroupParent, platform: "ptrace", toolbox, swapAccounting: false }), cgroupParent).to.throw(RangeError, /cgroupParent/);
    }
    expect(() => new RunscDriver({ binary: "/bin/false", stateRoot: "/run/pdk-none", cgroupParent: "/paddock/t1", platform: "ptrace", toolbox, swapAccounting: false })).not.to.throw();
  });
});
