/**
 * runsc-driver.ts `destroy` and `update` (and the runc driver's `destroy`) read the sandbox's cgroup from the bundle's config.json
 * and act only on a cgroup strictly below the tenant's cgroup parent: a config.json naming any
 * other cgroup is refused with a logged error, and that cgroup (a real scratch cgroup
 * `/pdkd-victim-…` in every mounted hierarchy, with a live `sleep` in it) is neither frozen,
 * killed in nor removed. runsc is a small shell script standing in for it (`state` answers the
 * bundle until `delete`). Needs root (cgroupfs); skipped otherwise.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { cgroupMountPoints } from "../../tenant-daemon/runtime/oci-cgroups.js";
import { OciDriver } from "../../tenant-daemon/runtime/oci-driver.js";
import { RunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import type { OciSeccomp } from "../../tenant-daemon/runtime/seccomp.js";
import type { OciToolbox } from "../../tenant-daemon/runtime/oci-spec.js";
import type { Logger } from "../../shared/logger.js";

describe("runsc driver: a config.json naming a cgroup outside the tenant's is not reaped (root)", function () {
  let dir = "";
  let victimDirs: string[] = [];
  let sleeper: ChildProcess | undefined;
  const victim = `/pdkd-victim-${randomBytes(4).toString("hex")}`;
  const logged: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const logger: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (msg, fields) => void logged.push({ level: "warn", msg, fields }),
    error: (msg, fields) => void logged.push({ level: "error", msg, fields }),
    child: () => logger,
    enabled: () => true,
  };

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdkd-cgguard-"));
    // The victim: a cgroup of nobody's tenant, with a live process in it (in every hierarchy).
    victimDirs = (await cgroupMountPoints()).map((m) => path.join(m, victim));
    for (const d of victimDirs) await fs.mkdir(d);
    sleeper = spawn("sleep", ["300"], { stdio: "ignore" });
    for (const d of victimDirs) await fs.writeFile(path.join(d, "cgroup.procs"), String(sleeper.pid)).catch(() => undefined);
    const bundle = path.join(dir, "bundle");
    await fs.mkdir(bundle);
    await fs.writeFile(path.join(bundle, "config.json"), JSON.stringify({ ociVersion: "1.0.2", linux: { cgroupsPath: `${victim}` } }));
    const state = JSON.stringify({ ociVersion: "1.0.2", id: "pdk-t1-sbox-1", pid: 0, status: "stopped", bundle, created: "2026-01-01T00:00:00Z" });
    // Fake runsc: global flags first, then the verb and the id.
    await fs.writeFile(path.join(dir, "runsc"), `#!/bin/sh
for a in "$@"; do case "$a" in --*) shift ;; *) break ;; esac; done
case "$1" in
  state) if [ -e "${dir}/deleted" ]; then echo "container does not exist" >&2; exit 1; fi; echo '${state}' ;;
  delete) touch "${dir}/deleted" ;;
esac
exit 0
`, { mode: 0o755 });
  });

  after(async () => {
    if (sleeper?.pid !== undefined && sleeper.exitCode === null) sleeper.kill("SIGKILL");
    if (sleeper !== undefined && sleeper.exitCode === null && sleeper.signalCode === null) await new Promise((resolve) => sleeper!.once("exit", resolve));
    for (const d of victimDirs) await fs.rmdir(d).catch(() => undefined);
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("destroy logs the refusal and leaves the cgroup and its process alone; update refuses", async () => {
    const toolbox = { nodePath: "/n", tiniPath: "/t", toolboxDir: "/d" } as unknown as OciToolbox;
    const driver = new RunscDriver({ binary: path.join(dir, "runsc"), stateRoot: path.join(dir, "root"), cgroupParent: "/paddock/t1", platform: "ptrace", toolbox, swapAccounting: false, logger });
    const upd = await driver.update("sbox-1", { cpus: 1, ramBytes: 64 * 1024 * 1024 }).then(() => undefined, (e: unknown) => e);
    expect((upd as Error).message).to.contain(`refusing to set limits on cgroup "${victim}"`);
    await driver.destroy("sbox-1");
    expect(existsSync(path.join(dir, "deleted")), "runsc delete ran").to.equal(true);
    expect(victimDirs.filter((d) => existsSync(d)), "the victim cgroup is still there").to.deep.equal(victimDirs);
    expect(sleeper?.exitCode ?? null, "its process lives").to.equal(null);
    expect(sleeper?.signalCode ?? null).to.equal(null);
    expect(logged.filter((l) => l.level === "error").map((l) => [l.msg, l.fields?.cgroupPath])).to.deep.equal([["refusing to touch a cgroup outside the tenant's cgroups; it is left untouched", victim]]);
  });

  it("the runc driver's destroy (oci-lifecycle.ts destroySandbox) logs the refusal and leaves the cgroup alone too", async () => {
    await fs.rm(path.join(dir, "deleted"), { force: true });
    logged.length = 0;
    const toolbox = { nodePath: "/n", tiniPath: "/t", toolboxDir: "/d" } as unknown as OciToolbox;
    const driver = new OciDriver({ name: "runc", binary: path.join(dir, "runsc"), stateRoot: path.join(dir, "root"), cgroupParent: "/paddock/t1", toolbox, swapAccounting: false, seccomp: {} as OciSeccomp, logger });
    await driver.destroy("pdk-t1-sbox-1");
    expect(existsSync(path.join(dir, "deleted")), "runc delete ran").to.equal(true);
    expect(victimDirs.filter((d) => existsSync(d)), "the victim cgroup is still there").to.deep.equal(victimDirs);
    expect(logged.filter((l) => l.level === "error").map((l) => [l.msg, l.fields?.cgroupPath])).to.deep.equal([["refusing to touch a cgroup outside the tenant's cgroups; it is left untouched", victim]]);
  });
});
