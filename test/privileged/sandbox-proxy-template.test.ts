/**
 * The shipped `sandbox-proxy` template (templates/sandbox-proxy.yaml) through a real supervisor
 * (child process) and the real tenant daemon: the tenant starts with its warm pool of 1, and a
 * VM created through the gateway is in proxy mode (its resolver and HTTPS_PROXY are the egress
 * proxy's 169.254.169.250). Ends with scripts/leaks.sh clean for the tenant.
 */
import { expect } from "chai";
import { TestSupervisor, realDaemonConfig } from "../helpers/supervisor.js";
import { leaksOf, rid } from "../reliability/helpers.js";
import { describeWhenReady, missingPrerequisites } from "../helpers/prerequisites.js";

describeWhenReady(missingPrerequisites(), "sandbox-proxy template: a tenant daemon starts from it and its VMs go out through the egress proxy (privileged)", function () {
  this.timeout(180_000);
  const id = rid("sp");
  let sup: TestSupervisor;

  before(async () => {
    sup = await TestSupervisor.create({ mode: "child", config: realDaemonConfig() });
    await sup.start();
  });

  after(async () => {
    if (sup) await sup.destroy([id]);
    expect(await leaksOf(id), "leaks.sh --tenant").to.deep.equal([]);
  });

  it("creates an active tenant whose VM resolves and proxies through 169.254.169.250", async () => {
    const token = await sup.createTenant(id, "sandbox-proxy");
    const t = (await sup.adminReq("GET", `/tenants/${id}`)).json as { status: string; template: string };
    expect(t).to.include({ status: "active", template: "sandbox-proxy" });
    const r = await sup.gw(token, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=90s", { cpus: 1, ram_bytes: 2 ** 30 });
    expect(r.status, r.text).to.equal(201);
    const h = (r.json as { hostname: string }).hostname;
    const exec = await sup.gw(token, "POST", `/vm/${h}/exec?buffered=true&cmd=sh&args=-c&args=${encodeURIComponent("cat /etc/resolv.conf; echo HTTPS_PROXY=$HTTPS_PROXY")}`);
    expect(exec.status, exec.text).to.equal(200);
    const out = (exec.json as { stdout: string }).stdout;
    expect(out).to.match(/^nameserver 169\.254\.169\.250$/m);
    expect(out).to.contain("HTTPS_PROXY=http://169.254.169.250:3128");
  });
});
