/**
 * Creating a tenant on either runtime through a REAL supervisor (child process, tenant daemons
 * played by the echo fixture, which loads the rendered config with the daemon's parser): the
 * `sandbox-gvisor` template, the create body's `hypervisor`, and the refusal when the host has
 * no runsc. "No runsc" is real: the supervisor runs in its own mount namespace
 * (`unshare --mount`), where the test bind-mounts /dev/null over every runsc binary with
 * nsenter and takes it away again; the host's runsc is never touched.
 */
import { expect } from "chai";
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { parse as parseYaml } from "yaml";
import { TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";
import { findRunscBinary } from "../../shared/runsc-binary.js";

/** Every `runsc` the supervisor's search would find (PATH, then the system dirs). */
function runscCandidates(): string[] {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter((d) => d !== "");
  return [...new Set(dirs.map((d) => path.join(d, "runsc")).filter((f) => existsSync(f)))];
}

const missing = missingPrerequisites({ images: [], dist: ["dist/cli/paddock.js", "dist/test/fixtures/echo-daemon.js"] });
if (findRunscBinary() === undefined) missing.push("runsc not installed (apt-get install runsc)");

describeWhenReady(missing, "supervisor: a tenant on runc or gVisor (admin API, real supervisor in its own mount namespace)", function () {
  this.timeout(120_000);
  let sup: TestSupervisor | undefined;
  const ids = ["tgv", "tgvoci", "tsbgv", "tsb", "tbad", "tnogv", "tnogv2", "tnooci", "tpids", "tpidgv", "tpidoci"];
  /** Paths bind-mounted over in the supervisor's namespace (undone in `after` too). */
  let hidden: string[] = [];

  const nsenter = (argv: string[]) => execa("nsenter", ["--target", String(sup?.pid), "--mount", "--", ...argv], { reject: false });
  const configOf = async (id: string) => parseYaml(await fs.readFile(path.join((sup as TestSupervisor).stateDir, "tenants", id, "config.yaml"), "utf8")) as { config: { hypervisor: string; image: string } };

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", wrap: ["unshare", "--mount", "--propagation", "private"], config: (p) => ({ ...echoDaemonConfig(p), stop_daemons_on_exit: true }) });
    await sup.start();
  });

  after(async () => {
    for (const f of hidden) await nsenter(["umount", f]);
    // Echo daemons own no VMs, links or mounts: deleting the tenants (which releases their uid
    // range claims) is all the cleanup, then destroy() stops the supervisor and removes its dir.
    if (sup?.isRunning) for (const id of ids) await sup.adminReq("DELETE", `/tenants/${id}`).catch(() => undefined);
    await sup?.destroy();
  });

  it("template sandbox-gvisor ⇒ hypervisor gvisor; `hypervisor` in the body overrides the template either way; it shows in GET and is recorded", async () => {
    const s = sup as TestSupervisor;
    await s.createTenant("tgv", "sandbox-gvisor");
    await s.createTenant("tgvoci", "sandbox-gvisor", { hypervisor: "oci" });
    // sandbox's 2048 guest processes under gVisor would be 26112 host pids: more than a default host leaves (see below).
    await s.createTenant("tsbgv", "sandbox", { hypervisor: "gvisor", limits: { max_pids: 256 } });
    await s.createTenant("tsb", "sandbox");
    const got: Record<string, unknown> = {};
    for (const id of ["tgv", "tgvoci", "tsbgv", "tsb"]) {
      const r = await s.adminReq("GET", `/tenants/${id}`);
      expect(r.status, r.text).to.equal(200);
      const view = r.json as { hypervisor?: string; status: string };
      got[id] = { view: view.hypervisor, config: (await configOf(id)).config.hypervisor, status: view.status };
    }
    expect(got).to.deep.equal({
      tgv: { view: "gvisor", config: "gvisor", status: "active" },
      tgvoci: { view: "oci", config: "oci", status: "active" },
      tsbgv: { view: "gvisor", config: "gvisor", status: "active" },
      tsb: { view: "oci", config: "oci", status: "active" },
    });
    const reg = JSON.parse(await fs.readFile(s.registryFile(), "utf8")) as { tenants: Record<string, { hypervisor?: string }> };
    expect(reg.tenants.tsbgv?.hypervisor).to.equal("gvisor");
  });

  it("a re-render (limits change) keeps the tenant's runtime", async () => {
    const s = sup as TestSupervisor;
    const r = await s.adminReq("PATCH", "/tenants/tsbgv", { limits: { max_vms: 3 } });
    expect(r.status, r.text).to.equal(200);
    expect((await configOf("tsbgv")).config.hypervisor).to.equal("gvisor");
  });

  it("a gVisor tenant's budget counts its host pids (sentry, gofer, stubs), not max_pids: refused where the same max_pids on runc fits (507, nothing created)", async () => {
    const s = sup as TestSupervisor;
    // What this host has left for tenants now (pid_max and the tenants above), from a refusal's details.
    const probe = await s.adminReq("POST", "/tenants", { id: "tpids", template: "sandbox", limits: { max_pids: 4_194_304 } });
    expect((probe.json as { code?: string }).code, probe.text).to.equal("ERR_PIDS_BUDGET_EXCEEDED");
    // A 5xx answer carries no details: the message says what remains.
    const left = Number(/at most (\d+) host pids remain/.exec((probe.json as { error: string }).error)?.[1]);
    expect(left, "room left for one more tenant").to.be.greaterThan(64);
    const maxPids = Math.floor(left / 2);
    const r = await s.adminReq("POST", "/tenants", { id: "tpidgv", template: "sandbox", hypervisor: "gvisor", limits: { max_pids: maxPids } });
    const j = r.json as { code?: string; error?: string };
    expect({ status: r.status, code: j.code }, r.text).to.deep.equal({ status: 507, code: "ERR_PIDS_BUDGET_EXCEEDED" });
    expect(j.error).to.contain(`limits.max_pids ${maxPids} (`).and.to.contain("host pids under gVisor").and.to.contain(`at most ${left} host pids remain`).and.to.match(/with max_vms 16 at most max_pids \d+ fits/);
    expect(Number(/\((\d+) host pids under gVisor/.exec(j.error ?? "")?.[1])).to.be.greaterThan(left);
    expect((await s.adminReq("GET", "/tenants/tpidgv")).status).to.equal(404);
    expect(existsSync(path.join(s.stateDir, "tenants", "tpidgv")), "tpidgv state dir").to.equal(false);
    // Positive control: the same max_pids on runc fits (its host pids are its max_pids).
    await s.createTenant("tpidoci", "sandbox", { limits: { max_pids: maxPids } });
    expect((await s.adminReq("DELETE", "/tenants/tpidoci")).status).to.be.oneOf([200, 202, 204]);
  });

  it("an unknown hypervisor is refused (400 ERR_TENANT_INVALID naming oci and gvisor), nothing created", async () => {
    const s = sup as TestSupervisor;
    for (const h of ["firecracker", "runc", "", 1, null]) {
      const r = await s.adminReq("POST", "/tenants", { id: "tbad", template: "sandbox", hypervisor: h });
      expect({ status: r.status, code: (r.json as { code?: string }).code }, `hypervisor ${JSON.stringify(h)}: ${r.text}`).to.deep.equal({ status: 400, code: "ERR_TENANT_INVALID" });
      expect(r.text).to.match(/hypervisor: expected oci or gvisor/);
    }
    expect((await s.adminReq("GET", "/tenants/tbad")).status).to.equal(404);
  });

  it("without runsc on the host, a gVisor tenant (template or field) is refused with ERR_RUNTIME_UNAVAILABLE naming `apt-get install runsc`, leaving nothing; a runc tenant is still created", async () => {
    const s = sup as TestSupervisor;
    const candidates = runscCandidates();
    expect(candidates.length, "the host has runsc (positive control: the first test created gVisor tenants with it)").to.be.greaterThan(0);
    for (const f of candidates) {
      const m = await nsenter(["mount", "--bind", "/dev/null", f]);
      expect(m.exitCode, m.stderr).to.equal(0);
      hidden.push(f);
    }
    // The supervisor's namespace has no runsc file now; the host's is untouched.
    expect((await nsenter(["test", "-f", candidates[0] as string])).exitCode).to.not.equal(0);
    expect((await fs.stat(candidates[0] as string)).isFile()).to.equal(true);

    for (const [id, body] of [["tnogv", { template: "sandbox-gvisor" }], ["tnogv2", { template: "sandbox", hypervisor: "gvisor" }]] as const) {
      const r = await s.adminReq("POST", "/tenants", { id, ...body });
      const j = r.json as { code?: string; error?: string };
      expect({ status: r.status, code: j.code }, r.text).to.deep.equal({ status: 500, code: "ERR_RUNTIME_UNAVAILABLE" });
      expect(j.error).to.contain("apt-get install runsc").and.to.contain("gVisor");
      expect((await s.adminReq("GET", `/tenants/${id}`)).status, `${id} not listed`).to.equal(404);
      expect(existsSync(path.join(s.stateDir, "tenants", id)), `${id} state dir`).to.equal(false);
      expect(existsSync(path.join(s.runDir, "tenants", id)), `${id} run dir`).to.equal(false);
    }
    // Positive control: the same supervisor, same moment, creates a runc tenant (also from the
    // gVisor template with hypervisor oci), so the refusal is about runsc only.
    await s.createTenant("tnooci", "sandbox-gvisor", { hypervisor: "oci" });
    expect((await configOf("tnooci")).config.hypervisor).to.equal("oci");

    for (const f of hidden) expect((await nsenter(["umount", f])).exitCode).to.equal(0);
    hidden = [];
  });
});
