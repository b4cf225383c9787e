/**
 * A hostile tenant's review: guest root (and the tenant's API access) against the host, on the
 * surfaces added after test/security/boundary-vm.test.ts: secret pushes to running VMs, the
 * guest agent's answers the daemon relays or parses, fs/watch names, per-VM egress counters,
 * and the host services a VM might reach. One REAL daemon (runc, debian-12 image) with two
 * REAL VMs shared by every test:
 *
 *   h1  the attacker: its root takes over its own guest agent (SIGUSR1 opens the agent's
 *       node inspector on the guest's loopback; Runtime.evaluate patches its HTTP server), so
 *       the daemon gets whatever answer guest root writes, with this VM's valid proof
 *   h2  the bystander: it must keep being served, and gets every secret push
 *
 * Every attack sits next to a positive control showing the probe could see it succeed. The
 * test that crashed the daemon before the fix (a status below 100) runs last. The daemon and
 * everything of it are destroyed in `after`, even when a test fails. Needs root and the image.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import WebSocket from "ws";
import { run } from "../../shared/exec.js";
import { PROJECT_ROOT, TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { call, type Answer } from "../integration/agent-fixture.js";
import { INSPECT_CLIENT } from "./agent-takeover.js";

/** A buffered exec result. */
interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
}


/**
 * Evaluated inside h1's agent: its HTTP servers answer, instead of the agent, any request (or
 * upgrade request) whose
 * query has `hostile_status=<3 digits>` (optional `hostile_body`), and any request to a path in
 * `modes` (path → `<3 digits>[:<body>]`), with the raw status line and body guest root chose and
 * this VM's real proof.
 * `101` answers switch protocols and then hold the connection. Returns the counts of hijacked
 * requests per path. `modes` replaces the previous modes.
 */
const hijackExpression = (modes: Record<string, string>): string => String.raw`(() => {
  const rq = process.mainModule.require;
  const http = rq("http"), fs = rq("fs");
  const proof = JSON.parse(fs.readFileSync("/run/paddock-agent/boot.json", "utf8")).agent_proof;
  const g = globalThis;
  g.__hostile ??= { modes: {}, seen: {} };
  g.__hostile.modes = ${JSON.stringify(modes)};
  if (!g.__hostileEmit) {
    g.__hostileEmit = http.Server.prototype.emit;
    http.Server.prototype.emit = function (ev, req) {
      if (ev === "request" || ev === "upgrade") {
        const u = new URL(req.url, "http://agent");
        const mode = g.__hostile.modes[u.pathname];
        const status = u.searchParams.get("hostile_status") ?? mode?.slice(0, 3);
        if (status !== undefined && status !== null) {
          g.__hostile.seen[u.pathname] = (g.__hostile.seen[u.pathname] ?? 0) + 1;
          req.resume();
          const body = u.searchParams.get("hostile_body") ?? mode?.slice(4) ?? "";
          if (status === "101") req.socket.write("HTTP/1.1 101 Switching Protocols\r\nx-paddock-agent-proof: " + proof + "\r\nconnection: upgrade\r\nupgrade: hostile\r\n\r\n");
          else req.socket.end("HTTP/1.1 " + status + " Hostile\r\nx-paddock-agent-proof: " + proof + "\r\ncontent-type: application/json\r\ncontent-length: " + Buffer.byteLength(body) + "\r\nconnection: close\r\n\r\n" + body);
          return true;
        }
      }
      return g.__hostileEmit.apply(this, arguments);
    };
  }
  return JSON.stringify(g.__hostile.seen);
})()`;

/** Entries of a host dir (name → mode, uid, size, mtime, or link target), for before/after comparisons. */
async function snapshotDir(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of ["", ...(await fs.readdir(dir)).sort()]) {
    const s = await fs.lstat(path.join(dir, name));
    out[name || "."] = `mode=${(s.mode & 0o7777).toString(8)} uid=${s.uid} size=${s.size} mtime=${s.mtimeMs}${s.isSymbolicLink() ? ` -> ${await fs.readlink(path.join(dir, name))}` : ""}`;
  }
  return out;
}

/** Poll `probe` until it returns true; fails with `what` after `ms` (a bound for a loaded host, not a speed check). */
async function until(what: string, probe: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** `call`, failing after `ms` instead of hanging (a request the daemon never answers is the bug some tests look for). */
function callWithin(ms: number, socketPath: string, method: string, urlPath: string, body?: string): Promise<Answer> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${method} ${urlPath}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([call(socketPath, method, urlPath, body === undefined ? {} : { body }), timeout]).finally(() => clearTimeout(timer));
}

describeWhenReady(missingPrerequisites(), "security: a hostile tenant's guest root against the host, second review (privileged, real daemon and VMs)", function () {
  this.timeout(90_000);
  let d: TestDaemon | undefined;
  let h1 = "", h2 = "";
  /** h1's address and its gateway (the host side of its veth). */
  let ip1 = "", gw1 = "";
  let agentPid1 = "";

  const daemon = (): TestDaemon => d as TestDaemon;
  const execIn = async (h: string, argv: string[], uid = 0): Promise<ExecResult> => {
    const q = [`cmd=${encodeURIComponent(argv[0] as string)}`, ...argv.slice(1).map((a) => `args=${encodeURIComponent(a)}`), `uid=${uid}`, "buffered=true"].join("&");
    const r = await call(daemon().socketPath, "POST", `/vm/${h}/exec?${q}`);
    if (r.status !== 200) throw new Error(`exec ${argv.join(" ")} in ${h}: HTTP ${r.status} ${r.text}`);
    const j = r.json() as ExecResult;
    return { stdout: String(j.stdout ?? ""), stderr: String(j.stderr ?? ""), exit_code: Number(j.exit_code) };
  };
  const sh = (h: string, script: string): Promise<ExecResult> => execIn(h, ["/bin/sh", "-c", script]);
  /** Run the hijack in h1's agent with `modes`; returns the hijacked request counts per path. */
  const hijack = async (modes: Record<string, string>): Promise<Record<string, number>> => {
    const r = await execIn(h1, ["/.paddock/bin/node", "-e", INSPECT_CLIENT, hijackExpression(modes), agentPid1]);
    expect(r.exit_code, r.stderr).to.equal(0);
    return JSON.parse(JSON.parse(r.stdout) as string) as Record<string, number>;
  };
  const putSecret = async (name: string, data: string): Promise<void> => {
    const r = await call(daemon().socketPath, "POST", "/secrets", { body: JSON.stringify({ name, data: Buffer.from(data).toString("base64"), permissions: "0600" }) });
    expect(r.status, r.text).to.equal(201);
  };
  const secretIn = async (h: string, name: string): Promise<string> => (await sh(h, `cat /run/slicer/secrets/${name} 2>/dev/null || echo absent`)).stdout;

  before(async function () {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    const created = await Promise.all([0, 1].map(async () => {
      const r = await call(daemon().socketPath, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", { body: "{}" });
      expect(r.status, r.text).to.equal(201);
      return r.json() as { hostname: string; ip: string };
    }));
    [h1, h2] = created.map((c) => c.hostname) as [string, string];
    ip1 = (created[0]?.ip ?? "").split("/")[0] as string;
    const o = ip1.split(".").map(Number);
    gw1 = [o[0], o[1], o[2], (o[3] as number) - 1].join(".");
    agentPid1 = (await sh(h1, "for p in /proc/[0-9]*; do grep -q 'agent[.]cjs' $p/cmdline 2>/dev/null && grep -qx node $p/comm && basename $p; done")).stdout.trim().split("\n")[0] ?? "";
    expect(agentPid1).to.match(/^\d+$/);
  });

  after(async function () {
    const dd = d;
    if (dd === undefined) return;
    await dd.destroy();
    const containers = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${dd.tenantId}-`));
    const netns = (await run("ip", ["netns", "list"])).stdout.split("\n").filter((l) => l.includes(dd.tenantId));
    const tables = (await run("nft", ["list", "tables"])).stdout.split("\n").filter((l) => l.includes(dd.tenantId));
    const left = { containers, netns, tables, mounts: await mountsUnder(dd.dir), loops: await loopDevicesUnder(dd.dir) };
    expect(left, "left behind").to.deep.equal({ containers: [], netns: [], tables: [], mounts: [], loops: [] });
  });

  describe("1. what guest root reaches on the host's network side", function () {
    it("a host service on 0.0.0.0 answers at the VM's gateway address from the host, never from the VM (nor on the VM's own loopback)", async () => {
      let fromVm = 0;
      const srv = http.createServer((req, res) => {
        if (req.socket.remoteAddress === ip1) fromVm++;
        res.end("host-service\n");
      });
      await new Promise<void>((resolve) => srv.listen(0, "0.0.0.0", resolve));
      const port = (srv.address() as AddressInfo).port;
      try {
        // Positive control: the service is bound on the gateway address the VM would use.
        const ctl = await new Promise<string>((resolve, reject) => {
          http.get({ host: gw1, port, path: "/" }, (res) => {
            let b = "";
            res.on("data", (c: Buffer) => (b += c.toString()));
            res.on("end", () => resolve(b));
          }).on("error", reject);
        });
        expect(ctl).to.equal("host-service\n");
        const r = await sh(h1, `curl -s --connect-timeout 3 http://${gw1}:${port}/; echo rc=$?; curl -s --connect-timeout 3 http://127.0.0.1:${port}/; echo rc=$?`);
        // 28: the SYN was dropped (timeout); 7: nothing listens on the guest's own loopback.
        expect(r.stdout).to.equal("rc=28\nrc=7\n");
        expect(fromVm).to.equal(0);
      } finally {
        await new Promise((resolve) => srv.close(resolve));
      }
    });

    it("guest root cannot rename, add or delete links, nor make block devices; its egress is counted on the host-side veth under its own name", async () => {
      const r = await sh(h1, [
        "ip link set eth0 name pkdeadbeef0000 2>&1; echo rc=$?",
        "ip link add pkx type dummy 2>&1; echo rc=$?",
        "ip link del eth0 2>&1; echo rc=$?",
        "mknod /tmp/blk b 7 0 2>&1; echo rc=$?",
        // Traffic the host drops at input, but which the host side of the veth still counts.
        `ping -c 3 -i 0.2 -s 1200 -W 1 ${gw1} >/dev/null 2>&1; echo rc=$?`,
        "ip -o link show eth0 | grep -c 'eth0@'",
      ].join("; "));
      const lines = r.stdout.trim().split("\n");
      expect(lines.filter((l) => l.startsWith("rc=")).slice(0, 4), r.stdout).to.deep.equal(["rc=2", "rc=2", "rc=2", "rc=1"]);
      expect(r.stdout.match(/Operation not permitted/g)?.length, r.stdout).to.equal(4);
      // Positive control: ip works in the guest and reads its eth0; ping ran (dropped: rc 1).
      expect(lines.at(-1)).to.equal("1");
      expect(lines.at(-2)).to.equal("rc=1");
      const metrics = (await call(daemon().socketPath, "GET", "/metrics")).text;
      const tx = (h: string): number => Number(new RegExp(`^paddock_vm_egress_tx_bytes\\{[^}]*hostname="${h}"[^}]*\\} (\\d+)$`, "m").exec(metrics)?.[1] ?? -1);
      expect(tx(h1), metrics).to.be.at.least(3 * 1200);
      expect(tx(h2), metrics).to.be.at.least(0).and.below(tx(h1));
    });
  });

  describe("2. the prior review's classes, quickly: nested user namespaces, disk fill, the daemon's files", function () {
    it("no nested user namespace; a 512 MiB fallocate on the 256 MiB disk is ENOSPC in the guest and the host's disk file keeps its size; the daemon's socket and dirs are not in the guest", async () => {
      const r = await sh(h1, [
        "unshare -U true 2>&1; echo rc=$?",
        // Positive control: the disk takes what fits.
        "fallocate -l 16M /root/small 2>&1 && echo small-ok",
        // ext4 keeps what it allocated before ENOSPC: the file is removed afterwards.
        "fallocate -l 512M /root/big 2>&1; echo rc=$?; rm -f /root/small /root/big",
        `test -e '${daemon().socketPath}' || test -e '${daemon().runDir}' || test -e '${daemon().stateDir}'; echo seen=$?`,
      ].join("; "));
      expect(r.stdout).to.match(/^unshare: .*Operation not permitted\nrc=1\nsmall-ok\n/);
      expect(r.stdout, r.stdout).to.match(/No space left on device\nrc=1\nseen=1\n$/);
      const img = await fs.stat(path.join(daemon().stateDir, "disks", `${h1}.img`));
      expect(img.size).to.equal(256 * 1024 * 1024);
      // Positive control: the host does see what the guest looked for.
      await fs.access(daemon().socketPath);
    });
  });

  describe("3. secret pushes cannot be turned onto host-backed paths", function () {
    it("secrets dir → the read-only boot bind or the toolbox: the push fails in the guest, the host dirs stay unchanged; → a guest dir: the files land there (control)", async () => {
      const bootDir = path.join(daemon().runDir, "vms", h2, "boot");
      const toolbox = path.join(PROJECT_ROOT, "dist", "toolbox");
      const before = { boot: await snapshotDir(bootDir), toolbox: await snapshotDir(toolbox) };
      const failuresBefore = (daemon().stderr.match(new RegExp(`secret delivery failed.*"hostname":"${h2}"`, "g")) ?? []).length;
      let n = 0;
      for (const target of ["/run/paddock-agent", "/.paddock/app"]) {
        expect((await sh(h2, `rm -rf /run/slicer/secrets && ln -s ${target} /run/slicer/secrets && readlink /run/slicer/secrets`)).stdout).to.equal(`${target}\n`);
        await putSecret(`sym${n++}`, "x");
        await until(`h2's push into ${target} failed`, () => Promise.resolve((daemon().stderr.match(new RegExp(`secret delivery failed.*"hostname":"${h2}"`, "g")) ?? []).length >= failuresBefore + n));
      }
      expect({ boot: await snapshotDir(bootDir), toolbox: await snapshotDir(toolbox) }).to.deep.equal(before);
      // Positive control: the agent does follow the guest's symlink, inside the guest.
      await sh(h2, "rm -f /run/slicer/secrets && mkdir -p /tmp/guest-secrets && ln -s /tmp/guest-secrets /run/slicer/secrets");
      await putSecret("sym-control", "landed");
      await until("the control secret in the guest dir", async () => (await sh(h2, "cat /tmp/guest-secrets/sym-control 2>/dev/null")).stdout === "landed");
      expect(daemon().child?.exitCode ?? null).to.equal(null);
      await sh(h2, "rm -f /run/slicer/secrets && mkdir /run/slicer/secrets");
    });
  });

  describe("4. fs/watch names a guest crafts", function () {
    it("newlines, CR + a forged SSE line, invalid UTF-8 and 255-byte names arrive as single JSON events under the watched root; a dir moved out is a rename", async () => {
      await sh(h2, "rm -rf /tmp/w /tmp/moved && mkdir -p /tmp/w/sub");
      const long = "L".repeat(255);
      const text = await new Promise<string>((resolve, reject) => {
        const q = "paths=/tmp/w&recursive=true&events=create,rename&debounce=0s&max_events=5&timeout=30s";
        const req = http.get({ socketPath: daemon().socketPath, path: `/vm/${h2}/fs/watch?${q}` }, (res) => {
          if (res.statusCode !== 200) reject(new Error(`watch: HTTP ${res.statusCode}`));
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
          res.on("error", reject);
          // The agent sets the watch up before its 200: make the names now, in this order.
          sh(h2, [
            "cd /tmp/w",
            String.raw`touch "$(printf 'a\nb')"`,
            String.raw`touch "$(printf 'c\r\ndata: {"forged":1}')"`,
            String.raw`touch "$(printf 'bad\377\376')"`,
            `touch ${long}`,
            "mv /tmp/w/sub /tmp/moved",
          ].join(" && ")).then((r) => {
            if (r.exit_code !== 0) reject(new Error(`making names: ${r.stderr}`));
          }, reject);
        });
        req.on("error", reject);
      });
      const blocks = text.split("\n\n").filter((b) => b.trim() !== "" && !b.startsWith(":"));
      const events = blocks.map((b) => {
        const lines = b.split("\n");
        expect(lines.map((l) => l.split(":")[0]), b).to.deep.equal(["id", "event", "data"]);
        const e = JSON.parse((lines[2] as string).slice("data: ".length)) as { type: string; path: string };
        return [e.type, e.path];
      });
      expect(events).to.deep.equal([
        ["create", "/tmp/w/a\nb"],
        ["create", '/tmp/w/c\r\ndata: {"forged":1}'],
        ["create", "/tmp/w/bad\ufffd\ufffd"],
        ["create", `/tmp/w/${long}`],
        ["rename", "/tmp/w/sub"],
      ]);
      expect(text).to.not.match(/^data: \{"forged"/m);
    });
  });

  describe("5. answers of a guest agent its root took over", function () {
    it("positive control: after the takeover, h1's 'agent' answers what guest root writes, with h1's proof, and the daemon relays it", async () => {
      expect(await hijack({})).to.deep.equal({});
      const r = await call(daemon().socketPath, "GET", `/vm/${h1}/health?hostile_status=200&hostile_body=${encodeURIComponent('{"pwned":true}')}`);
      expect({ status: r.status, text: r.text }).to.deep.equal({ status: 200, text: '{"pwned":true}' });
      // h2 still has its own agent.
      expect((await call(daemon().socketPath, "GET", `/vm/${h2}/health`)).json()).to.have.property("agent_uptime");
    });

    it("a 101 to a plain request: the API answers 503 ERR_VM_AGENT_UNAVAILABLE instead of hanging", async () => {
      const r = await callWithin(30_000, daemon().socketPath, "GET", `/vm/${h1}/health?hostile_status=101`);
      expect(r.status, r.text).to.equal(503);
      expect(r.json()).to.have.property("code", "ERR_VM_AGENT_UNAVAILABLE");
    });

    it("a 101 to the stats call: /node/{h}/stats answers with the agent error instead of hanging", async () => {
      await hijack({ "/v1/stats": "101" });
      const r = await callWithin(30_000, daemon().socketPath, "GET", `/node/${h1}/stats`);
      expect(r.status, r.text).to.equal(200);
      expect((r.json() as { error: string }[])[0]?.error, r.text).to.match(/guest agent: .*switched protocols/);
      expect((await hijack({}))["/v1/stats"], "the stats call reached the hijacked agent").to.be.at.least(1);
    });

    it("stats with non-numbers (an object, a string) in the counters: the snapshot keeps numbers and names the bad answer", async () => {
      const bad = { uptimeSeconds: 5, openFiles: 1, openConnections: 1, loadAvg1: { injected: ["x"] }, loadAvg5: 0, loadAvg15: 0, networkReadTotal: "9".repeat(40), networkWriteTotal: 0, entropy: 0 };
      await hijack({ "/v1/stats": `200:${JSON.stringify(bad)}` });
      const r = await callWithin(30_000, daemon().socketPath, "GET", "/nodes/stats");
      expect(r.status, r.text).to.equal(200);
      const stats = r.json() as { hostname: string; error: string; snapshot: Record<string, unknown> }[];
      const s1 = stats.find((s) => s.hostname === h1);
      expect(s1?.error, r.text).to.match(/guest agent stats answer: loadAvg1 is not a number/);
      for (const s of stats) for (const [k, v] of Object.entries(s.snapshot)) if (!["hostname", "arch", "timestamp", "uptime"].includes(k)) expect(typeof v, `${s.hostname} ${k}`).to.equal("number");
      // Positive control: the hijacked agent was asked, and h2's own agent answered.
      expect((await hijack({}))["/v1/stats"]).to.be.at.least(1);
      expect(stats.find((s) => s.hostname === h2)?.error).to.equal("");
    });

    it("a 101 to a secret push: that push fails, and the next push still reaches h1 once its agent answers again (h2 gets both)", async () => {
      await hijack({ "/v1/secrets/sync": "101" });
      await putSecret("held", "one");
      await until("the push reached h1's hijacked agent", async () => ((await hijack({ "/v1/secrets/sync": "101" }))["/v1/secrets/sync"] ?? 0) >= 1);
      await until("h2 got `held` (control)", async () => (await secretIn(h2, "held")) === "one");
      await until("h1's held push failed", () => Promise.resolve(new RegExp(`secret delivery failed.*"hostname":"${h1}"`).test(daemon().stderr)));
      await hijack({});
      await putSecret("after", "two");
      await until("h1 got `after` once its agent answered again", async () => (await secretIn(h1, "after")) === "two");
      expect(await secretIn(h2, "after")).to.equal("two");
    });

    it("a shell upgrade refused with status 099: the client gets 503 ERR_VM_AGENT_UNAVAILABLE, not a malformed status line", async () => {
      const got = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const ws = new WebSocket(`ws+unix://${daemon().socketPath}:/vm/${h1}/shell?uid=0&hostile_status=099&hostile_body=%7B%7D`);
        ws.once("open", () => {
          ws.terminate();
          reject(new Error("the shell opened"));
        });
        ws.once("unexpected-response", (_req: http.ClientRequest, res: http.IncomingMessage) => {
          let body = "";
          res.on("data", (c: Buffer) => (body += c.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        });
        ws.once("error", reject);
      });
      expect(got.status, got.body).to.equal(503);
      expect(got.body).to.contain("ERR_VM_AGENT_UNAVAILABLE");
    });

    it("statuses 099 and 000 on streamed routes are refused with 503; the daemon keeps running and serving h2 (it exited before the fix)", async () => {
      const pid = daemon().child?.pid;
      for (const st of ["099", "000"]) {
        const r = await callWithin(30_000, daemon().socketPath, "GET", `/vm/${h1}/health?hostile_status=${st}`).catch((err: unknown) => ({ status: -1, text: String(err), json: () => ({}) }));
        expect(r.status, `${st}: ${r.text}`).to.equal(503);
        expect(r.json()).to.have.property("code", "ERR_VM_AGENT_UNAVAILABLE");
      }
      expect(daemon().child?.exitCode ?? null, daemon().stderr.slice(-2000)).to.equal(null);
      expect(daemon().child?.pid).to.equal(pid);
      expect((await call(daemon().socketPath, "GET", "/healthz")).status).to.equal(200);
      expect((await execIn(h2, ["hostname"])).stdout.trim()).to.equal(h2);
    });
  });
});
