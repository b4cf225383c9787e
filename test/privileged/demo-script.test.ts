/**
 * scripts/demo.sh end to end: image debian-12-dev, a supervisor on free ports,
 * two tenants, C and Python work in their sandboxes, visibility and TCP isolation between the
 * tenants with a positive control, cleanup and a leak check. The script is the test: it exits
 * non-zero on any failed check, and this test also reads its summary and re-checks leaks.
 *
 * Runs in every `npm test` (which forbids pending tests), as root after `bash scripts/setup.sh`,
 * which builds the debian-12-dev image; then the script takes ~40 s. Where the image is absent
 * (a box set up before setup.sh built it) the script's own first step builds it, 1-3 min once
 * (shared/image-store.ts `buildImage`: debootstrap into `.build-<name>-*`, then
 * rename; a later run reuses it by name).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { describeWhenReady, missingPrerequisites, TEST_IMAGE_DIR } from "../helpers/prerequisites.js";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const IMAGE = process.env.PADDOCK_DEMO_IMAGE ?? "debian-12-dev";
const imageBuilt = existsSync(path.join(TEST_IMAGE_DIR, IMAGE, "image.json"));

describeWhenReady(missingPrerequisites({ images: [], dist: ["dist/cli/paddock.js"] }), "scripts/demo.sh end to end (privileged; builds debian-12-dev when absent)", function () {
  // 40 s with the image; up to ~3 min more to build it (debootstrap) when it is absent.
  this.timeout(imageBuilt ? 300_000 : 900_000);
  let child: ChildProcess | undefined;
  let output = "";
  const tenants = (): string[] => [...output.matchAll(/==> Tenant [AB] = ([a-z0-9]+)/g)].map((m) => m[1] as string);

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      // SIGTERM runs the script's own cleanup (tenant delete, supervisor stop, leak check).
      const exited = new Promise((resolve) => child?.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    for (const id of tenants()) await execa("bash", [path.join(ROOT, "scripts/leaks.sh"), "--tenant", id, "--remove"], { reject: false });
  });

  it("passes every check, cleans up, and prints a summary with timings", async () => {
    // PADDOCK_ADMIN_URL unset: the script starts (and stops) its own supervisor.
    const env: NodeJS.ProcessEnv = { ...process.env, PADDOCK_IMAGE_DIR: TEST_IMAGE_DIR };
    for (const k of ["PADDOCK_ADMIN_URL", "PADDOCK_ADMIN_TOKEN", "PADDOCK_URL", "PADDOCK_TOKEN"]) delete env[k];
    const c = spawn("bash", [path.join(ROOT, "scripts/demo.sh")], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    c.stdout.on("data", (d: Buffer) => (output += d.toString()));
    c.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => c.once("exit", (n) => resolve(n)));
    if (process.env.PADDOCK_TEST_VERBOSE) process.stdout.write(output);
    expect(code, output).to.equal(0);
    expect(output).to.match(/ALL \d+ CHECKS PASSED/);
    expect(output).to.not.include("FAILED");
    // The checks that carry the job and the isolation claim all ran.
    for (const s of ["gcc compiled wordfreq.c inside A:sbox-1", "gcc compiled wordfreq.c inside B:sbox-1", "python3 ran textstats.py inside B:sbox-2",
      "equals sort|uniq -c on the host", "positive control: B:sbox-1 reaches its listener on its own address", "A:sbox-1 cannot connect to B:sbox-1", "A:sbox-2 cannot connect to B:sbox-1", "dropped or reset",
      "A's token cannot see B's ctrl-1", "nothing left", "==> Summary"]) {
      expect(output, s).to.include(s);
    }
    expect(tenants()).to.have.length(2);
    for (const id of tenants()) {
      const leaks = await execa("bash", [path.join(ROOT, "scripts/leaks.sh"), "--tenant", id], { reject: false });
      expect(leaks.exitCode, leaks.stdout).to.equal(0);
    }
    const total = /total\s+([\d.]+) s/.exec(output);
    expect(total, "summary total").to.not.equal(null);
    console.log(`      demo.sh total ${total?.[1] ?? "?"} s`);
  });
});
