/**
 * SpawnServer (tenant-daemon/vm/spawn-server.ts) against the real `paddock-spawnd` helper built
 * by `npm run build`: the results and errors of shared/exec.ts `run` (exit codes, stdout,
 * stderr, input, cwd, env, a missing program, a timeout that kills), many commands at once,
 * the helper ended when idle, and a helper that dies failing the commands in flight.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { pidAlive } from "../../shared/proc.js";
import { PROJECT_ROOT } from "../../scripts/lib/daemon-harness.js";
import { SpawnServer } from "../../tenant-daemon/vm/spawn-server.js";
import { rejection } from "../helpers/rejection.js";

const BINARY = path.join(PROJECT_ROOT, "dist/bin/paddock-spawnd");

describe("SpawnServer (paddock-spawnd)", function () {
  this.timeout(30_000);
  let s: SpawnServer;

  before(function () {
    expect(existsSync(BINARY), `${BINARY} (npm run build)`).to.equal(true);
  });
  beforeEach(() => {
    s = new SpawnServer({ binary: BINARY, idleMs: 200 });
  });
  afterEach(() => s.close());

  it("every concurrent command gets its whole stdin, while others that exit without reading theirs come and go", async () => {
    // A command that exits without reading its stdin makes that pipe hang up in the helper's
    // poll; a job started in the same round must not take that event as its own.
    const runs: Promise<boolean>[] = [];
    for (let i = 0; i < 60; i++) {
      const input = `line ${i}\n`.repeat(50);
      runs.push(s.run("true", [], { input }).then(() => true));
      runs.push(s.run("cat", [], { input }).then((r) => r.stdout === input));
    }
    expect((await Promise.all(runs)).every(Boolean), "every cat echoed its whole input").to.equal(true);
  });

  it("gives exit code, stdout and stderr as run() does, input on stdin, cwd and extra env", async () => {
    expect(await s.run("sh", ["-c", "echo out; echo err >&2; exit 3"], { allowFailure: true })).to.deep.equal({ stdout: "out\n", stderr: "err\n", exitCode: 3 });
    expect((await s.run("cat", [], { input: "hello\n" })).stdout).to.equal("hello\n");
    expect((await s.run("cat", [])).stdout, "no input: /dev/null").to.equal("");
    expect((await s.run("pwd", [], { cwd: "/tmp" })).stdout).to.equal("/tmp\n");
    expect((await s.run("sh", ["-c", 'echo "$PDK_X:$PATH"'], { env: { PDK_X: "y" } })).stdout).to.equal(`y:${process.env.PATH}\n`);
    const big = await s.run("head", ["-c", "3000000", "/dev/zero"]);
    expect(big.stdout).to.have.length(3_000_000);
    expect((await s.run("wc", ["-c"], { input: Buffer.alloc(2_000_000) })).stdout.trim()).to.equal("2000000");
  });

  it("throws the errors of run(): a failed command with its code, a missing program, a timeout", async () => {
    const failed = await rejection<PaddockError>(s.run("sh", ["-c", "echo broken >&2; exit 2"], { errorCode: "ERR_STORAGE_FAILED" }));
    expect(failed.code).to.equal("ERR_STORAGE_FAILED");
    expect(failed.message).to.include("failed (exit 2): broken");
    expect(failed.details).to.deep.include({ exitCode: 2, stderr: "broken" });
    const missing = await rejection<PaddockError>(s.run("pdk-no-such-program", []));
    expect(missing.code).to.equal("ERR_EXEC_FAILED");
    expect(missing.message).to.include("ENOENT");
    const t0 = Date.now();
    const slow = await rejection<PaddockError>(s.run("sh", ["-c", "echo $$; exec sleep 30"], { timeoutMs: 300 }));
    expect(slow.code).to.equal("ERR_EXEC_TIMEOUT");
    expect(Date.now() - t0).to.be.below(10_000);
  });

  it("kills a command at its timeout", async () => {
    const marker = `/tmp/pdk-spawnd-${process.pid}`;
    await rejection<PaddockError>(s.run("sh", ["-c", `echo $$ > ${marker}; exec sleep 30`], { timeoutMs: 300 }));
    const pid = Number((await s.run("cat", [marker])).stdout);
    await s.run("rm", ["-f", marker]);
    expect(pid).to.be.above(0);
    expect(pidAlive(pid)).to.equal(false);
  });

  it("runs many commands at once, each answered with its own output", async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => s.run("sh", ["-c", `echo ${i}; exit ${i % 3}`], { allowFailure: true })));
    results.forEach((r, i) => expect(r).to.deep.equal({ stdout: `${i}\n`, stderr: "", exitCode: i % 3 }));
  });

  it("ends the helper when idle and starts it again on the next command", async () => {
    await s.run("true", []);
    expect(s.running).to.equal(true);
    const deadline = Date.now() + 5000;
    while (s.running && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(s.running).to.equal(false);
    expect((await s.run("echo", ["again"])).stdout).to.equal("again\n");
    // A command right after a close goes to a new helper, never to the closing one.
    s.close();
    expect((await s.run("echo", ["fresh"])).stdout).to.equal("fresh\n");
  });

  it("a command inherits no fd past stdio that the helper inherited (control: the helper holds it)", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-spawnd-fd-"));
    // The helper's parent leaves fd 7 open without close-on-exec, as a parent's parent may.
    await fs.writeFile(path.join(dir, "wrap"), `#!/bin/sh\nexec 7</dev/null\nexec ${BINARY}\n`, { mode: 0o755 });
    const wrapped = new SpawnServer({ binary: path.join(dir, "wrap"), idleMs: 200 });
    try {
      const out = (await wrapped.run("sh", ["-c", "echo $PPID; if [ -e /proc/$$/fd/7 ]; then echo inherited; else echo none; fi"])).stdout.split("\n");
      expect(await fs.readlink(`/proc/${out[0]}/fd/7`), "the helper's own fd 7").to.equal("/dev/null");
      expect(out[1], "fd 7 in the command").to.equal("none");
    } finally {
      wrapped.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("fails the commands in flight when the helper dies, and recovers", async () => {
    const marker = `/tmp/pdk-spawnd-orphan-${process.pid}`;
    const inFlight = s.run("sh", ["-c", `echo $$ > ${marker}; exec sleep 30`]);
    const helper = Number((await s.run("sh", ["-c", "echo $PPID"])).stdout);
    expect(helper).to.be.above(0);
    while (!existsSync(marker)) await new Promise((r) => setTimeout(r, 10));
    process.kill(helper, "SIGKILL");
    const err = await rejection<PaddockError>(inFlight);
    expect(err.code).to.equal("ERR_EXEC_FAILED");
    // The command outlived its helper (as a command outlives a killed daemon): end it.
    const orphan = Number((await s.run("cat", [marker])).stdout);
    await s.run("rm", ["-f", marker]);
    if (orphan > 0 && pidAlive(orphan)) process.kill(orphan, "SIGKILL");
    expect((await s.run("echo", ["back"])).stdout).to.equal("back\n");
  });
});
