/**
 * shared/exec.ts, the one runner of external commands both apps use (node:child_process): the
 * captured output, stdin input, fd passing, allowFailure, the error codes and messages of a
 * failed, unstartable and timed-out command, and commandExists. Real processes (sh, cat).
 */
import { promises as fs, openSync, closeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { commandExists, run } from "../../shared/exec.js";
import { rejection } from "../helpers/rejection.js";

describe("shared/exec run", function () {
  this.timeout(20_000);
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-exec-"));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("captures stdout and stderr whole, final newline kept, and feeds input on stdin", async () => {
    const r = await run("sh", ["-c", "cat; echo err >&2"], { input: "in put\n" });
    expect(r).to.deep.equal({ stdout: "in put\n", stderr: "err\n", exitCode: 0 });
  });

  it("adds env to the process's own and runs in cwd", async () => {
    const r = await run("sh", ["-c", "echo \"$PDK_X $HOME\"; pwd"], { env: { PDK_X: "x" }, cwd: dir });
    expect(r.stdout).to.equal(`x ${process.env.HOME ?? ""}\n${dir}\n`);
  });

  it("hands an fd to the child instead of a pipe (nothing captured)", async () => {
    const file = path.join(dir, "out.log");
    const fd = openSync(file, "w");
    try {
      const r = await run("sh", ["-c", "echo to-file; echo e >&2"], { stdout: fd, stderr: "ignore", stdin: "ignore" });
      expect(r.stdout).to.equal("");
    } finally {
      closeSync(fd);
    }
    expect(await fs.readFile(file, "utf8")).to.equal("to-file\n");
  });

  it("throws the error code with command, exit code and trimmed stderr on a non-zero exit", async () => {
    const err = await rejection(run("sh", ["-c", "echo '  bad thing  ' >&2; exit 3"], { errorCode: "ERR_NETWORK_SETUP_FAILED" }));
    expect(err).to.be.instanceOf(PaddockError);
    const e = err as PaddockError;
    expect(e.code).to.equal("ERR_NETWORK_SETUP_FAILED");
    expect(e.message).to.equal("sh -c echo '  bad thing  ' >&2; exit 3 failed (exit 3): bad thing");
    expect(e.details).to.deep.equal({ command: "sh -c echo '  bad thing  ' >&2; exit 3", exitCode: 3, stderr: "bad thing" });
  });

  it("returns a failure with allowFailure, and -1 for a command that cannot start", async () => {
    expect(await run("sh", ["-c", "exit 4"], { allowFailure: true })).to.deep.equal({ stdout: "", stderr: "", exitCode: 4 });
    expect((await run("/nonexistent/pdk-cmd", [], { allowFailure: true })).exitCode).to.equal(-1);
    const err = (await rejection(run("/nonexistent/pdk-cmd", ["a"]))) as PaddockError;
    expect(err.code).to.equal("ERR_EXEC_FAILED");
    expect(err.message).to.equal("/nonexistent/pdk-cmd a failed (exit -1): spawn /nonexistent/pdk-cmd ENOENT");
  });

  it("kills a command past its timeout and throws ERR_EXEC_TIMEOUT", async () => {
    // Positive control: the same command with a short sleep finishes on its own.
    expect((await run("sh", ["-c", "echo started >&2; exec sleep 0.1"])).exitCode).to.equal(0);
    const err = (await rejection(run("sh", ["-c", "echo started >&2; exec sleep 30"], { timeoutMs: 300 }))) as PaddockError;
    expect(err.code).to.equal("ERR_EXEC_TIMEOUT");
    expect(err.message).to.equal("command timed out after 300 ms: sh -c echo started >&2; exec sleep 30");
    expect(err.details).to.deep.equal({ command: "sh -c echo started >&2; exec sleep 30", stderr: "started" });
  });

  it("commandExists: true for anything that runs, false when it cannot start", async () => {
    expect(await commandExists("sh")).to.equal(true);
    expect(await commandExists("false")).to.equal(true);
    expect(await commandExists("pdk-no-such-command")).to.equal(false);
  });
});
