/**
 * A filesystem watch whose inotify helper cannot get an inotify instance.
 *
 * A VM's user namespace is created by host root (paddock-nsutil), so the kernel charges every
 * inotify instance made in any VM to host root as well (inotify(7), `max_user_instances`, is
 * counted per user at every level of the user-namespace tree): from a real runc VM of tenant A,
 * an unprivileged guest user holding 126 instances left host root none (`inotify_init1`:
 * EMFILE), and tenant B's `GET /vm/{h}/fs/watch` started then never answered (past 240 s, and
 * after A let go): the agent's helper exited during the set-up, `close()` ends only an answer
 * already started, and the route returned without one. Now such a watch is answered 503
 * `ERR_WATCH_FAILED` (tenant-daemon/agent/fs-watch.ts). The shared budget itself is not fixed
 * (docs/security.md).
 *
 * The real agent on the host (test/integration/agent-fixture.ts) runs the real helper through
 * a wrapper as a spare uid whose instance budget the test spends first with a holder process of
 * that uid (so no other user's budget is touched). Control: the same watch without the holder
 * is set up (200) and ends at its timeout.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { call, startTestAgent, type TestAgent } from "../integration/agent-fixture.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";

/** A uid no tenant range and no account uses (ranges are claimed far below it). */
const SPARE_UID = 4_293_000_017;
const HELPER = path.join(PROJECT_ROOT, "dist/toolbox/paddock-inotify");
const HOLD = `$| = 1; my @f; while (1) { my $fd = syscall(294, 0); last if $fd < 0; push @f, $fd } print scalar(@f), "\\n"; sleep 600;`;

describe("security: a watch whose inotify helper cannot start is answered, not left hanging", function () {
  this.timeout(20_000);
  let agent: TestAgent | undefined;
  let holder: ChildProcess | undefined;
  let wrapperDir: string | undefined;
  const saved = process.env.PADDOCK_AGENT_INOTIFY;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    // The helper, run as the spare uid (its inotify budget is the one the holder spends).
    wrapperDir = mkdtempSync(path.join(os.tmpdir(), "pdk-h15-inotify-"));
    const wrapper = path.join(wrapperDir, "paddock-inotify");
    writeFileSync(wrapper, `#!/bin/sh\nexec setpriv --reuid=${SPARE_UID} --regid=${SPARE_UID} --clear-groups ${HELPER}\n`);
    chmodSync(wrapperDir, 0o755);
    chmodSync(wrapper, 0o755);
    process.env.PADDOCK_AGENT_INOTIFY = wrapper;
    agent = await startTestAgent();
  });
  afterEach(() => {
    holder?.kill("SIGKILL");
    holder = undefined;
  });
  after(async () => {
    if (saved === undefined) delete process.env.PADDOCK_AGENT_INOTIFY;
    else process.env.PADDOCK_AGENT_INOTIFY = saved;
    await agent?.stop();
    if (wrapperDir !== undefined) rmSync(wrapperDir, { recursive: true, force: true });
  });

  const watch = (a: TestAgent): ReturnType<typeof call> =>
    call(a.socket, "GET", `/v1/fs/watch?paths=${encodeURIComponent(a.dir)}&timeout=300ms`);

  it("control: with instances left, the watch is set up and ends at its timeout", async () => {
    const r = await watch(agent as TestAgent);
    expect(r.status, r.text).to.equal(200);
    expect(r.headers["content-type"]).to.match(/^text\/event-stream/);
  });

  it("with none left for the helper's user, the watch is answered 503 ERR_WATCH_FAILED", async () => {
    const h = (holder = spawn("setpriv", [`--reuid=${SPARE_UID}`, `--regid=${SPARE_UID}`, "--clear-groups", "perl", "-e", HOLD], { stdio: ["ignore", "pipe", "inherit"] }));
    const held = await new Promise<number>((resolve, reject) => {
      h.stdout?.once("data", (d: Buffer) => resolve(Number(d.toString().trim())));
      h.once("exit", (code) => reject(new Error(`holder exited ${code}`)));
    });
    expect(held, "instances the holder took").to.be.greaterThan(0);
    // Was: no answer at all (the call never settled; mocha's timeout ended it).
    const r = await watch(agent as TestAgent);
    expect(r.status, r.text).to.equal(503);
    expect((r.json() as { code?: string }).code).to.equal("ERR_WATCH_FAILED");
  });
});
