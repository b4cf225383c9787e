import { expect } from "chai";
import { execFileSync } from "node:child_process";
import { silentLogger, type Logger } from "../../shared/logger.js";
import { warnRuncAdvisories } from "../../tenant-daemon/runtime/oci-driver.js";
import { parseRuncVersion, runcAffectedBy, runcWarning } from "../../tenant-daemon/runtime/runc-advisories.js";

const CVES = ["CVE-2025-31133", "CVE-2025-52565", "CVE-2025-52881"];

describe("runc advisories", () => {
  it("parses `runc --version` (Debian's and upstream's)", () => {
    expect(parseRuncVersion("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n")).to.deep.equal([1, 1, 5]);
    expect(parseRuncVersion("runc version 1.3.3\ncommit: v1.3.3-0-gd842d77\n")).to.deep.equal([1, 3, 3]);
    expect(parseRuncVersion("crun version 1.8")).to.equal(undefined);
  });

  it("flags Debian 12's runc and every release before the fixes, and nothing after", () => {
    for (const v of [[1, 1, 5], [1, 0, 0], [1, 2, 7], [1, 3, 2], [1, 3, 0]] as const) expect(runcAffectedBy([...v]), v.join(".")).to.deep.equal(CVES);
    for (const v of [[1, 2, 8], [1, 2, 9], [1, 3, 3], [1, 4, 0], [1, 5, 1], [2, 0, 0]] as const) expect(runcAffectedBy([...v]), v.join(".")).to.deep.equal([]);
  });

  it("words a warning that names the CVEs and the way out, only for an affected runc", () => {
    const w = runcWarning("runc version 1.1.5+ds1\n") ?? "";
    for (const cve of CVES) expect(w).to.include(cve);
    expect(w).to.match(/patched runc/);
    expect(runcWarning("runc version 1.3.3\n")).to.equal(undefined);
    expect(runcWarning("garbage")).to.equal(undefined);
  });

  it("warnRuncAdvisories (run after the daemon is ready) warns for this host's runc as runcWarning says, only for runc, and never throws", async () => {
    const lines: string[] = [];
    const log: Logger = { ...silentLogger, warn: (m) => lines.push(m), child: () => log };
    const runc = execFileSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).trim();
    await warnRuncAdvisories({ name: "runc", binary: runc }, log);
    const expected = runcWarning(execFileSync(runc, ["--version"], { encoding: "utf8" }));
    expect(lines).to.deep.equal(expected === undefined ? [] : [expected]);
    lines.length = 0;
    await warnRuncAdvisories({ name: "crun", binary: runc }, log);
    await warnRuncAdvisories({ name: "runc", binary: "/nonexistent/pdk-runc" }, log);
    expect(lines, "not runc, or no answer: no warning").to.deep.equal([]);
  });
});
