/**
 * The refused-fork counter the reaper reads for a gVisor VM's `pids_limit` exit
 * (tenant-daemon/vm/vm-exit-reason.ts `hostPidsMaxReader`), against the kernel: a shell moved
 * into a cgroup `paddock/<random tenant>/h1` with `pids.max` 2 forks four `sleep`s; the kernel
 * refuses some and counts them in the cgroup's `pids.events` `max`, which the reader returns from
 * the host's hierarchy by the VM's cgroup path. A fresh cgroup reads 0, a missing one undefined.
 * Needs root; the cgroups are removed in an after hook whatever happens. The decision itself is
 * in test/unit/vm-exit-reason.test.ts.
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { hostPidsMaxReader } from "../../tenant-daemon/vm/vm-exit-reason.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const missing = missingPrerequisites({ images: [], dist: [] });
/** The hierarchy the test uses: v1 `pids` on a hybrid host, else the unified v2 root. */
const V1 = existsSync("/sys/fs/cgroup/pids/cgroup.procs");
const HIERARCHY = V1 ? "/sys/fs/cgroup/pids" : "/sys/fs/cgroup";

describeWhenReady(missing, "pids_limit exit reason: the host's refused-fork counter (privileged)", function () {
  this.timeout(30_000);
  const tenant = `px${crypto.randomBytes(3).toString("hex")}`;
  const rel = `/paddock/${tenant}/h1`;
  const tenantDir = path.join(HIERARCHY, "paddock", tenant);
  const vmDir = path.join(tenantDir, "h1");

  after(async () => {
    // A cgroup whose last task just exited can refuse rmdir (EBUSY) for a moment: retry for ~2 s
    // (a leftover `paddock/px…/h1` was once found after a full run).
    for (const d of [vmDir, tenantDir]) {
      for (let i = 0; i < 40 && existsSync(d); i++) {
        await fs.rmdir(d).catch(() => new Promise((r) => setTimeout(r, 50)));
      }
    }
  });

  it("reads pids.events max of the VM's cgroup: 0 when fresh, more once the kernel refused forks", async () => {
    const read = hostPidsMaxReader();
    expect(await read(rel), "no cgroup yet").to.equal(undefined);
    await fs.mkdir(vmDir, { recursive: true });
    if (!V1) for (const d of [path.join(HIERARCHY, "paddock"), tenantDir]) await fs.writeFile(path.join(d, "cgroup.subtree_control"), "+pids");
    await fs.writeFile(path.join(vmDir, "pids.max"), "2");
    expect(await read(rel)).to.equal(0);
    // The shell joins the cgroup, then forks past its limit; `wait` reaps what did start.
    const script = `echo $$ > ${path.join(vmDir, "cgroup.procs")}; for i in 1 2 3 4; do sleep 0.2 & done; wait`;
    await run("sh", ["-c", script], { allowFailure: true, timeoutMs: 20_000 });
    expect(await read(rel)).to.be.at.least(1);
    expect(await read(`/paddock/${tenant}/../${tenant}/h1`), "a path with .. reads nothing").to.equal(undefined);
  });
});
