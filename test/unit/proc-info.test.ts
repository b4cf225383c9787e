/**
 * supervisor/proc-info.ts findDaemonPids against the real /proc: it finds a process whose argv is
 * the daemon contract (`<node> <entry> up <config>`) and nothing for another config. readCmdline
 * (the adoption of a recorded pid) reads a daemon's argv whole and a megabyte one not at all.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { CMDLINE_MAX_BYTES, findDaemonPids, isDaemonCmdline, readCmdline } from "../../supervisor/proc-info.js";

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

  it("readCmdline: a daemon's argv is read whole (adoption holds); a cmdline past CMDLINE_MAX_BYTES is none", async () => {
    const entry = path.join(dir, "launch.js");
    const config = path.join(dir, "t3.yaml");
    await fs.writeFile(entry, "setInterval(() => undefined, 1000);\n");
    const daemon = spawn(process.execPath, ["--max-old-space-size=256", entry, "up", config], { stdio: "ignore" });
    // ~1.5 MB of argv in 15 strings of 100 KB (each under MAX_ARG_STRLEN, 128 KiB), the daemon shape at its head.
    const huge = spawn(process.execPath, [entry, "up", config, ...Array<string>(15).fill("x".repeat(100_000))], { stdio: "ignore" });
    try {
      for (const c of [daemon, huge]) {
        for (let i = 0; i < 100 && !(await fs.readFile(`/proc/${c.pid as number}/cmdline`, "utf8").then((t) => t.includes(config), () => false)); i++) await new Promise((r) => setTimeout(r, 20));
      }
      const argv = await readCmdline(daemon.pid as number);
      expect(argv).to.deep.equal([process.execPath, "--max-old-space-size=256", entry, "up", config]);
      expect(isDaemonCmdline(argv, entry, config)).to.equal(true);
      expect((await fs.readFile(`/proc/${huge.pid as number}/cmdline`)).length).to.be.greaterThan(CMDLINE_MAX_BYTES);
      expect(await readCmdline(huge.pid as number)).to.equal(undefined);
      expect(await readCmdline(2 ** 22 + 1), "no such pid").to.equal(undefined);
    } finally {
      for (const c of [daemon, huge]) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
  });
});
