/**
 * The OCI driver with REAL runc sandboxes from the real debian-12 image (build it with
 * scripts/build-image.sh). Needs root. Every sandbox, mount, loop device, netns and cgroup
 * made here is removed in after hooks.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { isPaddockError } from "../../shared/errors.js";
import type { VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import { createOciDriver, type OciDriver } from "../../tenant-daemon/runtime/oci-driver.js";
import { findProjectRoot } from "../../shared/proc.js";
import { agentHealth } from "../../tenant-daemon/agent-client/agent-http.js";
import { parseBootConfig, writeAgentBootConfig } from "../../tenant-daemon/agent/boot.js";
import { pinUserAndNetns } from "../../tenant-daemon/runtime/nsutil.js";
import type { TenantVmStorage } from "../../tenant-daemon/storage/vm-storage.js";
import { guestCgroupFiles, parseGuestCgroupFiles, readCgroupLimits } from "../helpers/cgroup.js";
import { TEST_IMAGE_DIR, skipUnlessRoot } from "../helpers/prerequisites.js";
import { rejection } from "../helpers/rejection.js";
import { MiB, RuntimeVmLab } from "../helpers/runtime-lab.js";

describe("OCI runtime driver (privileged, real runc)", function () {
  this.timeout(120_000);
  let lab: RuntimeVmLab;
  let driver: OciDriver;
  // Short names for the lab's parts (set in before).
  let tenant: string, cgroupRoot: string, dir: string, storage: TenantVmStorage, RANGE: { uidStart: number; size: number };
  let netnsNames: string[], usernsPins: string[];
  const prepareVm = (hostname: string, over: Partial<VmRuntimeSpec> = {}): Promise<VmRuntimeSpec> => lab.prepareVm(hostname, over);
  const destroyVm = (hostname: string): Promise<void> => lab.destroyVm(hostname);
  const cgroupLeftovers = (cgroupPath: string): Promise<string[]> => lab.cgroupLeftovers(cgroupPath);

  before(async function () {
    skipUnlessRoot(this);
    lab = await RuntimeVmLab.create({ tenantPrefix: "t", uidBase: 1_900_000_000, ramBytes: 96 * MiB });
    ({ tenant, cgroupRoot, dir, storage, range: RANGE, netnsNames, usernsPins } = lab);
    driver = lab.use(await createOciDriver({ cgroupParent: cgroupRoot, preference: "auto" }));
  });

  async function exec(id: string, args: string[], allowFailure = false): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    return run("runc", ["exec", id, ...args], { timeoutMs: 30_000, allowFailure });
  }

  after(async () => {
    await lab?.cleanup();
  });

  it("runs a sandbox through create → running → paused → running → stopped → absent, leaving nothing", async () => {
    const spec = await prepareVm("life-1");
    await driver.create(spec);
    expect((await driver.state(spec.id)).status).to.equal("created");
    await driver.start(spec.id);
    const running = await driver.state(spec.id);
    expect(running.status).to.equal("running");
    expect(running.pid).to.be.a("number").greaterThan(1);
    expect(await driver.list(`pdk-${tenant}-`)).to.deep.equal([spec.id]);
    expect(await driver.list(`pdk-${tenant}x`)).to.deep.equal([]);

    // Inside: hostname = VM name, tini is PID 1, the image is debian 12 with the slicer user.
    expect((await exec(spec.id, ["hostname"])).stdout.trim()).to.equal("life-1");
    expect((await exec(spec.id, ["cat", "/proc/1/cmdline"])).stdout.split("\0")[0]).to.equal("/.paddock/bin/tini");
    expect((await exec(spec.id, ["id", "-u", "slicer"])).stdout.trim()).to.equal("1000");
    // The toolbox: the host's node runs in the guest, and is read-only there.
    expect((await exec(spec.id, ["/.paddock/bin/node", "-e", "process.stdout.write(String(6*7))"])).stdout).to.equal("42");
    const roWrite = await exec(spec.id, ["touch", "/.paddock/app/should-not-exist"], true);
    expect(roWrite.exitCode).to.not.equal(0);
    expect(roWrite.stderr).to.match(/Read-only file system/);
    // The boot dir is read-only in the guest: nothing the guest does lands in a host directory.
    const bootWrite = await exec(spec.id, ["sh", "-c", "echo from-guest > /run/paddock-agent/probe"], true);
    expect(bootWrite.exitCode).to.not.equal(0);
    expect(existsSync(path.join(spec.bootDir, "probe"))).to.equal(false);
    // Guest root is the tenant's first host uid (user namespace), not host root.
    expect((await exec(spec.id, ["cat", "/proc/self/uid_map"])).stdout.trim().split(/\s+/)).to.deep.equal(["0", String(RANGE.uidStart), String(RANGE.size)]);

    // Limits, seen from the host (v1 controller mounts or the v2 unified hierarchy, whichever
    // the host has; a missing file fails) and from inside the guest's cgroup namespace.
    const hostLimits = await readCgroupLimits(spec.cgroupPath);
    expect(hostLimits).to.include({ memoryBytes: 96 * MiB, pidsMax: 64, cpuQuotaUs: 100_000, cpuPeriodUs: 100_000 });
    const guest = await exec(spec.id, ["cat", ...guestCgroupFiles(hostLimits.version)]);
    expect(parseGuestCgroupFiles(hostLimits.version, guest.stdout)).to.deep.equal({ memoryBytes: 96 * MiB, pidsMax: 64, cpuQuotaUs: 100_000, cpuPeriodUs: 100_000 });

    await driver.pause(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("paused");
    await driver.resume(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("running");

    await driver.stop(spec.id, 10_000);
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    await driver.destroy(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    await driver.destroy(spec.id); // idempotent
    expect(await cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
    await storage.unmount("life-1");
    const mounts = await fs.readFile("/proc/self/mountinfo", "utf8");
    expect(mounts).to.not.include(storage.paths("life-1").bundleDir);
    const loops = await run("losetup", ["-J", "--list"]);
    expect(loops.stdout).to.not.include(storage.paths("life-1").diskPath);
    await destroyVm("life-1");
  });

  it("a state directory the runtime left empty (killed before it wrote its state) does not block the name", async () => {
    const spec = await prepareVm("stale-1");
    const stateDir = path.join("/run/runc", spec.id);
    await fs.mkdir(stateDir, { mode: 0o711 });
    try {
      // Control: runc knows no such container, and still refuses the id while the directory is there.
      expect((await run("runc", ["state", spec.id], { allowFailure: true })).stderr).to.match(/does not exist/);
      expect(await driver.list(`pdk-${tenant}-`)).to.include(spec.id);
      expect((await driver.run(spec)).status).to.equal("running");
      expect((await exec(spec.id, ["hostname"])).stdout.trim()).to.equal("stale-1");
      await driver.destroy(spec.id);
      expect(existsSync(stateDir)).to.equal(false);
    } finally {
      await driver.destroy(spec.id).catch(() => undefined);
      await fs.rmdir(stateDir).catch(() => undefined);
      await destroyVm("stale-1");
    }
  });

  it("enforces the pids limit inside the guest", async () => {
    const spec = await prepareVm("pids-1", { pidsLimit: 20 });
    await driver.create(spec);
    await driver.start(spec.id);
    // 40 background sleeps in a guest allowed 20 pids: some forks must fail. (The sleeps get
    // /dev/null as stdio, or they would hold the exec's pipes open.)
    const r = await exec(spec.id, ["sh", "-c", "for i in $(seq 40); do sleep 30 </dev/null >/dev/null 2>&1 & done; echo started"], true);
    expect(r.stderr, "the shell reports the refused forks").to.match(/fork|Resource temporarily unavailable/i);
    // The cgroup is full: tini and the sleeps that got a pid fill the 20 (less the exited sh,
    // and a missing file fails the read).
    const limits = await readCgroupLimits(spec.cgroupPath);
    expect(limits.pidsMax).to.equal(20);
    expect(limits.pidsCurrent).to.be.within(18, 20);
    await destroyVm("pids-1");
  });

  it("gives ENOSPC inside the VM when its disk is full, while the host disk is untouched", async () => {
    const spec = await prepareVm("full-1");
    await driver.create(spec);
    await driver.start(spec.id);
    const r = await exec(spec.id, ["dd", "if=/dev/zero", "of=/tmp/fill", "bs=1M", "count=400"], true);
    expect(r.exitCode).to.not.equal(0);
    expect(r.stderr).to.match(/No space left on device/);
    const st = await fs.stat(storage.paths("full-1").diskPath);
    expect(st.blocks * 512).to.be.at.most(128 * MiB);
    // The base image did not receive the file.
    expect(existsSync(path.join(TEST_IMAGE_DIR, "debian-12", "rootfs", "tmp", "fill"))).to.equal(false);
    await destroyVm("full-1");
  });

  it("sends the guest's output to the console log and joins a given network namespace", async () => {
    const ns = `pdk-${tenant}-ns`;
    netnsNames.push(ns);
    // The netns must belong to the VM's user namespace (vm-namespaces.ts), so make the pair.
    const usernsFile = path.join(dir, "run", "userns-cons-1");
    await pinUserAndNetns(usernsFile, `/var/run/netns/${ns}`, RANGE);
    usernsPins.push(usernsFile);
    const spec = await prepareVm("cons-1", {
      netnsPath: `/var/run/netns/${ns}`,
      userns: { path: usernsFile, ...RANGE },
      args: ["/.paddock/bin/tini", "-s", "--", "/bin/sh", "-c", "echo hello-console; echo oops >&2; exec sleep 1000"],
    });
    await driver.create(spec);
    await driver.start(spec.id);
    const { pid } = await driver.state(spec.id);
    const [guestNs, wantNs] = await Promise.all([fs.stat(`/proc/${pid}/ns/net`), fs.stat(`/var/run/netns/${ns}`)]);
    expect(guestNs.ino).to.equal(wantNs.ino);
    let log = "";
    for (let i = 0; i < 100 && !log.includes("oops"); i++) {
      log = await fs.readFile(spec.consoleLogPath, "utf8");
      if (!log.includes("oops")) await new Promise((r) => setTimeout(r, 50));
    }
    expect(log).to.include("hello-console").and.include("oops");
    await destroyVm("cons-1");
  });

  it("falls back to SIGKILL when the guest ignores SIGTERM", async () => {
    const spec = await prepareVm("term-1", { args: ["/.paddock/bin/tini", "-s", "-g", "--", "/bin/sh", "-c", "trap '' TERM; sleep 1000"] });
    await driver.create(spec);
    await driver.start(spec.id);
    expect(await driver.stop(spec.id, 300), "it took a SIGKILL").to.deep.equal({ forced: true });
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    expect(await driver.stop(spec.id, 300), "idempotent").to.deep.equal({ forced: false });
    await destroyVm("term-1");
  });

  it("stops and destroys a paused sandbox", async () => {
    const spec = await prepareVm("paus-1");
    await driver.create(spec);
    await driver.start(spec.id);
    await driver.pause(spec.id);
    expect(await driver.stop(spec.id, 5_000), "it stopped on SIGTERM once thawed").to.deep.equal({ forced: false });
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    await driver.destroy(spec.id);
    const spec2 = await prepareVm("paus-2");
    await driver.create(spec2);
    await driver.start(spec2.id);
    await driver.pause(spec2.id);
    await driver.destroy(spec2.id);
    expect((await driver.state(spec2.id)).status).to.equal("absent");
    expect(await cgroupLeftovers(spec2.cgroupPath)).to.deep.equal([]);
    await destroyVm("paus-1");
    await destroyVm("paus-2");
  });

  it("run() creates and starts in one call, replaces a leftover stopped sandbox, and rolls back a failed run", async () => {
    const spec = await prepareVm("run-1");
    const st = await driver.run(spec);
    expect(st.status).to.equal("running");
    expect(st).to.deep.equal(await driver.state(spec.id));
    expect((await exec(spec.id, ["cat", "/proc/1/cmdline"])).stdout.split("\0")[0]).to.equal("/.paddock/bin/tini");
    // A leftover of the same id (daemon killed mid-way): stopped, then run again on top of it.
    await driver.stop(spec.id, 0);
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    const again = await driver.run(spec);
    expect(again.status).to.equal("running");
    expect(again.pid).to.not.equal(st.pid);
    await driver.destroy(spec.id);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    // A failing init: ERR_RUNTIME_FAILED with runc's message and nothing left.
    const err = await rejection(driver.run({ ...spec, args: ["/no/such/binary"] }));
    expect(isPaddockError(err, "ERR_RUNTIME_FAILED")).to.equal(true);
    expect((err as Error).message).to.match(/no such file|not found/i);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    expect(await cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
    await destroyVm("run-1");
  });

  it("maps runtime failures to ERR_RUNTIME_FAILED with runc's message", async () => {
    const spec = await prepareVm("bad-1", { args: ["/no/such/binary"] });
    const err = await rejection(driver.create(spec));
    expect(isPaddockError(err, "ERR_RUNTIME_FAILED")).to.equal(true);
    expect((err as Error).message).to.match(/no such file|not found/i);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    expect(isPaddockError(await rejection(driver.start(spec.id)), "ERR_RUNTIME_FAILED")).to.equal(true);
    expect(isPaddockError(await rejection(driver.pause(spec.id)), "ERR_RUNTIME_FAILED")).to.equal(true);
    await destroyVm("bad-1");
  });

  it("keeps the sandbox running after the process that created it is SIGKILLed", async () => {
    const spec = await prepareVm("det-1");
    const driverModule = path.join(findProjectRoot(), "dist/tenant-daemon/runtime/oci-driver.js");
    const script = `
      const { createOciDriver } = await import(${JSON.stringify(driverModule)});
      const spec = JSON.parse(process.env.SPEC);
      const d = await createOciDriver({ cgroupParent: spec.cgroupPath.slice(0, spec.cgroupPath.lastIndexOf("/")) });
      await d.create(spec);
      await d.start(spec.id);
      process.stdout.write("started\\n");
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { env: { ...process.env, SPEC: JSON.stringify(spec) }, stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on("data", (b: Buffer) => (b.toString().includes("started") ? resolve() : undefined));
        child.once("exit", (code) => reject(new Error(`creator exited early (${code})`)));
      });
    } finally {
      child.kill("SIGKILL");
    }
    await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once("exit", r)));
    expect((await driver.state(spec.id)).status).to.equal("running");
    expect((await exec(spec.id, ["hostname"])).stdout.trim()).to.equal("det-1");
    await destroyVm("det-1");
  });

  it("boots the real guest agent under tini with the default command, answering on the inherited listener", async function () {
    const spec = await prepareVm("agent-1", { args: undefined });
    const proof = "cd".repeat(32);
    writeAgentBootConfig(spec.bootDir, parseBootConfig({ hostname: "agent-1", userdata: null, default_user: null, agent_proof: proof }), { uid: RANGE.uidStart, gid: RANGE.uidStart });
    await driver.create(spec);
    await driver.start(spec.id);
    const endpoint = { hostname: "agent-1", socketPath: spec.agentSocketPath, proof };
    const health = await agentHealth(endpoint, 30_000).catch(async (err: unknown) => {
      throw new Error(`agent never answered: ${String(err)}; console:\n${await fs.readFile(spec.consoleLogPath, "utf8")}`);
    });
    expect(health.agent_uptime).to.be.greaterThan(0);
    await driver.stop(spec.id, 10_000);
    expect((await driver.state(spec.id)).status).to.equal("stopped");
    await destroyVm("agent-1");
  });

  it("prunes the tenant's cgroup parent only once no sandbox uses it", async () => {
    const spec = await prepareVm("prune-1");
    await driver.create(spec);
    await driver.start(spec.id);
    await driver.pruneCgroups(cgroupRoot);
    expect(await cgroupLeftovers(spec.cgroupPath)).to.not.deep.equal([]);
    expect((await driver.state(spec.id)).status).to.equal("running");
    await destroyVm("prune-1");
    await driver.pruneCgroups(cgroupRoot);
    expect(await cgroupLeftovers(cgroupRoot)).to.deep.equal([]);
  });

  it("create+start reaches running, and destroy removes it, in each of 10 runs on one bundle (the time is figure 1 of npm run bench)", async () => {
    const spec = await prepareVm("bench-1");
    for (let i = 0; i < 10; i++) {
      await driver.create(spec);
      await driver.start(spec.id);
      expect((await driver.state(spec.id)).status, `run ${i}`).to.equal("running");
      await driver.destroy(spec.id);
      expect((await driver.state(spec.id)).status, `run ${i} destroyed`).to.equal("absent");
    }
    await destroyVm("bench-1");
  });
});
