/**
 * supervisor/proc-info.ts findDaemonPids against the real /proc: it finds a process whose argv is
 * the daemon contract (`<node> <entry> up <config>`) and nothing for another config.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { findDaemonPids } from "../../supervisor/proc-info.js";

describe("findDaemonPids (/proc scan)", function () {
  this.timeout(20_000);
  let dir = "";
  let child: ChildProcess | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-procinfo-"));
  });

  after(async () => {
    if (child?.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL");
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("finds the process running <entry> up <config> and only for that config", async () => {
    const entry = path.join(dir, "launch.js");
    const config = path.join(dir, "t1.yaml");
    await fs.writeFile(entry, "setInterval(() => undefined, 1000);\n");
    child = spawn(process.execPath, [entry, "up", config], { stdio: "ignore" });
    const pid = child.pid as number;
    // The argv is in /proc as soon as the exec happened.
    for (let i = 0; i < 100 && !(await fs.readFile(`/proc/${pid}/cmdline`, "utf8").then((c) => c.includes(config), () => false)); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await findDaemonPids(entry, config)).to.deep.equal([pid]);
    // The other entry point of the same build counts too (proc-info.ts daemonEntryVariants).
    expect(await findDaemonPids(path.join(dir, "main.js"), config)).to.deep.equal([pid]);
    expect(await findDaemonPids(entry, path.join(dir, "t2.yaml"))).to.deep.equal([]);
  });
});
