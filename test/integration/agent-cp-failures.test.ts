/**
 * What a failed cp upload leaves in the guest (docs/slicer-api.md#file-copy), against the real
 * agent over its socket: a tar entry that fails (a full disk, a truncated archive) never
 * appears at its final name, no temp file stays, entries written before it do; an archive
 * refused before any entry (bad checksum, `../`) leaves no destination directory it created;
 * cp-v1 without `source_name` into a directory says the parameter is required.
 */
import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { call, startTestAgent, type TestAgent } from "./agent-fixture.js";

/** Every name below `dir`, relative, sorted (directories with a trailing `/`). */
function tree(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel === "" ? e.name : `${rel}/${e.name}`;
    if (e.isDirectory()) out.push(`${r}/`, ...tree(dir, r));
    else out.push(r);
  }
  return out.sort();
}

describe("guest agent: what a failed cp upload leaves", function () {
  let agent: TestAgent;
  let work: string;
  let src: string;
  before(async () => {
    agent = await startTestAgent();
    work = path.join(agent.dir, "work");
    mkdirSync(work);
    // a.txt (complete first), then sub/big (2 MiB) whose parent sub/ only it needs.
    src = path.join(agent.dir, "src");
    mkdirSync(path.join(src, "sub"), { recursive: true });
    writeFileSync(path.join(src, "a.txt"), "alpha\n");
    writeFileSync(path.join(src, "sub", "big"), Buffer.alloc(2 << 20, 7));
  });
  after(async () => {
    await agent?.stop();
  });

  /** A tar of a.txt then sub/big, without a directory entry for sub/ (as `tar -c a.txt sub/big`). */
  function archive(): Buffer {
    return execFileSync("tar", ["-c", "-f", "-", "-C", src, "a.txt", "sub/big"], { maxBuffer: 16 << 20 });
  }

  it("a full disk: 507, the failing entry and its parents absent, no temp file, the entry before it kept", async function () {
    if (process.getuid?.() !== 0) this.skip();
    const mnt = path.join(agent.dir, "pdk-e10-small");
    mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "pdk-e10-small", mnt]);
    try {
      const dest = path.join(mnt, "tt2");
      const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar&uid=0`, { body: archive() });
      expect([r.status, (r.json() as { code?: string }).code], r.text).to.deep.equal([507, "ERR_VM_DISK_FULL"]);
      expect(tree(mnt)).to.deep.equal(["tt2/", "tt2/a.txt"]);
      expect(readFileSync(path.join(dest, "a.txt"), "utf8")).to.equal("alpha\n");
    } finally {
      execFileSync("umount", [mnt]);
    }
  });

  it("a truncated archive: 400, the cut entry absent, no temp file, the entry before it kept", async () => {
    const whole = archive();
    const dest = path.join(work, "trunc");
    // a.txt's header and data block, sub/big's header, then 10 KiB of its 2 MiB.
    const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`, { body: whole.subarray(0, 3 * 512 + 10240) });
    expect(r.status, r.text).to.equal(400);
    expect(r.text).to.contain("truncated");
    expect(tree(dest)).to.deep.equal(["a.txt"]);
  });

  it("a file entry over an existing directory: 400, the directory untouched, no temp file", async () => {
    const dest = path.join(agent.dir, "over-dir");
    mkdirSync(path.join(dest, "a.txt"), { recursive: true });
    const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`, { body: archive() });
    expect([r.status, (r.json() as { code?: string }).code], r.text).to.deep.equal([400, "ERR_BAD_REQUEST"]);
    expect(r.text).to.contain("is a directory");
    expect(tree(dest)).to.deep.equal(["a.txt/"]);
  });

  it("an archive refused before any entry leaves no destination directory it created", async () => {
    const bad = Buffer.from(archive());
    bad[0] = (bad[0] as number) ^ 1; // the first header's checksum no longer matches
    const dest = path.join(work, "badsum", "deeper");
    let r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest)}&mode=tar`, { body: bad });
    expect(r.status, r.text).to.equal(400);
    expect(r.text).to.contain("checksum");
    expect(existsSync(path.join(work, "badsum"))).to.equal(false);

    const escape = execFileSync("tar", ["-c", "-f", "-", "-C", src, "-P", "--transform", "s,^a.txt$,../escaped,", "a.txt"]);
    const dest2 = path.join(work, "escape-dest");
    r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dest2)}&mode=cp-v1-tar&copy_contents=true`, { body: escape });
    expect(r.status, r.text).to.equal(400);
    expect(existsSync(dest2)).to.equal(false);
    expect(readdirSync(work).sort()).to.deep.equal(["trunc"]);
  });

  it("cp-v1 into a directory without source_name: 400 ERR_PATH_INVALID saying it is required", async () => {
    const dir = path.join(work, "v1dir");
    mkdirSync(dir);
    for (const mode of ["cp-v1-binary", "cp-v1-tar"]) {
      const r = await call(agent.socket, "POST", `/v1/cp?path=${encodeURIComponent(dir + "/")}&mode=${mode}&copy_semantics=cp-v1`, { body: "x" });
      expect([r.status, (r.json() as { code?: string }).code], r.text).to.deep.equal([400, "ERR_PATH_INVALID"]);
      expect((r.json() as { error?: string }).error, mode).to.contain("source_name is required");
    }
    expect(readdirSync(dir)).to.deep.equal([]);
  });
});
