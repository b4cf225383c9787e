/**
 * Pure parts of the guest agent and the secret store: cp exclude globs, tar entry-name
 * safety, tar write→extract round trip, passwd parsing and the uid/gid convention (no uid: the default user; 0: root),
 * guest path resolution, boot.json validation, secret names and base64.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync, readFileSync, writeFileSync, mkdirSync, statSync } from "node:fs";
import os from "node:os";
import { Readable } from "node:stream";
import path from "node:path";
import { compileExcludes, createTarStream, extractTar, safeEntryName } from "../../tenant-daemon/agent/tar.js";
import { UserDirectory, parsePasswd, resolveCwd, resolveGuestPath } from "../../tenant-daemon/agent/users.js";
import { parseBootConfig, writeAgentBootConfig, readBootConfig } from "../../tenant-daemon/agent/boot.js";
import { formatOctalMode, parseOctalMode } from "../../tenant-daemon/agent/http-util.js";
import { FrameRing } from "../../tenant-daemon/agent/exec-background.js";
import { MAX_SECRET_NAME_BYTES, SecretStore, decodeBase64Strict, validateSecretName } from "../../tenant-daemon/secrets/secret-store.js";
import { sourceNameHeader } from "../../tenant-daemon/agent/cp.js";

describe("agent: cp exclude globs", () => {
  it("matches basenames, ** and directory prefixes", () => {
    const ex = compileExcludes(["*.log", "node_modules", "build/**/tmp", "docs/*.md"]);
    expect(ex("a.log")).to.equal(true);
    expect(ex("sub/deep/a.log")).to.equal(true);
    expect(ex("node_modules/x/y.js")).to.equal(true);
    expect(ex("build/a/b/tmp")).to.equal(true);
    expect(ex("build/tmp")).to.equal(true);
    expect(ex("docs/readme.md")).to.equal(true);
    expect(ex("docs/sub/readme.md")).to.equal(false);
    expect(ex("src/main.ts")).to.equal(false);
    expect(compileExcludes([])("anything")).to.equal(false);
  });
});

describe("agent: tar", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-tar-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("rejects absolute and escaping entry names", () => {
    expect(safeEntryName("./a/b")).to.equal("a/b");
    expect(safeEntryName("./")).to.equal("");
    expect(() => safeEntryName("/etc/passwd")).to.throw(/absolute/);
    expect(() => safeEntryName("a/../../b")).to.throw(/escapes/);
  });

  it("round-trips a tree with long names, modes and mtimes", async () => {
    const src = path.join(dir, "src");
    const long = "n".repeat(150);
    mkdirSync(path.join(src, "d", long), { recursive: true });
    writeFileSync(path.join(src, "d", long, "f"), "deep");
    writeFileSync(path.join(src, "x.sh"), "#!/bin/sh\n", { mode: 0o4755 });
    writeFileSync(path.join(src, "empty"), "");
    const dest = path.join(dir, "dest");
    mkdirSync(dest);
    const chunks: Buffer[] = [];
    for await (const c of createTarStream(src, () => false) as AsyncIterable<Buffer>) chunks.push(c);
    const tar = Buffer.concat(chunks);
    expect(tar.length % 512).to.equal(0);
    await extractTar(Readable.from([tar]) as AsyncIterable<Buffer>, dest, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, excluded: () => false });
    expect(readFileSync(path.join(dest, "d", long, "f"), "utf8")).to.equal("deep");
    expect(statSync(path.join(dest, "x.sh")).mode & 0o7777).to.equal(0o755); // setuid dropped
    expect(readFileSync(path.join(dest, "empty"), "utf8")).to.equal("");
    expect(Math.floor(statSync(path.join(dest, "x.sh")).mtimeMs / 1000)).to.equal(Math.floor(statSync(path.join(src, "x.sh")).mtimeMs / 1000));
  });

  it("rejects a corrupted header", async () => {
    const chunks: Buffer[] = [];
    writeFileSync(path.join(dir, "f"), "x");
    for await (const c of createTarStream(path.join(dir, "f"), () => false) as AsyncIterable<Buffer>) chunks.push(c);
    const tar = Buffer.concat(chunks);
    tar[0] = 0x41;
    const dest = path.join(dir, "out");
    mkdirSync(dest);
    let err: unknown;
    await extractTar(Readable.from([tar]) as AsyncIterable<Buffer>, dest, { uid: 0, gid: 0, excluded: () => false }).catch((e: unknown) => (err = e));
    expect(String(err)).to.contain("checksum");
  });
});

describe("agent: users and paths", () => {
  const passwd = "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1001::/home/ubuntu:/bin/bash\nbad line\n";
  let dir: string;
  let dirUsers: UserDirectory;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-users-"));
    writeFileSync(path.join(dir, "passwd"), passwd);
    dirUsers = new UserDirectory(path.join(dir, "passwd"), null);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("parses passwd", () => {
    expect(parsePasswd(passwd).map((u) => u.name)).to.deep.equal(["root", "ubuntu"]);
  });

  it("resolves absent / sentinel / 0 / explicit ids", () => {
    const r = (q: string) => dirUsers.resolve(new URLSearchParams(q));
    expect(r("")).to.include({ uid: 1000, gid: 1001, home: "/home/ubuntu" });
    expect(r("uid=4294967295&gid=4294967295")).to.include({ uid: 1000, gid: 1001 });
    expect(r("uid=0&gid=0")).to.include({ uid: 0, gid: 0, home: "/root" });
    expect(r("uid=0")).to.include({ uid: 0, gid: 0 });
    expect(r("uid=4242")).to.include({ uid: 4242, gid: 4242, home: "/" });
    expect(() => r("uid=-1")).to.throw();
    expect(() => r("uid=abc")).to.throw();
  });

  it("falls back to root without a uid-1000 account", () => {
    writeFileSync(path.join(dir, "p2"), "root:x:0:0:root:/root:/bin/sh\n");
    expect(new UserDirectory(path.join(dir, "p2"), null).defaultUser().uid).to.equal(0);
  });

  it("resolves guest paths and cwd", () => {
    expect(resolveGuestPath("~/x", "/home/u")).to.equal("/home/u/x");
    expect(resolveGuestPath("~", "/home/u")).to.equal("/home/u");
    expect(resolveGuestPath("/a/./b/../c/", "/")).to.equal("/a/c/");
    expect(() => resolveGuestPath("rel", "/")).to.throw(/absolute/);
    expect(() => resolveGuestPath("/a\0b", "/")).to.throw(/NUL/);
    expect(resolveCwd(null, "/home/u")).to.equal("/home/u");
    expect(() => resolveCwd("/tmp/../etc", "/")).to.throw(/\.\./);
  });
});

describe("agent: boot.json, modes, ring, names", () => {
  it("validates and round-trips boot.json", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pdk-boot-"));
    try {
      const cfg = { hostname: "h-1", userdata: null, default_user: { name: "slicer", uid: 1000, gid: 1000, home: "/home/slicer" }, secrets_dir: "/run/slicer/secrets", agent_version: "1", resolv_conf: "nameserver 198.18.0.1\n", agent_proof: "ab".repeat(32), egress_proxy: null };
      writeAgentBootConfig(dir, cfg);
      expect(readBootConfig(dir)).to.deep.equal(cfg);
      expect(statSync(path.join(dir, "boot.json")).mode & 0o777).to.equal(0o600);
      expect(() => parseBootConfig({ hostname: "" })).to.throw(/hostname/);
      expect(parseBootConfig({ hostname: "x" }).secrets_dir).to.equal("/run/slicer/secrets");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("parses and formats octal modes", () => {
    expect(parseOctalMode("0644")).to.equal(0o644);
    expect(parseOctalMode("755")).to.equal(0o755);
    expect(() => parseOctalMode("0999")).to.throw();
    expect(formatOctalMode(0o100644)).to.equal("0644");
    expect(formatOctalMode(0o4755)).to.equal("4755");
  });

  it("keeps frame ids monotonic and evicts by bytes", () => {
    const ring = new FrameRing(1000);
    for (let i = 0; i < 20; i++) ring.push("stdout", Buffer.alloc(100));
    expect(ring.nextId).to.equal(21);
    expect(ring.firstId).to.be.greaterThan(1);
    expect(ring.bytesWritten).to.equal(2000);
    expect(ring.from(1)[0]?.id).to.equal(ring.firstId);
    expect(ring.from(20)).to.have.length(1);
  });

  it("validates secret names and base64, encodes source names", () => {
    expect(validateSecretName("my-secret")).to.equal("my-secret");
    for (const bad of ["", "a/b", "a\\b", "..", "x..y", ".hidden", "a\nb"]) expect(() => validateSecretName(bad)).to.throw();
    expect(validateSecretName("n".repeat(MAX_SECRET_NAME_BYTES))).to.have.length(MAX_SECRET_NAME_BYTES);
    expect(() => validateSecretName("n".repeat(MAX_SECRET_NAME_BYTES + 1))).to.throw(/at most 200/);
    expect(decodeBase64Strict("aGVsbG8=").toString()).to.equal("hello");
    expect(() => decodeBase64Strict("a!b")).to.throw();
    expect(sourceNameHeader("tool")).to.equal("dG9vbA");
  });

  it("stores, updates and deletes a secret with the longest name allowed (its files fit NAME_MAX)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pdk-secrets-"));
    try {
      const store = new SecretStore(path.join(dir, "s"));
      const name = "n".repeat(MAX_SECRET_NAME_BYTES);
      await store.create({ name, data: Buffer.from("v1").toString("base64") });
      await store.update(name, { data: Buffer.from("v2").toString("base64") });
      expect((await store.list()).map((i) => i.name)).to.deep.equal([name]);
      await store.delete(name);
      expect(await store.list()).to.deep.equal([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
