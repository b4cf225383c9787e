/**
 * Cold fork against a real tenant daemon with real runc VMs: `POST /vm/{h}/commit`,
 * `GET /vm/commits`, `DELETE /vm/commits/{id}`, `POST /vm/commits/{id}/fork`, in the shapes of
 * Slicer's Go SDK (https://github.com/slicervm/sdk types.go SlicerCommitVMResponse,
 * SlicerCommitInfo, SlicerCommitDeleteResponse, SlicerForkVMResponse, SlicerVMDescription).
 * One tenant; the VMs are reused from test to test (the tests run in order).
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import path from "node:path";
import { parse, stringify } from "yaml";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { SseClient } from "../helpers/sse.js";

const MiB = 2 ** 20;
const STORAGE = 128 * MiB;

interface Json { [k: string]: unknown }

describe("cold fork: commit, list, delete and fork commits (privileged, real daemon and runc)", function () {
  this.timeout(300_000);
  let d: TestDaemon;
  let commitId = "";

  const json = (r: { json: unknown }): Json => r.json as Json;
  /** Run `script` in VM `h` as root; its stdout. */
  const sh = async (h: string, script: string): Promise<string> => {
    const q = new URLSearchParams({ cmd: "/bin/sh", uid: "0", buffered: "true" });
    q.append("args", "-c");
    q.append("args", script);
    const r = await d.post(`/vm/${h}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const out = json(r);
    expect(out.exit_code, String(out.stderr)).to.equal(0);
    return String(out.stdout);
  };
  const expectError = (r: { status: number; text: string; json: unknown }, status: number, code: string): void => {
    expect(r.status, r.text).to.equal(status);
    expect(json(r).code, r.text).to.equal(code);
  };
  const nodes = async (): Promise<string[]> => ((await d.get("/nodes")).json as Json[]).map((n) => String(n.hostname)).sort();
  const disks = async (): Promise<string[]> => (await fs.readdir(path.join(d.stateDir, "disks"))).filter((f) => f.endsWith(".img")).sort();

  before(async () => {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 2, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
      // Room for three VMs and small commits, not for a fourth VM.
      paddock: { limits: { max_disk_bytes: 3 * STORAGE + 64 * MiB } },
    });
    await d.start();
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=2m", { tags: ["src=1", "name=origin"], persistent: true });
    expect(r.status, r.text).to.equal(201);
    await sh("sbox-1", "echo parent-v1 > /root/marker && echo 0123456789abcdef0123456789abcdef > /etc/machine-id");
  });

  after(async () => {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  it("commits a running VM: the SDK's response shape, parent_status running, and the VM runs on", async () => {
    const r = await d.post("/vm/sbox-1/commit", { tags: ["role=base", "t2"], labels: { team: "a" }, cache_key: " k1 " });
    expect(r.status, r.text).to.equal(200);
    const c = json(r);
    expect(Object.keys(c).sort()).to.deep.equal(["cache_key", "commit_id", "hostname", "labels", "mode", "parent_status", "status", "tags"]);
    expect(c.hostname).to.equal("sbox-1");
    expect(c.commit_id).to.match(/^cmt-[0-9a-f]{16}$/);
    expect(c.status).to.equal("committed");
    expect(c.parent_status).to.equal("running");
    expect(c.mode).to.equal("disk");
    expect(c.tags).to.deep.equal(["role=base", "t2"]);
    expect(c.labels).to.deep.equal({ team: "a" });
    expect(c.cache_key).to.equal("k1");
    commitId = String(c.commit_id);
    expect(json(await d.get("/vm/sbox-1")).status).to.equal("Running");
    expect(await sh("sbox-1", "cat /root/marker")).to.equal("parent-v1\n");
    expect(json(await d.get("/vm/sbox-1")).commit_id).to.equal(commitId);
    // A second commit claiming the same cache key is refused.
    expectError(await d.post("/vm/sbox-1/commit", { cache_key: "k1" }), 409, "ERR_COMMIT_CACHE_KEY_TAKEN");
  });

  it("lists commits in the SDK's shape and filters by tag (repeated), cache_key, source and mode", async () => {
    const all = (await d.get("/vm/commits")).json as Json[];
    expect(all).to.have.length(1);
    const e = all[0] as Json;
    expect(Object.keys(e).sort()).to.deep.equal(["cache_key", "commit_id", "created_at", "labels", "mode", "source_host_group", "source_hostname", "tags"]);
    expect(e).to.include({ commit_id: commitId, source_hostname: "sbox-1", source_host_group: "sbox", mode: "disk", cache_key: "k1" });
    expect(Number.isNaN(Date.parse(String(e.created_at)))).to.equal(false);
    expect(e.tags).to.deep.equal(["role=base", "t2"]);
    expect(e.labels).to.deep.equal({ team: "a" });
    const count = async (q: string): Promise<number> => {
      const r = await d.get(`/vm/commits?${q}`);
      expect(r.status, r.text).to.equal(200);
      return (r.json as unknown[]).length;
    };
    expect(await count("tag=role%3Dbase")).to.equal(1);
    expect(await count("tag=role%3Dbase&tag=t2")).to.equal(1);
    expect(await count("tag=role%3Dbase&tag=nope")).to.equal(0);
    expect(await count("cache_key=k1")).to.equal(1);
    expect(await count("cache_key=k2")).to.equal(0);
    expect(await count("source=sbox-1")).to.equal(1);
    expect(await count("source=sbox-9")).to.equal(0);
    expect(await count("mode=disk")).to.equal(1);
    expect(await count("mode=memory")).to.equal(0);
  });

  it("forks (wait=agent): the SDK's response, its own name, address, disk and machine-id, the marker file, and its lineage", async () => {
    const events = await SseClient.open({ socketPath: d.socketPath });
    const r = await d.post(`/vm/commits/${commitId}/fork?wait=agent&timeout=2m0s`, { tags: ["child=1"], network: { allow: [] } });
    expect(r.status, r.text).to.equal(200);
    try {
      // A client following GET /events sees the fork come, as it sees a create.
      expect((await events.waitFor((e) => e.event === "created" && e.json?.hostname === "sbox-2", 30_000)).json).to.include({ reason: "api" });
      expect((await events.waitFor((e) => e.event === "ready" && e.json?.hostname === "sbox-2", 30_000)).json).to.include({ reason: "agent" });
    } finally {
      events.close();
    }
    expect(json(r)).to.deep.equal({
      hostname: "sbox-2", source_hostname: "sbox-1", commit_id: commitId, status: "forked", parent_status: "running",
      child_status: "running", mode: "disk", persistent: true,
    });
    expect(await sh("sbox-2", "cat /root/marker")).to.equal("parent-v1\n");
    expect((await sh("sbox-2", "hostname")).trim()).to.equal("sbox-2");
    expect((await sh("sbox-2", "cat /etc/machine-id")).trim()).to.match(/^[0-9a-f]{32}$/).and.not.equal("0123456789abcdef0123456789abcdef");
    const parent = json(await d.get("/vm/sbox-1"));
    const child = json(await d.get("/vm/sbox-2"));
    expect(child.ip).to.be.a("string").and.not.equal("").and.not.equal(parent.ip);
    expect(child.parent_commit_id).to.equal(commitId);
    expect(child.commit_id).to.equal("");
    expect(parent.parent_commit_id).to.equal("");
    // Inherited tags without the source's unique name= tag, plus the fork's own.
    expect(child.tags).to.deep.equal(["src=1", "child=1"]);
    expect((child.network as Json).override).to.deep.equal({ allow: [] });
    expect(await disks()).to.deep.equal(["sbox-1.img", "sbox-2.img"]);
    const [a, b] = await Promise.all(["sbox-1.img", "sbox-2.img"].map((f) => fs.stat(path.join(d.stateDir, "disks", f))));
    expect(a?.ino).to.not.equal(b?.ino);
  });

  it("parent and fork do not see each other's later writes", async () => {
    await sh("sbox-1", "echo parent-v2 > /root/marker");
    await sh("sbox-2", "echo fork-v2 > /root/marker; echo only-fork > /root/fork-file");
    expect(await sh("sbox-1", "cat /root/marker; test -e /root/fork-file && echo leaked || true")).to.equal("parent-v2\n");
    expect(await sh("sbox-2", "cat /root/marker")).to.equal("fork-v2\n");
  });

  it("forks with wait=none and every body field: replaced tags, no persistence, its size, fixups", async () => {
    const r = await d.post(`/vm/commits/${commitId}/fork?wait=none`, {
      tags: ["only=1"], tag_mode: "replace", persistent: false, fixups: ["hostname"], vcpu: 1, ram_bytes: 128 * MiB, secrets: [],
    });
    expect(r.status, r.text).to.equal(200);
    const f = json(r);
    expect(f).to.include({ hostname: "sbox-3", status: "forked", persistent: false, commit_id: commitId });
    const g = json(await d.get("/vm/sbox-3"));
    expect(g).to.include({ persistent: false, cpus: 1, ram_bytes: 128 * MiB, parent_commit_id: commitId });
    expect(g.tags).to.deep.equal(["only=1"]);
    // fixups without machine-id: the committed machine-id is kept.
    let id = "";
    for (let i = 0; i < 300 && id === ""; i++) {
      const q = new URLSearchParams({ cmd: "cat", args: "/etc/machine-id", buffered: "true" });
      const e = await d.post(`/vm/sbox-3/exec?${q.toString()}`);
      if (e.status === 200 && json(e).exit_code === 0) id = String(json(e).stdout).trim();
      else await new Promise((res) => setTimeout(res, 100));
    }
    expect(id).to.equal("0123456789abcdef0123456789abcdef");
  });

  it("a fork past the tenant's disk limit is refused with its code and leaves nothing", async () => {
    const before = { nodes: await nodes(), disks: await disks() };
    expectError(await d.post(`/vm/commits/${commitId}/fork?wait=agent`, {}), 403, "ERR_LIMIT_EXCEEDED");
    expect(await nodes()).to.deep.equal(before.nodes);
    expect(await disks()).to.deep.equal(before.disks);
    expect((await d.get("/vm/commits")).json as unknown[]).to.have.length(1);
  });

  it("bad fields and unknown commits get their codes", async () => {
    const fork = (q: string, body: unknown): Promise<{ status: number; text: string; json: unknown }> => d.post(`/vm/commits/${commitId}/fork${q}`, body);
    expectError(await fork("", { fixups: ["machine-id"] }), 501, "ERR_FIELD_UNSUPPORTED");
    expectError(await fork("", { fixups: ["hostname", "bogus"] }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { tag_mode: "merge" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { persistent: "yes" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { hostname: "mine" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { network: "open" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { secrets: "all" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await fork("", { vcpu: 99 }), 400, "ERR_VM_SIZE_EXCEEDED");
    expectError(await fork("", { ram_bytes: 2 ** 40 }), 400, "ERR_VM_SIZE_EXCEEDED");
    expectError(await fork("", { tags: ["name=origin"] }), 409, "ERR_VM_NAME_TAKEN");
    expectError(await fork("?wait=userdata", {}), 400, "ERR_QUERY_INVALID");
    expectError(await fork("?timeout=soon", {}), 400, "ERR_QUERY_INVALID");
    expectError(await d.post("/vm/sbox-1/commit", { labels: { a: 1 } }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await d.post("/vm/sbox-1/commit", { cache_key: 5 }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await d.post("/vm/sbox-1/commit", { tags: "x" }), 400, "ERR_COMMIT_INVALID_REQUEST");
    expectError(await d.post("/vm/sbox-9/commit", {}), 404, "ERR_VM_NOT_FOUND");
    expectError(await d.post("/vm/commits/cmt-0000000000000000/fork", {}), 404, "ERR_COMMIT_NOT_FOUND");
    expectError(await d.del("/vm/commits/nonsense"), 404, "ERR_COMMIT_NOT_FOUND");
    expect(await nodes()).to.deep.equal(["sbox-1", "sbox-2", "sbox-3"]);
    expect((await d.get("/vm/commits")).json as unknown[]).to.have.length(1);
  });

  it("commits survive a restart; deleting one is refused while its VMs exist, then removes its files and its bytes from the disk limit", async () => {
    expectError(await d.del(`/vm/commits/${commitId}`), 409, "ERR_COMMIT_IN_USE");
    for (const h of ["sbox-3", "sbox-1"]) expect((await d.del(`/hostgroup/sbox/nodes/${h}`)).status).to.equal(200);
    expectError(await d.del(`/vm/commits/${commitId}`), 409, "ERR_COMMIT_IN_USE");
    // Restart with a disk limit that one new VM fits only without the commit.
    const commitDir = path.join(d.stateDir, "commits", commitId);
    const commitBytes = (await fs.stat(path.join(commitDir, "disk.img"))).blocks * 512;
    expect(await d.stop()).to.equal(0);
    const cfg = parse(await fs.readFile(d.configPath, "utf8")) as { paddock: { limits: Record<string, number> } };
    cfg.paddock.limits.max_disk_bytes = STORAGE + commitBytes - 1;
    await fs.writeFile(d.configPath, stringify(cfg));
    await d.start();
    const listed = (await d.get("/vm/commits")).json as Json[];
    expect(listed.map((c) => c.commit_id)).to.deep.equal([commitId]);
    expect(json(await d.get("/vm/sbox-2")).parent_commit_id).to.equal(commitId);
    expect(await sh("sbox-2", "cat /root/marker")).to.equal("fork-v2\n");
    expect((await d.del("/hostgroup/sbox/nodes/sbox-2")).status).to.equal(200);
    expectError(await d.post("/hostgroup/sbox/nodes", {}), 403, "ERR_LIMIT_EXCEEDED");
    const del = await d.del(`/vm/commits/${commitId}`);
    expect(del.status, del.text).to.equal(200);
    expect(json(del)).to.deep.equal({ commit_id: commitId, status: "deleted" });
    expect(await fs.stat(commitDir).then(() => "exists", () => "gone")).to.equal("gone");
    expect((await d.get("/vm/commits")).json).to.deep.equal([]);
    expectError(await d.post(`/vm/commits/${commitId}/fork?wait=agent`, {}), 404, "ERR_COMMIT_NOT_FOUND");
    const created = await d.post("/hostgroup/sbox/nodes", {});
    expect(created.status, created.text).to.equal(201);
  });
});
