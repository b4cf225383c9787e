/**
 * A hostile tenant against the agent's exec drain, from root inside a REAL VM (runc, debian-12
 * image): after a command exits, exec-spec.ts onProcessDone keeps reading its pipes while a
 * slow client applies backpressure. Can a grandchild that inherited the pipes and keeps
 * writing into them, slowly and without any backpressure, hold the exec (its HTTP request,
 * the daemon's relay and the agent's buffers) open for as long as it likes? One daemon, one VM.
 */
import { expect } from "chai";
import { TestDaemon, leftoversOf, randomIsolatedRange } from "../helpers/daemon.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { call } from "../integration/agent-fixture.js";

/** How long an exec whose command exited at once may take to answer before it counts as held. */
const HELD_MS = 30_000;

describeWhenReady(missingPrerequisites(), "security: a hostile guest's grandchild against the exec drain (privileged, real daemon and VM)", function () {
  this.timeout(120_000);
  let d: TestDaemon | undefined;
  let h = "";
  const daemon = (): TestDaemon => d as TestDaemon;

  /** Buffered `sh -c script` in the VM; rejects when no answer came within HELD_MS. */
  const shOrHeld = async (script: string): Promise<{ stdout: string; exit_code: number }> => {
    const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", script], ["uid", "0"], ["buffered", "true"]]);
    let timer: NodeJS.Timeout | undefined;
    const held = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`exec still open ${HELD_MS} ms after its command exited`)), HELD_MS);
    });
    try {
      const r = await Promise.race([call(daemon().socketPath, "POST", `/vm/${h}/exec?${q.toString()}`), held]);
      expect(r.status, r.text).to.equal(200);
      const j = r.json() as { stdout?: string; exit_code?: number };
      return { stdout: String(j.stdout ?? ""), exit_code: Number(j.exit_code) };
    } finally {
      clearTimeout(timer);
    }
  };

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [{ name: "drain", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    const r = await call(d.socketPath, "POST", "/hostgroup/drain/nodes?wait=agent&timeout=120s", { body: "{}" });
    expect(r.status, r.text).to.equal(201);
    h = (r.json() as { hostname: string }).hostname;
  });

  after(async function () {
    const dd = d;
    if (dd === undefined) return;
    await dd.destroy();
    expect(await leftoversOf(dd.tenantId, dd.dir), "left behind").to.deep.equal({ containers: [], netns: [], mounts: [], loops: [] });
  });

  it("a grandchild trickling into the exec's stdout after the command exited does not hold the exec open", async () => {
    // The attack: the command backgrounds a loop that keeps the inherited stdout and writes a
    // line every 50 ms, far below what the drain's byte bound (2 MiB) would ever stop, then
    // exits once the loop has written its first line (so the pipe is surely shared, however
    // loaded the host). The loop also stamps a file so its life can be seen from outside the exec.
    const r = await shOrHeld("rm -f /tmp/trickle-alive; (while :; do echo tick; : > /tmp/trickle-alive; sleep 0.05; done) & while [ ! -e /tmp/trickle-alive ]; do sleep 0.01; done; echo started");
    expect(r.exit_code).to.equal(0);
    // Positive control: the grandchild did write into the exec's pipe after the command
    // exited (each tick is its), so the exec was exposed to the hold and still answered.
    // Before the fix (exec-spec.ts onProcessDone restarting its drain on any new byte) this
    // exec stayed open for the whole HELD_MS and the call above failed.
    expect(r.stdout.split("\n")).to.include("started");
    expect(r.stdout.split("\n").filter((l) => l === "tick").length).to.be.greaterThan(0);
    // The pipe it held is gone: the loop's next write fails (SIGPIPE), so it ends on its own.
    const gone = await shOrHeld("for i in $(seq 1 100); do pgrep -f 'trickle-aliv[e]' >/dev/null || { echo gone; exit 0; }; sleep 0.1; done; pkill -f 'trickle-aliv[e]'; echo alive");
    expect(gone.stdout.trim()).to.equal("gone");
  });
});
