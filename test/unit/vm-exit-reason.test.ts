/**
 * tenant-daemon/vm/vm-exit-reason.ts, pure: the `oom_kill` line of v1 `memory.oom_control` and v2
 * `memory.events` (real file contents), the counter file per layout, and VmExitWatch's
 * bookkeeping with a counter the test sets (new boots start at 0, an adopted VM's past kills are
 * not reported again, a boot that ended during the read is left to its exit), and the
 * `pids_limit` exit of a runtime whose VMs end at their pids limit (gVisor) from `pids.events`.
 * test/privileged/vm-expiry-events.test.ts drives real OOM kills.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { VmExitWatch, hostOomCounterReader, hostPidsMaxReader, oomCounterFile, parseOomKillCount, parsePidsMaxCount, pidsEventsFile } from "../../tenant-daemon/vm/vm-exit-reason.js";

describe("VM exit reasons (vm-exit-reason.ts, pure)", () => {
  it("parses oom_kill from cgroup v1 memory.oom_control and v2 memory.events", () => {
    expect(parseOomKillCount("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")).to.equal(3);
    expect(parseOomKillCount("low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n")).to.equal(2);
    expect(parseOomKillCount("oom_kill_disable 0\nunder_oom 0\n"), "a kernel without the counter").to.equal(undefined);
    expect(parseOomKillCount("oom_kill_disable 7\n"), "not another key's value").to.equal(undefined);
  });

  it("names the counter file of each layout", () => {
    expect(oomCounterFile({ version: 1, pids: "/c/pids", memory: "/c/memory", cpu: "/c/cpu", memsw: true }, "/paddock/t1/sbox-1")).to.equal("/c/memory/paddock/t1/sbox-1/memory.oom_control");
    expect(oomCounterFile({ version: 2, root: "/c", controllers: ["memory"] }, "/paddock/t1/sbox-1")).to.equal("/c/paddock/t1/sbox-1/memory.events");
  });

  it("reports each kill once per boot, starts a new boot at 0, and leaves a kill racing an exit to the exit", async () => {
    const counts = new Map<string, number>();
    const watch = new VmExitWatch({ cgroupPath: (h) => `/paddock/t/${h}`, read: async (p) => counts.get(p) });
    const vm = { record: { hostname: "a-1" }, pid: 100 };
    expect(await watch.takeNewKills(vm), "no cgroup yet").to.equal(0);
    counts.set("/paddock/t/a-1", 2);
    expect(await watch.takeNewKills(vm)).to.equal(2);
    expect(await watch.takeNewKills(vm)).to.equal(0);
    counts.set("/paddock/t/a-1", 3);
    expect(await watch.takeNewKills(vm, () => false), "the boot ended during the read").to.equal(0);
    expect(await watch.exitCause(vm)).to.deep.equal({ cause: "oom", oomKills: 1 });
    // A reboot: a new cgroup, a new pid.
    counts.set("/paddock/t/a-1", 0);
    const reboot = { record: { hostname: "a-1" }, pid: 200 };
    expect(await watch.exitCause(reboot)).to.deep.equal({ cause: "guest_exit", oomKills: 0 });
    // Re-attached at daemon start with 5 kills the previous run saw: only later ones count.
    const adopted = { record: { hostname: "b-1" }, pid: 300 };
    counts.set("/paddock/t/b-1", 5);
    await watch.adopt(adopted);
    expect(await watch.takeNewKills(adopted)).to.equal(0);
    counts.set("/paddock/t/b-1", 6);
    expect(await watch.takeNewKills(adopted)).to.equal(1);
    expect(watch.hostnames()).to.deep.equal(["b-1"]);
  });

  it("parses max from pids.events and names the file of each layout", () => {
    expect(parsePidsMaxCount("max 17\n")).to.equal(17);
    expect(parsePidsMaxCount("max 0\n")).to.equal(0);
    expect(parsePidsMaxCount("oom_kill 3\n"), "no max line").to.equal(undefined);
    expect(pidsEventsFile({ version: 1, pids: "/c/pids", memory: "/c/memory", cpu: "/c/cpu", memsw: true }, "/paddock/t1/sbox-1")).to.equal("/c/pids/paddock/t1/sbox-1/pids.events");
    expect(pidsEventsFile({ version: 2, root: "/c", controllers: ["pids"] }, "/paddock/t1/sbox-1")).to.equal("/c/paddock/t1/sbox-1/pids.events");
  });

  it("puts a gVisor VM's exit down to pids_limit when its cgroup refused forks this boot, and only then", async () => {
    const oom = new Map<string, number>();
    const forks = new Map<string, number>();
    const deps = { cgroupPath: (h: string) => `/paddock/t/${h}`, read: async (p: string) => oom.get(p), readPidsMax: async (p: string) => forks.get(p) };
    const gvisor = new VmExitWatch({ ...deps, pidsLimitEndsVm: true });
    forks.set("/paddock/t/g-1", 3);
    expect(await gvisor.exitCause({ record: { hostname: "g-1" }, pid: 10 })).to.deep.equal({ cause: "pids_limit", oomKills: 0 });
    forks.set("/paddock/t/g-1", 0);
    expect(await gvisor.exitCause({ record: { hostname: "g-1" }, pid: 11 }), "no refused fork").to.deep.equal({ cause: "guest_exit", oomKills: 0 });
    forks.delete("/paddock/t/g-1");
    expect(await gvisor.exitCause({ record: { hostname: "g-1" }, pid: 12 }), "no cgroup").to.deep.equal({ cause: "guest_exit", oomKills: 0 });
    // An OOM kill is told first: the memory limit took the sandbox.
    oom.set("/paddock/t/g-2", 1);
    forks.set("/paddock/t/g-2", 5);
    expect(await gvisor.exitCause({ record: { hostname: "g-2" }, pid: 20 })).to.deep.equal({ cause: "oom", oomKills: 1 });
    // Re-attached at daemon start: forks refused before count only if more come.
    const adopted = { record: { hostname: "g-3" }, pid: 30 };
    forks.set("/paddock/t/g-3", 4);
    await gvisor.adopt(adopted);
    expect(await gvisor.exitCause(adopted)).to.deep.equal({ cause: "guest_exit", oomKills: 0 });
    await gvisor.adopt(adopted);
    forks.set("/paddock/t/g-3", 5);
    expect(await gvisor.exitCause(adopted)).to.deep.equal({ cause: "pids_limit", oomKills: 0 });
    // A failing read counts as no change.
    const broken = new VmExitWatch({ ...deps, pidsLimitEndsVm: true, readPidsMax: async () => { throw new Error("EIO"); } });
    expect(await broken.exitCause({ record: { hostname: "g-4" }, pid: 40 })).to.deep.equal({ cause: "guest_exit", oomKills: 0 });
    // runc: a refused fork fails in the guest and the VM runs on; its exit is never put down to it.
    const runc = new VmExitWatch(deps);
    forks.set("/paddock/t/r-1", 9);
    expect(await runc.exitCause({ record: { hostname: "r-1" }, pid: 50 })).to.deep.equal({ cause: "guest_exit", oomKills: 0 });
  });

  it("reads the host's counter files under a cgroup root: values, a missing cgroup, and no path outside it", async () => {
    // A cgroup v2 layout in a temp dir (tenant-cgroup.ts detectCgroupLayout reads cgroup.controllers).
    const root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-cgroot-"));
    try {
      await fs.writeFile(path.join(root, "cgroup.controllers"), "cpu memory pids\n");
      await fs.mkdir(path.join(root, "paddock", "t", "v-1"), { recursive: true });
      await fs.writeFile(path.join(root, "paddock", "t", "v-1", "memory.events"), "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n");
      await fs.writeFile(path.join(root, "paddock", "t", "v-1", "pids.events"), "max 7\n");
      await fs.writeFile(path.join(root, "memory.events"), "oom_kill 99\n");
      const oom = hostOomCounterReader(root);
      const pids = hostPidsMaxReader(root);
      expect(await oom("/paddock/t/v-1")).to.equal(2);
      expect(await pids("/paddock/t/v-1")).to.equal(7);
      expect(await oom("/paddock/t/gone")).to.equal(undefined);
      for (const bad of ["/", "paddock/t/v-1", "/paddock/t/v-1/../.."]) expect(await oom(bad), bad).to.equal(undefined);
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});
