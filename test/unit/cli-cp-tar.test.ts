/**
 * The tar a `paddock vm cp DIR HOST:/path` upload sends (cli/cp-tar.ts, node-tar) unpacks with
 * the guest agent's extractor (tenant-daemon/agent/tar.ts `extractTar`) to the same tree as the
 * agent's own writer (`createTarStream`) produces: regular files and directories only (a
 * symlink and a FIFO are left out, a hard link arrives as a regular file), long names, modes
 * without setuid, mtimes, an empty directory and an empty source.
 */
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { createDirectoryTar } from "../../cli/cp-tar.js";
import { createTarStream, extractTar } from "../../tenant-daemon/agent/tar.js";

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Every path under `root` with its type, mode (0o7777), size, mtime (s) and content. */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (abs: string, rel: string): void => {
    for (const name of readdirSync(abs).sort()) {
      const childAbs = path.join(abs, name);
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(childAbs);
      const kind = st.isDirectory() ? "dir" : st.isFile() ? "file" : "other";
      out[childRel] = `${kind} ${(st.mode & 0o7777).toString(8)} ${Math.floor(st.mtimeMs / 1000)}${st.isFile() ? ` ${readFileSync(childAbs, "hex")}` : ""}`;
      if (st.isDirectory()) walk(childAbs, childRel);
    }
  };
  walk(root, "");
  return out;
}

async function extractTo(tar: Buffer, dest: string): Promise<void> {
  mkdirSync(dest);
  await extractTar(Readable.from([tar]) as AsyncIterable<Buffer>, dest, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, excluded: () => false });
}

describe("cli: directory upload tar (node-tar) against the agent's extractor", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "pdk-cptar-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("unpacks to the same tree as the agent's own tar writer", async () => {
    const src = path.join(dir, "src");
    const long = "n".repeat(150);
    mkdirSync(path.join(src, "sub", long), { recursive: true });
    mkdirSync(path.join(src, "empty-dir"));
    writeFileSync(path.join(src, "a.txt"), "alpha\n", { mode: 0o644 });
    writeFileSync(path.join(src, "sub", "run.sh"), "#!/bin/sh\necho ok\n", { mode: 0o4755 });
    writeFileSync(path.join(src, "sub", long, "deep"), Buffer.alloc(70_000, 7));
    writeFileSync(path.join(src, "zero"), "");
    writeFileSync(path.join(src, "o".repeat(200)), "long single name");
    linkSync(path.join(src, "a.txt"), path.join(src, "hard.txt"));
    symlinkSync("a.txt", path.join(src, "link"));
    execFileSync("mkfifo", [path.join(src, "fifo")]);
    for (const p of ["a.txt", "sub/run.sh", `sub/${long}/deep`, "zero"]) utimesSync(path.join(src, p), 1_600_000_000, 1_600_000_000);

    const ours = await collect(createDirectoryTar(src));
    const agents = await collect(createTarStream(src, () => false) as AsyncIterable<Buffer>);
    expect(ours.length % 512).to.equal(0);
    await extractTo(ours, path.join(dir, "ours"));
    await extractTo(agents, path.join(dir, "agents"));

    const tree = describeTree(path.join(dir, "ours"));
    expect(tree).to.deep.equal(describeTree(path.join(dir, "agents")));
    expect(Object.keys(tree)).to.include.members(["a.txt", "hard.txt", "empty-dir", "sub/run.sh", `sub/${long}/deep`, "o".repeat(200), "zero"]);
    expect(Object.keys(tree)).to.not.include.members(["link"]);
    expect(Object.keys(tree)).to.not.include.members(["fifo"]);
    expect(readFileSync(path.join(dir, "ours", "hard.txt"), "utf8")).to.equal("alpha\n");
    expect(statSync(path.join(dir, "ours", "sub", "run.sh")).mode & 0o7777).to.equal(0o755);
  });

  it("an empty directory is an empty archive", async () => {
    const src = path.join(dir, "src");
    mkdirSync(src);
    const ours = await collect(createDirectoryTar(src));
    expect(ours.equals(Buffer.alloc(1024))).to.equal(true);
    await extractTo(ours, path.join(dir, "out"));
    expect(readdirSync(path.join(dir, "out"))).to.deep.equal([]);
  });
});
