/**
 * The supervisor's scan for a tenant's unrecorded daemons (supervisor/proc-info.ts
 * `findDaemonPids`, run by every tenant delete and by the reconcile of a tenant) against a
 * process with a huge argv. Every process on the host is scanned, a VM's too (runc runs the
 * guest's processes as host processes), and guest root chooses its processes' argv: up to a
 * quarter of the stack limit (execve(2)), as many tiny strings as fit. The scan reads each
 * cmdline synchronously on the supervisor's event loop (gateway included), 256 processes
 * between two turns: reading and splitting such a cmdline whole held the loop ~10 ms per
 * process (50 such processes: 0.5-0.9 s in one block). The scan now reads at most
 * `CMDLINE_MAX_BYTES` and splits only a cmdline holding `\0up\0<config>`; longer is no daemon.
 *
 * Positive control: the same daemon-shaped argv, short, is found. No VM, no daemon: the
 * processes are the host's own `node` running an idle script as `<entry>` (a daemon's argv is
 * `<node> [flags] <entry> up <config>`, proc-info.ts `isDaemonCmdline`), standing in for a guest's.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { CMDLINE_MAX_BYTES, findDaemonPids } from "../../supervisor/proc-info.js";

/**
 * Start `node <argv…>` (argv[0] an idle script) in its own process group, as `uid` when given;
 * resolves once its cmdline shows `marker`.
 */
async function startWithArgv(argv: string[], marker: string, uid?: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, argv, { stdio: "ignore", detached: true, ...(uid !== undefined ? { uid, gid: uid } : {}) });
  const pid = child.pid as number;
  for (let i = 0; i < 250; i++) {
    if (await fs.readFile(`/proc/${pid}/cmdline`, "utf8").then((c) => c.includes(marker), () => false)) return child;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} never showed its argv`);
}

describe("security: the daemon scan against a process with a huge argv (supervisor/proc-info.ts)", function () {
  this.timeout(30_000);
  let dir = "";
  const children: ChildProcess[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-h6-cmdline-"));
  });

  after(async () => {
    // The whole group (the node process).
    for (const c of children) if (c.pid !== undefined) try { process.kill(-c.pid, "SIGKILL"); } catch {}
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("finds a daemon-shaped argv (control) and does not read on or split one padded to megabytes", async () => {
    const entry = path.join(dir, "launch.js");
    const config = path.join(dir, "tenant.yaml");
    await fs.writeFile(entry, "setInterval(() => undefined, 60_000);\n");
    const short = await startWithArgv([entry, "up", config], config);
    children.push(short);
    // ~1 MB of cmdline in 100,000 strings, the same daemon shape at its head.
    const padding = Array<string>(100_000).fill("0");
    const huge = await startWithArgv([entry, "up", config, ...padding], config);
    children.push(huge);
    expect((await fs.readFile(`/proc/${huge.pid}/cmdline`)).length).to.be.greaterThan(CMDLINE_MAX_BYTES);
    expect(await findDaemonPids(entry, config)).to.deep.equal([short.pid]);
  });

  it("does not take a process of the daemon's exact shape for one when it runs as another uid (a runc VM's, forging another tenant's daemon)", async function () {
    // Starting a process as another uid needs root (the suite runs as root; skip otherwise).
    if (process.getuid?.() !== 0) this.skip();
    // Guest root of a runc VM can run a script at the daemon's entry path (in its own rootfs)
    // with `up <another tenant's config>`: argv `/bin/sh <entry> up <config>`, the daemon's
    // shape, visible in the host's /proc, as the tenant's mapped uid (2000000000 and up, seen
    // with a real VM). Taken for a stray daemon, it was SIGKILLed by that tenant's delete, which
    // then waited 10 s for its exit: in a paused VM (cgroup freezer) it does not exit, so N
    // such processes held another tenant's delete N × 10 s. Its stand-in: the same node
    // process as uid 2000000000. Control: the same argv as our uid is found.
    await fs.chmod(dir, 0o755);
    const entry = path.join(dir, "launch.js");
    const config = path.join(dir, "victim.yaml");
    await fs.writeFile(entry, "setInterval(() => undefined, 60_000);\n", { mode: 0o644 });
    const forged = await startWithArgv([entry, "up", config], config, 2_000_000_000);
    children.push(forged);
    const ours = await startWithArgv([entry, "up", config], config);
    children.push(ours);
    expect(await findDaemonPids(entry, config)).to.deep.equal([ours.pid]);
  });
});
