/**
 * Suspend to disk and restore of a VM of a REAL gVisor tenant daemon through the Slicer API
 * (tenant-daemon/vm/vm-suspend.ts over runsc checkpoint/restore): a guest counter survives
 * suspend → daemon restart → `restore?wait=agent` and keeps counting from where it stopped;
 * while suspended the VM is `Suspended` with no sandbox; a delete of a suspended VM removes its
 * image and everything else. (runc's 501 naming gVisor: test/privileged/daemon-lifecycle.test.ts.)
 * One VM for the whole file.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { listRunscIds } from "../../tenant-daemon/runtime/runsc-cli.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { SseClient } from "../helpers/sse.js";
import { until } from "../helpers/wait.js";
import { call } from "../integration/agent-fixture.js";
import { leftovers } from "./network-fixtures.js";

/**
 * A guest loop writing an increasing counter to /tmp/c (tmpfs: in the sentry's memory) every
 * 100 ms, by rename so that a reader never sees the file truncated between two writes.
 */
const COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; sleep 0.1; done";

const missing = [...missingPrerequisites(), ...(findRunsc() === undefined ? ["runsc not installed (apt-get install runsc)"] : [])];

describeWhenReady(missing, "suspend and restore of a gVisor VM through the Slicer API (privileged)", function () {
  this.timeout(300_000);
  let d: TestDaemon;
  let h = "";
  let ip = "";

  const sh = async (script: string): Promise<{ status: number; stdout: string; code?: string }> => {
    const r = await call(d.socketPath, "POST", `/vm/${h}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&buffered=true`, {});
    const j = r.json() as { stdout?: string; code?: string };
    return { status: r.status, stdout: j.stdout ?? "", code: j.code };
  };
  const counter = async (): Promise<number> => Number.parseInt((await sh("cat /tmp/c")).stdout.trim(), 10);
  const status = async (): Promise<string> => ((await d.get(`/vm/${h}`)).json as { status: string }).status;
  const sandboxes = async (): Promise<string[]> => listRunscIds(path.join(d.runDir, "runsc"));
  const imageDir = (): string => path.join(d.stateDir, "checkpoints", h);

  before(async () => {
    d = await TestDaemon.create({
      config: { hypervisor: "gvisor" },
      paddock: { gvisor: { platform: "ptrace" }, limits: { max_pids: 256, max_vms: 2 } },
      hostGroups: [{ name: "sus", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start(120_000);
    const r = await d.post("/hostgroup/sus/nodes?wait=agent&timeout=120s", { persistent: true });
    expect(r.status, r.text).to.equal(201);
    ({ hostname: h, ip } = r.json as { hostname: string; ip: string });
  });

  after(async () => {
    await d?.destroy();
    if (d === undefined) return;
    expect(await listRunscIds(path.join(d.runDir, "runsc")), "runsc sandboxes left").to.deep.equal([]);
    expect(await leftovers(d.tenantId)).to.deep.equal({ links: [], netns: [], table: false });
  });

  it("suspends (Suspended, no sandbox, image in the host-only state dir), survives a daemon restart, and restore?wait=agent brings the counter back where it stopped", async () => {
    expect((await sh(`setsid sh -c '${COUNTER}' >/dev/null 2>&1 </dev/null &`)).status).to.equal(200);
    await until("the counter reaches 20", async () => ((await counter().catch(() => 0)) >= 20 ? true : undefined), 60_000);
    // A running gVisor VM cannot be committed (its sentry may hold unwritten file data): 501, no commit made.
    const c = await d.post(`/vm/${h}/commit`);
    expect(c.status, c.text).to.equal(501);
    expect(c.json as Record<string, unknown>).to.include({ code: "ERR_VM_UNSUPPORTED" });
    expect((await d.get("/vm/commits")).json).to.deep.equal([]);

    const t0 = performance.now();
    const s = await d.post(`/vm/${h}/suspend`);
    const suspendMs = performance.now() - t0;
    expect(s.status, s.text).to.equal(200);
    expect(s.headers["paddock-already"], "a suspend that did something").to.equal(undefined);
    expect(await status()).to.equal("Suspended");
    const again = await d.post(`/vm/${h}/suspend`);
    expect([again.status, again.text, again.headers["paddock-already"]], "a second suspend is a no-op that says so").to.deep.equal([200, "OK", "suspended"]);
    expect(((await d.get("/nodes")).json as { hostname: string; status: string }[]).find((n) => n.hostname === h)?.status).to.equal("Suspended");
    expect(await sandboxes(), "the sandbox is gone: its memory went back").to.deep.equal([]);
    const image = await fs.stat(path.join(imageDir(), "checkpoint.img"));
    expect(image.size).to.be.greaterThan(0);
    expect([(await fs.stat(imageDir())).uid, (await fs.stat(imageDir())).mode & 0o777]).to.deep.equal([0, 0o700]);
    const exec = await sh("true");
    expect({ status: exec.status, code: exec.code }).to.deep.equal({ status: 409, code: "ERR_VM_NOT_RUNNING" });
    expect((await d.post(`/vm/${h}/restore?wait=userdata`)).status, "a restored VM runs no userdata: wait=userdata is refused").to.equal(400);

    // A daemon restart keeps it suspended: adoption neither treats it as dead nor removes its image.
    await d.stop();
    await d.start(120_000);
    expect(await status()).to.equal("Suspended");
    expect(existsSync(path.join(imageDir(), "checkpoint.img"))).to.equal(true);

    const events = await SseClient.open({ socketPath: d.socketPath });
    const t1 = performance.now();
    const r = await d.post(`/vm/${h}/restore?wait=agent&timeout=120s`);
    const restoreMs = performance.now() - t1;
    expect(r.status, r.text).to.equal(200);
    try {
      const restored = await events.waitFor((e) => e.event === "restored", 30_000);
      expect(restored.json).to.include({ hostname: h, reason: "api" });
    } finally {
      events.close();
    }
    expect(await status()).to.equal("Running");
    // /tmp is in the sentry's memory: a fresh boot would have no /tmp/c at all.
    const first = await counter();
    expect(first).to.be.at.least(20);
    await until("the counter keeps counting", async () => ((await counter()) > first ? true : undefined), 30_000);
    expect(existsSync(imageDir()), "the image is removed once the VM runs").to.equal(false);
    // Its network was built again (netstack had taken the old netns's addresses): same address.
    expect((await sh("hostname -I")).stdout.trim()).to.equal(ip.split("/")[0]);
    console.log(`      image ${image.size} bytes; suspend ${suspendMs.toFixed(0)} ms; restore?wait=agent ${restoreMs.toFixed(0)} ms`);
  });

  it("deleting a suspended VM removes its image and everything else", async () => {
    const events = await SseClient.open({ socketPath: d.socketPath });
    try {
      expect((await d.post(`/vm/${h}/suspend`)).status).to.equal(200);
      const suspended = await events.waitFor((e) => e.event === "suspended", 30_000);
      expect(suspended.json).to.include({ hostname: h, reason: "api" });
    } finally {
      events.close();
    }
    expect(existsSync(imageDir())).to.equal(true);
    const del = await d.del(`/hostgroup/sus/nodes/${h}`);
    expect(del.status, del.text).to.equal(200);
    expect(existsSync(imageDir())).to.equal(false);
    expect(await fs.readdir(path.join(d.stateDir, "checkpoints"))).to.deep.equal([]);
    expect(await sandboxes()).to.deep.equal([]);
    expect((await d.get(`/vm/${h}`)).status).to.equal(404);
  });
});
