/**
 * Killing a paused (cgroup-frozen) runc sandbox (tenant-daemon/runtime/oci-lifecycle.ts
 * `killFrozen`): the SIGKILL is queued for every process while frozen, then the sandbox is
 * thawed, so its processes die at the thaw without running guest code again, the kill never
 * waits on a frozen process, and nothing is left; a paused gVisor sandbox (paused in its sentry,
 * no host freezer) is deleted without a resume first. The guest prints a line every few ms to its
 * console log: a byte written after the pause means guest code ran. REAL runc sandboxes of the
 * debian-12 image (test/helpers/runtime-lab.ts); every one is removed in `after`.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { pidAlive } from "../../shared/proc.js";
import { createOciDriver, type OciDriver } from "../../tenant-daemon/runtime/oci-driver.js";
import { createRunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { cgroupMountPoints } from "../../tenant-daemon/runtime/oci-cgroups.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { MiB, RuntimeVmLab } from "../helpers/runtime-lab.js";
import { sleepMs, until } from "../helpers/wait.js";

/** A guest that keeps printing (no fork per line): any output after the pause is guest code run. */
const TICKING = ["/.paddock/bin/tini", "-s", "--", "/bin/sh", "-c", "while :; do echo t; done"];

describe("a paused runc sandbox killed (privileged, real runc, cgroup freezer)", function () {
  this.timeout(60_000);
  let lab: RuntimeVmLab;
  let driver: OciDriver;

  before(async function () {
    skipUnlessRoot(this);
    lab = await RuntimeVmLab.create({ tenantPrefix: "z", uidBase: 1_900_000_000, ramBytes: 64 * MiB });
    driver = lab.use(await createOciDriver({ cgroupParent: lab.cgroupRoot, preference: "auto" }));
  });

  after(async () => {
    await lab?.cleanup();
  });

  /** Boot a ticking sandbox, let it print, pause it; its console log size and pids once frozen. */
  async function pausedTicker(hostname: string): Promise<{ id: string; log: string; frozenBytes: number; pids: number[]; cgroupPath: string }> {
    const spec = await lab.prepareVm(hostname, { args: TICKING });
    await driver.run(spec);
    const size = async (): Promise<number> => (await fs.stat(spec.consoleLogPath).catch(() => ({ size: 0 }))).size;
    await until("the guest prints", async () => ((await size()) > 0 ? true : undefined));
    await driver.pause(spec.id);
    // Let the console relay write what the guest printed before the freeze.
    await sleepMs(300);
    const mounts = await cgroupMountPoints();
    const freezer = mounts.find((m) => m.endsWith("/freezer")) ?? mounts[0] ?? "";
    const pids = (await fs.readFile(path.join(freezer, spec.cgroupPath, "cgroup.procs"), "utf8")).split("\n").filter(Boolean).map(Number);
    return { id: spec.id, log: spec.consoleLogPath, frozenBytes: await size(), pids, cgroupPath: spec.cgroupPath };
  }

  /** After the kill: the guest printed nothing since the pause, every process is gone, no cgroup is left. */
  async function expectGoneWithoutRunning(vm: { log: string; frozenBytes: number; pids: number[]; cgroupPath: string }): Promise<void> {
    await until("every process of the sandbox is gone", async () => (vm.pids.every((p) => !pidAlive(p)) ? true : undefined));
    // The relay has copied all the guest wrote once its last writer is gone.
    await sleepMs(200);
    const text = await fs.readFile(vm.log, "utf8");
    expect(text.length - vm.frozenBytes, "bytes the guest printed after the pause").to.equal(0);
    expect(await lab.cgroupLeftovers(vm.cgroupPath), "cgroups left").to.deep.equal([]);
  }

  it("destroy kills every process while frozen, then thaws: gone, no guest code run, nothing left", async () => {
    const vm = await pausedTicker("frz-1");
    expect(vm.pids.length, "tini, sh").to.be.at.least(2);
    await driver.destroy(vm.id);
    expect((await driver.state(vm.id)).status).to.equal("absent");
    await expectGoneWithoutRunning(vm);
    await lab.destroyVm("frz-1");
  });

  it("kill(KILL) of a paused sandbox ends it the same way (and does not fail on runc's own thaw)", async () => {
    const vm = await pausedTicker("frz-2");
    await driver.kill(vm.id, "KILL");
    await until("stopped", async () => ((await driver.state(vm.id)).status === "stopped" ? true : undefined));
    await driver.destroy(vm.id);
    await expectGoneWithoutRunning(vm);
    await lab.destroyVm("frz-2");
  });

  // runsc pauses in its sentry (no host freezer): destroy deletes the paused sandbox as it is.
  it("under gVisor, destroy of a paused sandbox does not resume it first: gone, no guest code run, nothing left", async function () {
    if (findRunsc() === undefined) this.skip();
    const glab = await RuntimeVmLab.create({ tenantPrefix: "y", uidBase: 1_800_000_000, ramBytes: 256 * MiB, traversableBootParents: true });
    try {
      const gdriver = glab.use(createRunscDriver({ stateRoot: path.join(glab.dir, "run", "runsc"), cgroupParent: glab.cgroupRoot }));
      const spec = await glab.prepareVm("gfrz-1", { args: TICKING });
      await gdriver.run(spec);
      const size = async (): Promise<number> => (await fs.stat(spec.consoleLogPath).catch(() => ({ size: 0 }))).size;
      await until("the guest prints", async () => ((await size()) > 0 ? true : undefined));
      await gdriver.pause(spec.id);
      await sleepMs(300);
      const frozenBytes = await size();
      await gdriver.destroy(spec.id);
      expect((await gdriver.state(spec.id)).status).to.equal("absent");
      await sleepMs(200);
      expect((await size()) - frozenBytes, "bytes the guest printed after the pause").to.equal(0);
      expect(await glab.cgroupLeftovers(spec.cgroupPath), "cgroups left").to.deep.equal([]);
      await glab.destroyVm("gfrz-1");
    } finally {
      await glab.cleanup();
    }
  });
});
