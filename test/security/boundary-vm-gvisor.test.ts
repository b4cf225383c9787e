/**
 * The sandbox boundary of test/security/boundary-vm.test.ts, attacked from inside REAL gVisor
 * VMs (`hypervisor: gvisor`: runsc on this host's platform, the reverse agent channel) behind a
 * REAL tenant daemon. Sections keep boundary-vm's numbers; each attack keeps a positive
 * control. Where gVisor differs, the test asserts what the user needs (the attack fails, the
 * host is untouched) and docs/security.md#gvisor-hypervisor-gvisor says how it differs:
 *
 * - the agent channel is the reverse one (the agent dials a host-made listener bound read-only
 *   at /run/paddock-dial), not an inherited fd 3;
 * - guest syscalls are served by the sentry: the guest's own status shows no seccomp and the
 *   full id space, /proc and mountinfo are the sentry's (no host paths), and a nested user
 *   namespace is the sentry's, never the host kernel's. The host-side checks are made on the
 *   VM's host processes (sentry, gofer, stubs) instead;
 * - mount(8) and ls/stat fail in Debian 12 guests on runsc 20221219 (statx AT_NO_AUTOMOUNT,
 *   docs/gvisor-findings.md §5), so mounts are attempted with the raw mount(2) syscall (perl)
 *   and directories listed with find/globs.
 *
 * One tenant, two VMs, booted once and shared: g1 (persistent: the attacker, rebooted last)
 * and g2 (the other VM whose channel g1 goes after). Cross-tenant attacks between runc tenants
 * are in boundary-vm.test.ts; the gVisor channel is per VM, so g2 stands for any other VM.
 * Needs root, runsc and the image. Everything is destroyed in `after`, even on failure.
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { promises as fs, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { findRunscBinary } from "../../shared/runsc-binary.js";
import { UID_RANGE_BASE, UID_RANGE_SIZE } from "../../shared/uid-ranges.js";
import { PROJECT_ROOT, TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { call } from "../integration/agent-fixture.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { createVm, execIn, sh } from "./guest-exec.js";

/** x86_64 mount(2) (arch/x86/entry/syscalls/syscall_64.tbl). */
const SYS_MOUNT = 165;
/** `perl` calling mount(2) directly: prints `mounted` or `errno=N`. */
const rawMount = (source: string, target: string, fstype: string, flags = 0): string =>
  // syscall() needs writable scalars for pointer arguments, hence the variables.
  `perl -e 'my ($s, $t, $f) = ("${source}", "${target}", "${fstype}"); my $r = syscall(${SYS_MOUNT}, $s, $t, $f, ${flags}, 0); print $r == 0 ? "mounted\\n" : "errno=" . ($! + 0) . "\\n"'`;
const EPERM = 1;
const MS_BIND = 4096;
const MS_REMOUNT = 32;

/** Fields of /proc/<pid>/status. */
function procStatus(pid: number | "self"): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  return Object.fromEntries(text.split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]));
}

const missing = missingPrerequisites();
if (findRunscBinary() === undefined) missing.push("runsc not installed (apt-get install runsc)");

describeWhenReady(missing, "security: the gVisor VM sandbox boundary under attack from a guest root (privileged, real daemon and runsc VMs)", function () {
  this.timeout(180_000);
  let G: TestDaemon | undefined;
  let g1 = "", g2 = "";
  const slot = UID_RANGE_BASE + (2300 + crypto.randomInt(0, 900)) * UID_RANGE_SIZE;
  const hostDir = `/tmp/pdk-secg-host-${crypto.randomBytes(4).toString("hex")}`;
  const sentinel = `sentinel ${crypto.randomBytes(8).toString("hex")}\n`;
  const dialDir = (h: string) => path.join((G as TestDaemon).runDir, "vms", h, "agent-dial");

  before(async function () {
    G = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
      config: { hypervisor: "gvisor" },
      paddock: { userns: { uid_start: slot } },
    });
    await G.start();
    const d = G;
    [g1, g2] = await Promise.all([createVm(d, "sbox", { persistent: true }), createVm(d, "sbox")]);
  });

  after(async function () {
    const d = G;
    if (d === undefined) return;
    await d.destroy();
    await fs.rm(hostDir, { recursive: true, force: true });
    const runscRoot = path.join(d.runDir, "runsc");
    const sandboxes = await fs.readdir(runscRoot).catch(() => [] as string[]);
    const netns = (await run("ip", ["netns", "list"])).stdout.split("\n").filter((l) => l.includes(d.tenantId));
    const tables = (await run("nft", ["list", "tables"])).stdout.split("\n").filter((l) => l.includes(d.tenantId));
    const procs = (await run("pgrep", ["-f", `pdk-${d.tenantId}-`], { allowFailure: true })).stdout.trim();
    expect({ sandboxes, netns, tables, procs, mounts: await mountsUnder(d.dir), loops: await loopDevicesUnder(d.dir) }, "left behind").to.deep.equal({ sandboxes: [], netns: [], tables: [], procs: "", mounts: [], loops: [] });
  });

  describe("1. no takeover through the agent channel", function () {
    it("g2's host dial dir is host-only and g1's guest cannot even see it or the tenant's dirs", async () => {
      const d = G as TestDaemon;
      // Positive control: the host sees g2's dial dir where the test computes it.
      expect((await fs.stat(dialDir(g2))).isDirectory()).to.equal(true);
      const r = await sh(d, g1, `test -e '${dialDir(g2)}' || test -e '${d.dir}' || test -e '${d.runDir}'; echo $?`);
      expect(r.stdout.trim()).to.equal("1");
    });

    it("g1's guest root cannot write, link, remove, rename, chmod, unmount or mount over /run/paddock-agent or /run/paddock-dial", async () => {
      const d = G as TestDaemon;
      const files: Record<string, string> = {};
      for (const dir of ["/run/paddock-agent", "/run/paddock-dial"]) {
        Object.assign(files, {
          // perl's link calls go straight to the syscalls (coreutils' statx fails first on runsc 20221219).
          [`symlink a new entry in ${dir} to g2's dial dir`]: `perl -e 'symlink("${dialDir(g2)}", "${dir}/vmdir") or die "$!\\n"'`,
          [`create a file in ${dir}`]: `touch ${dir}/x`,
          [`create a fifo in ${dir}`]: `mkfifo ${dir}/p`,
          [`rename ${dir} away`]: `mv ${dir} ${dir}.old`,
          [`remove ${dir}`]: `rm -r ${dir}`,
          [`chmod ${dir}`]: `chmod 0777 ${dir}`,
          [`umount ${dir}`]: `umount ${dir}`,
          [`lazy umount ${dir}`]: `umount -l ${dir}`,
        });
      }
      Object.assign(files, {
        "overwrite boot.json": "echo '{}' > /run/paddock-agent/boot.json",
        "remove boot.json": "rm /run/paddock-agent/boot.json",
        "remove the dial socket": `perl -e 'unlink("/run/paddock-dial/agent.sock") or die "$!\\n"'`,
        "rename the dial socket": `perl -e 'rename("/run/paddock-dial/agent.sock", "/run/paddock-dial/old.sock") or die "$!\\n"'`,
        "replace boot.json by a symlink": `perl -e 'unlink("/run/paddock-agent/boot.json") && symlink("${dialDir(g2)}", "/run/paddock-agent/boot.json") or die "$!\\n"'`,
      });
      const results: Record<string, string> = {};
      for (const [name, cmd] of Object.entries(files)) results[name] = (await sh(d, g1, `(${cmd}) 2>&1; echo "exit=$?"`)).stdout.trim().replace(/\n/g, " | ");
      const mounts: Record<string, string> = {};
      for (const dir of ["/run/paddock-agent", "/run/paddock-dial"]) {
        mounts[`tmpfs over ${dir}`] = (await sh(d, g1, rawMount("none", dir, "tmpfs"))).stdout.trim();
        mounts[`bind /tmp over ${dir}`] = (await sh(d, g1, rawMount("/tmp", dir, "none", MS_BIND))).stdout.trim();
        mounts[`remount ${dir} rw`] = (await sh(d, g1, rawMount("none", dir, "none", MS_REMOUNT | MS_BIND))).stdout.trim();
      }
      expect(Object.entries(results).filter(([, out]) => /exit=0$/.test(out)), "file attacks that succeeded").to.deep.equal([]);
      for (const [name, out] of Object.entries(results)) expect(out, `${name}: ${JSON.stringify(results)}`).to.match(/Read-only file system|Device or resource busy|Operation not permitted|Permission denied|must be superuser/i);
      expect(mounts, "raw mount(2) attacks").to.deep.equal(Object.fromEntries(Object.keys(mounts).map((k) => [k, `errno=${EPERM}`])));
      const left = await sh(d, g1, "echo /run/paddock-agent/* /run/paddock-agent/.[!.]*; test -d /run/paddock-dial && echo dial-here");
      expect(left.stdout).to.equal("/run/paddock-agent/boot.json /run/paddock-agent/.[!.]*\ndial-here\n");

      // Positive controls: the same file operations on a writable guest dir succeed, and the
      // same raw mount(2) probe reports `mounted` where mounting is allowed (on the host, in a
      // fresh user+mount namespace: runsc 20221219 refuses mount(2) even in a guest's nested
      // user namespace), so the probes would have seen a success.
      const ctl = `/var/tmp/ctl-${crypto.randomBytes(3).toString("hex")}`;
      const control = await sh(d, g1, [
        `mkdir ${ctl} && echo '{}' > ${ctl}/boot.json && ln -sf '${dialDir(g2)}' ${ctl}/agent.sock`,
        `touch ${ctl}/x && mkfifo ${ctl}/p && chmod 0777 ${ctl} && rm ${ctl}/boot.json`,
        `perl -e 'symlink("${dialDir(g2)}", "${ctl}/vmdir") && rename("${ctl}/x", "${ctl}/y") && unlink("${ctl}/y") or die "$!\\n"'`,
        `mv ${ctl} ${ctl}.old && rm -r ${ctl}.old && echo control-ok`,
      ].join(" && ") + " 2>&1");
      expect(control.stdout.trim()).to.equal("control-ok");
      const mnt = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-mntctl-"));
      try {
        const m = await run("unshare", ["--user", "--map-root-user", "--mount", "--propagation", "private", "/bin/sh", "-c", rawMount("none", mnt, "tmpfs")]);
        expect(m.stdout.trim()).to.equal("mounted");
      } finally {
        await fs.rm(mnt, { recursive: true, force: true });
      }
      console.log(`      attack outcomes: ${JSON.stringify({ ...results, ...mounts })}`);
    });

    // The dial channel carries one request per connection (agent-dial-pool.ts), so unlike the
    // runc test there is no keep-alive to outwait: each exec takes a fresh connection of g1's pool.
    it("g1's exec reaches g1 only, on fresh pool connections; g2's exec sees g2's marker", async () => {
      const d = G as TestDaemon;
      const tag = crypto.randomBytes(4).toString("hex");
      expect((await execIn(d, g2, ["touch", `/var/tmp/m2-${tag}`])).exit_code).to.equal(0);
      expect((await execIn(d, g1, ["touch", `/var/tmp/m1-${tag}`])).exit_code).to.equal(0);
      for (let i = 0; i < 4; i++) {
        const seen = (await sh(d, g1, `echo /var/tmp/m*-${tag}; hostname`)).stdout;
        expect(seen, "g1's view").to.equal(`/var/tmp/m1-${tag}\n${g1}\n`);
      }
      // Positive control: g2's own exec sees its marker, so the glob would show it in g2.
      expect((await sh(d, g2, `echo /var/tmp/m*-${tag}; hostname`)).stdout).to.equal(`/var/tmp/m2-${tag}\n${g2}\n`);
    });

    it("an exec'd command holds no fd beyond stdio, while the agent holds its dialed connections", async () => {
      const d = G as TestDaemon;
      // The glob's own directory fd is the only extra one (readlink prints nothing for it).
      const self = await sh(d, g1, "for f in /proc/self/fd/*; do echo \"${f##*/} $(readlink $f)\"; done");
      const fds = self.stdout.trim().split("\n").map((l) => l.split(" ") as [string, string?]);
      expect(fds.length, self.stdout).to.be.greaterThan(2);
      expect(fds.filter(([n, t]) => Number(n) > 2 && (t ?? "") !== ""), self.stdout).to.deep.equal([]);
      // Positive control: the agent's process holds sockets (its channel), and the probe reads them.
      const agent = await sh(d, g1, "for p in /proc/[0-9]*; do grep -q 'agent[.]cjs' $p/cmdline 2>/dev/null && for f in $p/fd/*; do readlink $f; done; done");
      expect(agent.stdout.match(/^socket:\[\d+\]$/gm)?.length ?? 0, agent.stdout).to.be.at.least(1);
    });
  });

  describe("3. guest root is not host root; the host kernel is not the guest's", function () {
    it("files the guest's root and uid 1000 create are owned on the host by the tenant's range (uid_start, uid_start+1000)", async () => {
      const d = G as TestDaemon;
      const name = `own-${crypto.randomBytes(3).toString("hex")}`;
      expect((await sh(d, g1, `echo root > /root/${name} && stat -c %u:%g /root/${name} 2>/dev/null || echo 0:0`)).stdout.trim()).to.equal("0:0");
      expect((await sh(d, g1, `echo user > /var/tmp/${name}-1000 && id -u`, 1000)).stdout.trim()).to.equal("1000");
      const upper = path.join(d.runDir, "bundles", g1, "disk", "upper");
      const sRoot = await fs.stat(path.join(upper, "root", name));
      const sUser = await fs.stat(path.join(upper, "var", "tmp", `${name}-1000`));
      // Positive control: the files are the guest's (content), so their owners are what the host gave the guest.
      expect(await fs.readFile(path.join(upper, "root", name), "utf8")).to.equal("root\n");
      expect({ root: [sRoot.uid, sRoot.gid], user: sUser.uid }).to.deep.equal({ root: [slot, slot], user: slot + 1000 });
    });

    it("every host process of the VM (sentry, gofer, stubs) is a non-root uid outside the host's user namespace, with seccomp and no_new_privs", async () => {
      const d = G as TestDaemon;
      const spec = JSON.parse(await fs.readFile(path.join(d.runDir, "bundles", g1, "config.json"), "utf8")) as { linux: { cgroupsPath: string } };
      const pids = (await fs.readFile(`/sys/fs/cgroup/pids${spec.linux.cgroupsPath}/cgroup.procs`, "utf8")).trim().split("\n").map(Number);
      expect(pids.length, "host processes in the VM's cgroup").to.be.at.least(2);
      // This test runs as host root in the host's user namespace (checked below).
      const hostUserns = await fs.readlink("/proc/self/ns/user");
      const seen = await Promise.all(pids.map(async (pid) => {
        const s = procStatus(pid);
        return { uid: Number(s.Uid?.split(/\s+/)[0]), seccomp: s.Seccomp, nnp: s.NoNewPrivs, userns: await fs.readlink(`/proc/${pid}/ns/user`) };
      }));
      const bad = seen.filter((p) => p.uid === 0 || p.seccomp !== "2" || p.nnp !== "1" || p.userns === hostUserns);
      expect(bad, JSON.stringify(seen)).to.deep.equal([]);
      // Positive control: this test process (host root) would fail every one of those checks.
      const me = procStatus("self");
      expect({ uid: me.Uid?.split(/\s+/)[0], seccomp: me.Seccomp, userns: await fs.readlink("/proc/self/ns/user") }).to.deep.equal({ uid: "0", seccomp: "0", userns: hostUserns });
      console.log(`      VM host processes: ${seen.map((p) => `uid ${p.uid}`).join(", ")}`);
    });

    it("guest root has no CAP_SYS_ADMIN: mount(2) fails with EPERM, also inside a nested user namespace (which is the sentry's, not the host kernel's)", async () => {
      const d = G as TestDaemon;
      const r = await sh(d, g1, `${rawMount("none", "/mnt", "tmpfs")}; grep CapEff /proc/self/status`);
      expect(r.stdout).to.match(new RegExp(`^errno=${EPERM}\\n`));
      // unshare itself works (so the probe runs in a new namespace), the mount in it does not.
      const nested = await sh(d, g1, `unshare -U true; echo userns=$?; unshare -Urm --propagation unchanged ${rawMount("none", "/mnt", "tmpfs")}`);
      expect(nested.stdout).to.equal(`userns=0\nerrno=${EPERM}\n`);
      const capEff = BigInt("0x" + (/CapEff:\s*(\S+)/.exec(r.stdout)?.[1] ?? "0"));
      expect((capEff >> 21n) & 1n).to.equal(0n);
      expect(capEff, "guest root has some capabilities (the probe reads a real mask)").to.not.equal(0n);
    });

    it("the guest's /proc is the sentry's: no host kernel release, no kcore/keys/interrupts, no host cgroup path", async () => {
      const d = G as TestDaemon;
      const r = await sh(d, g1, "cat /proc/version; for f in /proc/kcore /proc/keys /proc/interrupts; do echo \"$f $(cat $f 2>/dev/null | wc -c)\"; done; echo cgroup; cat /proc/self/cgroup");
      expect(r.stdout).to.not.contain(os.release());
      for (const f of ["/proc/kcore", "/proc/keys", "/proc/interrupts"]) expect(r.stdout, f).to.contain(`${f} 0\n`);
      expect(r.stdout).to.not.contain("/paddock/").and.not.contain(d.tenantId);
      // Positive controls: the host's /proc/version names its release and keys/interrupts are not empty.
      expect(await fs.readFile("/proc/version", "utf8")).to.contain(os.release());
      for (const f of ["/proc/keys", "/proc/interrupts"]) expect((await fs.readFile(f, "utf8")).length, `host ${f}`).to.be.greaterThan(0);
      expect((await sh(d, g1, "cat /proc/version | wc -c")).stdout.trim()).to.not.equal("0");
    });
  });

  describe("4. less to see: the guest's mountinfo", function () {
    it("g1's /proc/self/mountinfo names no host path (no temp dir, tenant dir or project tree)", async () => {
      const d = G as TestDaemon;
      const text = (await execIn(d, g1, ["cat", "/proc/self/mountinfo"])).stdout;
      expect(text.split("\n").length).to.be.greaterThan(5);
      for (const s of [d.dir, d.runDir, d.stateDir, d.tenantId, PROJECT_ROOT, "/tmp/pdk-"]) expect(text, s).to.not.contain(s);
      expect(text).to.match(/ \/\.paddock\/app ro /);
      // Positive control: the host's mountinfo names the VM's rootfs under the tenant's run dir.
      expect(await fs.readFile("/proc/self/mountinfo", "utf8")).to.contain(path.join(d.runDir, "bundles", g1, "rootfs"));
    });
  });

  describe("5. non-root guest users cannot read the boot secret", function () {
    it("as uid 1000 `cat /run/paddock-agent/boot.json` is denied; as uid 0 it holds this boot's agent_proof", async () => {
      const d = G as TestDaemon;
      const user = await sh(d, g1, "id -u; cat /run/paddock-agent/boot.json 2>&1; echo exit=$?", 1000);
      expect(user.stdout).to.match(/^1000\n/).and.match(/Permission denied\nexit=1\n$/).and.not.contain("agent_proof");
      const rootRead = await execIn(d, g1, ["cat", "/run/paddock-agent/boot.json"]);
      expect(rootRead.exit_code).to.equal(0);
      const proof = (JSON.parse(rootRead.stdout) as { agent_proof: string }).agent_proof;
      expect(proof).to.match(/^[0-9a-f]{64}$/);
      const host = JSON.parse(await fs.readFile(path.join(d.runDir, "vms", g1, "boot", "boot.json"), "utf8")) as { agent_proof: string };
      expect(proof).to.equal(host.agent_proof);
    });
  });

  // Last: it reboots g1 with a hostile /etc.
  describe("2. no host write through a guest symlink at reboot", function () {
    it("positive control: the agent wrote /etc/hostname inside the guest's own layer at boot", async () => {
      const d = G as TestDaemon;
      expect((await execIn(d, g1, ["cat", "/etc/hostname"])).stdout).to.equal(`${g1}\n`);
      const up = path.join(d.runDir, "bundles", g1, "disk", "upper", "etc", "hostname");
      expect(await fs.readFile(up, "utf8")).to.equal(`${g1}\n`);
      expect((await fs.stat(up)).uid).to.equal(slot);
    });

    it("/etc → a world-writable host dir: the reboot writes nothing there and the daemon keeps serving", async () => {
      const d = G as TestDaemon;
      await fs.mkdir(hostDir, { mode: 0o777 });
      await fs.chmod(hostDir, 0o777);
      await fs.writeFile(path.join(hostDir, "sentinel"), sentinel, { mode: 0o644 });
      const before = await fs.readdir(hostDir);
      const prep = await sh(d, g1, `mv /etc /etc.orig && ln -s '${hostDir}' /etc && readlink /etc && echo prepared`);
      expect(prep.stdout.trim(), prep.stderr).to.equal(`${hostDir}\nprepared`);
      const r = await call(d.socketPath, "POST", `/vm/${g1}/shutdown?action=reboot&restart=true`);
      let back = false;
      if (r.status === 200) {
        const deadline = Date.now() + 90_000;
        while (Date.now() < deadline && !back) {
          back = (await call(d.socketPath, "GET", `/vm/${g1}/health`).catch(() => undefined))?.status === 200;
          if (!back) await new Promise((res) => setTimeout(res, 250));
        }
      }
      expect(await fs.readdir(hostDir), "host dir after the reboot").to.deep.equal(before);
      expect(await fs.readFile(path.join(hostDir, "sentinel"), "utf8")).to.equal(sentinel);
      expect((await call(d.socketPath, "GET", "/healthz")).status).to.equal(200);
      expect((await execIn(d, g2, ["hostname"])).stdout.trim()).to.equal(g2);
      if (r.status !== 200) expect(r.text).to.match(/"code":\s*"ERR_[A-Z_]+"/);
      else if (back) {
        // The writes followed the symlink inside the guest, where it leads nowhere.
        const g = await sh(d, g1, "readlink /etc; test -e /etc/hostname; echo $?");
        expect(g.stdout).to.equal(`${hostDir}\n1\n`);
      }
      console.log(`      reboot: HTTP ${r.status}, agent ${back ? "back" : "not back"}`);
    });
  });
});
