/**
 * Suspend to disk and restore of a gVisor sandbox at the driver level
 * (tenant-daemon/runtime/runsc-checkpoint.ts), with REAL runsc, the real debian-12 image and
 * the real guest agent on the reverse channel (tenant-daemon/agent-client/agent-dial-pool.ts):
 * a counter keeps counting from where it stopped, the sandbox is gone while suspended, the
 * agent dials back in after the restore, and a checkpoint with the agent's host-backed
 * connections still open fails, stopping the VM and leaving no image. Needs root and runsc.
 * Everything made here is removed in after hooks.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { run } from "../../shared/exec.js";
import { pidAlive } from "../../shared/proc.js";
import { writeAgentBootConfig } from "../../tenant-daemon/agent/boot.js";
import { AgentDialPool } from "../../tenant-daemon/agent-client/agent-dial-pool.js";
import { newAgentProof, type AgentEndpoint } from "../../tenant-daemon/agent-client/agent-endpoint.js";
import { agentHealth } from "../../tenant-daemon/agent-client/agent-http.js";
import { AGENT_DIAL_SOCKET_NAME, type VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import { CHECKPOINT_IMAGE_NAME } from "../../tenant-daemon/runtime/runsc-checkpoint.js";
import { createRunscDriver, type RunscDriver } from "../../tenant-daemon/runtime/runsc-driver.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { rejection } from "../helpers/rejection.js";
import { MiB, RuntimeVmLab } from "../helpers/runtime-lab.js";
import { until } from "../helpers/wait.js";

const missing = missingPrerequisites({ dist: ["dist/toolbox/agent.cjs", "dist/bin/paddock-nsutil"] });
if (findRunsc() === undefined) missing.push("runsc not installed (apt-get install runsc)");

/** A guest loop writing an increasing counter to /tmp/c (tmpfs: sentry memory) and /root/c (the VM disk) every 100 ms (/tmp/c by rename, so a reader never sees it truncated). */
/** Poll `cond` until it holds (a throw counts as not yet). @throws Error naming `what` after `timeoutMs`. */
const eventually = (cond: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<true> =>
  until(what, async () => ((await cond()) ? true : undefined), timeoutMs);

const COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; echo $i > /root/c; sleep 0.1; done";

describeWhenReady(missing, "gVisor suspend/restore at the driver level (privileged, real runsc + agent)", function () {
  this.timeout(240_000);
  let lab: RuntimeVmLab;
  let driver: RunscDriver;
  let spec: VmRuntimeSpec;
  let pool: AgentDialPool | undefined;
  let imageDir: string;
  const proof = newAgentProof();

  const exec = async (args: string[], allowFailure = false): Promise<{ stdout: string; stderr: string; exitCode: number }> => {
    const argv = driver.execArgv(spec.id, args);
    return run(argv[0] as string, argv.slice(1), { timeoutMs: 30_000, allowFailure });
  };
  const counter = async (file: string): Promise<number> => Number.parseInt((await exec(["cat", file])).stdout.trim(), 10);
  const endpoint = (): AgentEndpoint => ({ hostname: spec.hostname, socketPath: path.join(spec.agentDialDir as string, AGENT_DIAL_SOCKET_NAME), proof, dial: pool });
  const openPool = async (): Promise<AgentDialPool> =>
    (pool = await AgentDialPool.listen({ hostname: spec.hostname, socketPath: path.join(spec.agentDialDir as string, AGENT_DIAL_SOCKET_NAME), owner: { uid: lab.range.uidStart, gid: lab.range.uidStart } }));

  before(async () => {
    lab = await RuntimeVmLab.create({ tenantPrefix: "s", uidBase: 1_700_000_000, ramBytes: 256 * MiB, traversableBootParents: true });
    driver = lab.use(createRunscDriver({ stateRoot: path.join(lab.dir, "run", "runsc"), cgroupParent: lab.cgroupRoot }));
    const hostname = "susp-1";
    spec = await lab.prepareVm(hostname, { args: undefined, agentDialDir: path.join(lab.dir, "run", "vms", hostname, "agent-dial") });
    writeAgentBootConfig(spec.bootDir, {
      hostname, userdata: null, default_user: null, secrets_dir: "/run/slicer/secrets", agent_version: "test", resolv_conf: null, agent_proof: proof, egress_proxy: null,
    }, { uid: lab.range.uidStart, gid: lab.range.uidStart });
    imageDir = path.join(lab.dir, "checkpoints", hostname);
    await fs.mkdir(path.dirname(imageDir), { mode: 0o700 });
    await openPool();
  });

  after(async () => {
    await pool?.close();
    await lab?.cleanup();
  });

  it("suspends a VM running the agent and a counter, gives its memory back, and restores it: the counter continues, the agent dials back", async () => {
    const st = await driver.run(spec);
    expect(st.status).to.equal("running");
    expect((await agentHealth(endpoint(), 30_000)).hostname).to.equal("susp-1");
    await exec(["sh", "-c", `nohup sh -c '${COUNTER}' >/dev/null 2>&1 &`]);
    await eventually(async () => (await counter("/tmp/c").catch(() => 0)) >= 30, "the counter reached 30", 60_000);

    // The driver closes the agent channel first: runsc cannot save a host-backed connection.
    expect(pool?.openCount()).to.be.greaterThan(0);
    const t0 = performance.now();
    const { imageBytes } = await driver.suspend(spec.id, imageDir, pool);
    const suspendMs = performance.now() - t0;
    const atSuspend = Number.parseInt(await fs.readFile(path.join(lab.storage.paths("susp-1").diskDir, "upper", "root", "c"), "utf8"), 10);
    expect(atSuspend).to.be.at.least(30);
    expect(imageBytes).to.be.greaterThan(0);
    expect((await fs.stat(path.join(imageDir, CHECKPOINT_IMAGE_NAME))).size).to.equal(imageBytes);
    expect(existsSync(`${imageDir}.partial`)).to.equal(false);
    // The sandbox is gone: no runsc container, no sentry, no cgroup; the memory went back.
    expect((await driver.state(spec.id)).status).to.equal("absent");
    expect(pidAlive(st.pid as number)).to.equal(false);
    expect(await lab.cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
    // Only root can read the image (the host's, in a host-only dir).
    expect((await fs.stat(imageDir)).mode & 0o777).to.equal(0o700);
    expect((await fs.stat(imageDir)).uid).to.equal(0);

    await openPool();
    const t1 = performance.now();
    const restored = await driver.restore(spec.id, imageDir, { bundleDir: spec.bundleDir, consoleLogPath: spec.consoleLogPath });
    const restoreMs = performance.now() - t1;
    expect(restored.status).to.equal("running");
    expect((await agentHealth(endpoint(), 30_000)).hostname).to.equal("susp-1");
    const agentMs = performance.now() - t1;
    // /tmp lives in the sentry's memory: it came back from the image, and the loop goes on from there.
    const first = await counter("/tmp/c");
    expect(first).to.be.at.least(atSuspend);
    await eventually(async () => (await counter("/tmp/c")) > first, "the counter keeps counting after the restore", 30_000);
    console.log(`      image ${imageBytes} bytes; suspend ${suspendMs.toFixed(0)} ms, restore ${restoreMs.toFixed(0)} ms, restore→agent ${agentMs.toFixed(0)} ms`);
    await fs.rm(imageDir, { recursive: true });
  });

  it("refuses while the guest holds a TCP socket (runsc cannot save it, and a failed checkpoint kills the VM): the VM keeps running", async () => {
    await exec(["sh", "-c", "setsid /.paddock/bin/node -e \"require('net').createServer().listen(7777, () => require('fs').writeFileSync('/tmp/node.pid', String(process.pid)))\" >/dev/null 2>&1 </dev/null &"]);
    await eventually(async () => (await exec(["cat", "/tmp/node.pid"], true)).exitCode === 0, "the guest listens on TCP", 30_000);
    const err = await rejection(driver.suspend(spec.id, imageDir, pool));
    expect(isPaddockError(err, "ERR_VM_SUSPEND_REFUSED"), String(err)).to.equal(true);
    expect((err as Error).message).to.match(/1 TCP socket/);
    expect((await driver.state(spec.id)).status).to.equal("running");
    expect(existsSync(imageDir)).to.equal(false);
    expect((await agentHealth(endpoint(), 30_000)).hostname).to.equal("susp-1");
    await exec(["sh", "-c", "kill $(cat /tmp/node.pid)"]);
  });

  it("a checkpoint with the agent's connections open fails, stops the VM and leaves no image", async () => {
    expect((await driver.state(spec.id)).status).to.equal("running");
    await eventually(() => (pool?.idleCount() ?? 0) > 0, "the agent holds idle connections to the host", 30_000);
    // Without the channel, its connections stay open: the control that the closing above is what made it work.
    const err = await rejection(driver.suspend(spec.id, imageDir));
    expect(isPaddockError(err, "ERR_RUNTIME_FAILED"), String(err)).to.equal(true);
    expect((err as Error).message).to.match(/checkpoint/);
    expect((await driver.state(spec.id)).status).to.equal("absent");
    expect(existsSync(imageDir)).to.equal(false);
    expect(existsSync(`${imageDir}.partial`)).to.equal(false);
    expect(await lab.cgroupLeftovers(spec.cgroupPath)).to.deep.equal([]);
  });
});
