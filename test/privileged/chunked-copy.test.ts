/**
 * The Go SDK's chunked copy against a real daemon and one real runc VM: the test drives the
 * requests `CpToVMChunked` sends (https://github.com/slicervm/sdk/blob/main/client_cp_chunked.go)
 * over the daemon's HTTP API — `slicer-agent upload check` by buffered exec with `stdio=base64`,
 * each chunk by `POST /vm/{h}/cp?mode=binary&permissions=0600` to
 * `<dest parent>/.slicer-upload-<32 hex>/chunks/NNNNNN.chunk`, `manifest.json`, then `upload
 * finalise` (or `abort`) — and checks the guest half (tenant-daemon/agent/upload.ts): byte-exact
 * multi-chunk files and archives, resume, abort, corrupt chunks, and hostile staging planted by
 * guest root or the copy's own user.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { createTarStream } from "../../tenant-daemon/agent/tar.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";
import { call } from "../integration/agent-fixture.js";

const MiB = 1024 * 1024;
const CHUNK_BYTES = 4 * MiB;
const NON_ROOT = 4294967295;

interface Manifest {
  version: number;
  mode: "binary" | "tar";
  destination: string;
  uid: number;
  gid: number;
  permissions?: string;
  size: number;
  unpacked_size?: number;
  copy_semantics: string;
  source_name: string;
  source_type: string;
  copy_contents?: boolean;
  chunks: { index: number; size: number; sha256: string }[];
}

interface Result {
  stdout: string;
  stderr: string;
  exit_code: number;
}

const sha256 = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/** The SDK's manifest for `data` split into CHUNK_BYTES parts (client_cp_chunked.go). */
function manifestFor(data: Buffer, destination: string, owner: { uid: number; gid: number }, extra: Partial<Manifest> = {}): Manifest {
  const chunks: Manifest["chunks"] = [];
  for (let off = 0; off < data.length; off += CHUNK_BYTES) {
    const part = data.subarray(off, off + CHUNK_BYTES);
    chunks.push({ index: chunks.length, size: part.length, sha256: sha256(part) });
  }
  return { version: 2, mode: "binary", destination, ...owner, permissions: "0755", size: data.length, copy_semantics: "cp-v1", source_name: "tool", source_type: "file", chunks, ...extra };
}

const chunkName = (i: number): string => `${String(i).padStart(6, "0")}.chunk`;

describe("chunked copy: slicer-agent upload check|finalise|abort (privileged)", function () {
  let d: TestDaemon;
  let vm = "";
  let home = "";

  /** `/usr/local/bin/slicer-agent upload …` as the SDK runs it: buffered, base64 stdio, as root. */
  const agent = async (...args: string[]): Promise<Result> => {
    const q = new URLSearchParams({ cmd: "/usr/local/bin/slicer-agent", stdio: "base64" });
    for (const a of args) q.append("args", a);
    q.set("uid", "0");
    q.set("gid", "0");
    q.set("buffered", "true");
    const r = await call(d.socketPath, "POST", `/vm/${vm}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    const j = r.json() as Result & { encoding?: string };
    const dec = (s: string): string => (j.encoding === "base64" ? Buffer.from(s, "base64").toString("utf8") : s);
    return { stdout: dec(j.stdout), stderr: dec(j.stderr), exit_code: j.exit_code };
  };

  /** A shell script in the guest as `uid` (root by default); its stdout. */
  const sh = async (script: string, uid = 0): Promise<string> => {
    const r = await call(d.socketPath, "POST", `/vm/${vm}/exec?cmd=/bin/sh&args=-c&args=${encodeURIComponent(script)}&uid=${uid}&buffered=true`);
    expect(r.status, r.text).to.equal(200);
    return String((r.json() as { stdout: unknown }).stdout);
  };

  /** One chunk (or the manifest) the way the SDK's uploadCopyReader sends it. */
  const put = async (guestPath: string, body: Buffer, uid: number): Promise<void> => {
    const q = new URLSearchParams({ path: guestPath, mode: "binary", permissions: "0600" });
    if (uid !== NON_ROOT) {
      q.set("uid", String(uid));
      q.set("gid", String(uid));
    }
    const r = await call(d.socketPath, "POST", `/vm/${vm}/cp?${q.toString()}`, { body, headers: { "Content-Type": "application/octet-stream", "Content-Length": body.length } });
    expect(r.status, r.text).to.equal(200);
  };

  /** A fresh session path beside `dest` (the SDK's copySessionPath). */
  const sessionFor = (dest: string): string => path.posix.join(path.posix.dirname(dest), `.slicer-upload-${randomBytes(16).toString("hex")}`);

  /** Upload chunks `which` (all by default) of `data`, four at a time, then the manifest. */
  const stage = async (session: string, data: Buffer, m: Manifest, uid: number, which?: number[]): Promise<void> => {
    const todo = which ?? m.chunks.map((c) => c.index);
    for (let i = 0; i < todo.length; i += 4) {
      await Promise.all(todo.slice(i, i + 4).map((n) => put(`${session}/chunks/${chunkName(n)}`, data.subarray(n * CHUNK_BYTES, n * CHUNK_BYTES + (m.chunks[n]?.size ?? 0)), uid)));
    }
    await put(`${session}/manifest.json`, Buffer.from(JSON.stringify(m)), uid);
  };

  const finalise = (session: string, uid: number, gid = uid): Promise<Result> =>
    agent("upload", "finalise", "--manifest", `${session}/manifest.json`, "--uid", String(uid), "--gid", String(gid));
  const abort = (session: string, uid: number): Promise<Result> =>
    agent("upload", "abort", "--manifest", `${session}/manifest.json`, "--uid", String(uid), "--gid", String(uid));
  const check = (session: string, uid: number): Promise<Result> =>
    agent("upload", "check", "--manifest", `${session}/manifest.json`, "--uid", String(uid), "--gid", String(uid));

  before(async function () {
    this.timeout(240_000);
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "512M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
    const r = await call(d.socketPath, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=120s", { body: "{}" });
    expect(r.status, r.text).to.equal(201);
    vm = (r.json() as { hostname: string }).hostname;
    home = (await sh("getent passwd 1000 | cut -d: -f6")).trim();
    expect(home).to.match(/^\/home\//);
  });

  after(async function () {
    this.timeout(120_000);
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => d && id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  it("`upload check` at /usr/local/bin/slicer-agent prints chunked-copy-v2 (the SDK's probe)", async () => {
    const r = await agent("upload", "check");
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(r.stdout.split(/\s+/)).to.include("chunked-copy-v2");
  });

  it("a 12 MiB + 123 B file in 4 MiB chunks lands byte-exact with the owner and mode asked; the staging goes", async function () {
    this.timeout(120_000);
    const data = randomBytes(12 * MiB + 123);
    const dest = `${home}/bin/tool`;
    await sh(`mkdir -p ${home}/bin && chown 1000:1000 ${home}/bin`);
    const session = sessionFor(dest);
    const m = manifestFor(data, dest, { uid: 1000, gid: 1000 });
    expect(m.chunks).to.have.length(4);
    await stage(session, data, m, 1000);
    const r = await finalise(session, 1000);
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(await sh(`sha256sum < ${dest} | cut -d' ' -f1; stat -c '%a %u %g %s' ${dest}; ls -A ${home}/bin`)).to.equal(`${sha256(data)}\n755 1000 1000 ${data.length}\ntool\n`);
  });

  it("resume: `check --manifest` lists the staged chunks, the rest is sent, finalise completes", async function () {
    this.timeout(120_000);
    const data = randomBytes(3 * CHUNK_BYTES + 7);
    const dest = "/root/resumed.bin";
    const session = sessionFor(dest);
    const m = manifestFor(data, dest, { uid: 0, gid: 0 }, { permissions: "0640", source_name: "resumed.bin" });
    await stage(session, data, m, 0, [0, 2]);
    let r = await check(session, 0);
    expect(r.exit_code, r.stderr).to.equal(0);
    const [token, line] = r.stdout.trim().split("\n");
    expect(token).to.equal("chunked-copy-v2");
    expect(JSON.parse(line ?? "")).to.deep.equal({ chunks: 4, valid: [0, 2], missing: [1, 3], invalid: [] });
    r = await finalise(session, 0);
    expect(r.exit_code).to.equal(1);
    expect(r.stderr).to.contain("ERR_CP_CHUNK_INVALID").and.contain("1 missing");
    expect(await sh(`test -e ${dest} && echo present || echo absent`)).to.equal("absent\n");
    await stage(session, data, m, 0, [1, 3]);
    r = await finalise(session, 0);
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(await sh(`sha256sum < ${dest} | cut -d' ' -f1; stat -c '%a %u' ${dest}; ls -A /root | grep -c slicer-upload`)).to.equal(`${sha256(data)}\n640 0\n0\n`);
  });

  it("a corrupted chunk is reported by check, refused by finalise (nothing written), and abort removes the staging", async function () {
    this.timeout(120_000);
    const data = randomBytes(2 * CHUNK_BYTES + 1);
    const dest = "/root/corrupt.bin";
    const session = sessionFor(dest);
    const m = manifestFor(data, dest, { uid: 0, gid: 0 });
    await stage(session, data, m, 0);
    const flipped = Buffer.from(data.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES));
    flipped[1000] = (flipped[1000] ?? 0) ^ 0xff;
    await put(`${session}/chunks/${chunkName(1)}`, flipped, 0);
    let r = await check(session, 0);
    expect(JSON.parse(r.stdout.trim().split("\n")[1] ?? "")).to.deep.equal({ chunks: 3, valid: [0, 2], missing: [], invalid: [1] });
    r = await finalise(session, 0);
    expect(r.exit_code).to.equal(1);
    expect(r.stderr).to.contain("ERR_CP_CHUNK_INVALID").and.contain("1 corrupt");
    expect(await sh(`test -e ${dest} && echo present; ls -A /root | grep -c paddock-upload; ls ${session}/chunks`)).to.equal(`0\n${[0, 1, 2].map(chunkName).join("\n")}\n`);
    r = await abort(session, 0);
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(await sh(`test -e ${session} && echo present || echo gone`)).to.equal("gone\n");
    r = await abort(session, 0);
    expect(r.exit_code, "abort of a session already gone").to.equal(0);
  });

  it("a directory (tar mode, cp-v1) is extracted under <dest>/<source_name> with the owner asked", async function () {
    this.timeout(120_000);
    const src = mkdtempSync(path.join(os.tmpdir(), "pdk-chunked-"));
    try {
      writeFileSync(path.join(src, "a.txt"), "alpha\n");
      writeFileSync(path.join(src, "big.bin"), randomBytes(5 * MiB));
      const parts: Buffer[] = [];
      for await (const c of createTarStream(src, () => false) as AsyncIterable<Buffer>) parts.push(c);
      const tar = Buffer.concat(parts);
      const dest = `${home}/proj`;
      await sh(`mkdir -p ${dest} && chown 1000:1000 ${dest}`);
      const session = sessionFor(dest);
      const m = manifestFor(tar, dest, { uid: NON_ROOT, gid: NON_ROOT }, { mode: "tar", source_type: "directory", source_name: "src", permissions: "", unpacked_size: 5 * MiB + 6 });
      await stage(session, tar, m, NON_ROOT);
      const r = await finalise(session, NON_ROOT);
      expect(r.exit_code, r.stderr).to.equal(0);
      const bigSum = sha256(readFileSync(path.join(src, "big.bin")));
      expect(await sh(`cd ${dest}/src && cat a.txt && sha256sum < big.bin | cut -d' ' -f1 && stat -c '%u %g' a.txt && ls -A ${home} | grep -c slicer-upload`)).to.equal(`alpha\n${bigSum}\n1000 1000\n0\n`);
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });

  it("hostile manifest paths and destinations are refused and write nothing (../, absolute elsewhere, bad names)", async function () {
    this.timeout(120_000);
    // --manifest not naming <dir>/.slicer-upload-<32 hex>/manifest.json, with and without `..`.
    for (const [sub, p] of [["finalise", "/etc/passwd"], ["abort", `/root/.slicer-upload-${"a".repeat(32)}/../../etc/manifest.json`], ["check", "/etc/manifest.json"]] as const) {
      const r = await agent("upload", sub, "--manifest", p, "--uid", "0", "--gid", "0");
      expect(r.exit_code, `${sub} ${p}`).to.equal(1);
      expect(r.stderr).to.contain("ERR_PATH_INVALID");
    }
    // A manifest whose destination is not beside its staging, or whose source_name climbs.
    const data = Buffer.from("owned\n");
    const evil = `/etc/pdk-evil-${randomBytes(4).toString("hex")}`;
    for (const extra of [{ destination: evil }, { destination: `/root/x/../../${evil.slice(1)}` }, { source_name: "../escape" }]) {
      const session = sessionFor("/root/f");
      await stage(session, data, { ...manifestFor(data, "/root/f", { uid: 0, gid: 0 }), ...extra }, 0);
      const r = await finalise(session, 0);
      expect(r.exit_code, JSON.stringify(extra)).to.equal(1);
      expect(r.stderr).to.contain("ERR_CP_MANIFEST_INVALID");
      expect((await abort(session, 0)).exit_code).to.equal(0);
    }
    expect(await sh(`ls ${evil} /escape /root/escape 2>/dev/null; echo end`)).to.equal("end\n");
    expect(existsSync(evil), "nothing on the host either").to.equal(false);
  });

  it("a staging directory that guest root made a symlink is refused by finalise, check and abort (the target survives)", async function () {
    this.timeout(120_000);
    const session = sessionFor("/root/victim-copy");
    // The victim: a directory holding a real manifest and chunk, so a follower would succeed.
    await stage("/root/victim", Buffer.from("v"), manifestFor(Buffer.from("v"), "/root/victim-copy", { uid: 0, gid: 0 }), 0);
    await sh(`ln -s /root/victim ${session}`);
    // Positive control: the planted link resolves, so code that followed it would find a session.
    expect(await sh(`ls ${session}/`)).to.equal("chunks\nmanifest.json\n");
    for (const sub of ["finalise", "check", "abort"]) {
      const r = await agent("upload", sub, "--manifest", `${session}/manifest.json`, "--uid", "0", "--gid", "0");
      expect(r.exit_code, sub).to.equal(1);
      expect(r.stderr).to.contain("symlink").and.contain("ERR_PATH_INVALID");
    }
    expect(await sh(`ls /root/victim; test -e /root/victim-copy && echo copied; test -L ${session} && echo link`)).to.equal("chunks\nmanifest.json\nlink\n");
    await sh(`rm -rf ${session} /root/victim`);
  });

  it("the copy's own user cannot redirect root's write with a symlink at the destination or on its directory", async function () {
    this.timeout(120_000);
    const name = `pdk-planted-${randomBytes(4).toString("hex")}`;
    const data = Buffer.from("planted\n");
    await sh(`ln -sfn /etc ${home}/lnk`, 1000);
    // Positive control: a root-owned copy to the same destination follows the link (cp-v1 puts
    // the file inside an existing directory), so the test can see a write land in /etc.
    let session = sessionFor(`${home}/lnk`);
    await stage(session, data, manifestFor(data, `${home}/lnk`, { uid: 0, gid: 0 }, { source_name: name }), 0);
    let r = await finalise(session, 0);
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(await sh(`cat /etc/${name} && rm /etc/${name}`)).to.equal("planted\n");
    // The same from a staging that uid 1000 owns (it could have written this manifest itself):
    // the link is replaced by the file, /etc untouched.
    session = sessionFor(`${home}/lnk`);
    await stage(session, data, manifestFor(data, `${home}/lnk`, { uid: 1000, gid: 1000 }, { source_name: name }), 1000);
    r = await finalise(session, 1000);
    expect(r.exit_code, r.stderr).to.equal(0);
    expect(await sh(`test -e /etc/${name} && echo leaked; stat -c '%F %u' ${home}/lnk; cat ${home}/lnk`)).to.equal("regular file 1000\nplanted\n");
    // A destination directory reached through a symlink the user swapped in after staging
    // (cp itself refuses to stage through one) is refused.
    session = sessionFor(`${home}/d/${name}`);
    await stage(session, data, manifestFor(data, `${home}/d/${name}`, { uid: 1000, gid: 1000 }, { source_name: name }), 1000);
    await sh(`cd ${home} && mv d d2 && ln -s d2 d`, 1000);
    r = await finalise(session, 1000);
    expect(r.exit_code).to.equal(1);
    expect(r.stderr).to.contain("through a symlink").and.contain("ERR_PATH_INVALID");
    expect((await abort(session, 1000)).exit_code).to.equal(0);
    expect(await sh(`ls -A ${home}/d2; rm -rf ${home}/lnk ${home}/d ${home}/d2; echo end`)).to.equal("end\n");
  });

  it("the copy's own user cannot make root copy out a file it cannot read (symlinked chunk or chunks dir in its staging)", async function () {
    this.timeout(120_000);
    // Root's secret, and a manifest that matches it exactly: only the checks stand between them.
    const secret = Buffer.from(randomBytes(48).toString("hex"));
    await sh(`umask 077; printf %s ${secret.toString()} > /etc/pdk-secret`);
    expect(await sh("cat /etc/pdk-secret >/dev/null 2>&1 && echo readable || echo denied", 1000)).to.equal("denied\n");
    const dest = `${home}/loot`;
    for (const plant of ["ln -sf /etc/pdk-secret $S/chunks/000000.chunk", "rm -rf $S/chunks && mkdir $S/c && ln -s /etc/pdk-secret $S/c/000000.chunk && ln -s c $S/chunks"]) {
      const session = sessionFor(dest);
      const m = manifestFor(secret, dest, { uid: 1000, gid: 1000 }, { source_name: "loot" });
      await stage(session, secret, m, 1000);
      // As uid 1000, the owner of the staging: replace the chunk by a link to root's secret.
      await sh(`S=${session}; ${plant}`, 1000);
      expect(await sh(`cat ${session}/chunks/000000.chunk`), "positive control: root following the link reads the secret").to.equal(secret.toString());
      const r = await finalise(session, 1000);
      expect(r.exit_code, plant).to.equal(1);
      expect(r.stderr).to.match(/ERR_CP_CHUNK_INVALID|ERR_PATH_INVALID|EACCES/);
      expect(await sh(`test -e ${dest} && echo leaked || echo safe`)).to.equal("safe\n");
      expect((await abort(session, 1000)).exit_code).to.equal(0);
      expect(await sh(`ls -A ${home} | grep -c slicer-upload; cat /etc/pdk-secret`)).to.equal(`0\n${secret.toString()}`);
    }
    await sh("rm -f /etc/pdk-secret");
  });
});
