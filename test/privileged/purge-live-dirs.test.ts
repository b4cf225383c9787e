/**
 * `paddock daemon purge` (tenant-daemon/main.ts `purgeTenant`) of a standalone config whose state
 * dir is nested in a live tenant's dir is refused before anything is touched: by the live
 * tenant's id when the dir is under `…/tenants/<id>/`, and by the dirs the live daemon recorded
 * in its id lock (shared/tenant-id-lock.ts) otherwise. The "live daemon" is this test process
 * holding a real id lock in the host's lock dir under a fresh id. A daemon start (`startDaemon`)
 * is refused the same way when its run dir is a live tenant's. Needs root (/run/paddock).
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { acquireTenantIdLock } from "../../shared/tenant-id-lock.js";
import { purgeTenant, startDaemon } from "../../tenant-daemon/main.js";
import { assertNoLiveTenantDirs } from "../../tenant-daemon/purge-dirs.js";
import { silentLogger } from "../../shared/logger.js";

describe("daemon purge never removes a dir nested in a live tenant's dir (root)", function () {
  let dir = "";
  const rid = (p: string): string => `${p}${randomBytes(4).toString("hex").slice(0, 7)}`;
  const config = (tenantId: string, stateDir: string, runDir: string): string =>
    `config:\n  host_groups:\n    - name: sbox\n      count: 0\n      vcpu: 1\n      ram_mb: 256\n      storage: image\n      storage_size: 128M\n      network:\n        mode: isolated\n        range: 169.254.4.0/22\n  image: debian-12\n  hypervisor: oci\npaddock:\n  tenant_id: ${tenantId}\n  state_dir: ${stateDir}\n  run_dir: ${runDir}\n`;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    dir = await fs.mkdtemp("/tmp/pdkd-purgelive-");
  });
  after(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  for (const layout of ["tenants/<id>", "recorded dirs"] as const) {
    it(`refuses (ERR_TENANT_ID_IN_USE, nothing touched) when the live tenant's dir is found by ${layout}`, async () => {
      const live = rid("b");
      const liveState = layout === "tenants/<id>" ? path.join(dir, "tenants", live) : path.join(dir, `live-${live}`);
      const nested = path.join(liveState, "a-state");
      await fs.mkdir(nested, { recursive: true });
      await fs.writeFile(path.join(nested, "keep"), "x");
      await fs.writeFile(path.join(liveState, "keep"), "x");
      // Only the recorded-dirs case tells the lock where the live tenant's dirs are.
      const release = await acquireTenantIdLock({ tenantId: live, configPath: path.join(dir, `${live}.yaml`), purpose: "serve", ...(layout === "recorded dirs" ? { dirs: [liveState] } : {}) });
      try {
        const purged = rid("a");
        const cfg = path.join(dir, `${purged}.yaml`);
        await fs.writeFile(cfg, config(purged, nested, path.join(dir, `run-${purged}`)));
        const err = await purgeTenant(cfg, { logger: silentLogger }).then(() => undefined, (e: unknown) => e);
        expect(isPaddockError(err) && err.code, String(err)).to.equal("ERR_TENANT_ID_IN_USE");
        expect((err as Error).message).to.contain(`cannot purge tenant ${purged}`).and.contain(live);
        expect(existsSync(path.join(nested, "keep")), "the nested dir is untouched").to.equal(true);
        expect(existsSync(path.join(liveState, "keep"))).to.equal(true);
      } finally {
        await release();
      }
    });
  }

  it("a daemon start whose run dir is a live tenant's refuses (ERR_TENANT_ID_IN_USE), touching nothing; its own dirs pass", async () => {
    // Two daemons on one run dir would share VM bundle and mount dirs: one's VM delete broke the other's VM.
    const live = rid("b");
    const liveState = path.join(dir, `state-${live}`);
    const liveRun = path.join(dir, `run-${live}`);
    await fs.mkdir(liveRun, { recursive: true });
    await fs.writeFile(path.join(liveRun, "keep"), "x");
    const release = await acquireTenantIdLock({ tenantId: live, configPath: path.join(dir, `${live}.yaml`), purpose: "serve", dirs: [liveState, liveRun] });
    try {
      const started = rid("a");
      const ownState = path.join(dir, `state-${started}`);
      const cfg = path.join(dir, `${started}.yaml`);
      await fs.writeFile(cfg, config(started, ownState, liveRun));
      const err = await startDaemon(cfg, { logger: silentLogger }).then(async (d) => {
        await d.stop();
        return undefined;
      }, (e: unknown) => e);
      expect(isPaddockError(err) && err.code, String(err)).to.equal("ERR_TENANT_ID_IN_USE");
      expect((err as Error).message).to.contain(`cannot start tenant ${started}: ${liveRun} is a dir of tenant ${live}`);
      expect(await fs.readdir(liveRun), "the live run dir is untouched").to.deep.equal(["keep"]);
      expect(existsSync(ownState), "no state dir made").to.equal(false);
      // Control: the same check with the tenant's own run dir passes.
      await assertNoLiveTenantDirs(started, [ownState, path.join(dir, `run-${started}`)], cfg, "start");
    } finally {
      await release();
    }
  });
});
