/**
 * The gVisor driver (tenant-daemon/runtime/runsc-driver.ts) with REAL runsc sandboxes from the
 * real debian-12 image. Needs root and runsc (`apt-get install runsc`, done by
 * scripts/setup.sh). Runtime level only: these VMs run tini + sleep, not the agent (the agent
 * channel under gVisor is not built yet, docs/gvisor-status.md). Every sandbox, mount, cgroup
 * and state file made here is removed in after hooks.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { run } from "../../shared/exec.js";
import { pidAlive } from "../../shared/proc.js";
import type { VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import { pinUserAndNetns } from "../../tenant-daemon/runtime/nsutil.js";
import { createRunscDriver, type RunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { runscPidsLimit } from "../../shared/host-pids.js";
import type { TenantVmStorage } from "../../tenant-daemon/storage/vm-storage.js";
import { readCgroupLimits } from "../helpers/cgroup.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { rejection } from "../helpers/rejection.js";
import { MiB, RuntimeVmLab } from "../helpers/runtime-lab.js";


const missing = missingPrerequisites({ dist: ["dist/toolbox/agent.cjs", "dist/bin/paddock-nsutil"] });
if (findRunsc() === undefined) missing.push("runsc not installed (apt-get install runsc)");

describeWhenReady(missing, "gVisor runtime driver (privileged, real runsc)", function () {
  this.timeout(180_000);
  let lab: RuntimeVmLab;
  let driver: RunscDriver;
  let stateRoot: string;
  // Short names for the lab's parts (set in before).
  let tenant: string, dir: string, storage: TenantVmStorage, RANGE: { uidStart: number; size: number };
  let netnsNames: string[], usernsPins: string[];
  const prepareVm = (hostname: string, over: Partial<VmRuntimeSpec> = {}): Promise<VmRuntimeSpec> => lab.prepareVm(hostname, over);
  const destroyVm = (hostname: string): Promise<void> => lab.destroyVm(hostname);
  const cgroupLeftovers = (cgroupPath: string): Promise<string[]> => lab.cgroupLeftovers(cgroupPath);

  before(async () => {
    lab = await RuntimeVmLab.create({ tenantPrefix: "g", uidBase: 1_800_000_000, ramBytes: 256 * MiB, traversableBootParents: true });
    ({ tenant, dir, storage, range: RANGE, netnsNames, usernsPins } = lab);
    stateRoot = path.join(dir, "run", "runsc");
    driver = lab.use(createRunscDriver({ stateRoot, cgroupParent: lab.cgroupRoot }));
  });

  async function exec(id: string, args: string[], allowFailure = false): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const argv = driver.execArgv(id, args);
    return run(argv[0] as string, argv.slice(1), { timeoutMs: 30_000, allowFailure });
  }

  /** Host processes whose command line names `needle` (runsc puts the container id on it). */
  async function hostProcesses(needle: string): Promise<number[]> {
    const out: number[] = [];
    for (const e of await fs.readdir("/proc")) {
      if (!/^\d+$/.test(e)) continue;
      const cmd = await fs.readFile(`/proc/${e}/cmdline`, "utf8").catch(() => "");
      if (cmd.includes(needle)) out.push(Number(e));
    }
    return out;
  }

  after(async () => {
    await lab?.cleanup();
  });

  it("runs a VM under gVisor: exec inside, pause/resume, stop, and destroy leaves no state, cgroup, mount or process", async () => {
    const spec = await prepareVm("life-1");
    const st = await driver.run(spec);
    expect(st.status).to.equal("running");
    expect(st.pid).to.be.a("number").greaterThan(1);
    expect(await driver.list(`pdk-${tenant}-`)).to.deep.equal([spec.id]);
    expect(await driver.list(`pdk-${tenant}x`)).to.deep.equal([]);

    // Inside: gVisor's kernel (its synthetic 4.4.0), the VM name, tini as PID 1, debian 12's users.
    expect((await exec(spec.id, ["uname", "-r"])).stdout.trim()).to.equal("4.4.0");
    expect((await exec(spec.id, ["hostname"])).stdout.trim()).to.equal("life-1");
    expect((await exec(spec.id, ["cat", "/proc/1/cmdline"])).stdout.split("\0")[0]).to.equal("/.paddock/bin/tini");
    expect((await exec(spec.id, ["id", "-u", "slicer"])).stdout.trim()).to.equal("1000");
    expect((await exec(spec.id, ["/.paddock/bin/node", "-e", "process.stdout.write(String(6*7))"])).stdout).to.equal("42");
    // The boot dir and the toolbox are read-only in the guest.
    const bootWrite = await exec(spec.id, ["sh", "-c", "echo x > /run/paddock-agent/probe"], true);
    expect(bootWrite.exitCode).to.not.equal(0);
    expect(existsSync(path.join(spec.bootDir, "probe"))).to.equal(false);
    // A file the guest root writes is owned on the VM disk by the tenant's first host uid.
    await exec(spec.id, ["sh", "-c", "echo hi > /root/owned"]);
    expect((await fs.stat(path.join(storage.paths("life-1").diskDir, "upper", "root", "owned"))).uid).to.equal(RANGE.uidStart);

    // Host cgroup: the spec's memory and cpu limits, pids.max scaled for the sentry's threads.
    const limits = await readCgroupLimits(spec.cgroupPath);
    expect(limits).to.include({ memoryBytes: 256 * MiB, pidsMax: runscPidsLimit(64), cpuQuotaUs: 100_000, cpuPeriodUs: 100_000 });
    await driver.update(spec.id, { cpus: 0.5, ramBytes: 200 * MiB });
    expect(await readCgroupLimits(spec.cgroupPath)).to.include({ memoryBytes: 200 * MiB, cpuQuotaUs: 50_000 });

    await driver.pause(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("paused");
    const whilePaused = await exec(spec.id, ["true"], true);
    expect(whilePaused.exitCode).to.not.equal(0);
    expect(whilePaused.stderr).to.match(/paused/);
    await driver.resume(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("running");
    expect((await exec(spec.id, ["cat", "/root/owned"])).stdout.trim()).to.equal("hi");

    await driver.stop(spec.id, 10_000);
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    await driver.destroy(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    await driver.destroy(spec.id); // idempotent
    expect(await fs.readdir(stateRoot)).to.deep.equal([]);
    expect(await cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
    expect(await hostProcesses(spec.id)).to.deep.equal([]);
    expect(pidAlive(st.pid as number)).to.equal(false);
    await storage.unmount("life-1");
    expect(await fs.readFile("/proc/self/mountinfo", "utf8")).to.not.include(storage.paths("life-1").bundleDir);
    await destroyVm("life-1");
  });

  it("keeps ids prefix-free: sbox-1 stays addressable while sbox-10 exists", async () => {
    const a = await prepareVm("sbox-1");
    const b = await prepareVm("sbox-10");
    await driver.create(a);
    expect((await driver.state(a.id)).status).to.equal("created");
    await driver.run(b);
    await driver.start(a.id);
    expect((await driver.state(a.id)).status).to.equal("running");
    expect((await exec(a.id, ["hostname"])).stdout.trim()).to.equal("sbox-1");
    expect((await exec(b.id, ["hostname"])).stdout.trim()).to.equal("sbox-10");
    expect(await driver.list(`pdk-${tenant}-sbox-1`)).to.deep.equal([a.id, b.id]);
    await driver.kill(a.id, "KILL");
    await destroyVm("sbox-1");
    expect((await driver.state(b.id)).status).to.equal("running");
    await destroyVm("sbox-10");
    expect(await fs.readdir(stateRoot)).to.deep.equal([]);
  });

  it("a failed start leaves no sandbox and no cgroup behind", async () => {
    const spec = await prepareVm("bad-1", { args: ["/does/not/exist"] });
    const err = await rejection(driver.run(spec));
    expect(isPaddockError(err, "ERR_RUNTIME_FAILED"), String(err)).to.equal(true);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    expect(await cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
    expect(await hostProcesses(spec.id)).to.deep.equal([]);
    await destroyVm("bad-1");
  });

  it("a VM in its own netns (owned by its pinned userns) reaches a peer on 198.18.0.0/15 over TCP through gVisor's netstack", async () => {
    const ns = `pdk-${tenant}-n`;
    const peer = `pdk-${tenant}-p`;
    netnsNames.push(ns, peer);
    const pin = path.join(dir, "userns-net-1");
    usernsPins.push(pin);
    await pinUserAndNetns(pin, `/var/run/netns/${ns}`, RANGE);
    const ip = async (...args: string[]) => run("ip", args, { timeoutMs: 15_000 });
    await ip("netns", "add", peer);
    await ip("link", "add", `gv${tenant}h`, "netns", peer, "type", "veth", "peer", "name", "eth0", "netns", ns);
    await ip("-n", peer, "addr", "add", "198.18.77.1/30", "dev", `gv${tenant}h`);
    await ip("-n", peer, "link", "set", `gv${tenant}h`, "up");
    await ip("-n", ns, "addr", "add", "198.18.77.2/30", "dev", "eth0");
    await ip("-n", ns, "link", "set", "eth0", "up");
    await ip("-n", ns, "link", "set", "lo", "up");
    await ip("-n", ns, "route", "add", "default", "via", "198.18.77.1");
    // A listener in the peer netns that answers with the address it saw.
    const listener = spawn("ip", ["netns", "exec", peer, process.execPath, "-e",
      "require('net').createServer((s) => s.end('hello ' + s.remoteAddress + '\\n')).listen(7777, '198.18.77.1', () => console.log('ready'))"], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        listener.stdout.once("data", () => resolve());
        listener.once("exit", (code) => reject(new Error(`listener exited ${code}`)));
      });
      // create + start: runsc sets the network up at start, so start needs the same wrapper and flags.
      const spec = await prepareVm("net-1", { netnsPath: `/var/run/netns/${ns}` });
      await driver.create(spec);
      await driver.start(spec.id);
      const r = await exec(spec.id, ["bash", "-c", "timeout 10 cat </dev/tcp/198.18.77.1/7777"]);
      expect(r.stdout.trim()).to.equal("hello 198.18.77.2");
      // The guest's routes are the netns's, copied into gVisor's netstack.
      expect((await exec(spec.id, ["cat", "/proc/net/route"])).stdout).to.match(/eth0\t00000000\t014D12C6/);
      await destroyVm("net-1");
      expect(await fs.readdir(stateRoot)).to.deep.equal([]);
    } finally {
      listener.kill("SIGKILL");
    }
  });
});
