/**
 * scripts/leaks.sh lists the processes left in a tenant's cgroups (by cgroup, with pid and comm)
 * and `--remove` kills them by pid before it removes the cgroups: a sandbox runsc lost track of
 * keeps its cgroup busy, so an rmdir alone fails (EBUSY). A `sleep` moved into a cgroup
 * `paddock/<random tenant>/h1` stands for it. Needs root; the process and cgroups are removed in
 * after hooks whatever happens.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { LEAKS_SH } from "../helpers/supervisor.js";

const missing = missingPrerequisites({ images: [], dist: [] });
/** The hierarchy the test uses: v1 `pids` on a hybrid host, else the unified v2 root. */
const HIERARCHY = existsSync("/sys/fs/cgroup/pids/cgroup.procs") ? "/sys/fs/cgroup/pids" : "/sys/fs/cgroup";

describeWhenReady(missing, "scripts/leaks.sh: processes in a tenant's cgroups (privileged)", function () {
  this.timeout(30_000);
  const tenant = `lk${crypto.randomBytes(3).toString("hex")}`;
  const tenantDir = path.join(HIERARCHY, "paddock", tenant);
  const vmDir = path.join(tenantDir, "h1");
  let child: ChildProcess | undefined;

  after(async () => {
    if (child?.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    for (const d of [vmDir, tenantDir]) await fs.rmdir(d).catch(() => undefined);
  });

  it("lists the process with its cgroup, pid and comm; --remove kills it and removes the cgroups", async () => {
    await fs.mkdir(vmDir, { recursive: true });
    child = spawn("sleep", ["1000"], { stdio: "ignore" });
    const exited = new Promise<string | null>((resolve) => child?.once("exit", (_code, signal) => resolve(signal)));
    const pid = child.pid as number;
    await fs.writeFile(path.join(vmDir, "cgroup.procs"), String(pid));

    const listed = await run("bash", [LEAKS_SH, "--tenant", tenant], { allowFailure: true, timeoutMs: 20_000 });
    expect(listed.exitCode, listed.stdout + listed.stderr).to.equal(1);
    expect(listed.stdout).to.match(new RegExp(`^process\\s+paddock/${tenant}/h1 pid ${pid} \\(sleep\\)$`, "m"));
    expect(listed.stdout).to.match(new RegExp(`^cgroup\\s+.*paddock/${tenant}/h1$`, "m"));

    const removed = await run("bash", [LEAKS_SH, "--tenant", tenant, "--remove"], { allowFailure: true, timeoutMs: 20_000 });
    expect(removed.exitCode, removed.stdout + removed.stderr).to.equal(0);
    expect(await exited, "killed by leaks.sh").to.equal("SIGKILL");
    expect(existsSync(vmDir), "the VM's cgroup is gone").to.equal(false);
    expect(existsSync(tenantDir), "the tenant's cgroup is gone").to.equal(false);
    const after = await run("bash", [LEAKS_SH, "--tenant", tenant], { allowFailure: true, timeoutMs: 20_000 });
    expect(after.stdout).to.contain(`no Paddock leftovers for tenant ${tenant}`);
  });
});
