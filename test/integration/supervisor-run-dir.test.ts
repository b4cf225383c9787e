/**
 * A run dir belongs to one supervisor state (supervisor/run-dir-claim.ts): a second supervisor
 * with its own state dir but the first one's run dir is refused before it removes anything
 * there (it took the first one's tenants for leftovers and deleted their run dirs, sockets and
 * VM bundles included). Real supervisors, tenant daemons played by the echo fixture.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { runSupervisor } from "../../supervisor/main.js";
import { FAST_RESTART, TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";

describe("supervisor run dir (integration)", function () {
  this.timeout(60_000);

  it("refuses a supervisor of another state dir on a run dir, and leaves the first one's tenants' run dirs", async function () {
    const a = await TestSupervisor.create({ config: (p) => ({ ...echoDaemonConfig(p), restart: FAST_RESTART }) });
    const id = "rdclaim";
    try {
      await a.start();
      await a.createTenant(id);
      const tenantRun = path.join(a.runDir, "tenants", id);
      // The first supervisor is stopped with its daemons: nothing live holds the tenant id, so
      // only the run dir's owner tells the second supervisor the dir is not a leftover.
      await a.stop({ stopDaemons: true });
      expect(existsSync(tenantRun), "the tenant's run dir is there before the second supervisor starts").to.equal(true);

      const otherState = path.join(a.dir, "state2");
      const other = { dir: a.dir, stateDir: otherState, runDir: a.runDir };
      const err = await runSupervisor({ flags: { stateDir: otherState, runDir: a.runDir }, env: {}, logger: silentLogger, ...(await configFor(other)) }).then(
        async (s) => {
          await s.close({ stopDaemons: true });
          return undefined;
        },
        (e: unknown) => e,
      );
      expect(existsSync(tenantRun), "the first supervisor's tenant run dir survived").to.equal(true);
      expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
      expect((err as Error).message).to.include(a.runDir).and.to.include("--run-dir");
      expect((await fs.readFile(path.join(a.runDir, "state-dir"), "utf8")).trim()).to.equal(await fs.realpath(a.stateDir));

      // The first supervisor comes back on its own run dir and still has its tenant.
      await a.start();
      const r = await a.adminReq("GET", `/tenants/${id}`);
      expect(r.status, r.text).to.equal(200);
    } finally {
      await a.destroy([id]);
    }
  });
});

/** A config file for a supervisor on `p` with echo daemons (written beside the first one's). */
async function configFor(p: { dir: string; stateDir: string; runDir: string }): Promise<{ configFile: string }> {
  const configFile = path.join(p.dir, "supervisor2.yaml");
  await fs.writeFile(configFile, JSON.stringify({ state_dir: p.stateDir, run_dir: p.runDir, ...echoDaemonConfig(p), admin: { address: "127.0.0.1:0" } }));
  return { configFile };
}
