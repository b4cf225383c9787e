/**
 * supervisor/daemon-process.ts adoptDaemon: a daemon a previous supervisor started is adopted
 * only when it is provably the same process, and its exit is seen by polling /proc. Real
 * processes: a node child whose command line looks like a daemon's (`<node> <entry> up <config>`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { adoptDaemon, type DaemonSpec } from "../../supervisor/daemon-process.js";
import { readProcStat, readProcStatSync } from "../../supervisor/proc-info.js";

describe("adoptDaemon", function () {
  this.timeout(20_000);
  let dir: string;
  let spec: DaemonSpec;
  const children: ChildProcess[] = [];

  /** A long-running node process with a daemon's command line; resolves once it runs. */
  async function fakeDaemon(): Promise<ChildProcess> {
    const child = spawn(process.execPath, [spec.entry, "up", spec.configPath], { stdio: "ignore" });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", () => resolve());
      child.once("error", reject);
    });
    return child;
  }

  beforeEach(async function () {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-adopt-"));
    const entry = path.join(dir, "launch.js");
    await fs.writeFile(entry, "setInterval(() => {}, 60_000);\n");
    spec = { tenantId: "t1", entry, configPath: path.join(dir, "config.yaml"), socketPath: path.join(dir, "api.sock"), logFile: path.join(dir, "daemon.log"), env: {} };
  });
  afterEach(async function () {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("reads the same start time synchronously and asynchronously", async function () {
    const child = await fakeDaemon();
    const pid = child.pid as number;
    const a = await readProcStat(pid);
    expect(a?.startTicks).to.be.a("number");
    expect(readProcStatSync(pid)).to.deep.equal(a);
    expect(readProcStatSync(0x3fffffff)).to.equal(undefined);
  });

  it("adopts a live daemon with its start time and sees it exit", async function () {
    const child = await fakeDaemon();
    const pid = child.pid as number;
    const ticks = (await readProcStat(pid))?.startTicks;
    const handle = await adoptDaemon(spec, pid, ticks, 20);
    expect(handle?.pid).to.equal(pid);
    let done = false;
    const exited = handle?.exited.then((e) => { done = true; return e; });
    await new Promise((r) => setTimeout(r, 100));
    expect(done, "a live daemon is not reported gone").to.equal(false);
    child.kill("SIGKILL");
    expect(await exited).to.deep.equal({ code: undefined, signal: undefined, adopted: true });
  });

  it("polls several adopted daemons together: each exit resolves its own handle only, and an unwatched one is not reported", async () => {
    const kids = [await fakeDaemon(), await fakeDaemon(), await fakeDaemon()];
    const handles = await Promise.all(kids.map(async (k) => adoptDaemon(spec, k.pid as number, (await readProcStat(k.pid as number))?.startTicks, 20)));
    const done = handles.map(() => false);
    const exits = handles.map((h, i) => h?.exited.then((e) => { done[i] = true; return e; }));
    handles[2]?.unwatch();
    kids[0]?.kill("SIGKILL");
    expect(await exits[0]).to.include({ adopted: true });
    await new Promise((r) => setTimeout(r, 100));
    expect(done, "only the killed daemon is reported gone").to.deep.equal([true, false, false]);
    kids[2]?.kill("SIGKILL");
    kids[1]?.kill("SIGKILL");
    expect(await exits[1]).to.include({ adopted: true });
    await new Promise((r) => setTimeout(r, 100));
    expect(done[2], "an unwatched daemon's exit is not reported").to.equal(false);
  });

  it("refuses a pid whose start time differs (a reused pid) or whose command line is another program's", async function () {
    const child = await fakeDaemon();
    const pid = child.pid as number;
    const ticks = (await readProcStat(pid))?.startTicks as number;
    expect(await adoptDaemon(spec, pid, ticks + 1)).to.equal(undefined);
    expect(await adoptDaemon({ ...spec, configPath: path.join(dir, "other.yaml") }, pid, ticks)).to.equal(undefined);
  });
});
