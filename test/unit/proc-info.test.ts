/**
 * supervisor/proc-info.ts findDaemonPids against the real /proc: it finds a process whose argv is
 * the daemon contract (`<node> <entry> up <config>`) and nothing for another config. readCmdline
 * (the adoption of a recorded pid) reads a daemon's argv whole and a megabyte one not at all.
 * The daemon's log reader (`paddock-nsutil logcap … <node> <entry> up <config>`) is no daemon.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { CMDLINE_MAX_BYTES, findDaemonPids, isDaemonCmdline, readCmdline } from "../../supervisor/proc-info.js";
import { logcapHelper } from "../../supervisor/daemon-process.js";
import { DAEMON_NODE_FLAGS } from "../../shared/daemon-node-flags.js";

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

  it("finds the daemon behind a logcap log reader, not the reader (whose argv holds the daemon's)", async function () {
    const helper = logcapHelper();
    if (helper === undefined) this.skip();
    const entry = path.join(dir, "launch.js");
    const config = path.join(dir, "t4.yaml");
    const log = path.join(dir, "daemon.log");
    await fs.writeFile(entry, "setInterval(() => undefined, 1000);\n");
    // As supervisor/daemon-process.ts spawnDaemon runs it: the helper forks the reader (its own
    // session) and execs node in the spawned pid.
    const daemon = spawn(helper as string, ["logcap", log, "65536", "1", process.execPath, ...DAEMON_NODE_FLAGS, entry, "up", config], { stdio: "ignore" });
    const pid = daemon.pid as number;
    let reader: number | undefined;
    try {
      for (let i = 0; i < 100 && !(await fs.readFile(`/proc/${pid}/cmdline`, "utf8").then((c) => c.startsWith(`${process.execPath}\0`), () => false)); i++) await new Promise((r) => setTimeout(r, 20));
      // The reader: the other process whose argv is `<helper> logcap <log> …`.
      for (const n of await fs.readdir("/proc")) {
        if (!/^\d+$/.test(n) || Number(n) === pid) continue;
        const argv = await readCmdline(Number(n));
        if (argv?.[0] === helper && argv[1] === "logcap" && argv[2] === log) reader = Number(n);
      }
      expect(reader, "the log reader runs").to.be.a("number");
      expect(isDaemonCmdline(await readCmdline(reader as number), entry, config), "the reader's argv").to.equal(false);
      expect(await findDaemonPids(entry, config)).to.deep.equal([pid]);
    } finally {
      if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill("SIGKILL");
      // The reader exits at EOF, once the daemon (the pipe's last writer) is gone.
      for (let i = 0; i < 100 && reader !== undefined && (await fs.access(`/proc/${reader}`).then(() => true, () => false)); i++) await new Promise((r) => setTimeout(r, 20));
    }
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
