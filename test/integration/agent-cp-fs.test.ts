/**
 * Guest agent cp and fs (`/v1/cp`, `/v1/fs/…`) over its real socket: 200 MB binary both
 * ways with bounded agent memory, tar directory copies both ways (checked with GNU tar),
 * cp-v1 destination rules and headers, unsafe tar entries, mkdir/readdir/stat/remove, and the
 * secrets sync endpoint.
 */
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, mkdirSync, readFileSync, statSync, writeFileSync, existsSync, openSync, writeSync, closeSync, readdirSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { until } from "../helpers/wait.js";
import { call, peakRssBytes, startTestAgent, type TestAgent } from "./agent-fixture.js";

function sha256File(file: string): string {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

describe("guest agent: cp and fs", function () {
  let agent: TestAgent;
  let work: string;
  before(async () => {
    agent = await startTestAgent();
    work = path.join(agent.dir, "work");
    mkdirSync(work);
  });
  after(async () => {
    await agent?.stop();
  });

  it("copies a 200 MB file in and out byte-identically with bounded agent memory", async function () {
    const src = path.join(agent.dir, "big.src");
    const fd = openSync(src, "w");
    const chunk = randomBytes(1 << 20);
    for (let i = 0; i < 200; i++) {
      chunk.writeUInt32LE(i, 0);
      writeSync(fd, chunk);
    }
    closeSync(fd);
    const want = sha256File(src);
    const dest = path.join(work, "big.bin");
    const up = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=binary&uid=0&gid=0&permissions=0640`, {
      body: createReadStream(src),
      headers: { "Content-Type": "application/octet-stream", "Transfer-Encoding": "chunked" },
    });
    expect(up.status, up.text).to.equal(200);
    expect(sha256File(dest)).to.equal(want);
    expect(statSync(dest).mode & 0o777).to.equal(0o640);

    const hash = createHash("sha256");
    let headers: http.IncomingHttpHeaders = {};
    await new Promise<void>((resolve, reject) => {
      http
        .get({ socketPath: agent.socket, path: `/v1/cp?path=${encodeURIComponent(dest)}` }, (res) => {
          headers = res.headers;
          res.on("data", (c: Buffer) => hash.update(c));
          res.on("end", resolve);
          res.on("error", reject);
        })
        .on("error", reject);
    });
    expect(hash.digest("hex")).to.equal(want);
    expect(headers["x-slicer-file-mode"]).to.equal("0640");
    const peak = peakRssBytes(agent.proc.pid as number);
    console.log(`      agent peak RSS after 200 MB in/out: ${(peak / 1024 / 1024).toFixed(1)} MiB`);
    expect(peak).to.be.lessThan(160 * 1024 * 1024);
  });

  it("a binary upload cut off mid-body leaves neither the file nor its temp file (seen while it ran)", async () => {
    const dir = path.join(work, "cut");
    mkdirSync(dir);
    const req = http.request({ socketPath: agent.socket, method: "POST", path: `/v1/cp?path=${encodeURIComponent(path.join(dir, "f.bin"))}&mode=binary&uid=0`, headers: { "Transfer-Encoding": "chunked" } });
    const answered = new Promise<void>((resolve) => {
      req.on("error", () => resolve());
      req.on("response", (r) => {
        r.resume();
        resolve();
      });
    });
    req.write(randomBytes(1 << 20));
    // Positive control: the upload's temp file exists while the body is still coming.
    await until("the upload's temp file", async () => (readdirSync(dir).some((n) => n.startsWith(".paddock-upload-")) ? true : undefined), 20_000, 20);
    req.destroy();
    await answered;
    await until("the temp file removed", async () => (readdirSync(dir).length === 0 ? true : undefined), 20_000, 20);
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it("chowns uploads to the default user and keeps the mode when overwriting", async () => {
    const f = path.join(work, "owned.txt");
    expect((await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(f)}`, { body: "one" })).status).to.equal(200);
    let st = statSync(f);
    expect([st.uid, st.gid, st.mode & 0o777]).to.deep.equal([65534, 65534, 0o644]);
    execFileSync("chmod", ["0600", f]);
    await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(f)}&uid=0&gid=0`, { body: "two" });
    st = statSync(f);
    expect([st.uid, st.mode & 0o777]).to.deep.equal([0, 0o600]);
    expect(readFileSync(f, "utf8")).to.equal("two");
    // Bad query values are ERR_QUERY_INVALID, whichever parameter.
    for (const q of ["permissions=999", "uid=abc"]) {
      const bad = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(f)}&${q}`, { body: "three" });
      expect([bad.status, (JSON.parse(bad.text) as { code?: string }).code], q).to.deep.equal([400, "ERR_QUERY_INVALID"]);
    }
    expect(readFileSync(f, "utf8")).to.equal("two");
  });

  it("copies a directory tree in and out as tar (GNU tar on the other side)", async () => {
    const tree = path.join(agent.dir, "tree");
    mkdirSync(path.join(tree, "sub", "deep"), { recursive: true });
    writeFileSync(path.join(tree, "a.txt"), "alpha\n");
    writeFileSync(path.join(tree, "sub", "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
    writeFileSync(path.join(tree, "sub", "deep", "x".repeat(120)), "long name\n");
    writeFileSync(path.join(tree, "skip.log"), "excluded\n");
    // Over the extractor's 1 MiB write batch and not a multiple of it (tar.ts WriteBehind).
    const big = randomBytes(3 * (1 << 20) + 123);
    writeFileSync(path.join(tree, "sub", "big.bin"), big);
    const tarBuf = execFileSync("tar", ["-c", "-f", "-", "-C", tree, "."], { maxBuffer: 64 << 20 });
    const dest = path.join(work, "tree-in");
    const up = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar&exclude=*.log`, {
      body: tarBuf,
      headers: { "Content-Type": "application/x-tar" },
    });
    expect(up.status, up.text).to.equal(200);
    expect(readFileSync(path.join(dest, "a.txt"), "utf8")).to.equal("alpha\n");
    expect(statSync(path.join(dest, "sub", "run.sh")).mode & 0o777).to.equal(0o755);
    expect(readFileSync(path.join(dest, "sub", "deep", "x".repeat(120)), "utf8")).to.equal("long name\n");
    expect(existsSync(path.join(dest, "skip.log"))).to.equal(false);
    expect(statSync(path.join(dest, "a.txt")).uid).to.equal(65534);
    expect(readFileSync(path.join(dest, "sub", "big.bin")).equals(big)).to.equal(true);

    const down = await call(agent.socket, "GET", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`);
    expect(down.status).to.equal(200);
    expect(down.headers["content-type"]).to.equal("application/x-tar");
    expect(down.body.length).to.be.greaterThan(512);
    expect(down.body.subarray(257, 262).toString()).to.equal("ustar");
    const out = path.join(agent.dir, "tree-out");
    mkdirSync(out);
    execFileSync("tar", ["-x", "-f", "-", "-C", out], { input: down.body });
    expect(readFileSync(path.join(out, "sub", "deep", "x".repeat(120)), "utf8")).to.equal("long name\n");
    expect(readFileSync(path.join(out, "a.txt"), "utf8")).to.equal("alpha\n");
    const names = execFileSync("tar", ["-t", "-f", "-"], { input: down.body }).toString().split("\n");
    expect(names).to.include("a.txt");
    expect(names).to.include("sub/");
    expect(names.every((n) => !n.startsWith("/") && !n.startsWith("./"))).to.equal(true);
  });

  it("rejects tar entries that escape the destination", async () => {
    const evilDir = path.join(agent.dir, "evil");
    mkdirSync(evilDir);
    writeFileSync(path.join(evilDir, "x"), "x");
    const tarBuf = execFileSync("tar", ["-c", "-f", "-", "-C", evilDir, "-P", "--transform", "s,^x$,../escaped,", "x"]);
    const dest = path.join(work, "evil-dest");
    const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`, { body: tarBuf });
    expect(r.status).to.equal(400);
    expect(existsSync(path.join(work, "escaped"))).to.equal(false);
  });

  it("never follows a symlink inside the destination while extracting", async () => {
    const dest = path.join(work, "symdest");
    mkdirSync(dest);
    const outside = path.join(agent.dir, "outside");
    mkdirSync(outside);
    execFileSync("ln", ["-s", outside, path.join(dest, "link")]);
    const src = path.join(agent.dir, "symsrc");
    mkdirSync(path.join(src, "link"), { recursive: true });
    writeFileSync(path.join(src, "link", "f"), "x");
    const tarBuf = execFileSync("tar", ["-c", "-f", "-", "-C", src, "link/f"]);
    const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`, { body: tarBuf });
    expect(r.status).to.equal(400);
    expect(readdirSync(outside)).to.deep.equal([]);
  });

  it("implements cp-v1 destinations and metadata headers", async () => {
    const dir = path.join(work, "v1");
    mkdirSync(dir);
    const q = (o: Record<string, string>) => new URLSearchParams({ copy_semantics: "cp-v1", ...o }).toString();
    let r = await call(agent.socket, "POST", `/v1/cp?${q({ path: dir, mode: "cp-v1-binary", source_name: "tool", source_type: "file" })}`, { body: "bin" });
    expect(r.status, r.text).to.equal(200);
    expect(readFileSync(path.join(dir, "tool"), "utf8")).to.equal("bin");
    r = await call(agent.socket, "POST", `/v1/cp?${q({ path: dir + "/missing/", mode: "cp-v1-binary", source_name: "tool" })}`, { body: "x" });
    expect(r.status).to.equal(400);
    expect(r.text).to.not.contain("invalid mode");

    const src = path.join(agent.dir, "v1src");
    mkdirSync(src);
    writeFileSync(path.join(src, "f"), "F");
    const tarBuf = execFileSync("tar", ["-c", "-f", "-", "-C", src, "f"]);
    r = await call(agent.socket, "POST", `/v1/cp?${q({ path: dir, mode: "cp-v1-tar", source_name: "proj", source_type: "directory" })}`, { body: tarBuf });
    expect(r.status, r.text).to.equal(200);
    expect(readFileSync(path.join(dir, "proj", "f"), "utf8")).to.equal("F");
    r = await call(agent.socket, "POST", `/v1/cp?${q({ path: path.join(dir, "new"), mode: "cp-v1-tar", source_name: "proj" })}`, { body: tarBuf });
    expect(readFileSync(path.join(dir, "new", "f"), "utf8")).to.equal("F");
    r = await call(agent.socket, "POST", `/v1/cp?${q({ path: dir, mode: "cp-v1-tar", source_name: "proj", copy_contents: "true" })}`, { body: tarBuf });
    expect(readFileSync(path.join(dir, "f"), "utf8")).to.equal("F");
    r = await call(agent.socket, "POST", `/v1/cp?${q({ path: path.join(dir, "tool"), mode: "cp-v1-tar", source_name: "p" })}`, { body: tarBuf });
    expect(r.status).to.equal(400);

    r = await call(agent.socket, "GET", `/v1/cp?${q({ path: path.join(dir, "tool"), mode: "cp-v1-recursive" })}`);
    expect(r.headers["x-slicer-source-type"]).to.equal("file");
    expect(r.headers["x-slicer-source-name-base64"]).to.equal("dG9vbA");
    expect(r.text).to.equal("bin");
    r = await call(agent.socket, "GET", `/v1/cp?${q({ path: path.join(dir, "proj"), mode: "cp-v1-recursive" })}`);
    expect(r.headers["x-slicer-source-type"]).to.equal("directory");
    expect(r.headers["content-type"]).to.equal("application/x-tar");
    r = await call(agent.socket, "GET", `/v1/cp?${q({ path: dir + "/.", mode: "cp-v1-tar" })}`);
    expect(r.headers["x-slicer-source-name-base64"]).to.equal(undefined);
  });

  it("answers 404 for a missing path and 400 for a directory in binary mode", async () => {
    expect((await call(agent.socket, "GET", `/v1/cp?path=${encodeURIComponent(work + "/nope")}`)).status).to.equal(404);
    const d = await call(agent.socket, "GET", `/v1/cp?path=${encodeURIComponent(work)}&mode=binary`);
    expect(d.status).to.equal(400);
    expect(d.text).to.contain("must specify a file not a directory");
    expect((await call(agent.socket, "GET", `/v1/cp?path=relative`)).status).to.equal(400);
    expect((await call(agent.socket, "GET", `/v1/cp?path=%2Ftmp%2F%00x`)).status).to.equal(400);
    expect((await call(agent.socket, "GET", `/v1/cp?path=%2Ftmp&mode=zip`)).status).to.equal(400);
    // Accept: application/x-tar selects tar without a mode (as Slicer does).
    const t = await call(agent.socket, "GET", `/v1/cp?path=${encodeURIComponent(path.join(work, "v1"))}`, { headers: { Accept: "application/x-tar" } });
    expect(t.headers["content-type"]).to.equal("application/x-tar");
  });

  it("serves mkdir, readdir, stat and remove", async () => {
    const base = path.join(work, "fs");
    const mk = (body: unknown) => call(agent.socket, "POST", "/v1/fs/mkdir", { body: JSON.stringify(body) });
    expect((await mk({ path: base + "/a/b", recursive: true, mode: "0750" })).status).to.equal(200);
    expect(statSync(base + "/a/b").mode & 0o777).to.equal(0o750);
    expect(statSync(base + "/a/b").uid).to.equal(65534);
    expect((await mk({ path: base + "/a/b", recursive: true })).status).to.equal(200);
    expect((await mk({ path: base + "/a/b" })).status).to.equal(400);
    expect((await mk({ path: base + "/x/y" })).status).to.equal(404);
    // The mode is applied exactly: not masked by the agent's umask, setgid and sticky kept.
    for (const [name, mode] of [["m777", 0o777], ["m2770", 0o2770], ["m1777", 0o1777]] as const) {
      expect((await mk({ path: `${base}/${name}`, mode: mode.toString(8) })).status, name).to.equal(200);
      expect(statSync(`${base}/${name}`).mode & 0o7777, name).to.equal(mode);
    }
    // Wrongly typed fields are refused and create nothing (a numeric mode is not read as 0755).
    for (const body of [{ path: base + "/t1", mode: 448 }, { path: base + "/t2/u", recursive: "true" }, { path: base + "/t3", recursive: 1 }]) {
      const r = await mk(body);
      expect(r.status, JSON.stringify(body)).to.equal(400);
      expect(r.json(), JSON.stringify(body)).to.include({ code: "ERR_BAD_REQUEST" });
      expect(existsSync(body.path), body.path).to.equal(false);
    }
    writeFileSync(base + "/a/file.txt", "1234567");
    const rd = await call(agent.socket, "GET", `/v1/fs/readdir?path=${encodeURIComponent(base + "/a")}`);
    const entries = rd.json() as Record<string, unknown>[];
    expect(entries.map((e) => [e.name, e.type])).to.deep.equal([["b", "directory"], ["file.txt", "file"]]);
    const st = (await call(agent.socket, "GET", `/v1/fs/stat?path=${encodeURIComponent(base + "/a/file.txt")}`)).json() as Record<string, unknown>;
    expect(st).to.include({ name: "file.txt", type: "file", size: 7, mode: "0644" });
    expect(Number.isNaN(Date.parse(st.mtime as string))).to.equal(false);
    expect((await call(agent.socket, "GET", `/v1/fs/stat?path=${encodeURIComponent(base + "/none")}`)).status).to.equal(404);
    expect((await call(agent.socket, "GET", `/v1/fs/readdir?path=${encodeURIComponent(base + "/a/file.txt")}`)).status).to.equal(400);
    expect((await call(agent.socket, "DELETE", `/v1/fs/remove?path=${encodeURIComponent(base + "/a")}&recursive=false`)).status).to.equal(400);
    expect((await call(agent.socket, "DELETE", `/v1/fs/remove?path=${encodeURIComponent(base + "/a")}&recursive=true`)).status).to.equal(200);
    expect(existsSync(base + "/a")).to.equal(false);
    expect((await call(agent.socket, "DELETE", `/v1/fs/remove?path=${encodeURIComponent(base + "/a")}&recursive=true`)).status).to.equal(404);
    expect((await call(agent.socket, "DELETE", `/v1/fs/remove?path=%2F&recursive=true`)).status).to.equal(400);
  });

  it("writes synced secrets with their mode and owner and prunes revoked ones", async () => {
    const sync = (secrets: unknown[]) => call(agent.socket, "POST", "/v1/secrets/sync", { body: JSON.stringify({ secrets }) });
    let r = await sync([
      { name: "api-key", data: Buffer.from("s3cret").toString("base64"), permissions: "0640", uid: 65534, gid: 65534 },
      { name: "other", data: Buffer.from("o").toString("base64"), permissions: "0600", uid: 0, gid: 0 },
    ]);
    expect(r.status, r.text).to.equal(200);
    const f = path.join(agent.secretsDir, "api-key");
    expect(readFileSync(f, "utf8")).to.equal("s3cret");
    const st = statSync(f);
    expect([st.mode & 0o777, st.uid, st.gid]).to.deep.equal([0o640, 65534, 65534]);
    r = await sync([{ name: "other", data: Buffer.from("o2").toString("base64"), permissions: "0600", uid: 0, gid: 0 }]);
    expect(existsSync(f)).to.equal(false);
    expect(readFileSync(path.join(agent.secretsDir, "other"), "utf8")).to.equal("o2");
    expect((await sync([{ name: "../x", data: "", permissions: "0600", uid: 0, gid: 0 }])).status).to.equal(400);
  });
});
