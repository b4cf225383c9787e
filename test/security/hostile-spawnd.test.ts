/**
 * The daemon's command helper (tenant-daemon/vm/spawn-server.ts over the REAL `paddock-spawnd`
 * built by `npm run build`) against input it must not trust and timings it must survive:
 *
 * - a NUL byte in an argument: the request separates strings with NULs, so `x\0NAME=value`
 *   became two strings and the second spilled into the command's environment (node's `spawn`,
 *   which the create path used before, refuses such an argument);
 * - a command started right after the helper was told to close (the idle close): in the
 *   helper's first version it went to the closing helper and failed with "paddock-spawnd
 *   exited (0) with commands in flight";
 * - a large answer: the first version joined the answer's chunks at every pipe read
 *   (quadratic: ~25 s of the daemon's CPU, its event loop blocked, for a 32 MB answer).
 *
 * Each next to a control showing the probe sees what it looks for. No VM, no daemon.
 */
import { expect } from "chai";
import { existsSync } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { PROJECT_ROOT } from "../../scripts/lib/daemon-harness.js";
import { SpawnServer } from "../../tenant-daemon/vm/spawn-server.js";
import { rejection } from "../helpers/rejection.js";

const BINARY = path.join(PROJECT_ROOT, "dist/bin/paddock-spawnd");

describe("security: hostile input and timings against paddock-spawnd (real helper)", function () {
  this.timeout(60_000);
  let s: SpawnServer;

  before(function () {
    expect(existsSync(BINARY), `${BINARY} (npm run build)`).to.equal(true);
  });
  beforeEach(() => {
    s = new SpawnServer({ binary: BINARY, idleMs: 60_000 });
  });
  afterEach(() => s.close());

  it("an argument with a NUL byte is refused before anything runs; it never reaches the command's environment", async () => {
    const script = 'echo "arg=$0 env=${INJECTED:-unset}"';
    // Control: the probe sees a variable that is in the environment, and an argument.
    expect((await s.run("/bin/sh", ["-c", script, "x"], { env: { INJECTED: "set" } })).stdout).to.equal("arg=x env=set\n");
    expect((await s.run("/bin/sh", ["-c", script, "x"], { env: { A: "1" } })).stdout).to.equal("arg=x env=unset\n");
    // The attack: before the fix this printed `arg=x env=pwned`.
    const err = await rejection<PaddockError>(s.run("/bin/sh", ["-c", script, "x\0INJECTED=pwned"], { env: { A: "1" }, errorCode: "ERR_STORAGE_FAILED" }));
    expect(err).to.be.instanceOf(PaddockError);
    expect(err.code).to.equal("ERR_STORAGE_FAILED");
    expect(err.message).to.include("argument 3 holds a NUL byte");
    for (const [file, args, cwd] of [["/bin/echo\0x", [], undefined], ["/bin/echo", [], "/tmp\0/x"]] as const) {
      expect((await rejection<PaddockError>(s.run(file, args, cwd === undefined ? {} : { cwd }))).message).to.include("holds a NUL byte");
    }
    expect((await rejection<PaddockError>(s.run("/bin/true", [], { env: { X: "a\0B=c" } }))).message).to.include("an environment entry holds a NUL byte");
  });

  it("a command right after close() (the idle close) runs on a new helper; commands in flight on the closing one are still answered", async () => {
    expect((await s.run("echo", ["one"])).stdout).to.equal("one\n");
    const closingPid = Number((await s.run("sh", ["-c", "echo $PPID"])).stdout);
    const inFlight = s.run("sh", ["-c", "sleep 0.5; echo late"]);
    s.close();
    // The helper's first version: ERR_EXEC_FAILED "paddock-spawnd exited (0) with commands in flight".
    const next = await s.run("sh", ["-c", "echo $PPID"]);
    expect(Number(next.stdout), "a new helper (control: it is not the closing one)").to.be.above(0).and.not.equal(closingPid);
    expect((await inFlight).stdout).to.equal("late\n");
  });

  it("a 32 MB answer is joined once, not at every pipe read", async () => {
    const concat = Buffer.concat;
    let copied = 0;
    Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
      const b = concat(list, total);
      copied += b.length;
      return b;
    }) as typeof Buffer.concat;
    let r;
    try {
      r = await s.run("sh", ["-c", "head -c 16000000 /dev/zero; head -c 16000000 /dev/zero >&2"]);
    } finally {
      Buffer.concat = concat;
    }
    // Control: the whole answer came (so it did come in many reads: a pipe gives 64 KiB at most).
    expect([r.stdout.length, r.stderr.length]).to.deep.equal([16_000_000, 16_000_000]);
    // The request itself is one concat of a few bytes; the answer's frame one of ~32 MB. The
    // helper's first version: ~8 GB, the sum over ~500 reads of everything read so far.
    expect(copied).to.be.below(2 * 32_000_100);
  });
});
