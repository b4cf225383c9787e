/**
 * `paddock vm cp HOST:/path DIR` against a HOSTILE server: a real HTTP server on a Unix socket in
 * a fresh temp dir answers the CLI's cp download with a malicious `X-Slicer-Source-Name-Base64`
 * or a crafted tar (what a guest that replaced its own agent can send). The real compiled CLI
 * (`node dist/cli/paddock.js`) runs against it. Each attack must exit 1 with ERR_CP_BAD_NAME or
 * ERR_CP_BAD_ARCHIVE, and leave the temp tree exactly as it was (nothing outside the
 * destination, a host file keeps its content). Next to each attack a positive control sends a
 * benign twin through the same server and shows the file really lands, so the test could have
 * seen the attack succeed.
 *
 * Needs no root and no runc. Names and headers: cli/vm-commands.ts `cpDownloadName`; tars:
 * cli/safe-extract.ts.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const CLI = path.join(PROJECT_ROOT, "dist/cli/paddock.js");
const VICTIM_CONTENT = "host file, must not change\n";

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the compiled CLI against `socketPath`. */
function cli(args: string[], socketPath: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, PADDOCK_URL: socketPath, PADDOCK_TOKEN: "", PADDOCK_TOKEN_FILE: "", SLICER_URL: "", SLICER_TOKEN: "", SLICER_TOKEN_FILE: "" };
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout: out, stderr: err }));
  });
}

// ---------------------------------------------------------------------------------------
// A hand-written ustar writer (independent of the code under test), able to write what a
// hostile guest would: any name, any type, any link target, any mode.

interface RawEntry {
  name: string;
  /** ustar typeflag: "0" file, "5" dir, "1" hardlink, "2" symlink, "3" char dev, "6" fifo. */
  type?: string;
  body?: string;
  linkname?: string;
  mode?: number;
  /** A pax `path` record instead of the ustar name field (names over 100 bytes, or hiding one). */
  paxPath?: boolean;
  /** Owner written into the header (default 0). */
  uid?: number;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, typeflag: string, size: number, mode: number, linkname = "", uid = 0): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write(octal(mode, 8), 100, "ascii");
  h.write(octal(uid, 8), 108, "ascii");
  h.write(octal(uid, 8), 116, "ascii");
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(1_700_000_000, 12), 136, "ascii");
  h.write("        ", 148, "ascii");
  h.write(typeflag, 156, "ascii");
  h.write(linkname, 157, 100, "utf8");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  if (typeflag === "3") {
    h.write(octal(1, 8), 329, "ascii"); // major 1, minor 3: /dev/null
    h.write(octal(3, 8), 337, "ascii");
  }
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "ascii");
  return h;
}

function pad(n: number): Buffer {
  return Buffer.alloc((512 - (n % 512)) % 512);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

function makeTar(entries: readonly RawEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? "0";
    const body = Buffer.from(e.body ?? "");
    const size = type === "0" ? body.length : 0;
    const mode = e.mode ?? (type === "5" ? 0o755 : 0o644);
    if (e.paxPath) {
      const rec = Buffer.from(paxRecord("path", e.name));
      parts.push(header("PaxHeader", "x", rec.length, 0o644), rec, pad(rec.length));
      parts.push(header("placeholder", type, size, mode, e.linkname, e.uid));
    } else {
      parts.push(header(e.name, type, size, mode, e.linkname, e.uid));
    }
    if (size > 0) parts.push(body, pad(size));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------
// The hostile server: answers GET /vm/<host>/cp with whatever the current test set.

interface Answer {
  headers: Record<string, string>;
  body: Buffer;
}

/** Everything one test made, removed by {@link cleanup} whatever happened. */
interface Scene {
  root: string;
  socketPath: string;
  server: http.Server;
  answer: Answer;
  /** The destination directory the CLI is told to copy into. */
  dest: string;
  /** A sibling of `dest` that must stay empty. */
  outside: string;
  /** A host file whose content must not change. */
  victim: string;
}

async function makeScene(): Promise<Scene> {
  // A short path: Unix socket paths are limited to ~107 bytes.
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-sec-"));
  const scene: Scene = {
    root,
    socketPath: path.join(root, "api.sock"),
    server: http.createServer(),
    answer: { headers: {}, body: Buffer.alloc(0) },
    // Deep enough that `../../x` from inside dest stays inside root, where the test can see it.
    dest: path.join(root, "box", "inner", "dest"),
    outside: path.join(root, "box", "outside"),
    victim: path.join(root, "box", "victim.txt"),
  };
  try {
    await fs.mkdir(scene.dest, { recursive: true });
    await fs.mkdir(scene.outside);
    await fs.writeFile(scene.victim, VICTIM_CONTENT);
    scene.server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
      req.resume();
      if (req.method === "GET" && /^\/vm\/[^/]+\/cp(\?|$)/.test(req.url ?? "")) {
        res.writeHead(200, { "Content-Length": String(scene.answer.body.length), ...scene.answer.headers });
        res.end(scene.answer.body);
        return;
      }
      res.writeHead(404, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ error: "not found", code: "ERR_NOT_FOUND" }));
    });
    await new Promise<void>((resolve, reject) => {
      scene.server.once("error", reject);
      scene.server.listen(scene.socketPath, () => resolve());
    });
  } catch (err) {
    await cleanup(scene);
    throw err;
  }
  return scene;
}

async function cleanup(scene: Scene | undefined): Promise<void> {
  if (!scene) return;
  scene.server.closeAllConnections();
  await new Promise<void>((resolve) => scene.server.close(() => resolve()));
  await fs.rm(scene.root, { recursive: true, force: true });
}

/** Every path under `dir` (relative, sorted), symlinks not followed; dirs end in `/`. */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(abs: string, rel: string): Promise<void> {
    for (const d of await fs.readdir(abs, { withFileTypes: true })) {
      const r = rel === "" ? d.name : `${rel}/${d.name}`;
      if (d.isDirectory()) {
        out.push(r + "/");
        await walk(path.join(abs, d.name), r);
      } else out.push(r);
    }
  }
  await walk(dir, "");
  return out.sort();
}

/** The temp tree as it is before any copy: nothing else may appear outside `dest`. */
const PRISTINE = ["api.sock", "box/", "box/inner/", "box/inner/dest/", "box/outside/", "box/victim.txt"];

async function expectUntouched(scene: Scene, opts: { destEmpty: boolean }): Promise<void> {
  const tree = await listTree(scene.root);
  const outsideDest = tree.filter((p) => !p.startsWith("box/inner/dest/"));
  expect(outsideDest, "nothing written outside the destination").to.deep.equal(PRISTINE.filter((p) => !p.startsWith("box/inner/dest/")));
  expect(await fs.readdir(scene.outside), "sentinel dir stays empty").to.deep.equal([]);
  expect(await fs.readFile(scene.victim, "utf8"), "host file keeps its content").to.equal(VICTIM_CONTENT);
  expect((await fs.lstat(scene.victim)).nlink, "no hardlink to the host file").to.equal(1);
  if (opts.destEmpty) expect(await fs.readdir(scene.dest), "nothing written at all").to.deep.equal([]);
}

function b64(name: string | Buffer): string {
  return (typeof name === "string" ? Buffer.from(name, "utf8") : name).toString("base64url");
}

function fileAnswer(nameHeader: string | undefined, body = "payload\n"): Answer {
  return {
    headers: { "Content-Type": "application/octet-stream", "X-Slicer-Source-Type": "file", "X-Slicer-File-Mode": "0644", ...(nameHeader === undefined ? {} : { "X-Slicer-Source-Name-Base64": nameHeader }) },
    body: Buffer.from(body),
  };
}

function tarAnswer(entries: readonly RawEntry[], name = "tree"): Answer {
  return { headers: { "Content-Type": "application/x-tar", "X-Slicer-Source-Type": "directory", "X-Slicer-Source-Name-Base64": b64(name) }, body: makeTar(entries) };
}

describe("security: paddock vm cp downloads from a hostile server (names and tars)", function () {
  let scene: Scene | undefined;

  beforeEach(async () => {
    scene = await makeScene();
  });
  afterEach(async () => {
    await cleanup(scene);
    scene = undefined;
  });

  const s = (): Scene => scene as Scene;
  const download = (src = "sbox-1:/tmp/thing"): Promise<CliResult> => cli(["vm", "cp", src, s().dest], s().socketPath);

  describe("X-Slicer-Source-Name-Base64", () => {
    it("positive control: a plain name is written into the destination", async () => {
      s().answer = fileAnswer(b64("ok.txt"), "benign\n");
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      expect(await fs.readFile(path.join(s().dest, "ok.txt"), "utf8")).to.equal("benign\n");
      await expectUntouched(s(), { destEmpty: false });
    });

    it("positive control: a name with spaces, a leading dot and non-ASCII letters is fine", async () => {
      s().answer = fileAnswer(b64(".config ünï.txt"), "benign\n");
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      expect(await fs.readdir(s().dest)).to.deep.equal([".config ünï.txt"]);
    });

    const badNames: [string, string | Buffer][] = [
      ["../../x (escapes two levels)", "../../x"],
      ["../outside/x (into the sentinel dir)", "../outside/x"],
      ["/etc/x (absolute)", "/etc/x"],
      ["a/b (two components)", "a/b"],
      ["..", ".."],
      [".", "."],
      ["empty", ""],
      ["a NUL byte", "x\0y"],
      ["a newline", "x\ny"],
      ["256 bytes", "a".repeat(256)],
      ["invalid UTF-8", Buffer.from([0x2e, 0x2e, 0xff, 0x2f, 0x78])],
    ];
    for (const [label, name] of badNames) {
      it(`refuses ${label}: exit 1, ERR_CP_BAD_NAME, nothing written`, async () => {
        s().answer = fileAnswer(b64(name), "pwned\n");
        const r = await download();
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.include("ERR_CP_BAD_NAME");
        await expectUntouched(s(), { destEmpty: true });
      });
    }

    it("a backslash is an ordinary byte of a Linux name: `..\\x` lands in DST under that very name", async () => {
      s().answer = fileAnswer(b64("..\\x"), "benign\n");
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      expect(await fs.readdir(s().dest)).to.deep.equal(["..\\x"]);
      await expectUntouched(s(), { destEmpty: false });
    });

    it("a DST that names the file itself does not use the server's name: a bad one is ignored", async () => {
      s().answer = fileAnswer(b64("../../x\n"), "benign\n");
      const target = path.join(s().dest, "named.txt");
      const r = await cli(["vm", "cp", "sbox-1:/tmp/thing", target], s().socketPath);
      expect(r.code, r.stderr).to.equal(0);
      expect(await fs.readFile(target, "utf8")).to.equal("benign\n");
      await expectUntouched(s(), { destEmpty: false });
    });

    it("refuses a bad name for a directory download too, before reading the tar", async () => {
      s().answer = tarAnswer([{ name: "f.txt", body: "x" }], "../../x");
      const r = await download();
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.include("ERR_CP_BAD_NAME");
      await expectUntouched(s(), { destEmpty: true });
    });

    it("without the header, a remote path ending in /.. is refused; /. copies into DST itself", async () => {
      s().answer = fileAnswer(undefined, "pwned\n");
      const r = await download("sbox-1:/tmp/..");
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.include("ERR_CP_BAD_NAME");
      await expectUntouched(s(), { destEmpty: true });
      s().answer = { ...tarAnswer([{ name: "in.txt", body: "contents\n" }]), headers: { "Content-Type": "application/x-tar", "X-Slicer-Source-Type": "directory" } };
      const ok = await download("sbox-1:/tmp/dir/.");
      expect(ok.code, ok.stderr).to.equal(0);
      expect(await fs.readFile(path.join(s().dest, "in.txt"), "utf8")).to.equal("contents\n");
    });
  });

  describe("directory downloads (cp-v1-tar)", () => {
    interface TarCase {
      label: string;
      attack: () => RawEntry[];
      /** The benign twin: the same shape without the trick, and a file it must produce under dest/tree. */
      control: () => RawEntry[];
      controlFile: string;
    }
    const cases: TarCase[] = [
      {
        label: "an absolute entry name",
        attack: () => [{ name: path.join(s().outside, "abs.txt"), body: "pwned\n" }],
        control: () => [{ name: "abs.txt", body: "pwned\n" }],
        controlFile: "abs.txt",
      },
      {
        label: "a `..` entry name",
        attack: () => [{ name: "../../outside/dd.txt", body: "pwned\n" }],
        control: () => [{ name: "outside/dd.txt", body: "pwned\n" }],
        controlFile: "outside/dd.txt",
      },
      {
        label: "a `..` hidden in a pax path record",
        attack: () => [{ name: "sub/../../../outside/pax.txt", body: "pwned\n", paxPath: true }],
        control: () => [{ name: "sub/outside/pax.txt", body: "pwned\n", paxPath: true }],
        controlFile: "sub/outside/pax.txt",
      },
      {
        label: "a symlink to the sentinel dir, then a file written through it",
        attack: () => [{ name: "evil", type: "2", linkname: s().outside }, { name: "evil/sym.txt", body: "pwned\n" }],
        control: () => [{ name: "evil", type: "5" }, { name: "evil/sym.txt", body: "pwned\n" }],
        controlFile: "evil/sym.txt",
      },
      {
        label: "a relative symlink out of the tree, then a file written through it",
        attack: () => [{ name: "rel", type: "2", linkname: "../../outside" }, { name: "rel/sym.txt", body: "pwned\n" }],
        control: () => [{ name: "rel", type: "5" }, { name: "rel/sym.txt", body: "pwned\n" }],
        controlFile: "rel/sym.txt",
      },
      {
        label: "a hardlink to a host file, then a write to it",
        attack: () => [{ name: "hl", type: "1", linkname: s().victim }, { name: "hl", body: "pwned\n" }],
        control: () => [{ name: "hl", body: "pwned\n" }],
        controlFile: "hl",
      },
      {
        label: "a relative hardlink to a host file",
        attack: () => [{ name: "hl2", type: "1", linkname: "../../victim.txt" }],
        control: () => [{ name: "hl2", body: "pwned\n" }],
        controlFile: "hl2",
      },
      {
        label: "a character device node",
        attack: () => [{ name: "null", type: "3", mode: 0o666 }],
        control: () => [{ name: "null", body: "pwned\n" }],
        controlFile: "null",
      },
      {
        label: "a FIFO",
        attack: () => [{ name: "pipe", type: "6" }],
        control: () => [{ name: "pipe", body: "pwned\n" }],
        controlFile: "pipe",
      },
      {
        label: "a backslash path with .. in an entry name (node-tar refuses `..` between backslashes too)",
        attack: () => [{ name: "..\\..\\outside\\bs.txt", body: "pwned\n" }],
        control: () => [{ name: "bs.txt", body: "pwned\n" }],
        controlFile: "bs.txt",
      },
    ];
    for (const c of cases) {
      it(`positive control for ${c.label}: the benign twin is written`, async () => {
        s().answer = tarAnswer(c.control());
        const r = await download();
        expect(r.code, r.stderr).to.equal(0);
        expect(await fs.readFile(path.join(s().dest, "tree", c.controlFile), "utf8")).to.equal("pwned\n");
        await expectUntouched(s(), { destEmpty: false });
      });
      it(`refuses ${c.label}: exit 1, ERR_CP_BAD_ARCHIVE, nothing written`, async () => {
        // A harmless file first, so "nothing written" also covers entries before the bad one.
        s().answer = tarAnswer([{ name: "first.txt", body: "first\n" }, ...c.attack(), { name: "after.txt", body: "after\n" }]);
        const r = await download();
        expect(r.code, r.stderr).to.equal(1);
        expect(r.stderr).to.include("ERR_CP_BAD_ARCHIVE");
        await expectUntouched(s(), { destEmpty: true });
      });
    }

    it("an entry named with backslashes is one ordinary name inside DST", async () => {
      s().answer = tarAnswer([{ name: "a\\b\\bs.txt", body: "benign\n" }]);
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      expect(await fs.readdir(path.join(s().dest, "tree"))).to.deep.equal(["a\\b\\bs.txt"]);
      await expectUntouched(s(), { destEmpty: false });
    });

    it("refuses the same attack when extracting into an existing directory: nothing outside it", async () => {
      await fs.mkdir(path.join(s().dest, "tree"));
      s().answer = tarAnswer([{ name: "evil", type: "2", linkname: s().outside }, { name: "evil/sym.txt", body: "pwned\n" }]);
      const r = await download();
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.include("ERR_CP_BAD_ARCHIVE");
      await expectUntouched(s(), { destEmpty: false });
      expect(await listTree(s().dest)).to.deep.equal(["tree/"]);
    });

    it("refuses a target that is a symlink (the guest's name must not lead out of DST)", async () => {
      await fs.symlink(s().outside, path.join(s().dest, "tree"));
      s().answer = tarAnswer([{ name: "x.txt", body: "pwned\n" }]);
      const r = await download();
      expect(r.code, r.stderr).to.equal(1);
      await expectUntouched(s(), { destEmpty: false });
    });

    it("refuses an archive node-tar cannot read (bad checksum; truncated body) without hanging", async () => {
      const good = makeTar([{ name: "first.txt", body: "first\n" }, { name: "second.txt", body: "x".repeat(2000) }]);
      const badSum = Buffer.from(good);
      badSum[1024 + 10] = 0x41; // a name byte of the second header, checksum left as it was
      s().answer = { ...tarAnswer([]), body: badSum };
      const r1 = await download();
      expect(r1.code, r1.stderr).to.equal(1);
      expect(r1.stderr).to.include("ERR_CP_BAD_ARCHIVE");
      await expectUntouched(s(), { destEmpty: true });
      s().answer = { ...tarAnswer([]), body: good.subarray(0, 1024 + 512 + 700) };
      const r2 = await download();
      expect(r2.code, r2.stderr).to.equal(1);
      expect(r2.stderr).to.include("ERR_CP_BAD_ARCHIVE");
      await expectUntouched(s(), { destEmpty: true });
    });

    it("refuses a compressed stream", async () => {
      s().answer = { ...tarAnswer([]), body: Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, ...Buffer.alloc(600)]) };
      const r = await download();
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.include("ERR_CP_BAD_ARCHIVE");
      await expectUntouched(s(), { destEmpty: true });
    });

    it("drops setuid/setgid/sticky bits but keeps permission bits (0755 stays 0755)", async () => {
      s().answer = tarAnswer([
        { name: "suid", body: "pwned\n", mode: 0o4755 },
        { name: "sgid", body: "pwned\n", mode: 0o2755 },
        { name: "plain", body: "ok\n", mode: 0o755 },
        { name: "stickydir", type: "5", mode: 0o1777 },
      ]);
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      const mode = async (n: string): Promise<number> => (await fs.stat(path.join(s().dest, "tree", n))).mode & 0o7777;
      const plain = await mode("plain");
      expect(plain & 0o100, "control: the archive's permission bits are applied (owner x)").to.equal(0o100);
      expect(await mode("suid")).to.equal(plain);
      expect(await mode("sgid")).to.equal(plain);
      expect((await mode("stickydir")) & 0o7000).to.equal(0);
      await expectUntouched(s(), { destEmpty: false });
    });

    it("owns everything as the invoking user, whatever uid/gid the archive says", async () => {
      s().answer = tarAnswer([{ name: "owned", body: "x\n", uid: 12345 }]); // node-tar would chown to it as root by default
      const r = await download();
      expect(r.code, r.stderr).to.equal(0);
      const st = await fs.stat(path.join(s().dest, "tree", "owned"));
      expect(st.uid).to.equal(process.getuid?.());
      expect(st.gid).to.equal(process.getgid?.());
    });
  });
});
