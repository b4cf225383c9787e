/**
 * Default tenant limits through the real supervisor and admin API (tenant daemons played by
 * test/fixtures/echo-daemon, which loads the rendered config with the daemon's own parser):
 * a create without limits gets the template's (`paddock_template.limits`), or the supervisor's
 * `default_limits` for a template without any; the tenant view and the rendered config show
 * all five; a PATCH raises them and `null` resets one; the host-level pids check refuses a
 * budget that would eat into pid_max's reserve (507 ERR_PIDS_BUDGET_EXCEEDED).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { parse } from "yaml";
import { readPidMax } from "../../shared/host-pids.js";
import { findRunscBinary } from "../../shared/runsc-binary.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import type { TestResponse } from "../helpers/http.js";
import { TestSupervisor, echoDaemonConfig } from "../helpers/supervisor.js";

const GiB = 2 ** 30;

describe("tenant default limits (supervisor + admin API, fixture daemons)", function () {
  this.timeout(60_000);
  const suffix = Math.random().toString(36).slice(2, 6);
  const ids = { plain: `tl${suffix}a`, bare: `tl${suffix}b`, big: `tl${suffix}c`, nohyp: `tl${suffix}d` };
  let sup: TestSupervisor | undefined;
  let stateDir = "";

  const admin = (method: string, p: string, body?: unknown): Promise<TestResponse> => (sup as TestSupervisor).adminReq(method, p, body);
  const renderedLimits = async (id: string): Promise<{ limits: Record<string, number>; reserve: unknown }> => {
    const tree = parse(await fs.readFile(path.join(stateDir, "tenants", id, "config.yaml"), "utf8")) as { paddock: { limits: Record<string, number>; host_pids_reserve: unknown } };
    return { limits: tree.paddock.limits, reserve: tree.paddock.host_pids_reserve };
  };

  before(async () => {
    sup = await TestSupervisor.create({
      config: (p) => ({
        ...echoDaemonConfig(p),
        templates: { dir: path.join(p.dir, "templates") },
        default_limits: { max_vms: 2, max_pids: 1000 },
        host_pids_reserve: 8192,
      }),
    });
    stateDir = sup.stateDir;
    const templatesDir = path.join(sup.dir, "templates");
    await fs.mkdir(templatesDir);
    const sandbox = await fs.readFile(path.join(PROJECT_ROOT, "templates", "sandbox.yaml"), "utf8");
    await fs.writeFile(path.join(templatesDir, "sandbox.yaml"), sandbox);
    // The same template without its own limits: the supervisor's default_limits apply.
    const bare = parse(sandbox) as { paddock_template: Record<string, unknown> };
    delete bare.paddock_template.limits;
    await fs.writeFile(path.join(templatesDir, "bare.yaml"), JSON.stringify(bare));
    // The same template naming no runtime (config.hypervisor absent).
    const nohyp = parse(sandbox) as { config: Record<string, unknown> };
    delete nohyp.config.hypervisor;
    await fs.writeFile(path.join(templatesDir, "nohyp.yaml"), JSON.stringify(nohyp));
    // The template made for gVisor, which a refused gVisor create from another template names.
    await fs.copyFile(path.join(PROJECT_ROOT, "templates", "sandbox-gvisor.yaml"), path.join(templatesDir, "sandbox-gvisor.yaml"));
    await sup.start();
  });

  after(async () => {
    if (sup?.isRunning) {
      for (const id of Object.values(ids)) await admin("DELETE", `/tenants/${id}`).catch(() => undefined);
    }
    await sup?.destroy();
  });

  it('{"id"} alone gets the template\'s limits, shown in the tenant view and rendered into its config', async () => {
    const r = await admin("POST", "/tenants", { id: ids.plain });
    expect(r.status, r.text).to.equal(201);
    const want = { max_vms: 16, max_vcpu: 16, max_ram_bytes: 16 * GiB, max_disk_bytes: 32 * GiB, max_pids: 2048, max_conns: 3072, max_conns_per_vm: 2048 };
    expect((r.json as { limits: unknown }).limits).to.deep.equal(want);
    expect(((await admin("GET", `/tenants/${ids.plain}`)).json as { limits: unknown }).limits).to.deep.equal(want);
    expect(await renderedLimits(ids.plain)).to.deep.equal({ limits: want, reserve: 8192 });
  });

  it("a template naming no hypervisor is refused at create (400 ERR_CONFIG_INVALID, nothing kept) unless the request names one", async () => {
    const r = await admin("POST", "/tenants", { id: ids.nohyp, template: "nohyp" });
    expect({ status: r.status, code: (r.json as { code?: string }).code }, r.text).to.deep.equal({ status: 400, code: "ERR_CONFIG_INVALID" });
    expect(r.text).to.contain("template nohyp names no config.hypervisor").and.to.contain("--hypervisor oci");
    expect((await admin("GET", `/tenants/${ids.nohyp}`)).status).to.equal(404);
    expect(await fs.stat(path.join(stateDir, "tenants", ids.nohyp)).then(() => true, () => false), "no state dir").to.equal(false);
    // Positive control: the same template with the runtime in the request.
    const ok = await admin("POST", "/tenants", { id: ids.nohyp, template: "nohyp", hypervisor: "oci" });
    expect(ok.status, ok.text).to.equal(201);
    expect((await admin("DELETE", `/tenants/${ids.nohyp}`)).status).to.be.lessThan(300);
  });

  it("a template without limits gets the supervisor's default_limits (over the built-in defaults); the request wins over both", async () => {
    const r = await admin("POST", "/tenants", { id: ids.bare, template: "bare", limits: { max_vcpu: 2 } });
    expect(r.status, r.text).to.equal(201);
    expect((r.json as { limits: unknown }).limits).to.deep.equal({ max_vms: 2, max_vcpu: 2, max_ram_bytes: 4 * GiB, max_disk_bytes: 16 * GiB, max_pids: 1000, max_conns: 3072, max_conns_per_vm: 2048 });
  });

  it("PATCH raises the limits (rendered at once, applied at restart); null resets one to its default", async () => {
    const r = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_vms: 10, max_ram_bytes: 6 * GiB, max_pids: 4096, max_conns: 8192 } });
    expect(r.status, r.text).to.equal(200);
    const raised = { max_vms: 10, max_vcpu: 16, max_ram_bytes: 6 * GiB, max_disk_bytes: 32 * GiB, max_pids: 4096, max_conns: 8192, max_conns_per_vm: 2048 };
    expect(r.json).to.deep.include({ limits: raised, pending_restart: true });
    expect((await renderedLimits(ids.plain)).limits).to.deep.equal(raised);
    const reset = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_vms: null } });
    expect(reset.status, reset.text).to.equal(200);
    expect((reset.json as { limits: { max_vms: number } }).limits.max_vms).to.equal(16);
    expect(reset.json, "still not what the daemon runs with").to.deep.include({ pending_restart: true });
    // Back to the limits the daemon started with: nothing is pending any more.
    const back = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_ram_bytes: null, max_pids: null, max_conns: null } });
    expect(back.status, back.text).to.equal(200);
    expect(back.json).to.deep.include({ limits: { max_vms: 16, max_vcpu: 16, max_ram_bytes: 16 * GiB, max_disk_bytes: 32 * GiB, max_pids: 2048, max_conns: 3072, max_conns_per_vm: 2048 }, pending_restart: false });
    // A change after that is pending again.
    const again = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_vms: 12 } });
    expect(again.json).to.deep.include({ pending_restart: true });
    const undo = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_vms: null } });
    expect(undo.json).to.deep.include({ pending_restart: false });
    const bad = await admin("PATCH", `/tenants/${ids.plain}`, { limits: { max_pids: 3, max_cpus: 1 } });
    expect(bad.status).to.equal(400);
    expect(bad.json).to.deep.include({ code: "ERR_TENANT_INVALID" });
    expect(bad.text).to.contain("limits.max_pids").and.contain("limits.max_cpus");
  });

  it("a pids budget past what pid_max leaves after the reserve and the other tenants is refused (507), at create and at PATCH", async () => {
    const room = (await readPidMax()) - 8192;
    const pidsOf = async (id: string): Promise<number> => ((await admin("GET", `/tenants/${id}`)).json as { limits: { max_pids: number } }).limits.max_pids;
    const held = (await pidsOf(ids.plain)) + (await pidsOf(ids.bare));
    const tooBig = room - held + 1;
    const r = await admin("POST", "/tenants", { id: ids.big, limits: { max_pids: tooBig } });
    expect(r.status, r.text).to.equal(507);
    expect(r.json).to.deep.include({ code: "ERR_PIDS_BUDGET_EXCEEDED" });
    expect(r.text).to.contain(`at most ${room - held} host pids remain`);
    expect((await admin("GET", `/tenants/${ids.big}`)).status).to.equal(404);
    if (findRunscBinary() !== undefined) {
      // The same budget under gVisor (more host pids still) from the sandbox template: the refusal
      // names the template made for gVisor (without runsc the create is refused before this check).
      const g = await admin("POST", "/tenants", { id: ids.big, hypervisor: "gvisor", limits: { max_pids: tooBig } });
      expect(g.status, g.text).to.equal(507);
      expect(g.text).to.contain("paddock tenant create --template sandbox-gvisor");
      expect((await admin("GET", `/tenants/${ids.big}`)).status).to.equal(404);
    }
    const p = await admin("PATCH", `/tenants/${ids.bare}`, { limits: { max_pids: tooBig + 1000 } });
    expect(p.status, p.text).to.equal(507);
    expect(((await admin("GET", `/tenants/${ids.bare}`)).json as { limits: { max_pids: number } }).limits.max_pids).to.equal(1000);
    // Positive control: exactly what is left fits.
    const ok = await admin("POST", "/tenants", { id: ids.big, limits: { max_pids: room - held } });
    expect(ok.status, ok.text).to.equal(201);
  });
});
