/**
 * The tenant daemon's production entry (tenant-daemon/launch.ts): the bundle and its V8 code
 * cache that `npm run build` makes (scripts/build-daemon-bundle.ts) are there, the cache is
 * accepted by node run with the daemon's flags (shared/daemon-node-flags.ts; a rejected cache
 * only costs start time, so nothing else would notice), the launcher runs the bundled main(),
 * and the supervisor recognises a daemon started by either entry (supervisor/proc-info.ts).
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { DAEMON_NODE_FLAGS } from "../../shared/daemon-node-flags.js";
import { daemonEntryVariants, isDaemonCmdline } from "../../supervisor/proc-info.js";
import { CODE_CACHE_SUFFIX, DAEMON_BUNDLE_FILE } from "../../tenant-daemon/launch.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";

const DIR = path.join(PROJECT_ROOT, "dist/tenant-daemon");
const LAUNCH = path.join(DIR, "launch.js");
const BUNDLE = path.join(DIR, DAEMON_BUNDLE_FILE);

/** A child that loads the bundle through the launcher's loader and prints whether V8 took the cache. */
const PROBE = `import { readFileSync } from "node:fs";
import { runCommonJsFile } from ${JSON.stringify(LAUNCH)};
const r = runCommonJsFile(${JSON.stringify(BUNDLE)}, readFileSync(${JSON.stringify(BUNDLE + CODE_CACHE_SUFFIX)}));
process.stdout.write(JSON.stringify({ rejected: r.cacheRejected, main: typeof r.exports.main }));`;

describe("tenant daemon bundle (launch.js)", function () {
  this.timeout(60_000);

  it("the build made the bundle and its code cache", () => {
    expect(existsSync(BUNDLE), BUNDLE).to.equal(true);
    expect(existsSync(BUNDLE + CODE_CACHE_SUFFIX), BUNDLE + CODE_CACHE_SUFFIX).to.equal(true);
  });

  it("node with the daemon's flags accepts the cache; without them V8 rejects it (the control)", async () => {
    const withFlags = await execa(process.execPath, [...DAEMON_NODE_FLAGS, "--input-type=module", "-e", PROBE]);
    expect(JSON.parse(withFlags.stdout)).to.deep.equal({ rejected: false, main: "function" });
    const without = await execa(process.execPath, ["--input-type=module", "-e", PROBE]);
    expect(JSON.parse(without.stdout)).to.deep.equal({ rejected: true, main: "function" });
  });

  it("runs the bundled main(): a bad usage exits 2 with the daemon's usage line", async () => {
    const r = await execa(process.execPath, [...DAEMON_NODE_FLAGS, LAUNCH, "nonsense"], { reject: false });
    expect(r.exitCode).to.equal(2);
    expect(r.stderr).to.contain("usage: paddock daemon up <config.yaml>");
  });

  it("a daemon of either entry point of one build is the same daemon to the supervisor", () => {
    const main = path.join(DIR, "main.js");
    expect(daemonEntryVariants(LAUNCH)).to.deep.equal([LAUNCH, main]);
    expect(daemonEntryVariants("/opt/other/daemon.js")).to.deep.equal(["/opt/other/daemon.js"]);
    const cfg = "/var/lib/paddock/tenants/a1/config.yaml";
    expect(isDaemonCmdline(["/usr/bin/node", ...DAEMON_NODE_FLAGS, LAUNCH, "up", cfg], LAUNCH, cfg)).to.equal(true);
    expect(isDaemonCmdline(["/usr/bin/node", main, "up", cfg], LAUNCH, cfg)).to.equal(true);
    expect(isDaemonCmdline(["/usr/bin/node", LAUNCH, "up", cfg + ".x"], LAUNCH, cfg)).to.equal(false);
    expect(isDaemonCmdline(["/usr/bin/node", "/opt/x/launch.js", "up", cfg], LAUNCH, cfg)).to.equal(false);
  });
});
