/**
 * The sandbox boundary of commit cdac1ee, attacked from inside REAL VMs behind REAL tenant
 * daemons (runc, debian-12 image). Two tenants: A (groups `sbox`, default seccomp, and `free`,
 * seccomp `unconfined`) and B (group `sbox`). Four VMs are booted once and shared:
 *
 *   a1  A/sbox   the attacker (agent channel, kernel surfaces, mountinfo, boot secret)
 *   a2  A/sbox   persistent: guest symlinks followed by a reboot
 *   a3  A/free   seccomp unconfined: positive control that the nested-userns probe can succeed
 *   b1  B/sbox   the victim (holds a marker file)
 *
 * Every attack sits next to a positive control showing the probe could see it succeed.
 * Uid range claims go to a temp dir (PADDOCK_UID_CLAIMS_DIR, inherited by the daemons); each
 * daemon asks for its own random slot high in Paddock's slot space (paddock.userns), so its
 * ids can collide neither with the other daemon's nor with daemons of concurrent test runs
 * that allocate the lowest free slots of the host's claims dir. Needs root and the image.
 * The daemons (and all their VMs, disks, links, netns, tables) are destroyed in `after`, and
 * the temp dirs removed, even when a test fails.
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { run } from "../../shared/exec.js";
import { listUidClaims, UID_RANGE_BASE, UID_RANGE_SIZE } from "../../shared/uid-ranges.js";
import { PROJECT_ROOT, TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { call } from "../integration/agent-fixture.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { FrameType, encodeFrame } from "../../shared/slicer/shell-frames.js";

const CAP_SYS_ADMIN_BIT = 21n;

/** A buffered exec result (`POST /vm/{h}/exec?buffered=true`). */
interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
}

/** Buffered exec of `argv` in VM `h` of daemon `d` as guest `uid`; throws on a non-200 answer. */
async function execIn(d: TestDaemon, h: string, argv: string[], uid = 0): Promise<ExecResult> {
  const q = [`cmd=${encodeURIComponent(argv[0] as string)}`, ...argv.slice(1).map((a) => `args=${encodeURIComponent(a)}`), `uid=${uid}`, "buffered=true"].join("&");
  const r = await call(d.socketPath, "POST", `/vm/${h}/exec?${q}`);
  if (r.status !== 200) throw new Error(`exec ${argv.join(" ")} in ${h}: HTTP ${r.status} ${r.text}`);
  const j = r.json() as ExecResult;
  return { stdout: String(j.stdout ?? ""), stderr: String(j.stderr ?? ""), exit_code: Number(j.exit_code) };
}

/** `/bin/sh -c script` in the VM. */
const sh = (d: TestDaemon, h: string, script: string, uid = 0): Promise<ExecResult> => execIn(d, h, ["/bin/sh", "-c", script], uid);

/** Create a VM in `group` and wait for its agent; returns its hostname. */
async function createVm(d: TestDaemon, group: string, body: Record<string, unknown> = {}): Promise<string> {
  const wait = body.userdata !== undefined ? "userdata" : "agent";
  const r = await call(d.socketPath, "POST", `/hostgroup/${group}/nodes?wait=${wait}&timeout=120s`, { body: JSON.stringify(body) });
  if (r.status !== 201) throw new Error(`create in ${group}: HTTP ${r.status} ${r.text}`);
  return (r.json() as { hostname: string }).hostname;
}

/** Userdata of b1: records the fds the userdata script got from the agent. */
const USERDATA_FDS = "#!/bin/sh\nls -la /proc/$$/fd > /root/userdata-fds 2>&1\n";

/**
 * Run `script` in a PTY shell (`/vm/{h}/shell`, uid 0, /bin/sh) and return the output up to
 * the line `__END__` (typed as `echo __EN''D__`, so the echo of the typed line does not match).
 */
async function inShell(socketPath: string, h: string, script: string): Promise<string> {
  const ws = await new Promise<WebSocket>((resolve, reject) => {
    const w = new WebSocket(`ws+unix://${socketPath}:/vm/${h}/shell?uid=0&shell=/bin/sh`);
    w.once("open", () => resolve(w));
    w.once("unexpected-response", (_req: http.ClientRequest, res: http.IncomingMessage) => reject(new Error(`shell upgrade: HTTP ${res.statusCode}`)));
    w.once("error", reject);
  });
  try {
    let out = "";
    const done = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`shell: no __END__ within 20 s:\n${out}`)), 20_000);
      ws.on("message", (data: Buffer) => {
        if (data[0] === 0x01) out += data.subarray(5).toString("utf8");
        const i = out.search(/(^|\n)__END__\r?\n/);
        if (i >= 0) {
          clearTimeout(timer);
          resolve(out.slice(0, i));
        }
      });
    });
    const win = Buffer.alloc(8);
    win.writeUInt32BE(200, 0); // cols: no wrapping of ls lines
    win.writeUInt32BE(50, 4);
    ws.send(encodeFrame(FrameType.WindowSize, win));
    ws.send(encodeFrame(FrameType.Data, Buffer.from(`${script}; echo __EN''D__\n`)));
    return await done;
  } finally {
    ws.terminate();
  }
}

/** `fd->target` of each line of `ls -la /proc/…/fd` output. */
const fdEntries = (lsOutput: string): string[] => [...lsOutput.matchAll(/\s(\d+) -> (\S+)/g)].map((m) => `${m[1]}->${m[2]}`);

/** Third octets of the 169.254.x.0/22 blocks that hold an address on a host interface now. */
async function busyBlocks(): Promise<Set<number>> {
  const text = (await run("ip", ["-o", "-4", "addr", "show"])).stdout;
  return new Set([...text.matchAll(/inet 169\.254\.(\d+)\./g)].map((m) => Number(m[1]) & ~3));
}

/** n distinct random isolated /22 ranges, none holding an address on the host right now. */
async function freeRanges(n: number): Promise<string[]> {
  const busy = await busyBlocks();
  const out = new Set<string>();
  while (out.size < n) {
    const r = randomIsolatedRange();
    if (!busy.has(Number(r.split(".")[2]))) out.add(r);
  }
  return [...out];
}

/**
 * Create and start a daemon whose groups get fresh free ranges; concurrent test runs on the
 * host may take a range meanwhile (ERR_NETWORK_OVERLAP), so that is retried with new ranges.
 */
async function startDaemon(groups: string[], paddock: Record<string, unknown>, made: TestDaemon[]): Promise<TestDaemon> {
  for (let attempt = 1; ; attempt++) {
    const ranges = await freeRanges(groups.length);
    const d = await TestDaemon.create({
      hostGroups: groups.map((name, i) => ({ name, count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: ranges[i] } })),
      paddock,
    });
    made.push(d);
    try {
      await d.start();
      return d;
    } catch (err) {
      if (attempt >= 4 || !/ERR_NETWORK_OVERLAP/.test(String(err))) throw err;
      await d.destroy();
      made.splice(made.indexOf(d), 1);
    }
  }
}

/** Entries (name → content, mode, uid) of a host dir, for before/after comparisons. */
async function snapshotDir(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const st = await fs.lstat(dir);
  out["."] = `mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid} mtime=${st.mtimeMs}`;
  for (const name of (await fs.readdir(dir)).sort()) {
    const p = path.join(dir, name);
    const s = await fs.lstat(p);
    out[name] = `mode=${(s.mode & 0o7777).toString(8)} uid=${s.uid} ${s.isFile() ? await fs.readFile(p, "utf8") : s.isSymbolicLink() ? "-> " + (await fs.readlink(p)) : "dir"}`;
  }
  return out;
}

describeWhenReady(missingPrerequisites(), "security: the VM sandbox boundary under attack from a guest root (privileged, real daemons and VMs)", function () {
  this.timeout(180_000);
  let claimsDir = "";
  let savedClaimsEnv: string | undefined;
  let A: TestDaemon | undefined;
  let B: TestDaemon | undefined;
  /** Every daemon created (started or not), destroyed in `after`. */
  const made: TestDaemon[] = [];
  let a1 = "", a2 = "", a3 = "", b1 = "";
  const slots = new Set<number>();
  while (slots.size < 2) slots.add(1000 + crypto.randomInt(0, 1200));
  const [slotA, slotB] = [...slots].map((k) => UID_RANGE_BASE + k * UID_RANGE_SIZE) as [number, number];
  const hostDir = `/tmp/pdk-sec-host-${crypto.randomBytes(4).toString("hex")}`;
  const sentinel = `sentinel ${crypto.randomBytes(8).toString("hex")}\n`;

  before(async function () {
    claimsDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-uidclaims-"));
    savedClaimsEnv = process.env.PADDOCK_UID_CLAIMS_DIR;
    process.env.PADDOCK_UID_CLAIMS_DIR = claimsDir;
    // One after the other: each picks ranges free on the host, including the other's.
    A = await startDaemon(["sbox", "free"], { seccomp: { free: "unconfined" }, userns: { uid_start: slotA } }, made);
    B = await startDaemon(["sbox"], { userns: { uid_start: slotB } }, made);
    const da = A, db = B;
    [a1, a2, a3, b1] = await Promise.all([createVm(da, "sbox"), createVm(da, "sbox", { persistent: true }), createVm(da, "free"), createVm(db, "sbox", { userdata: USERDATA_FDS })]);
  });

  after(async function () {
    const ds = [...made];
    await Promise.all(ds.map((d) => d.destroy()));
    await fs.rm(hostDir, { recursive: true, force: true });
    const liveClaims = (await listUidClaims(claimsDir).catch(() => [])).filter((c) => c.stale === undefined);
    if (savedClaimsEnv === undefined) delete process.env.PADDOCK_UID_CLAIMS_DIR;
    else process.env.PADDOCK_UID_CLAIMS_DIR = savedClaimsEnv;
    await fs.rm(claimsDir, { recursive: true, force: true });
    const containers = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => ds.some((d) => id.startsWith(`pdk-${d.tenantId}-`)));
    const netns = (await run("ip", ["netns", "list"])).stdout.split("\n").filter((l) => ds.some((d) => l.includes(d.tenantId)));
    const tables = (await run("nft", ["list", "tables"])).stdout.split("\n").filter((l) => ds.some((d) => l.includes(d.tenantId)));
    const mounts: string[] = [], loops: string[] = [];
    for (const d of ds) {
      mounts.push(...(await mountsUnder(d.dir)));
      loops.push(...(await loopDevicesUnder(d.dir)));
    }
    expect({ containers, netns, tables, mounts, loops, liveClaims: liveClaims.length }, "left behind").to.deep.equal({ containers: [], netns: [], tables: [], mounts: [], loops: [], liveClaims: 0 });
  });

  const hostAgentSocket = (d: TestDaemon, h: string) => path.join(d.runDir, "vms", h, "agent.sock");

  describe("1. no cross-tenant takeover through the agent channel", function () {
    const tag = crypto.randomBytes(4).toString("hex");
    const markerB = `marker-${tag}`;
    const markerA = `a-own-${tag}`;

    it("B's agent socket is a host-only socket (0600 root, in a 0700 dir) that A's guest cannot even see", async () => {
      const da = A as TestDaemon, db = B as TestDaemon;
      const bSock = hostAgentSocket(db, b1);
      // Positive control: the host sees B's listener where the test computes it.
      const st = await fs.stat(bSock);
      expect(st.isSocket(), `${bSock} is a socket`).to.equal(true);
      expect({ uid: st.uid, mode: (st.mode & 0o777).toString(8) }).to.deep.equal({ uid: 0, mode: "600" });
      expect(((await fs.stat(path.dirname(bSock))).mode & 0o777).toString(8)).to.equal("700");
      // In A's guest the path (and its tenant's dirs) does not exist.
      const r = await sh(da, a1, `test -e '${bSock}' || test -e '${db.dir}' || test -e '${db.runDir}'; echo $?`);
      expect(r.stdout.trim()).to.equal("1");
    });

    it("A's guest root cannot replace, link, create, remove or (un)mount anything at /run/paddock-agent", async () => {
      const da = A as TestDaemon, db = B as TestDaemon;
      const bSock = hostAgentSocket(db, b1);
      const bDir = path.dirname(bSock);
      const before = await sh(da, a1, "ls -la /run/paddock-agent; awk '$5==\"/run/paddock-agent\"' /proc/self/mountinfo");
      expect(before.stdout).to.match(/boot\.json/);
      // The read-only bind of the host-only boot dir, owned by guest root, nothing else in it.
      expect(before.stdout).to.not.match(/agent\.sock/);
      expect(before.stdout.split("\n").find((l) => / \/run\/paddock-agent /.test(l)) ?? "").to.match(/ ro[, ]/);
      const attacks: Record<string, string> = {
        "symlink agent.sock to B's socket": `ln -sf '${bSock}' /run/paddock-agent/agent.sock`,
        "symlink a new entry to B's agent dir": `ln -s '${bDir}' /run/paddock-agent/vmdir`,
        "replace boot.json by a symlink": `ln -sf '${bSock}' /run/paddock-agent/boot.json`,
        "rename the dir away": "mv /run/paddock-agent /run/paddock-agent.old",
        "remove the dir": "rm -rf /run/paddock-agent",
        "remove boot.json": "rm -f /run/paddock-agent/boot.json",
        "overwrite boot.json": "echo '{}' > /run/paddock-agent/boot.json",
        "create a file": "touch /run/paddock-agent/x",
        "create a dir": "mkdir /run/paddock-agent/d",
        "create a fifo": "mkfifo /run/paddock-agent/p",
        "chmod the dir": "chmod 0777 /run/paddock-agent",
        "umount": "umount /run/paddock-agent",
        "lazy umount": "umount -l /run/paddock-agent",
        "mount a tmpfs over it": "mount -t tmpfs none /run/paddock-agent",
        "bind /tmp over it": "mount --bind /tmp /run/paddock-agent",
        "remount rw": "mount -o remount,rw /run/paddock-agent",
        "remount rw (bind)": "mount -o remount,bind,rw /run/paddock-agent",
      };
      const results: Record<string, string> = {};
      for (const [name, cmd] of Object.entries(attacks)) {
        const r = await sh(da, a1, `(${cmd}) 2>&1; echo "exit=$?"`);
        results[name] = r.stdout.trim().replace(/\n/g, " | ");
      }
      const succeeded = Object.entries(results).filter(([, out]) => /exit=0$/.test(out));
      expect(succeeded, "attacks that succeeded").to.deep.equal([]);
      // Each failed for the boundary's reasons, not for a typo: read-only fs, busy mount point, or no privilege.
      for (const [name, out] of Object.entries(results)) expect(out, name).to.match(/Read-only file system|Device or resource busy|Operation not permitted|Permission denied|must be superuser|not mounted/i);
      const afterLs = await sh(da, a1, "ls -la /run/paddock-agent");
      expect(afterLs.stdout.split("\n").filter((l) => / (\.|\.\.|boot\.json)$/.test(l) === false && l !== "" && !l.startsWith("total"))).to.deep.equal([]);

      // Positive control: the same file operations on a writable guest dir do succeed, so the
      // probe would have reported a success at /run/paddock-agent.
      const ctl = `/tmp/ctl-${crypto.randomBytes(3).toString("hex")}`;
      const control = await sh(da, a1, [
        `mkdir ${ctl} && echo '{}' > ${ctl}/boot.json`,
        `ln -sf '${bSock}' ${ctl}/agent.sock && ln -s '${bDir}' ${ctl}/vmdir && ln -sf '${bSock}' ${ctl}/boot.json`,
        `touch ${ctl}/x && mkdir ${ctl}/d && mkfifo ${ctl}/p && chmod 0777 ${ctl}`,
        `mv ${ctl} ${ctl}.old && rm -rf ${ctl}.old && echo control-ok`,
      ].join(" && "));
      expect(control.stdout.trim(), control.stderr).to.equal("control-ok");
      // Positive control for mount/umount: where mounting is possible (a nested userns in the
      // seccomp-unconfined VM) the same commands report success.
      const m = await sh(da, a3, "unshare -Urm sh -c 'mkdir -p /run/x && mount -t tmpfs none /run/x && mount --bind /tmp /run/x && umount /run/x && umount -l /run/x && echo mount-ok' 2>&1");
      expect(m.stdout.trim()).to.equal("mount-ok");
      console.log(`      attack outcomes: ${JSON.stringify(results)}`);
    });

    it("after the daemon's keep-alive (>6 s), A's exec still reaches A's VM only; B's exec sees B's marker", async () => {
      const da = A as TestDaemon, db = B as TestDaemon;
      expect((await execIn(db, b1, ["touch", `/tmp/${markerB}`])).exit_code).to.equal(0);
      expect((await execIn(da, a1, ["touch", `/tmp/${markerA}`])).exit_code).to.equal(0);
      await new Promise((r) => setTimeout(r, 6_500));
      for (let i = 0; i < 3; i++) {
        const la = await execIn(da, a1, ["ls", "/tmp"]);
        expect(la.stdout.split("\n"), "A's /tmp").to.include(markerA).and.not.include(markerB);
        expect((await execIn(da, a1, ["hostname"])).stdout.trim()).to.equal(a1);
      }
      // Positive control: B's own exec sees the marker, so `ls /tmp` would show it in B's VM.
      const lb = await execIn(db, b1, ["ls", "/tmp"]);
      expect(lb.stdout.split("\n"), "B's /tmp").to.include(markerB).and.not.include(markerA);
      // The host sockets were not touched by the guest.
      for (const [d, h] of [[da, a1], [db, b1]] as const) {
        const st = await fs.lstat(hostAgentSocket(d, h));
        expect(st.isSocket() && st.uid === 0 && (st.mode & 0o777) === 0o600, `${d.tenantId}/${h} socket`).to.equal(true);
      }
    });

    it("an exec'd command inherits no socket of the agent listener (ls -la /proc/self/fd)", async () => {
      const da = A as TestDaemon;
      // Positive control: guest root sees tini's fds, which hold the inherited listener as a socket.
      const init = await execIn(da, a1, ["ls", "-la", "/proc/1/fd"]);
      const listener = /\s3 -> (socket:\[\d+\])/.exec(init.stdout)?.[1];
      expect(listener, `tini's fd 3 is the listener:\n${init.stdout}`).to.be.a("string");
      const self = await execIn(da, a1, ["ls", "-la", "/proc/self/fd"]);
      expect(self.stdout, "the listener").to.not.contain(listener as string);
      const fds = [...self.stdout.matchAll(/\s(\d+) -> (.+)$/gm)].map((m) => [Number(m[1]), m[2] as string] as const);
      expect(fds.length, self.stdout).to.be.greaterThan(2);
      // Beyond stdio only what ls itself opens: the /proc/<pid>/fd directory.
      expect(fds.filter(([n, t]) => n > 2 && !/^\/proc\/\d+\/fd$/.test(t)), self.stdout).to.deep.equal([]);
      console.log(`      exec fds: ${fds.map(([n, t]) => `${n}->${t}`).join(", ")} (listener ${listener})`);
    });

    it("neither a PTY shell nor the userdata script inherits a socket of the agent listener", async () => {
      const da = A as TestDaemon, db = B as TestDaemon;
      // In the shell: its own fds, then (positive control) tini's, where the listener shows.
      const out = await inShell(da.socketPath, a1, "ls -la /proc/$$/fd; echo ---; ls -la /proc/1/fd");
      const [mine, init] = out.split(/\r?\n---\r?\n/) as [string, string | undefined];
      expect(init ?? "", `tini's fds seen from the shell:\n${out}`).to.match(/ 3 -> '?socket:\[\d+\]/);
      const shellFds = fdEntries(mine);
      expect(shellFds.length, mine).to.be.greaterThan(2);
      expect(shellFds.filter((f) => f.includes("socket:")), mine).to.deep.equal([]);
      // The userdata script of b1 (run by B's agent at first boot) listed its own fds.
      const ud = await execIn(db, b1, ["cat", "/root/userdata-fds"]);
      expect(ud.exit_code, ud.stderr).to.equal(0);
      const udFds = fdEntries(ud.stdout);
      expect(udFds.length, ud.stdout).to.be.greaterThan(2);
      const listenerB = /\s3 -> (socket:\[\d+\])/.exec((await execIn(db, b1, ["ls", "-la", "/proc/1/fd"])).stdout)?.[1];
      expect(listenerB, "B's listener (positive control)").to.be.a("string");
      expect(udFds.filter((f) => f.endsWith(listenerB as string)), ud.stdout).to.deep.equal([]);
      console.log(`      shell fds: ${shellFds.join(", ")}; userdata fds: ${udFds.join(", ")} (B's listener ${listenerB})`);
    });
  });

  describe("2. no host write through a guest symlink at reboot", function () {
    let hostBefore: Record<string, string> = {};
    const reboots: string[] = [];

    before(async () => {
      // World-writable on purpose: a host-side resolution by the VM's own (unprivileged) uid
      // would succeed here, so only path resolution stands between the guest and this dir.
      await fs.mkdir(hostDir, { mode: 0o777 });
      await fs.chmod(hostDir, 0o777);
      await fs.writeFile(path.join(hostDir, "sentinel"), sentinel, { mode: 0o644 });
      hostBefore = await snapshotDir(hostDir);
    });
    after(() => {
      if (reboots.length > 0) console.log(`      reboots: ${reboots.join("; ")}`);
    });

    const reboot = async (label: string): Promise<{ status: number; text: string; back: boolean }> => {
      const da = A as TestDaemon;
      const r = await call(da.socketPath, "POST", `/vm/${a2}/shutdown?action=reboot&restart=true`);
      let back = false;
      if (r.status === 200) {
        // Wait for the agent (the reboot returns once the sandbox runs).
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          const h = await call(da.socketPath, "GET", `/vm/${a2}/health`).catch(() => undefined);
          if (h?.status === 200) {
            back = true;
            break;
          }
          await new Promise((res) => setTimeout(res, 200));
        }
      }
      reboots.push(`${label}: HTTP ${r.status} ${r.status === 200 ? "" : r.text.slice(0, 300)}${back ? "agent back" : "agent NOT back"}`);
      return { status: r.status, text: r.text, back };
    };

    it("positive control: the agent writes /etc/hostname inside the guest at boot (it reads the VM name, in the guest's own layer)", async () => {
      const da = A as TestDaemon;
      for (const h of [a1, a2]) expect((await execIn(da, h, ["cat", "/etc/hostname"])).stdout).to.equal(`${h}\n`);
      // The write landed in the guest's upper layer (made by the guest's root, not the host's).
      const up = path.join(da.runDir, "bundles", a2, "disk", "upper", "etc", "hostname");
      expect(await fs.readFile(up, "utf8")).to.equal(`${a2}\n`);
      expect((await fs.stat(up)).uid).to.equal(slotA);
    });

    it("/etc → a host dir absent from the guest: the reboot writes nothing there and the daemon keeps serving", async () => {
      const da = A as TestDaemon;
      const prep = await sh(da, a2, `mv /etc /etc.orig && ln -s '${hostDir}' /etc && readlink /etc && test ! -e '${hostDir}' && echo prepared`);
      expect(prep.stdout.trim(), prep.stderr).to.equal(`${hostDir}\nprepared`);
      const r = await reboot("/etc symlink, target absent in guest");
      expect(await snapshotDir(hostDir), "host dir after the reboot").to.deep.equal(hostBefore);
      expect((await call(da.socketPath, "GET", "/healthz")).status).to.equal(200);
      expect((await execIn(da, a1, ["hostname"])).stdout.trim()).to.equal(a1);
      // The VM either came back or the reboot failed with a clear error code.
      if (r.status !== 200) expect(r.text).to.match(/"code":\s*"ERR_[A-Z_]+"/);
      else expect(r.back, "the VM answered after the reboot").to.equal(true);
      if (r.back) {
        // The agent's write followed the symlink inside the guest, where it leads nowhere.
        const g = await sh(da, a2, `readlink /etc; test -e /etc/hostname; echo $?`);
        expect(g.stdout).to.equal(`${hostDir}\n1\n`);
        const log = (await call(da.socketPath, "GET", `/vm/${a2}/logs?lines=200`)).json() as { content: string };
        expect(log.content).to.match(/writing \/etc\/hostname or resolv\.conf failed/);
      }
    });

    it("/etc and /.paddock → a host-named dir that also exists in the guest: runc and the agent resolve both inside the guest, the host dir stays unchanged", async function () {
      const da = A as TestDaemon;
      const st = (await call(da.socketPath, "GET", `/vm/${a2}/health`)).status;
      if (st !== 200) this.skip(); // the previous reboot did not bring the VM back (reported there)
      const prep = await sh(da, a2, [
        `mkdir -p '${hostDir}' && echo guest-side > '${hostDir}/guest-file'`,
        "mv /.paddock /.paddock.orig",
        `ln -s '${hostDir}' /.paddock && readlink /.paddock /etc && echo prepared`,
      ].join(" && ") + " 2>&1");
      expect(prep.stdout.trim()).to.equal(`${hostDir}\n${hostDir}\nprepared`);
      const r = await reboot("/etc and /.paddock symlinks, target present in guest");
      expect(await snapshotDir(hostDir), "host dir after the reboot").to.deep.equal(hostBefore);
      expect((await call(da.socketPath, "GET", "/healthz")).status).to.equal(200);
      if (r.status !== 200) expect(r.text).to.match(/"code":\s*"ERR_[A-Z_]+"/);
      else expect(r.back, "the VM answered after the reboot").to.equal(true);
      if (r.back) {
        // Positive control: the writes did happen, in the guest's own copy of that path.
        const g = await sh(da, a2, `cat '${hostDir}/hostname'; ls '${hostDir}'`);
        expect(g.stdout.split("\n")[0]).to.equal(a2);
        expect(g.stdout).to.contain("guest-file").and.contain("bin").and.contain("app");
      }
    });
  });

  describe("3. guest root is not host root; nested user namespaces and the listed kernel surfaces are closed", function () {
    let uidStart = 0;
    before(async () => {
      const claim = (await listUidClaims(claimsDir)).find((c) => c.stale === undefined && c.tenantId === (A as TestDaemon).tenantId);
      if (claim === undefined || claim.stale !== undefined) throw new Error("no live claim of tenant A");
      uidStart = claim.uidStart;
    });

    it("uid_map and gid_map are `0 <uidStart> 65536`, uidStart (from the tenant's claim) ≥ 65536", async () => {
      expect(uidStart).to.equal(slotA).and.to.be.at.least(65_536);
      const r = await sh(A as TestDaemon, a1, "cat /proc/self/uid_map /proc/self/gid_map");
      const maps = r.stdout.trim().split("\n").map((l) => l.trim().split(/\s+/).map(Number));
      expect(maps).to.deep.equal([[0, uidStart, 65_536], [0, uidStart, 65_536]]);
      // Positive control: the host's own map is the identity of the whole id space.
      expect((await fs.readFile("/proc/self/uid_map", "utf8")).trim().split(/\s+/).map(Number)).to.deep.equal([0, 0, 4_294_967_295]);
    });

    it("a file the guest creates is owned on the host by uidStart (guest uid 1000 ⇒ uidStart+1000)", async () => {
      const da = A as TestDaemon;
      const name = `own-${crypto.randomBytes(3).toString("hex")}`;
      expect((await sh(da, a1, `echo root > /root/${name} && stat -c %u:%g /root/${name}`)).stdout.trim()).to.equal("0:0");
      expect((await sh(da, a1, `echo user > /tmp/${name}-1000 && stat -c %u /tmp/${name}-1000`, 1000)).stdout.trim()).to.equal("1000");
      const upper = path.join(da.runDir, "bundles", a1, "disk", "upper");
      const sRoot = await fs.stat(path.join(upper, "root", name));
      const sUser = await fs.stat(path.join(upper, "tmp", `${name}-1000`));
      expect(await fs.readFile(path.join(upper, "root", name), "utf8")).to.equal("root\n");
      expect({ root: [sRoot.uid, sRoot.gid], user: sUser.uid }).to.deep.equal({ root: [uidStart, uidStart], user: uidStart + 1000 });
    });

    it("Seccomp 2, NoNewPrivs 1 and no CAP_SYS_ADMIN (bit 21) in CapEff; the unconfined group shows Seccomp 0", async () => {
      const status = async (h: string) => {
        const t = (await sh(A as TestDaemon, h, "grep -E 'Seccomp|NoNewPrivs|CapEff' /proc/self/status")).stdout;
        const f = (k: string) => new RegExp(`^${k}:\\s*(\\S+)$`, "m").exec(t)?.[1] ?? "";
        return { seccomp: f("Seccomp"), nnp: f("NoNewPrivs"), capEff: BigInt("0x" + f("CapEff")) };
      };
      const s = await status(a1);
      expect({ seccomp: s.seccomp, nnp: s.nnp }).to.deep.equal({ seccomp: "2", nnp: "1" });
      expect((s.capEff >> CAP_SYS_ADMIN_BIT) & 1n, `CapEff ${s.capEff.toString(16)}`).to.equal(0n);
      expect(s.capEff, "guest root has some capabilities (the probe reads a real mask)").to.not.equal(0n);
      // Positive controls: the unconfined VM reports Seccomp 0; the host's root has bit 21.
      expect((await status(a3)).seccomp).to.equal("0");
      const hostCap = BigInt("0x" + (/^CapEff:\s*(\S+)$/m.exec(await fs.readFile("/proc/self/status", "utf8"))?.[1] ?? "0"));
      expect((hostCap >> CAP_SYS_ADMIN_BIT) & 1n).to.equal(1n);
    });

    it("no nested user namespace: `unshare -Urm sh -c 'mount -t tmpfs none /mnt'` fails; with seccomp unconfined `unshare -U true` succeeds (positive control)", async () => {
      const da = A as TestDaemon;
      const attack = await sh(da, a1, "unshare -Urm sh -c 'mount -t tmpfs none /mnt && echo mounted' 2>&1; echo exit=$?");
      expect(attack.stdout).to.not.contain("mounted");
      expect(attack.stdout).to.match(/Operation not permitted[\s\S]*exit=[1-9]/);
      const attackU = await sh(da, a1, "unshare -U true 2>&1; echo exit=$?");
      expect(attackU.stdout).to.match(/Operation not permitted[\s\S]*exit=[1-9]/);
      const control = await sh(da, a3, "unshare -U true 2>&1; echo exit=$?; unshare -Urm sh -c 'mount -t tmpfs none /mnt && echo mounted' 2>&1");
      expect(control.stdout).to.equal("exit=0\nmounted\n");
    });

    it("cgroup namespace: /proc/self/cgroup shows only `/` paths (the host sees /paddock/<tenant>/<vm>)", async () => {
      const da = A as TestDaemon;
      const lines = (await execIn(da, a1, ["cat", "/proc/self/cgroup"])).stdout.trim().split("\n");
      expect(lines.length).to.be.greaterThan(0);
      expect(lines.filter((l) => !/^\d+:[^:]*:\/$/.test(l)), lines.join("\n")).to.deep.equal([]);
      // Positive control: the same file read by the host for the VM's init names its real cgroup.
      const st = JSON.parse((await run("runc", ["state", `pdk-${da.tenantId}-${a1}`])).stdout) as { pid: number };
      expect(await fs.readFile(`/proc/${st.pid}/cgroup`, "utf8")).to.contain(`/paddock/${da.tenantId}/${a1}`);
    });

    it("/proc/kcore, /proc/keys and /proc/interrupts are masked (/dev/null, empty) and /proc/sys is read-only", async () => {
      const da = A as TestDaemon;
      const r = await sh(da, a1, "for f in /proc/kcore /proc/keys /proc/interrupts /proc/version; do echo \"$f $(stat -c '%F %t:%T %s' $f) $(head -c 4096 $f | wc -c)\"; done");
      const got = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.split(" ")[0], l.slice(l.indexOf(" ") + 1)]));
      for (const f of ["/proc/keys", "/proc/interrupts"]) expect(got[f], f).to.equal("character special file 1:3 0 0");
      // This host's kernel may have no /proc/kcore (CONFIG_PROC_KCORE unset): then it must be
      // absent in the guest too; where it exists it must be masked like the others.
      if (existsSync("/proc/kcore")) expect(got["/proc/kcore"], "/proc/kcore").to.equal("character special file 1:3 0 0");
      else expect(got["/proc/kcore"], "/proc/kcore (absent on this host)").to.equal(" 0");
      // Positive controls: an unmasked /proc file reads non-empty in the guest; the host's
      // keys and interrupts are not empty, so a readable one would have shown bytes.
      expect(Number(got["/proc/version"]?.split(" ").at(-1))).to.be.greaterThan(0);
      for (const f of ["/proc/keys", "/proc/interrupts"]) expect((await fs.readFile(f, "utf8")).length, `host ${f}`).to.be.greaterThan(0);
      // ip_forward of the VM's own netns belongs to guest root (the netns is owned by the VM's
      // userns), so file permissions would let it write: only the read-only mount stops it.
      const mi = await sh(da, a1, "awk '$5==\"/proc/sys\" || $5==\"/proc\" {print $5, $6}' /proc/self/mountinfo; stat -c 'owner=%u mode=%a' /proc/sys/net/ipv4/ip_forward; (echo 1 > /proc/sys/net/ipv4/ip_forward) 2>&1; echo exit=$?");
      expect(mi.stdout).to.match(/^\/proc rw[,\s]/m).and.match(/^\/proc\/sys ro[,\s]/m).and.match(/^owner=0 mode=644$/m).and.match(/Read-only file system\nexit=[1-9]/);
    });
  });

  describe("4. less to see: the guest's mountinfo", function () {
    it("A's /proc/self/mountinfo names neither B (tenant id, dirs) nor the project tree beyond the read-only dist/toolbox bind at /.paddock/app", async () => {
      const da = A as TestDaemon, db = B as TestDaemon;
      const text = (await execIn(da, a1, ["cat", "/proc/self/mountinfo"])).stdout;
      expect(text.split("\n").length).to.be.greaterThan(10);
      for (const s of [db.tenantId, db.dir, db.runDir, db.stateDir]) expect(text, `B's ${s}`).to.not.contain(s);
      const roots = [...new Set([PROJECT_ROOT, process.cwd()])];
      const project = text.split("\n").filter((l) => roots.some((r) => l.includes(r)));
      expect(project.length, project.join("\n")).to.equal(1);
      const f = (project[0] as string).split(" ");
      expect({ root: f[3], mountPoint: f[4], ro: /(^|,)ro(,|$)/.test(f[5] as string) }).to.deep.equal({ root: path.join(PROJECT_ROOT, "dist", "toolbox"), mountPoint: "/.paddock/app", ro: true });
      // What else of the host shows (own tenant's paths in the overlay options): reported.
      const ownPaths = text.split("\n").filter((l) => l.includes(da.dir)).map((l) => l.split(" ").slice(4, 5).join(" ") + " ← " + (l.match(/\/tmp\/pdk-[^ ,]*/g) ?? []).join(","));
      console.log(`      A's own host paths visible in its guest mountinfo: ${ownPaths.join("; ") || "none"}`);
      // Positive control: the host's mountinfo does contain B's run dir (B's VM's rootfs), so
      // the same string checks can match.
      const hostText = await fs.readFile("/proc/self/mountinfo", "utf8");
      expect(hostText).to.contain(path.join(db.runDir, "bundles", b1, "rootfs"));
    });
  });

  describe("5. non-root guest users cannot read the boot secret", function () {
    it("as uid 1000 `cat /run/paddock-agent/boot.json` is denied; as uid 0 it holds this boot's agent_proof", async () => {
      const da = A as TestDaemon;
      const user = await sh(da, a1, "id -u; cat /run/paddock-agent/boot.json 2>&1; echo exit=$?", 1000);
      expect(user.stdout).to.match(/^1000\n/).and.match(/Permission denied\nexit=1\n$/).and.not.contain("agent_proof");
      // Positive control: guest root reads it, and it is the proof the daemon wrote for this boot.
      const rootRead = await execIn(da, a1, ["cat", "/run/paddock-agent/boot.json"]);
      expect(rootRead.exit_code).to.equal(0);
      const proof = (JSON.parse(rootRead.stdout) as { agent_proof: string }).agent_proof;
      expect(proof).to.match(/^[0-9a-f]{64}$/);
      const host = JSON.parse(await fs.readFile(path.join(da.runDir, "vms", a1, "boot", "boot.json"), "utf8")) as { agent_proof: string };
      expect(proof).to.equal(host.agent_proof);
    });

    it("as uid 1000 the fds of tini (/proc/1/fd, which hold the listener) and of the agent are not readable", async () => {
      const da = A as TestDaemon;
      const agentPid = (await sh(da, a1, "for p in /proc/[0-9]*; do grep -q 'agent[.]cjs' $p/cmdline 2>/dev/null && grep -qx node $p/comm && basename $p; done")).stdout.trim().split("\n")[0] ?? "";
      expect(agentPid).to.match(/^\d+$/);
      const user = await sh(da, a1, `ls -la /proc/1/fd 2>&1; echo exit=$?; ls -la /proc/${agentPid}/fd 2>&1; echo exit=$?; ls /proc/self/fd >/dev/null; echo self=$?`, 1000);
      expect(user.stdout).to.not.contain("socket:");
      expect(user.stdout.match(/Permission denied\nexit=[12]\n/g)?.length, user.stdout).to.equal(2);
      expect(user.stdout).to.match(/self=0\n$/);
      // Positive control: guest root lists both and sees the listener socket.
      const root = await sh(da, a1, `ls -la /proc/1/fd /proc/${agentPid}/fd`);
      expect(root.stdout).to.contain("socket:[");
    });
  });
});
