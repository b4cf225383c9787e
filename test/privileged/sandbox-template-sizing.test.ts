/**
 * The `sandbox` template as a new user meets it: a real supervisor (child process) and the real
 * tenant daemon, a tenant created with `{"id": …}` alone (the README's quick start). A create
 * of the official TypeScript SDK's e2e size (1 vCPU / 1 GiB,
 * https://github.com/slicervm/sdk-ts test/vm.e2e.test.ts) boots; a create without a size gets
 * the template's 2 vCPU / 4 GiB; one above those caps gets 400 ERR_VM_SIZE_EXCEEDED. Ends with
 * scripts/leaks.sh clean for the tenant.
 */
import { expect } from "chai";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { leaksOf, rid } from "../reliability/helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

const GiB = 2 ** 30;

describeWhenReady(missingPrerequisites(), "sandbox template sizing: a plain {\"id\"} tenant runs the SDK's 1 vCPU / 1 GiB VMs (privileged)", function () {
  this.timeout(180_000);
  const id = rid("sz");
  let sup: TestSupervisor;
  let token = "";

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
    const r = await sup.adminReq("POST", "/tenants", { id });
    expect(r.status, r.text).to.equal(201);
    token = (r.json as { token: string }).token;
  });

  after(async () => {
    if (sup) await sup.destroy([id]);
    expect(await leaksOf(id), "leaks.sh --tenant").to.deep.equal([]);
  });

  it("the tenant's limits leave room for the SDK suite's 15 VMs of 1 vCPU / 1 GiB", async () => {
    const t = (await sup.adminReq("GET", `/tenants/${id}`)).json as { template: string; limits: { max_vms: number; max_vcpu: number; max_ram_bytes: number; max_disk_bytes: number } };
    expect(t.template).to.equal("sandbox");
    expect(t.limits.max_vms).to.be.at.least(15);
    expect(t.limits.max_vcpu).to.be.at.least(15);
    expect(t.limits.max_ram_bytes).to.be.at.least(15 * GiB);
    expect(t.limits.max_disk_bytes, "15 disks of the template's 2G").to.be.at.least(15 * 2 * GiB);
    const groups = (await sup.gw(token, "GET", "/hostgroup")).json as Array<{ name: string; cpus: number; ram_bytes: number }>;
    expect(groups.map((g) => ({ name: g.name, cpus: g.cpus, ram_bytes: g.ram_bytes }))).to.deep.equal([{ name: "sbox", cpus: 2, ram_bytes: 4 * GiB }]);
  });

  it("accepts {cpus: 1, ram_bytes: 1 GiB} and boots it at that size", async () => {
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", { cpus: 1, ram_bytes: GiB, tags: ["sdk-ts-test"] });
    expect(r.status, r.text).to.equal(201);
    const h = (r.json as { hostname: string }).hostname;
    const node = ((await sup.gw(token, "GET", "/nodes")).json as Array<{ hostname: string; cpus: number; ram_bytes: number; status: string }>).find((n) => n.hostname === h);
    expect(node).to.include({ cpus: 1, ram_bytes: GiB, status: "Running" });
    const exec = await sup.gw(token, "POST", `/vm/${h}/exec?cmd=true&buffered=true`);
    expect(exec.status, exec.text).to.equal(200);
  });

  it("a create without a size gets the template's 2 vCPU / 4 GiB", async () => {
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes", {});
    expect(r.status, r.text).to.equal(201);
    const h = (r.json as { hostname: string }).hostname;
    const node = ((await sup.gw(token, "GET", "/nodes")).json as Array<{ hostname: string; cpus: number; ram_bytes: number }>).find((n) => n.hostname === h);
    expect(node).to.include({ cpus: 2, ram_bytes: 4 * GiB });
  });

  it("refuses more than the caps with 400 ERR_VM_SIZE_EXCEEDED, and creates nothing", async () => {
    const before = ((await sup.gw(token, "GET", "/nodes")).json as unknown[]).length;
    for (const body of [{ cpus: 3, ram_bytes: GiB }, { cpus: 1, ram_bytes: 4 * GiB + 2 ** 20 }]) {
      const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes", body);
      expect(r.status, `${JSON.stringify(body)}: ${r.text}`).to.equal(400);
      expect(r.json, JSON.stringify(body)).to.include({ code: "ERR_VM_SIZE_EXCEEDED" });
    }
    expect(((await sup.gw(token, "GET", "/nodes")).json as unknown[]).length).to.equal(before);
  });
});
