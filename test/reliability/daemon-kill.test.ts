/**
 * Reliability: kill -9 of a tenant daemon during a create, a delete, an exec stream
 * and a cp upload. After the restart: no orphan container, mount, loop device, link, netns or
 * table beyond the surviving persistent VM's; the persistent VM is intact (same sandbox pid);
 * the interrupted client call failed cleanly (a socket error, never a hang or a 2xx with a
 * half body); the state file is valid JSON of schema 1. Real runc VMs, real kill -9.
 */
import http from "node:http";
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { checkDaemonState, expectNoLeaks, hostLeftoversUnder, leaksOf, until } from "./helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

interface Node { hostname: string; status: string }

/** Send a request on the daemon socket; resolve with what happened (never rejects). */
function pending(socketPath: string, method: string, p: string, body?: (req: http.ClientRequest) => void): { done: Promise<{ outcome: "response" | "error"; status?: number; text: string; err?: string }>; firstByte: Promise<void> } {
  let firstByte!: () => void;
  const fb = new Promise<void>((r) => (firstByte = r));
  const done = new Promise<{ outcome: "response" | "error"; status?: number; text: string; err?: string }>((resolve) => {
    let text = "";
    const req = http.request({ socketPath, method, path: p }, (res) => {
      res.on("data", (c: Buffer) => {
        text += c.toString();
        firstByte();
      });
      res.on("end", () => resolve({ outcome: "response", status: res.statusCode, text }));
      res.on("error", (e) => resolve({ outcome: "error", status: res.statusCode, text, err: e.message }));
      res.on("aborted", () => resolve({ outcome: "error", status: res.statusCode, text, err: "aborted" }));
    });
    req.on("error", (e) => resolve({ outcome: "error", text, err: e.message }));
    if (body) body(req);
    else req.end();
  });
  return { done, firstByte: fb };
}

describeWhenReady(missingPrerequisites(), "reliability: kill -9 of a tenant daemon mid-operation", function () {
  this.timeout(240_000);
  let d: TestDaemon;
  let ctrlPid = 0;

  const nodes = async (): Promise<Node[]> => (await d.get("/nodes")).json as Node[];
  /** The sandbox's init pid from `runc state` (a re-attached VM keeps it; a rebooted one does not). */
  const sandboxPid = async (h: string): Promise<number> => {
    const r = await execa("runc", ["state", `pdk-${d.tenantId}-${h}`], { reject: false });
    return r.exitCode === 0 ? (JSON.parse(r.stdout) as { pid: number }).pid : 0;
  };

  /** Leftovers that do not belong to the surviving ctrl-1 or the running daemon's table. */
  const unexpected = async (): Promise<string[]> => {
    const lines = await expectNoLeaks(d.tenantId, [d.dir]);
    return lines.filter((l) => !/ctrl-1\b/.test(l) && !/^nft\s/.test(l));
  };

  const restartAndCheck = async (): Promise<void> => {
    await d.start();
    const list = await nodes();
    expect(list.map((n) => `${n.hostname}:${n.status}`), "only the persistent ctrl-1 survives").to.deep.equal(["ctrl-1:Running"]);
    expect(await sandboxPid("ctrl-1"), "ctrl-1 kept its sandbox (re-attached, not rebooted)").to.equal(ctrlPid);
    const st = checkDaemonState(await fs.readFile(path.join(d.stateDir, "state.json"), "utf8"), d.tenantId);
    expect(Object.keys(st.vms)).to.deep.equal(["ctrl-1"]);
    expect(await unexpected(), "orphans after restart").to.deep.equal([]);
    const probe = await d.post("/vm/ctrl-1/exec?cmd=echo&args=alive&buffered=true");
    expect(probe.status, probe.text).to.equal(200);
    expect(probe.text).to.include("alive");
  };

  before(async () => {
    const r1 = randomIsolatedRange();
    let r2 = randomIsolatedRange();
    while (r2 === r1) r2 = randomIsolatedRange();
    d = await TestDaemon.create({
      hostGroups: [
        { name: "ctrl", count: 1, persistent: true, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: r1 } },
        { name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: r2 } },
      ],
    });
    await d.start();
    await until("ctrl-1 agent", async () => ((await d.get("/vm/ctrl-1/health")).status === 200 ? true : undefined), 60_000);
    ctrlPid = await sandboxPid("ctrl-1");
    expect(ctrlPid).to.be.greaterThan(0);
  });

  after(async () => {
    if (!d) return;
    await d.destroy();
    const left = await leaksOf(d.tenantId);
    expect(left, "leaks.sh after destroy").to.deep.equal([]);
    expect(await hostLeftoversUnder(d.dir)).to.deep.equal([]);
  });

  it("during a create (after its disk is mounted): the call fails, the half-made VM is removed", async () => {
    for (let attempt = 1; ; attempt++) {
      const call = pending(d.socketPath, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=60s", (req) => req.end("{}"));
      // Kill once the create is provably half way: its overlay rootfs is mounted.
      await until("sbox mount", async () => ((await hostLeftoversUnder(d.dir)).some((l) => l.includes("/bundles/sbox-") || l.includes("sbox-")) ? true : undefined), 30_000, 10);
      await d.kill9();
      const r = await call.done;
      // On a loaded host the create can finish between seeing the mount and the kill landing: that
      // run did not kill a create half way, so the VM goes with the restart and the test tries
      // again (a create that completed is an ephemeral VM, removed at the restart like any other).
      if (r.outcome === "response" && r.status === 201 && attempt < 3) {
        console.log(`      attempt ${attempt}: the create answered 201 before the kill landed; again`);
        await restartAndCheck();
        continue;
      }
      expect(r.outcome, `client saw ${JSON.stringify(r)}`).to.equal("error");
      await restartAndCheck();
      break;
    }
  });

  it("during a delete (after its sandbox stopped): the call gets a reset or a full 200, the VM is gone after the restart", async () => {
    const c = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=60s", {});
    expect(c.status, c.text).to.be.oneOf([200, 201]);
    const h = (c.json as { hostname: string }).hostname;
    const call = pending(d.socketPath, "DELETE", `/hostgroup/sbox/nodes/${h}`);
    // Kill once the delete is provably under way: its sandbox left "running" (the teardown's
    // first step, tenant-daemon/vm/vm-service.ts `teardown`); destroy, links, mounts and the
    // state write are still ahead of the answer.
    const seen = await until("delete under way", async () => {
      const r = await execa("runc", ["state", `pdk-${d.tenantId}-${h}`], { reject: false });
      const status = r.exitCode === 0 ? (JSON.parse(r.stdout) as { status: string }).status : "absent";
      return status === "running" ? undefined : status;
    }, 30_000, 5);
    await d.kill9();
    const r = await call.done;
    console.log(`      killed with the sandbox ${seen}; the client saw ${r.outcome === "response" ? `${r.status ?? "?"}` : `an error (${r.err ?? "?"})`}`);
    // Either the daemon died before answering (the connection is cut), or it had answered in full.
    if (r.outcome === "error") {
      expect(r.status, "no status line before the cut").to.equal(undefined);
      expect(r.err).to.match(/socket hang up|ECONNRESET/);
    } else {
      expect({ status: r.status, body: JSON.parse(r.text) as unknown }).to.deep.equal({ status: 200, body: { message: "VM deleted successfully", disk_removed: "true", error: "" } });
    }
    await restartAndCheck();
  });

  it("during an exec stream on the persistent VM: the stream breaks, the guest process is gone, the VM stays", async () => {
    const marker = `31${Math.floor(Math.random() * 1000)}7`;
    const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", `echo started; exec sleep ${marker}`]]);
    const call = pending(d.socketPath, "POST", `/vm/ctrl-1/exec?${q}`);
    await call.firstByte;
    await d.kill9();
    const r = await call.done;
    expect(r.outcome, JSON.stringify(r)).to.equal("error");
    expect(r.text).to.include("started");
    await restartAndCheck();
    // The agent saw its client go away and killed the command (no orphan process in the VM).
    const ps = await until("sleep gone", async () => {
      const x = await d.post(`/vm/ctrl-1/exec?${new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"]])}&buffered=true`);
      return x.status === 200 && !x.text.includes(`sleep ${marker}`) ? x.text : undefined;
    }, 20_000, 500);
    expect(ps).to.not.include(`sleep ${marker}`);
  });

  it("during a cp upload to the persistent VM: the upload fails, no partial file is left in the guest", async () => {
    const call = pending(d.socketPath, "POST", "/vm/ctrl-1/cp?path=%2Froot%2Fbig.bin&mode=binary", (req) => {
      req.setHeader("content-type", "application/octet-stream");
      req.setHeader("transfer-encoding", "chunked");
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      const pump = (): void => {
        if (req.destroyed || sent > 3000) return;
        sent++;
        req.write(chunk, () => setTimeout(pump, 20));
      };
      pump();
    });
    // Kill while bytes are flowing into the guest's temp file.
    void call.done.then((x) => { if (x.outcome === "response") console.log("      upload answered early:", x.status, x.text.slice(0, 300)); });
    await until("upload temp file", async () => {
      const x = await d.post(`/vm/ctrl-1/exec?${new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", "ls -a /root"]])}&buffered=true&uid=0`);
      return x.text.includes(".paddock-upload-") ? true : undefined;
    }, 30_000, 50);
    await d.kill9();
    const r = await call.done;
    expect(r.outcome === "error" || (r.status ?? 0) >= 400, JSON.stringify(r)).to.equal(true);
    await restartAndCheck();
    const ls = await until("temp file removed", async () => {
      const x = await d.post(`/vm/ctrl-1/exec?${new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", "ls -a /root"]])}&buffered=true&uid=0`);
      return x.status === 200 && !x.text.includes(".paddock-upload-") ? x.text : undefined;
    }, 20_000, 300);
    expect(ls).to.not.include("big.bin");
  });
});
