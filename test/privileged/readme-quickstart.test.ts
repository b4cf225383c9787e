/**
 * README.md's quick starts, run as written: the fenced `sh` block under
 * "## Quick start (curl)" and the one under "## Quick start (CLI)" are read from README.md at
 * test time and run with bash against a real supervisor and real runc sandboxes.
 *
 * What the test controls, and why (the commands themselves are not edited):
 * - the endpoints, through the variables the README reads (PADDOCK_URL, PADDOCK_ADMIN_URL,
 *   PADDOCK_STATE_DIR): the supervisor listens on free loopback ports with a temp state dir,
 *   because 8080/8081 and /var/lib/paddock may be in use on a shared host;
 * - the tenant id: `acme` (a whole word) becomes a unique id, because a tenant id names
 *   host-global objects (nft table, netns, containers) that parallel runs must not share;
 * - the working directory: a temp dir holding a `dist` symlink to the build, so the CLI
 *   block's `alias paddock="node $PWD/dist/cli/paddock.js"` resolves and its files land there;
 * - bash runs with `set -euo pipefail` and `shopt -s expand_aliases` (a script's bash does
 *   not expand aliases otherwise), so any failing command fails the test.
 * The output is then checked for what each step promises. Needs root and the debian-12 image.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { randomBytes, randomInt } from "node:crypto";
import { expect } from "chai";
import { execa } from "execa";
import { TEST_IMAGE_DIR, describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { TestSupervisor } from "../helpers/supervisor.js";

const ROOT = path.resolve(import.meta.dirname, "../../..");

/** The first ```sh block after the line `heading` in a Markdown text (pure). */
export function fencedBlockAfter(markdown: string, heading: string): string {
  const lines = markdown.split("\n");
  const at = lines.findIndex((l) => l.trim() === heading);
  if (at < 0) throw new Error(`README.md has no heading ${JSON.stringify(heading)}`);
  const open = lines.findIndex((l, i) => i > at && /^```(sh|bash)\s*$/.test(l));
  const nextHeading = lines.findIndex((l, i) => i > at && /^#{1,2} /.test(l));
  if (open < 0 || (nextHeading > 0 && open > nextHeading)) throw new Error(`no \`\`\`sh block under ${heading}`);
  const close = lines.findIndex((l, i) => i > open && /^```\s*$/.test(l));
  if (close < 0) throw new Error(`unclosed block under ${heading}`);
  return lines.slice(open + 1, close).join("\n") + "\n";
}

describeWhenReady(missingPrerequisites(), "README quick start, run as written (privileged)", function () {
  this.timeout(120_000);
  const suffix = randomBytes(3).toString("hex");
  const ids = { curl: `qc${suffix}`, cli: `ql${suffix}` };
  let base: string;
  let sup: TestSupervisor | undefined;
  let readme: string;

  const runBlock = async (block: string, id: string, cwd: string): Promise<{ exitCode: number | undefined; all: string }> => {
    const script = "set -euo pipefail\nshopt -s expand_aliases\n" + block.replace(/\bacme\b/g, id);
    await fs.writeFile(path.join(cwd, "quickstart.sh"), script);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PADDOCK_URL: `http://${sup?.gateway ?? ""}`,
      PADDOCK_ADMIN_URL: `http://${sup?.admin ?? ""}`,
      PADDOCK_STATE_DIR: path.join(base, "state"),
    };
    for (const k of ["PADDOCK_TOKEN", "PADDOCK_ADMIN_TOKEN", "SLICER_URL", "SLICER_TOKEN", "SLICER_TOKEN_FILE"]) delete env[k];
    const r = await execa("bash", ["quickstart.sh"], { cwd, env, reject: false, all: true, timeout: 90_000 });
    return { exitCode: r.exitCode, all: r.all };
  };

  before(async () => {
    readme = await fs.readFile(path.join(ROOT, "README.md"), "utf8");
    // A random /20 of the link-local pool (never 169.254.160.0/20, which holds 169.254.169.254).
    let k = randomInt(0, 16);
    while (k === 10) k = randomInt(0, 16);
    sup = await TestSupervisor.create({
      config: { network: { pool: `169.254.${k * 16}.0/20`, block_prefix: 22 }, stop_daemons_on_exit: true },
      flags: { gateway: "127.0.0.1:0", admin: "127.0.0.1:0", templatesDir: path.join(ROOT, "templates") },
      env: { PADDOCK_IMAGE_DIR: TEST_IMAGE_DIR },
    });
    base = sup.dir;
    await sup.start();
  });

  after(async () => {
    await sup?.destroy(Object.values(ids));
  });

  it("the curl block provisions a tenant, launches, execs, copies in and out, deletes", async () => {
    const block = fencedBlockAfter(readme, "## Quick start (curl)");
    expect(block).to.include("curl ");
    const cwd = path.join(base, "curl");
    await fs.mkdir(cwd);
    const r = await runBlock(block, ids.curl, cwd);
    expect(r.exitCode, r.all).to.equal(0);
    const tenant = JSON.parse(await fs.readFile(path.join(cwd, `${ids.curl}.json`), "utf8")) as { id?: string; token?: string };
    expect(tenant.id, r.all).to.equal(ids.curl);
    expect(tenant.token, r.all).to.be.a("string");
    expect(r.all).to.match(/"hostname":"sbox-1"/); // 2. launch
    expect(r.all).to.match(/Linux sbox-1 /); // 3. exec uname -a
    expect(r.all).to.include("hello from the host"); // 4. the copy read back
    expect(r.all.match(/hello from the host/g)?.length, r.all).to.equal(1); // only from the VM (the echo goes to a file)
    expect(r.all).to.not.match(/"code":"ERR_/);
    expect((await execa("bash", [path.join(ROOT, "scripts/leaks.sh"), "--tenant", ids.curl], { reject: false })).exitCode).to.equal(0); // 6. all gone
  });

  it("the CLI block does the same through paddock", async () => {
    const block = fencedBlockAfter(readme, "## Quick start (CLI)");
    expect(block).to.include("paddock vm exec");
    const cwd = path.join(base, "cli");
    await fs.mkdir(cwd);
    await fs.symlink(path.join(ROOT, "dist"), path.join(cwd, "dist"));
    const r = await runBlock(block, ids.cli, cwd);
    expect(r.exitCode, r.all).to.equal(0);
    expect(r.all).to.include("hello from sbox-1");
    expect(await fs.readFile(path.join(cwd, "os-release.copy"), "utf8")).to.equal(await fs.readFile("/etc/os-release", "utf8"));
    expect((await execa("bash", [path.join(ROOT, "scripts/leaks.sh"), "--tenant", ids.cli], { reject: false })).exitCode).to.equal(0);
  });
});
