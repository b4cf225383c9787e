/**
 * The teardowns that read a sandbox's cgroup from its bundle's config.json act only on a cgroup
 * strictly below the tenant's cgroup parent (oci-cgroups.ts `ownCgroupPath`, the one gate):
 * the runc driver's `destroy` (oci-lifecycle.ts `destroySandbox`) and the cleanup of a failed
 * gVisor restore (runsc-checkpoint.ts `restoreSandbox`). A config.json naming another cgroup is
 * logged and left alone. The runtimes are a small shell script standing in for them (`state`
 * answers the bundle until `delete`); the cgroup paths named do not exist, so nothing on the
 * host is at stake (the privileged twin with a real cgroup: test/privileged/runsc-cgroup-guard.test.ts).
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Logger } from "../../shared/logger.js";
import { ownCgroupPath } from "../../tenant-daemon/runtime/oci-cgroups.js";
import { OciDriver } from "../../tenant-daemon/runtime/oci-driver.js";
import { CHECKPOINT_IMAGE_NAME, restoreSandbox } from "../../tenant-daemon/runtime/runsc-checkpoint.js";
import { RunscCli } from "../../tenant-daemon/runtime/runsc-cli.js";
import type { OciToolbox } from "../../tenant-daemon/runtime/oci-spec.js";
import type { OciSeccomp } from "../../tenant-daemon/runtime/seccomp.js";

/** A logger that keeps its error and warn lines. */
function recordingLogger(): { logger: Logger; errors: { msg: string; fields?: Record<string, unknown> }[] } {
  const errors: { msg: string; fields?: Record<string, unknown> }[] = [];
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: (msg, fields) => void errors.push({ msg, fields }),
    child: () => logger,
    enabled: () => true,
  };
  return { logger, errors };
}

const REFUSED = "refusing to touch a cgroup outside the tenant's cgroups; it is left untouched";
const toolbox = { nodePath: "/n", tiniPath: "/t", toolboxDir: "/d" } as unknown as OciToolbox;

describe("teardown touches only the tenant's own cgroups (oci-cgroups.ts ownCgroupPath)", () => {
  let dir = "";
  const bundle = (): string => path.join(dir, "bundle");

  /** A fake runtime at `<dir>/rt`: `state` answers the bundle until `delete`; `restore` fails. */
  async function fakeRuntime(cgroupsPath: string): Promise<string> {
    await fs.rm(path.join(dir, "deleted"), { force: true });
    await fs.mkdir(bundle(), { recursive: true });
    await fs.writeFile(path.join(bundle(), "config.json"), JSON.stringify({ ociVersion: "1.0.2", linux: { cgroupsPath } }));
    const state = JSON.stringify({ ociVersion: "1.0.2", id: "x", pid: 0, status: "stopped", bundle: bundle(), created: "2026-01-01T00:00:00Z" });
    const bin = path.join(dir, "rt");
    await fs.writeFile(bin, `#!/bin/sh
for a in "$@"; do case "$a" in --*) shift ;; *) break ;; esac; done
case "$1" in
  state) if [ -e "${dir}/deleted" ]; then echo "container does not exist" >&2; exit 1; fi; echo '${state}' ;;
  delete) touch "${dir}/deleted" ;;
  restore) echo "restore refused" >&2; exit 1 ;;
esac
exit 0
`, { mode: 0o755 });
    return bin;
  }

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdkd-cgteardown-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("ownCgroupPath passes a path strictly below the parent, logs and drops any other, passes undefined silently", () => {
    const { logger, errors } = recordingLogger();
    expect(ownCgroupPath("/paddock/t1", "/paddock/t1/sbox-1", logger, {})).to.equal("/paddock/t1/sbox-1");
    expect(ownCgroupPath("/paddock/t1", undefined, logger, {})).to.equal(undefined);
    expect(errors).to.deep.equal([]);
    for (const p of ["/paddock/t1", "/paddock/t2/sbox-1", "/system.slice", "/paddock/t1/../t2/x"]) {
      expect(ownCgroupPath("/paddock/t1", p, logger, { id: "sbox-1" }), p).to.equal(undefined);
    }
    expect(errors.map((e) => [e.msg, e.fields?.cgroupPath, e.fields?.cgroupParent, e.fields?.id])).to.deep.equal(
      ["/paddock/t1", "/paddock/t2/sbox-1", "/system.slice", "/paddock/t1/../t2/x"].map((p) => [REFUSED, p, "/paddock/t1", "sbox-1"]),
    );
  });

  it("the runc driver refuses a cgroupParent that is not one, and its destroy logs a foreign config.json cgroup and leaves it (runc delete still runs)", async () => {
    const seccomp = {} as OciSeccomp;
    for (const cgroupParent of ["/", "", "paddock/t1", "/paddock/../x"]) {
      expect(() => new OciDriver({ name: "runc", binary: "/bin/false", cgroupParent, toolbox, swapAccounting: false, seccomp }), cgroupParent).to.throw(RangeError, /cgroupParent/);
    }
    const victim = `/pdkd-victim-none-${path.basename(dir)}`;
    const { logger, errors } = recordingLogger();
    const driver = new OciDriver({ name: "runc", binary: await fakeRuntime(victim), cgroupParent: "/paddock/t1", toolbox, swapAccounting: false, seccomp, logger, stateRoot: path.join(dir, "root") });
    await driver.destroy("pdk-t1-sbox-1");
    expect(existsSync(path.join(dir, "deleted")), "runc delete ran").to.equal(true);
    expect(errors.map((e) => [e.msg, e.fields?.cgroupPath, e.fields?.op])).to.deep.equal([[REFUSED, victim, "destroy"]]);
    // Its own cgroup: nothing refused (the directory does not exist; rmdir's ENOENT is fine).
    const own = recordingLogger();
    const ok = new OciDriver({ name: "runc", binary: await fakeRuntime(`/paddock/t1/sbox-1-${path.basename(dir)}`), cgroupParent: "/paddock/t1", toolbox, swapAccounting: false, seccomp, logger: own.logger, stateRoot: path.join(dir, "root") });
    await ok.destroy("pdk-t1-sbox-1");
    expect(own.errors).to.deep.equal([]);
  });

  it("a failed gVisor restore logs a foreign config.json cgroup and does not remove it", async () => {
    const victim = `/pdkd-victim-none-${path.basename(dir)}`;
    const bin = await fakeRuntime(victim);
    await fs.rm(path.join(dir, "deleted"), { force: true });
    await fs.writeFile(path.join(dir, "deleted"), ""); // runsc knows no such sandbox: restore may go ahead
    const imageDir = path.join(dir, "image");
    await fs.mkdir(imageDir);
    await fs.writeFile(path.join(imageDir, CHECKPOINT_IMAGE_NAME), "");
    const { logger, errors } = recordingLogger();
    const cli = new RunscCli(bin, { root: path.join(dir, "root"), platform: "ptrace" }, 10_000);
    const failed = await restoreSandbox({ cli, logger, cgroupParent: "/paddock/t1", networkPrefix: async () => [] }, "sbox-1", imageDir, { bundleDir: bundle(), consoleLogPath: path.join(dir, "logs", "sbox-1.log") })
      .then(() => undefined, (e: unknown) => e as Error);
    expect(failed?.message).to.match(/runsc restore sbox-1 failed/);
    expect(errors.map((e) => [e.msg, e.fields?.cgroupPath, e.fields?.op])).to.deep.equal([[REFUSED, victim, "restore cleanup"]]);
  });
});
