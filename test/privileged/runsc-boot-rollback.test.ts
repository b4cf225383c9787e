/**
 * A gVisor sandbox runsc lost track of leaves nothing behind (tenant-daemon/runtime/runsc-reap.ts,
 * runsc-driver.ts): a `runsc run` killed on the driver's boot timeout before it saved the
 * container's state (as on a host whose kvm platform hangs, docs/gvisor-status.md) leaves the
 * sandbox and gofer running in the VM's cgroup while `runsc state`/`delete` answer "not found".
 * Real runsc (ptrace) sandboxes; the lost record is made by a wrapper that runs the real runsc,
 * removes the container's `.state` file (keeping its `.lock`, as the killed runsc does) and, for
 * `run`, then hangs until the timeout kills it. Every sandbox and cgroup is removed in after.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { pidAlive } from "../../shared/proc.js";
import { sleep } from "../../shared/time.js";
import type { VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import { defaultToolbox, hostHasSwapAccounting } from "../../tenant-daemon/runtime/oci-host.js";
import { runscId } from "../../tenant-daemon/runtime/runsc-cli.js";
import { RunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { cgroupPids } from "../../tenant-daemon/runtime/runsc-reap.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { rejection } from "../helpers/rejection.js";
import { MiB, RuntimeVmLab } from "../helpers/runtime-lab.js";

const missing = missingPrerequisites({ dist: ["dist/bin/paddock-nsutil"] });
const runsc = findRunsc();
if (runsc === undefined) missing.push("runsc not installed (apt-get install runsc)");

/** runsc, but the container's `.state` file is removed after each call; with `hang`, `run` then hangs. */
const losingRunsc = (hang: boolean): string => `#!/bin/sh
root=""; for a in "$@"; do case "$a" in --root=*) root="\${a#--root=}";; esac; id="$a"; done
"${runsc ?? "runsc"}" "$@"; rc=$?
rm -f "$root"/*_sandbox:"$id".state
${hang ? 'case " $* " in *" run "*) exec sleep 1000;; esac' : ""}
exit $rc
`;

describeWhenReady(missing, "gVisor: a sandbox runsc lost track of is killed and its cgroup removed (privileged, real runsc)", function () {
  this.timeout(120_000);
  let lab: RuntimeVmLab;
  let stateRoot: string;
  let hanging: string, forgetting: string;

  before(async () => {
    lab = await RuntimeVmLab.create({ tenantPrefix: "r", uidBase: 1_800_000_000, ramBytes: 256 * MiB, traversableBootParents: true });
    stateRoot = path.join(lab.dir, "run", "runsc");
    hanging = path.join(lab.dir, "hanging-runsc");
    forgetting = path.join(lab.dir, "forgetting-runsc");
    await fs.writeFile(hanging, losingRunsc(true), { mode: 0o755 });
    await fs.writeFile(forgetting, losingRunsc(false), { mode: 0o755 });
    lab.use(driver(runsc as string));
  });

  after(async () => {
    // Whatever a failed test left in the lab's cgroups (the fixed driver kills it).
    await driver(runsc as string).pruneCgroups(lab.cgroupRoot).catch(() => undefined);
    await lab?.cleanup();
  });

  function driver(binary: string, bootTimeoutMs?: number): RunscDriver {
    return new RunscDriver({ binary, stateRoot, cgroupParent: lab.cgroupRoot, platform: "ptrace", toolbox: defaultToolbox(), swapAccounting: hostHasSwapAccounting(), bootTimeoutMs });
  }

  /** The sandbox's host pid from the pid file runsc wrote, once it is alive; undefined if never within `ms`. */
  async function sandboxPid(spec: VmRuntimeSpec, ms: number): Promise<number | undefined> {
    for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(20)) {
      const pid = Number.parseInt(await fs.readFile(path.join(spec.bundleDir, "pid"), "utf8").catch(() => ""), 10);
      if (pid > 0 && pidAlive(pid)) return pid;
    }
    return undefined;
  }

  /** Processes whose command line names the VM's bundle (runsc, its sandbox, gofer and console reader), waiting up to 5 s for them to go. */
  async function bundleProcesses(spec: VmRuntimeSpec): Promise<number[]> {
    let out: number[] = [];
    for (const deadline = Date.now() + 5_000; ; await sleep(50)) {
      out = [];
      for (const e of await fs.readdir("/proc")) {
        if (!/^\d+$/.test(e)) continue;
        const cmd = await fs.readFile(`/proc/${e}/cmdline`, "utf8").catch(() => "");
        if (cmd.includes(spec.bundleDir) && pidAlive(Number(e))) out.push(Number(e));
      }
      if (out.length === 0 || Date.now() > deadline) return out;
    }
  }

  async function expectNothingLeft(spec: VmRuntimeSpec, pid: number): Promise<void> {
    expect(pidAlive(pid), "the sandbox is dead").to.equal(false);
    expect(await cgroupPids(spec.cgroupPath), "no process in the VM's cgroup").to.deep.equal([]);
    expect(await lab.cgroupLeftovers(spec.cgroupPath), "the VM's cgroup is gone").to.deep.equal([]);
    expect((await fs.readdir(stateRoot)).filter((e) => e.includes(runscId(spec.id))), "no runsc state of it").to.deep.equal([]);
    expect(await bundleProcesses(spec), "no runsc, gofer or console reader").to.deep.equal([]);
  }

  it("a run killed on its boot timeout while the sandbox runs leaves no process, cgroup or state", async () => {
    const spec = await lab.prepareVm("boot-1");
    const d = driver(hanging, 4_000);
    const booting = rejection(d.run(spec));
    // Control: the sandbox is up (in the VM's cgroup) while runsc has not returned.
    const pid = await sandboxPid(spec, 30_000);
    expect(pid, "the sandbox started before the timeout").to.be.a("number");
    expect(await cgroupPids(spec.cgroupPath)).to.include(pid);
    const err = await booting;
    expect(isPaddockError(err, "ERR_RUNTIME_FAILED"), String(err)).to.equal(true);
    expect((err as Error).message).to.match(/timed out/);
    await expectNothingLeft(spec, pid as number);
  });

  it("destroy kills a sandbox runsc no longer knows and removes its cgroup", async () => {
    const spec = await lab.prepareVm("gone-1");
    const d = driver(runsc as string);
    expect((await d.run(spec)).status).to.equal("running");
    const pid = (await sandboxPid(spec, 5_000)) as number;
    await fs.rm(path.join(stateRoot, (await fs.readdir(stateRoot)).find((e) => e.endsWith(`:${runscId(spec.id)}.state`)) as string));
    expect((await d.state(spec.id)).status).to.equal("absent");
    expect(pidAlive(pid), "control: the sandbox still runs").to.equal(true);
    await d.destroy(spec.id);
    await expectNothingLeft(spec, pid);
  });

  it("the purge's pruneCgroups kills what runsc lost in the tenant's cgroups, even from a new driver", async () => {
    const spec = await lab.prepareVm("gone-2");
    expect((await driver(forgetting).run(spec)).status).to.equal("running");
    const pid = (await sandboxPid(spec, 5_000)) as number;
    expect(pidAlive(pid), "control: the sandbox still runs").to.equal(true);
    // A driver that never launched it (a restarted daemon's purge).
    await driver(runsc as string).pruneCgroups(lab.cgroupRoot);
    expect(pidAlive(pid)).to.equal(false);
    expect(await lab.cgroupLeftovers(lab.cgroupRoot)).to.deep.equal([]);
    expect(await bundleProcesses(spec)).to.deep.equal([]);
  });
});
