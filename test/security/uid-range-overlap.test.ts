/**
 * Two standalone tenant daemons whose configs request overlapping host uid ranges
 * (`paddock.userns`, shared/uid-ranges.ts): the second must refuse to start with
 * ERR_USERNS_RANGE_TAKEN naming the first, before it creates anything (no nftables table, no
 * link, no netns, no mount, no run dir), and the first keeps serving. Claims go to a temp dir
 * (PADDOCK_UID_CLAIMS_DIR, inherited by the daemons), never the host's.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { listUidClaims } from "../../shared/uid-ranges.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

describeWhenReady(missingPrerequisites(), "security: overlapping uid ranges of two daemons (privileged)", function () {
  this.timeout(120_000);
  let claimsDir = "";
  let savedEnv: string | undefined;
  let first: TestDaemon | undefined;
  let second: TestDaemon | undefined;

  before(async () => {
    claimsDir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-uidclaims-"));
    savedEnv = process.env.PADDOCK_UID_CLAIMS_DIR;
    process.env.PADDOCK_UID_CLAIMS_DIR = claimsDir;
  });
  after(async () => {
    await second?.destroy();
    await first?.destroy();
    // A claim whose state dir is gone is stale by design (shared/uid-ranges.ts); none may stay live.
    const left = (await listUidClaims(claimsDir)).filter((c) => c.stale === undefined);
    if (savedEnv === undefined) delete process.env.PADDOCK_UID_CLAIMS_DIR;
    else process.env.PADDOCK_UID_CLAIMS_DIR = savedEnv;
    await fs.rm(claimsDir, { recursive: true, force: true });
    expect(left, "live claims left after both purges").to.deep.equal([]);
  });

  it("the second daemon refuses with ERR_USERNS_RANGE_TAKEN, creates nothing, and the first keeps running", async () => {
    first = await TestDaemon.create({ paddock: { userns: { uid_start: 3_000_000_000, size: 131_072 } } });
    // VMs run as unprivileged host users: they must be able to traverse to their run dir.
    await fs.chmod(first.dir, 0o711);
    await first.start();
    expect((await listUidClaims(claimsDir)).map((c) => (c.stale === "unparsable" ? "?" : [c.tenantId, c.uidStart, c.size]))).to.deep.equal([[first.tenantId, 3_000_000_000, 131_072]]);

    second = await TestDaemon.create({ paddock: { userns: { uid_start: 3_000_065_536 } } });
    await fs.chmod(second.dir, 0o711);
    const err = await second.start(30_000).then(() => undefined, (e: unknown) => e as Error);
    expect(err, "the second daemon started").to.be.instanceOf(Error);
    expect(err?.message).to.match(/daemon exited \(4\) during start/);
    expect(second.stderr).to.contain("ERR_USERNS_RANGE_TAKEN").and.contain(`tenant ${first.tenantId}`).and.contain(first.stateDir).and.contain("paddock.userns.uid_start");

    // Nothing of the second tenant exists on the host.
    const tables = (await run("nft", ["list", "tables"])).stdout;
    expect(tables).to.contain(`paddock-${first.tenantId}`);
    expect(tables).to.not.contain(`paddock-${second.tenantId}`);
    expect((await run("ip", ["-o", "link", "show"])).stdout).to.not.contain(`paddock/${second.tenantId}/`);
    expect((await run("ip", ["netns", "list"])).stdout).to.not.contain(`pdk-${second.tenantId}-`);
    expect(await mountsUnder(second.dir)).to.deep.equal([]);
    expect(existsSync(second.runDir), "run dir of the refused daemon").to.equal(false);
    expect(existsSync(path.join(second.stateDir, "state.json")), "state.json of the refused daemon").to.equal(false);
    expect((await listUidClaims(claimsDir)).map((c) => (c.stale === "unparsable" ? "?" : c.tenantId))).to.deep.equal([first.tenantId]);

    // The first is unharmed.
    expect((await first.get("/healthz")).status).to.equal(200);
    expect(first.child?.exitCode).to.equal(null);

    // Positive control: a non-overlapping range starts.
    await fs.writeFile(second.configPath, (await fs.readFile(second.configPath, "utf8")).replace("uid_start: 3000065536", "uid_start: 3000131072"));
    await second.start();
    expect((await second.get("/healthz")).status).to.equal(200);
  });
});
