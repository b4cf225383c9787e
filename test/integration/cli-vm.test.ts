/**
 * The compiled `paddock` CLI (`node dist/cli/paddock.js`) against a REAL tenant daemon started
 * with `paddock daemon up <config>`: runc sandboxes, a Unix socket in a short temp dir, an
 * isolated host group addressed from 169.254.0.0/16. Needs root, runc and the debian-12 base
 * image (scripts/setup.sh builds it); skipped otherwise.
 *
 * Covers: vm launch (group omitted ⇒ the only group, --wait agent, tags), list (table, --json,
 * --tag, --tag-prefix), get, exec (streams, exit codes, --stdin/--env/--cwd/--uid), cp (files
 * in/out, into a directory, directories, stdout), pause ⇒ exit 4, 404 ⇒ exit 3, logs, delete;
 * launch --ttl, events (NDJSON, replay with --since-id, following live), commit, commits, fork,
 * commit-delete (exit 4 while in use), suspend on runc (exit 1, names gVisor).
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { PROJECT_ROOT, TestDaemon, loopDevicesUnder, mountsUnder, randomIsolatedRange } from "../helpers/daemon.js";

const CLI = path.join(PROJECT_ROOT, "dist/cli/paddock.js");
const IMAGE_DIR = process.env.PADDOCK_IMAGE_DIR ?? path.join(process.env.PADDOCK_STATE_DIR ?? "/var/lib/paddock", "images");

interface CliResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Run the compiled CLI as a child process. */
function cli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: Buffer | string; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.end(opts.input ?? "");
  });
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

describe("paddock CLI against a real tenant daemon (root, runc)", function () {
  let d: TestDaemon | undefined;
  let env: NodeJS.ProcessEnv;
  let work = "";
  let host = "";

  before(async function () {
    if (process.getuid?.() !== 0 || !existsSync(path.join(IMAGE_DIR, "debian-12", "image.json")) || (await run("runc", ["--version"], { allowFailure: true }).catch(() => undefined))?.exitCode !== 0) {
      this.skip(); // needs root, runc and the base image (scripts/setup.sh)
    }
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "256M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    work = path.join(d.dir, "work");
    await fs.mkdir(work);
    env = { ...process.env, PADDOCK_URL: d.socketPath, PADDOCK_TOKEN: "", SLICER_URL: "", SLICER_TOKEN: "" };
    // Start through the CLI (`paddock daemon up`); TestDaemon.stop() then SIGTERMs this pid.
    await d.start(60_000, { command: [CLI, "daemon", "up", d.configPath] });
  });

  after(async function () {
    if (!d) return;
    const tenant = d.tenantId;
    const dir = d.dir;
    await d.destroy(); // SIGTERM by pid, wait, purge the tenant, remove the temp dir
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${tenant}-`));
    expect(left, "runc containers left").to.deep.equal([]);
    expect(await mountsUnder(dir), "mounts left").to.deep.equal([]);
    expect(await loopDevicesUnder(dir), "loop devices left").to.deep.equal([]);
  });

  it("lists an empty daemon (table header, [] as JSON)", async () => {
    const table = await cli(["vm", "list"], { env });
    expect(table.code, table.stderr).to.equal(0);
    expect(table.stdout.toString()).to.match(/^HOSTNAME\s+GROUP\s+IP\s+STATUS/);
    const json = await cli(["vm", "list", "--json"], { env });
    expect(JSON.parse(json.stdout.toString())).to.deep.equal([]);
  });

  it("launches a VM in the only host group, waiting for its agent", async () => {
    const r = await cli(["vm", "launch", "--wait", "agent", "--timeout", "2m", "--tag", "role=cli-test", "--tag", "name=clibox", "--json"], { env });
    expect(r.code, r.stderr + (d?.stderr ?? "").slice(-2000)).to.equal(0);
    const node = JSON.parse(r.stdout.toString()) as { hostname: string; hostgroup: string; ip: string };
    expect(node.hostgroup).to.equal("sbox");
    expect(node.hostname).to.match(/^sbox-\d+$/);
    expect(node.ip).to.match(/^169\.254\./);
    host = node.hostname;
  });

  it("lists with --json, --tag, --tag-prefix and as a table", async () => {
    const all = JSON.parse((await cli(["vm", "list", "--json"], { env })).stdout.toString()) as { hostname: string; status: string; tags: string[] }[];
    expect(all.map((n) => n.hostname)).to.deep.equal([host]);
    expect(all[0]?.status).to.equal("Running");
    expect(all[0]?.tags).to.include("role=cli-test");
    const byTag = JSON.parse((await cli(["vm", "list", "--tag", "role=cli-test", "--json"], { env })).stdout.toString()) as unknown[];
    expect(byTag).to.have.length(1);
    const none = JSON.parse((await cli(["vm", "list", "--tag-prefix", "role=other", "--json"], { env })).stdout.toString()) as unknown[];
    expect(none).to.deep.equal([]);
    const table = (await cli(["vm", "list", "--group", "sbox"], { env })).stdout.toString();
    expect(table).to.match(new RegExp(`^${host}\\s+sbox\\s+169\\.254\\.\\S+\\s+Running\\s+1\\s+512\\.0 MiB\\s+no`, "m"));
  });

  it("gets a VM by hostname or by its name= tag; an unknown VM exits 3 with the server's error and code", async () => {
    const byHost = JSON.parse((await cli(["vm", "get", host, "--json"], { env })).stdout.toString()) as { hostname: string };
    expect(byHost.hostname).to.equal(host);
    const byName = await cli(["vm", "get", "clibox"], { env });
    expect(byName.code, byName.stderr).to.equal(0);
    expect(byName.stdout.toString()).to.match(new RegExp(`^hostname:\\s+${host}$`, "m"));
    const missing = await cli(["vm", "get", "sbox-999"], { env });
    expect(missing.code).to.equal(3);
    expect(missing.stderr).to.match(/^paddock: error: .+ \(ERR_VM_NOT_FOUND, HTTP 404\)\n$/);
  });

  it("execs: streams stdout and stderr separately and exits with the command's exit code", async () => {
    const hi = await cli(["vm", "exec", host, "--", "echo", "hi"], { env });
    expect(hi.code, hi.stderr).to.equal(0);
    expect(hi.stdout.toString()).to.equal("hi\n");
    const mixed = await cli(["vm", "exec", host, "--", "sh", "-c", "echo out; echo err >&2; exit 7"], { env });
    expect(mixed.code).to.equal(7);
    expect(mixed.stdout.toString()).to.equal("out\n");
    expect(mixed.stderr).to.equal("err\n");
    const notFound = await cli(["vm", "exec", host, "--", "no-such-command-xyz"], { env });
    expect(notFound.code).to.equal(127);
    expect(notFound.stderr).to.match(/no-such-command-xyz/);
  });

  it("execs with --uid 0, --cwd, --env and --stdin; binary output is byte-exact", async () => {
    const r = await cli(["vm", "exec", host, "--uid", "0", "--cwd", "/tmp", "--env", "FOO=bar baz", "--", "/bin/sh", "-c", 'echo "$(id -u) $FOO @ $(pwd)"'], { env });
    expect(r.stdout.toString(), r.stderr).to.equal("0 bar baz @ /tmp\n");
    const input = randomBytes(256 * 1024);
    const cat = await cli(["vm", "exec", host, "--stdin", "--", "cat"], { env, input });
    expect(cat.code, cat.stderr).to.equal(0);
    expect(sha256(cat.stdout)).to.equal(sha256(input));
  });

  it("copies a file in and out (streamed, mode kept), into a directory and to stdout", async () => {
    const data = randomBytes(8 * 2 ** 20 + 123);
    const src = path.join(work, "blob.bin");
    await fs.writeFile(src, data, { mode: 0o640 });
    await fs.chmod(src, 0o640);
    const up = await cli(["vm", "cp", src, `${host}:/tmp/`], { env });
    expect(up.code, up.stderr).to.equal(0);
    const st = await cli(["vm", "exec", host, "--", "stat", "-c", "%s %a %U", "/tmp/blob.bin"], { env });
    expect(st.stdout.toString()).to.match(new RegExp(`^${data.length} 640 \\S+\\n$`));
    const back = path.join(work, "back.bin");
    const down = await cli(["vm", "cp", `${host}:/tmp/blob.bin`, back], { env });
    expect(down.code, down.stderr).to.equal(0);
    expect(sha256(await fs.readFile(back))).to.equal(sha256(data));
    expect((await fs.stat(back)).mode & 0o777).to.equal(0o640);
    const intoDir = await cli(["vm", "cp", `${host}:/tmp/blob.bin`, work + "/sub/"], { env });
    expect(intoDir.code, "a missing local directory is an error").to.equal(1);
    expect(intoDir.stderr, "named, without the partial file's name").to.include(`${path.join(work, "sub")}: no such directory`).and.not.include(".paddock-");
    await fs.mkdir(path.join(work, "sub"));
    expect((await cli(["vm", "cp", `${host}:/tmp/blob.bin`, path.join(work, "sub")], { env })).code).to.equal(0);
    expect(sha256(await fs.readFile(path.join(work, "sub", "blob.bin")))).to.equal(sha256(data));
    const toStdout = await cli(["vm", "cp", `${host}:/tmp/blob.bin`, "-"], { env });
    expect(sha256(toStdout.stdout)).to.equal(sha256(data));
    expect((await fs.readdir(work)).filter((f) => f.includes(".paddock-")), "no partial files").to.deep.equal([]);
    const missing = await cli(["vm", "cp", `${host}:/tmp/nope`, path.join(work, "nope")], { env });
    expect(missing.code).to.equal(3);
    // A missing local source is a local I/O error (exit 1), not a usage error (2).
    const noLocal = await cli(["vm", "cp", path.join(work, "no-such-file"), `${host}:/tmp/x`], { env });
    expect(noLocal.code).to.equal(1);
    expect(noLocal.stderr).to.include("no such file or directory");
  });

  it("copies a directory in and out (tar on the wire)", async () => {
    const dir = path.join(work, "tree");
    await fs.mkdir(path.join(dir, "sub"), { recursive: true });
    await fs.writeFile(path.join(dir, "a.txt"), "alpha\n");
    await fs.writeFile(path.join(dir, "sub", "run.sh"), "#!/bin/sh\necho ok\n", { mode: 0o755 });
    await fs.chmod(path.join(dir, "sub", "run.sh"), 0o755);
    expect((await cli(["vm", "cp", dir, `${host}:/tmp/`], { env })).code).to.equal(0);
    const ran = await cli(["vm", "exec", host, "--", "/tmp/tree/sub/run.sh"], { env });
    expect(ran.stdout.toString(), ran.stderr).to.equal("ok\n");
    const out = path.join(work, "tree-back");
    const down = await cli(["vm", "cp", `${host}:/tmp/tree`, out], { env });
    expect(down.code, down.stderr).to.equal(0);
    expect(await fs.readFile(path.join(out, "a.txt"), "utf8")).to.equal("alpha\n");
    expect((await fs.stat(path.join(out, "sub", "run.sh"))).mode & 0o777).to.equal(0o755);
  });

  it("pause makes exec exit 4 (HTTP 409); resume restores it; a second pause or resume says the VM already was so", async () => {
    expect((await cli(["vm", "pause", host], { env })).stdout.toString()).to.equal(`${host} paused\n`);
    try {
      expect((await cli(["vm", "pause", host], { env })).stdout.toString()).to.equal(`${host} is already paused; nothing done\n`);
      const r = await cli(["vm", "exec", host, "--", "true"], { env });
      expect(r.code).to.equal(4);
      expect(r.stderr).to.contain("HTTP 409");
    } finally {
      await cli(["vm", "resume", host], { env });
    }
    expect((await cli(["vm", "resume", host], { env })).stdout.toString()).to.equal(`${host} is already running; nothing done\n`);
    expect((await cli(["vm", "exec", host, "--", "true"], { env })).code).to.equal(0);
  });

  it("shows the VM's logs", async () => {
    const r = await cli(["vm", "logs", host, "--lines", "0", "--json"], { env });
    expect(r.code, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout.toString())).to.include({ hostname: host });
  });

  it("events: --since-id replays what the daemon holds as NDJSON (reset first), then follows live until interrupted", async () => {
    const child = spawn(process.execPath, [CLI, "events", "--since-id", "1"], { env, stdio: ["ignore", "pipe", "pipe"] });
    const lines: Record<string, unknown>[] = [];
    let buf = "";
    let stderr = "";
    let wake: (() => void) | undefined;
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      buf += c;
      let nl: number;
      while ((nl = buf.indexOf("\n")) !== -1) {
        lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
        buf = buf.slice(nl + 1);
      }
      wake?.();
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const closed = new Promise((resolve) => child.once("close", resolve));
    const waitLine = async (pred: (l: Record<string, unknown>) => boolean): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!lines.some(pred)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no such line; got ${JSON.stringify(lines)} ${stderr}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 500);
        });
      }
    };
    try {
      await waitLine((l) => l.type === "created" && l.hostname === host);
      expect(lines[0]?.type, "an id from before this daemon run: reset first").to.equal("reset");
      expect(lines.find((l) => l.type === "created" && l.hostname === host)).to.include({ reason: "api", hostgroup: "sbox" });
      // Live: a pause made now arrives on the same stream.
      expect((await cli(["vm", "pause", host], { env })).code).to.equal(0);
      await cli(["vm", "resume", host], { env });
      await waitLine((l) => l.type === "resumed" && l.hostname === host);
      expect(lines.filter((l) => l.hostname === host).map((l) => l.type).slice(-2)).to.deep.equal(["paused", "resumed"]);
      expect(child.exitCode, "still following").to.equal(null);
    } finally {
      child.kill("SIGINT");
      await closed;
    }
  });

  it("launch --ttl gives the VM a deadline (expires_at= tag); a bad --ttl is a usage error (exit 2)", async () => {
    const l = await cli(["vm", "create", "sbox", "--ttl", "1h", "--json"], { env });
    expect(l.code, l.stderr).to.equal(0);
    const h = (JSON.parse(l.stdout.toString()) as { hostname: string }).hostname;
    const tags = (JSON.parse((await cli(["vm", "get", h, "--json"], { env })).stdout.toString()) as { tags: string[] }).tags;
    const deadline = Date.parse((tags.find((t) => t.startsWith("expires_at=")) ?? "").slice("expires_at=".length));
    expect(deadline - Date.now()).to.be.within(50 * 60_000, 61 * 60_000);
    expect((await cli(["vm", "delete", h], { env })).code).to.equal(0);
    expect((await cli(["vm", "launch", "sbox", "--ttl", "soon"], { env })).code).to.equal(2);
  });

  it("suspend on a runc tenant exits 1 with the server's 501 naming gVisor", async () => {
    const r = await cli(["vm", "suspend", host], { env });
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/gvisor/i).and.to.contain("ERR_VM_UNSUPPORTED");
  });

  let commitId = "";
  it("commits the VM, lists the commit, forks it, and refuses to delete it while in use (exit 4)", async () => {
    const c = await cli(["vm", "commit", host, "--tag", "cli=1", "--label", "team=a", "--json"], { env });
    expect(c.code, c.stderr).to.equal(0);
    const commit = JSON.parse(c.stdout.toString()) as { commit_id: string; tags: string[]; labels: Record<string, string> };
    expect(commit.commit_id).to.match(/^cmt-[0-9a-f]{16}$/);
    expect(commit).to.deep.include({ tags: ["cli=1"], labels: { team: "a" } });
    commitId = commit.commit_id;
    const list = JSON.parse((await cli(["vm", "commits", "--tag", "cli=1", "--json"], { env })).stdout.toString()) as { commit_id: string; source_hostname: string }[];
    expect(list.map((x) => [x.commit_id, x.source_hostname])).to.deep.equal([[commitId, host]]);
    const table = (await cli(["vm", "commits"], { env })).stdout.toString();
    expect(table).to.match(/^COMMIT\s+SOURCE/).and.to.contain(commitId);
    const f = await cli(["vm", "fork", commitId, "--persistent=false", "--tag", "forked=yes", "--json"], { env });
    expect(f.code, f.stderr).to.equal(0);
    const fork = JSON.parse(f.stdout.toString()) as { hostname: string; commit_id: string; persistent: boolean };
    expect(fork).to.include({ commit_id: commitId, persistent: false });
    expect((JSON.parse((await cli(["vm", "get", fork.hostname, "--json"], { env })).stdout.toString()) as { tags: string[] }).tags).to.include("forked=yes");
    const inUse = await cli(["vm", "commit-delete", commitId], { env });
    expect(inUse.code, inUse.stderr).to.equal(4);
    expect(inUse.stderr).to.contain("ERR_COMMIT_IN_USE");
    expect((await cli(["vm", "delete", fork.hostname], { env })).code).to.equal(0);
  });

  it("deletes the VM (host group looked up), after which it is gone (exit 3); then its commit can be deleted", async () => {
    const r = await cli(["vm", "delete", host], { env });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.equal(`${host} deleted (disk removed: true)\n`);
    expect(JSON.parse((await cli(["vm", "list", "--json"], { env })).stdout.toString())).to.deep.equal([]);
    expect((await cli(["vm", "delete", host], { env })).code).to.equal(3);
    const del = await cli(["vm", "commit-delete", commitId], { env });
    expect(del.code, del.stderr).to.equal(0);
    expect(del.stdout.toString()).to.equal(`${commitId} deleted\n`);
    expect((await cli(["vm", "commit-delete", commitId], { env })).code, "gone: 404").to.equal(3);
  });

  it("shuts down a persistent VM (Stopped), relaunches it (Running, same disk) and deletes it", async () => {
    const l = await cli(["vm", "launch", "sbox", "--persistent", "--cpus", "1", "--ram-bytes", "256M", "--wait", "agent", "--json"], { env });
    expect(l.code, l.stderr).to.equal(0);
    const p = JSON.parse(l.stdout.toString()) as { hostname: string; persistent: boolean };
    expect(p.persistent).to.equal(true);
    expect((await cli(["vm", "exec", p.hostname, "--", "sh", "-c", "echo kept > ~/mark"], { env })).code).to.equal(0);
    const s = await cli(["vm", "shutdown", p.hostname], { env });
    expect(s.code, s.stderr).to.equal(0);
    expect(s.stdout.toString()).to.equal(`${p.hostname} stopped\n`);
    const stopped = JSON.parse((await cli(["vm", "get", p.hostname, "--json"], { env })).stdout.toString()) as { status: string; ram_bytes: number };
    expect(stopped).to.include({ status: "Stopped", ram_bytes: 256 * 2 ** 20 });
    const r = await cli(["vm", "relaunch", p.hostname], { env });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.toString()).to.match(new RegExp(`^${p.hostname} relaunched \\(169\\.254\\.`));
    const again = await cli(["vm", "relaunch", p.hostname], { env });
    expect(again.code, `already running ⇒ 409 ⇒ a no-op, exit 0: ${again.stderr.toString()}`).to.equal(0);
    expect(again.stdout.toString()).to.equal(`${p.hostname} is already running; nothing done\n`);
    // The agent may need a moment after relaunch; retry the read until it answers.
    let mark: CliResult | undefined;
    for (let i = 0; i < 100; i++) {
      mark = await cli(["vm", "exec", p.hostname, "--", "cat", "/home/slicer/mark"], { env });
      if (mark.code === 0) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    expect(mark?.stdout.toString(), mark?.stderr).to.equal("kept\n");
    expect((await cli(["vm", "delete", p.hostname], { env })).code).to.equal(0);
  });
});

describe("paddock daemon (CLI dispatch)", () => {
  it("exits 1 naming the file for a config that cannot be read (ERR_FILE_UNREADABLE)", async () => {
    const r = await cli(["daemon", "up", "/nonexistent/paddock-cli-test.yaml"]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain("cannot read /nonexistent/paddock-cli-test.yaml (from paddock daemon up FILE)").and.contain("ERR_FILE_UNREADABLE");
  });
});
