/**
 * One REAL gVisor tenant daemon (`hypervisor: gvisor`, runsc on the ptrace platform) through the
 * Slicer API, the way an SDK drives it: create with `wait=agent` over the reverse agent channel
 * (handed out of a warm pool), exec (buffered, streamed with stdin), cp in/out byte-exact, fs, a
 * shell on a guest PTY, secrets (at hand-out and pushed on change), logs, stats, pause/resume, a daemon restart that adopts the persistent VMs (agent
 * channel re-bound, network kept although netstack moved the netns's addresses into the
 * sandbox), a shutdown + relaunch (a new sandbox in a new netns), an idle suspend (`idle_action: suspend`) woken by an exec
 * (and, while the guest listens on TCP, which gVisor cannot checkpoint, an idle pause instead), and a delete that leaves nothing of the VM behind. Network: a `count: 1` bridge group
 * and an isolated group whose policy drops one of two test hosts (198.18.0.0/15, in netns made
 * here): the allowed host answers (positive control), the dropped one times out.
 */
import { expect } from "chai";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import http from "node:http";
import path from "node:path";
import WebSocket from "ws";
import { run } from "../../shared/exec.js";
import { vmNetnsName } from "../../tenant-daemon/network/names.js";
import { listRunscIds, runscId } from "../../tenant-daemon/runtime/runsc-cli.js";
import { findRunsc } from "../../tenant-daemon/runtime/runsc-host.js";
import { CGROUP_ROOT } from "../../tenant-daemon/runtime/tenant-cgroup.js";
import { readCgroupLimits } from "../helpers/cgroup.js";
import { TestDaemon, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { until } from "../helpers/wait.js";
import { SseClient } from "../helpers/sse.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { call, ndjson } from "../integration/agent-fixture.js";
import { ip4, leftovers, listen, makeTestHost, randomBlock, type Listener, type TestHost } from "./network-fixtures.js";

const PORT = 18071;

/** cgroup dirs named `rel` in any v1 hierarchy (or the v2 root) that exist right now. */
async function cgroupDirs(rel: string): Promise<string[]> {
  const roots = existsSync(path.join(CGROUP_ROOT, "cgroup.controllers")) ? [CGROUP_ROOT] : (await fs.readdir(CGROUP_ROOT)).map((c) => path.join(CGROUP_ROOT, c));
  return roots.map((r) => path.join(r, rel)).filter((d) => existsSync(d));
}

/** Host processes whose command line names `needle`. */
async function processesNaming(needle: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd.includes(needle)) out.push(Number(pid));
  }
  return out;
}

/** A WebSocket over the daemon's Unix socket. */
function openWs(socketPath: string, p: string, headers: Record<string, string> = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${socketPath}:${p}`, { headers });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

const missing = [...missingPrerequisites(), ...(findRunsc() === undefined ? ["runsc not installed (apt-get install runsc)"] : [])];

describeWhenReady(missing, "a gVisor tenant end to end through the Slicer API (privileged)", function () {
  this.timeout(300_000);
  let d: TestDaemon;
  let allowed: TestHost, dropped: TestHost;
  const listeners: Listener[] = [];
  let h = "";
  const br = "br-1";

  const exec = (vm: string, q: string, body?: string) => call(d.socketPath, "POST", `/vm/${vm}/exec?${q}`, body === undefined ? {} : { body });
  const sh = async (vm: string, script: string): Promise<{ stdout: string; stderr: string; exit_code: number }> => {
    const r = await exec(vm, `cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=0&buffered=true`);
    expect(r.status, r.text).to.equal(200);
    return r.json() as { stdout: string; stderr: string; exit_code: number };
  };
  /**
   * TCP connect from inside VM `vm`: `ok`, `timeout` (dropped) or `error …`. Right after a boot
   * under load a SYN may need netstack's 1 s and 3 s retransmits: an allowed host gets 10 s.
   */
  const probeFromVm = async (vm: string, host: string, timeoutS = host === allowed.ip ? 10 : 3): Promise<string> => {
    const r = await sh(vm, `timeout ${timeoutS} bash -c 'exec 3<>/dev/tcp/${host}/${PORT} && head -n1 <&3'`);
    if (r.exit_code === 0 && r.stdout.trim() === "ok") return "ok";
    return r.exit_code === 124 ? "timeout" : `error ${r.exit_code}: ${r.stderr}`;
  };

  before(async function () {
    allowed = await makeTestHost();
    dropped = await makeTestHost();
    listeners.push(await listen(allowed.ns, allowed.ip, PORT), await listen(dropped.ns, dropped.ip, PORT));
    d = await TestDaemon.create({
      config: { hypervisor: "gvisor" },
      // max_pids counts guest processes; the tenant cgroup gets their host tasks (asserted below).
      // The API VM comes from a warm pool of one (booted ahead with the group's userdata).
      paddock: { gvisor: { platform: "ptrace" }, limits: { max_pids: 512, max_vms: 4 }, warm_pool: { iso: 1 } },
      hostGroups: [
        {
          name: "iso", count: 0, vcpu: 1, ram_mb: 384, storage: "image", storage_size: "256M", userdata: "#!/bin/sh\necho userdata-ran > /root/ud.txt\necho hello-console\n",
          network: { mode: "isolated", range: randomIsolatedRange(), drop: [`${dropped.ip}/32`] },
        },
        { name: "br", count: 1, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "bridge", gateway: `${ip4(randomBlock("vm22") + 1)}/24` } },
        { name: "idl", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", idle_pause_after: "2s", idle_action: "suspend", network: { mode: "isolated", range: randomIsolatedRange() } },
      ],
    });
    await d.start(120_000);
    expect((await d.post("/secrets", { name: "tok", data: Buffer.from("t0ken").toString("base64"), permissions: "0640" })).status).to.equal(201);
    await until("a warm VM ready", async () => ((await d.warmPool("iso")).ready === 1 ? true : undefined), 120_000, 200);
    const r = await d.post("/hostgroup/iso/nodes?wait=agent&timeout=120s", { persistent: true, secrets: ["tok"], ram_bytes: 256 * 2 ** 20 });
    expect(r.status, r.text).to.equal(201);
    h = (r.json as { hostname: string }).hostname;
  });

  after(async function () {
    await d?.destroy();
    for (const l of listeners) await l.stop();
    for (const t of [allowed, dropped]) await t?.remove();
    if (d === undefined) return;
    expect(await listRunscIds(path.join(d.runDir, "runsc")), "runsc sandboxes left in the tenant's root").to.deep.equal([]);
    expect(await cgroupDirs(`paddock/${d.tenantId}`), "tenant cgroup left").to.deep.equal([]);
    expect(await leftovers(d.tenantId)).to.deep.equal({ links: [], netns: [], table: false });
    expect(await processesNaming(`pdk-${d.tenantId}-`), "processes left").to.deep.equal([]);
  });

  it("runs the VM under runsc and execs in it: buffered, streamed with stdin, and in the background", async () => {
    expect(await listRunscIds(path.join(d.runDir, "runsc"))).to.include(runscId(`pdk-${d.tenantId}-${h}`));
    // pids.max counts the sentry's, gofer's and stubs' host threads: 4 VMs × 96 + 12 × 512 guest
    // processes for the tenant, 96 + 12 × 512 for the VM (runsc-spec.ts).
    expect((await readCgroupLimits(`/paddock/${d.tenantId}`)).pidsMax).to.equal(4 * 96 + 12 * 512);
    expect((await readCgroupLimits(`/paddock/${d.tenantId}/${h}`)).pidsMax).to.equal(96 + 12 * 512);
    const b = (await exec(h, "cmd=hostname&buffered=true")).json() as { stdout: string };
    expect(b.stdout).to.equal(`${h}\n`);
    // gVisor's kernel answers uname, not the host's.
    expect((await sh(h, "dmesg | head -n1")).stdout).to.match(/gVisor/i);
    const s = await exec(h, "cmd=/usr/bin/tr&args=a-z&args=A-Z&stdin=true", "hello stdin\n");
    expect(s.status, s.text).to.equal(200);
    const frames = ndjson(s.text);
    expect(frames.filter((f) => f.type === "stdout").map((f) => f.data).join("")).to.equal("HELLO STDIN\n");
    expect(frames.at(-1)).to.include({ type: "exit", exit_code: 0 });
    const bg = await exec(h, "background=true&cmd=/bin/sh&args=-c&args=exit%203");
    expect(bg.status, bg.text).to.equal(201);
    const id = (bg.json() as { exec_id: string }).exec_id;
    expect((await d.get(`/vm/${h}/exec/${id}/wait-exit?timeout=60`)).json).to.include({ running: false, exit_code: 3 });
  });

  it("copies files in and out byte-exact (binary and tar) and serves fs", async () => {
    const data = randomBytes(3 << 20);
    expect((await call(d.socketPath, "POST", `/vm/${h}/cp?path=%2Froot%2Fblob&mode=binary`, { body: data })).status).to.equal(200);
    const back = await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Froot%2Fblob&mode=binary`);
    expect(createHash("sha256").update(back.body).digest("hex")).to.equal(createHash("sha256").update(data).digest("hex"));
    const tar = await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Froot&mode=tar`);
    expect(tar.status).to.equal(200);
    expect(tar.body.subarray(257, 262).toString()).to.equal("ustar");
    expect((await d.post(`/vm/${h}/fs/mkdir`, { path: "/root/d", mode: "0700" })).status).to.equal(200);
    const st = (await call(d.socketPath, "GET", `/vm/${h}/fs/stat?path=%2Froot%2Fblob`)).json() as Record<string, unknown>;
    expect(st).to.include({ name: "blob", type: "file", size: 3 << 20 });
    const names = ((await call(d.socketPath, "GET", `/vm/${h}/fs/readdir?path=%2Froot`)).json() as { name: string }[]).map((e) => e.name);
    expect(names).to.include.members(["blob", "d", "ud.txt"]);
  });

  it("runs a shell on a guest PTY", async () => {
    const ws = await openWs(d.socketPath, `/vm/${h}/shell?uid=0&shell=/bin/bash`);
    try {
      let out = "";
      const seen = new Promise<void>((resolve) => ws.on("message", (m: Buffer) => {
        if (m[0] === 0x01) out += m.subarray(5).toString();
        if (out.includes("pty-42")) resolve();
      }));
      const text = Buffer.from("echo pty-$((6*7))\n");
      const hdr = Buffer.alloc(5);
      hdr.writeUInt8(0x01, 0);
      hdr.writeUInt32BE(text.length, 1);
      ws.send(Buffer.concat([hdr, text]));
      await seen;
    } finally {
      ws.terminate();
    }
  });

  it("forwards a WebSocket to a TCP listener inside the VM, byte-exact", async () => {
    const script = "require('net').createServer((s)=>s.pipe(s)).listen(7777,'127.0.0.1',()=>require('fs').writeFileSync('/tmp/fwd-up','1'))";
    const l = await exec(h, `background=true&cmd=/.paddock/bin/node&args=-e&args=${encodeURIComponent(script)}&uid=0`);
    expect(l.status, l.text).to.equal(201);
    const id = (l.json() as { exec_id: string }).exec_id;
    try {
      await until("the guest listener is up", async () => ((await sh(h, "cat /tmp/fwd-up 2>/dev/null")).stdout === "1" ? true : undefined), 60_000);
      const ws = await openWs(d.socketPath, `/vm/${h}/forward`, { "X-Inlets-Upstream": "127.0.0.1:7777", "X-Inlets-Mode": "local" });
      try {
        const sent = randomBytes(1 << 20);
        const chunks: Buffer[] = [];
        let got = 0;
        const echoed = new Promise<void>((resolve) => ws.on("message", (m: Buffer) => {
          chunks.push(m);
          got += m.length;
          if (got >= sent.length) resolve();
        }));
        for (let off = 0; off < sent.length; off += 64 << 10) ws.send(sent.subarray(off, off + (64 << 10)));
        await echoed;
        expect(createHash("sha256").update(Buffer.concat(chunks)).digest("hex")).to.equal(createHash("sha256").update(sent).digest("hex"));
      } finally {
        ws.terminate();
      }
    } finally {
      await call(d.socketPath, "POST", `/vm/${h}/exec/${id}/kill`, { body: JSON.stringify({ signal: "SIGKILL" }) });
    }
  });

  it("streams fs/watch events, a guest mv as rename + create", async () => {
    expect((await sh(h, "mkdir -p /tmp/gw && echo ok")).stdout).to.equal("ok\n");
    let raw = "";
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        { socketPath: d.socketPath, method: "GET", path: `/vm/${h}/fs/watch?paths=%2Ftmp%2Fgw&events=create,rename&debounce=50ms&max_events=3`, headers: { Accept: "text/event-stream" } },
        (res) => {
          expect(res.statusCode).to.equal(200);
          // Watchers are set up before the 200: make the changes now.
          void sh(h, "echo x > /tmp/gw/f && sleep 0.2 && mv /tmp/gw/f /tmp/gw/g");
          res.on("data", (c: Buffer) => (raw += c.toString()));
          res.on("end", () => resolve());
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end();
    });
    const events = raw.split("\n\n").flatMap((block) => {
      const data = block.split("\n").find((line) => line.startsWith("data: "));
      return data === undefined ? [] : [JSON.parse(data.slice(6)) as { type: string; path: string }];
    });
    expect(events.map((e) => [e.type, e.path])).to.deep.equal([["create", "/tmp/gw/f"], ["rename", "/tmp/gw/f"], ["create", "/tmp/gw/g"]]);
  });

  it("was handed out of the warm pool: the granted secret at hand-out, the smaller memory limit, the group's userdata", async () => {
    expect(h).to.equal("iso-1");
    expect((await readCgroupLimits(`/paddock/${d.tenantId}/${h}`)).memoryBytes).to.equal(256 * 2 ** 20);
    expect((await sh(h, "cat /run/slicer/secrets/tok; cat /root/ud.txt")).stdout).to.equal("t0kenuserdata-ran\n");
    // Secrets sync: a changed secret is pushed into the running VM.
    expect((await d.patch("/secrets/tok", { data: Buffer.from("n3w").toString("base64") })).status).to.equal(200);
    await until("the new secret in the VM", async () => ((await sh(h, "cat /run/slicer/secrets/tok")).stdout === "n3w" ? true : undefined), 30_000, 200);
  });

  it("shows the console log and stats", async () => {
    const logs = await d.get(`/vm/${h}/logs?lines=200`);
    expect(logs.status).to.equal(200);
    expect(logs.text).to.contain("hello-console");
    const stats = await d.get(`/node/${h}/stats`);
    expect(stats.status, stats.text).to.equal(200);
    // From the sandbox's host cgroup (the sentry's, gofer's and guest memory), after the hand-out's update.
    const [one] = stats.json as { snapshot: Record<string, number> | null; error: string }[];
    expect(one?.error, stats.text).to.equal("");
    expect(one?.snapshot?.totalMemory).to.equal(256 * 2 ** 20);
    expect(one?.snapshot?.memoryUsed).to.be.greaterThan(2 ** 20).and.lessThan(256 * 2 ** 20);
  });

  it("pauses (exec refused with 409) and resumes", async () => {
    expect((await d.post(`/vm/${h}/pause`)).status).to.equal(200);
    try {
      expect((await exec(h, "cmd=true")).status).to.equal(409);
    } finally {
      expect((await d.post(`/vm/${h}/resume`)).status).to.equal(200);
    }
    expect((await exec(h, "cmd=true&buffered=true")).status).to.equal(200);
  });

  it("idle_action: suspend: an idle VM is suspended to disk (reason idle) and an exec restores it (reason wake) and runs; one holding a TCP socket is paused instead (fallback_from suspend) and woken", async () => {
    const events = await SseClient.open({ socketPath: d.socketPath }, "/events");
    try {
      const c = await d.post("/hostgroup/idl/nodes?wait=agent&timeout=120s", {});
      expect(c.status, c.text).to.equal(201);
      const vm = (c.json as { hostname: string }).hostname;
      const of = (type: string, reason: string) => events.waitFor((e) => e.json?.hostname === vm && e.event === type && e.json?.reason === reason, 90_000);
      await of("suspended", "idle");
      expect(((await d.get(`/vm/${vm}`)).json as { status: string }).status, "GET does not wake").to.equal("Suspended");
      expect((await sh(vm, "echo back-$((6*7))")).stdout).to.equal("back-42\n");
      await of("restored", "wake");
      // A dev server's TCP socket: gVisor cannot suspend it, so the idle rule pauses it instead, and an exec wakes it.
      await sh(vm, "setsid /.paddock/bin/node -e \"require('http').createServer(() => {}).listen(3000, '127.0.0.1')\" >/dev/null 2>&1 </dev/null &");
      await until("the guest listens on 3000", async () => ((await sh(vm, "grep -qi ':0BB8 ' /proc/net/tcp && echo yes")).stdout === "yes\n" ? true : undefined), 30_000, 200);
      const fallback = await of("paused", "idle");
      expect(fallback.json).to.include({ fallback_from: "suspend" });
      expect(String(fallback.json?.refusal)).to.match(/holds 1 TCP socket/);
      expect(((await d.get(`/vm/${vm}`)).json as { status: string }).status).to.equal("Paused");
      expect((await sh(vm, "echo up-$((6*7))")).stdout).to.equal("up-42\n");
      await of("resumed", "wake");
      expect((await d.get("/metrics")).text).to.match(/^paddock_vm_idle_failures_total\{hostgroup="idl",action="suspend",code="ERR_VM_SUSPEND_REFUSED"\} [1-9]/m);
      expect((await call(d.socketPath, "DELETE", `/hostgroup/idl/nodes/${vm}`)).status).to.equal(200);
    } finally {
      events.close();
    }
  });

  it("network: isolated and bridge VMs reach an allowed test host; the dropped one times out", async () => {
    expect(await probeFromVm(h, allowed.ip), "positive control: isolated VM → allowed host").to.equal("ok");
    expect(await probeFromVm(h, dropped.ip), "isolated VM → dropped host").to.equal("timeout");
    expect(await probeFromVm(br, allowed.ip), "bridge VM → allowed host").to.equal("ok");
  });

  it("a daemon restart adopts the persistent VMs: same sandboxes, agent and network still work", async () => {
    const adopted = [br, h].map((vm) => runscId(`pdk-${d.tenantId}-${vm}`));
    const pidBefore = (await sh(h, "cat /proc/1/stat | cut -d' ' -f22")).stdout;
    await d.stop();
    await d.start(120_000);
    // The warm VM is not adopted (warm-pool.ts); the refill may be booting another.
    expect(await listRunscIds(path.join(d.runDir, "runsc"))).to.include.members(adopted);
    expect((await sh(h, "cat /proc/1/stat | cut -d' ' -f22")).stdout, "the same boot").to.equal(pidBefore);
    expect((await sh(br, "hostname")).stdout).to.equal(`${br}\n`);
    expect(await probeFromVm(h, allowed.ip), "network after adoption").to.equal("ok");
    expect(await probeFromVm(h, dropped.ip)).to.equal("timeout");
  });

  it("a shutdown then relaunch boots it again on its disk, with its network (a fresh netns: netstack emptied the old one)", async () => {
    expect((await d.post(`/vm/${h}/shutdown?action=shutdown`)).status).to.equal(200);
    expect(await listRunscIds(path.join(d.runDir, "runsc"))).to.not.include(runscId(`pdk-${d.tenantId}-${h}`));
    const r = await d.post(`/vm/${h}/relaunch`);
    expect(r.status, r.text).to.equal(200);
    await until("agent after relaunch", async () => ((await d.get(`/vm/${h}/health`)).status === 200 ? true : undefined), 60_000, 200);
    expect((await call(d.socketPath, "GET", `/vm/${h}/cp?path=%2Froot%2Fud.txt&mode=binary`)).text).to.equal("userdata-ran\n");
    expect(await probeFromVm(h, allowed.ip), "network after relaunch").to.equal("ok");
  });

  it("delete leaves nothing of the VM: no sandbox, cgroup, process, mount, netns or agent socket", async () => {
    const id = `pdk-${d.tenantId}-${h}`;
    const r = await call(d.socketPath, "DELETE", `/hostgroup/iso/nodes/${h}`);
    expect(r.status, r.text).to.equal(200);
    expect(await listRunscIds(path.join(d.runDir, "runsc"))).to.not.include(runscId(id));
    expect(await cgroupDirs(`paddock/${d.tenantId}/${h}`)).to.deep.equal([]);
    expect(await processesNaming(runscId(id))).to.deep.equal([]);
    expect(await mountsUnder(path.join(d.runDir, "bundles", h))).to.deep.equal([]);
    expect(existsSync(path.join(d.stateDir, "disks", `${h}.img`)), "disk image").to.equal(false);
    expect(existsSync(path.join(d.runDir, "vms", h)), "agent dir with the dial socket").to.equal(false);
    expect((await run("ip", ["netns", "list"])).stdout).to.not.contain(vmNetnsName(d.tenantId, h));
  });
});
