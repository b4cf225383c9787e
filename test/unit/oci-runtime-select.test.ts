import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { chooseOciRuntime } from "../../tenant-daemon/runtime/oci-driver.js";
import { findProjectRoot } from "../../shared/proc.js";
import { existsSync } from "node:fs";
import path from "node:path";

const both = { runc: "/usr/sbin/runc", crun: "/usr/bin/crun" };

describe("chooseOciRuntime", () => {
  it("auto picks crun on a pure cgroup v2 host that has it", () => {
    expect(chooseOciRuntime("auto", { cgroupV2: true, binaries: both })).to.deep.equal({ name: "crun", binary: "/usr/bin/crun" });
  });

  it("auto picks runc on a hybrid/v1 host even when crun is installed", () => {
    expect(chooseOciRuntime("auto", { cgroupV2: false, binaries: both })).to.deep.equal({ name: "runc", binary: "/usr/sbin/runc" });
  });

  it("auto falls back to runc on cgroup v2 without crun", () => {
    expect(chooseOciRuntime("auto", { cgroupV2: true, binaries: { runc: "/usr/sbin/runc", crun: undefined } }).name).to.equal("runc");
  });

  it("explicit runc wins over crun", () => {
    expect(chooseOciRuntime("runc", { cgroupV2: true, binaries: both }).name).to.equal("runc");
  });

  it("names the apt package when no runtime is installed", () => {
    const err = (() => {
      try {
        chooseOciRuntime("auto", { cgroupV2: false, binaries: { runc: undefined, crun: undefined } });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isPaddockError(err, "ERR_RUNTIME_UNAVAILABLE")).to.equal(true);
    expect((err as Error).message).to.match(/apt-get install runc/);
  });

  it("refuses crun when missing or on a hybrid host", () => {
    expect(() => chooseOciRuntime("crun", { cgroupV2: true, binaries: { runc: "/usr/sbin/runc", crun: undefined } })).to.throw(/apt-get install crun/);
    expect(() => chooseOciRuntime("crun", { cgroupV2: false, binaries: both })).to.throw(/not pure cgroup v2/);
  });
});

describe("findProjectRoot", () => {
  it("finds the directory holding Paddock's package.json, dist/ and node_modules/", () => {
    const root = findProjectRoot();
    expect(existsSync(path.join(root, "package.json"))).to.equal(true);
    expect(existsSync(path.join(root, "dist", "tenant-daemon", "runtime", "oci-driver.js"))).to.equal(true);
    expect(existsSync(path.join(root, "node_modules"))).to.equal(true);
  });

  it("fails clearly outside the project", () => {
    expect(() => findProjectRoot("/proc/self")).to.throw(/project root/);
  });
});
