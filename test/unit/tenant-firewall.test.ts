import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { TenantFirewall } from "../../tenant-daemon/network/tenant-firewall.js";
import { newTenantNetState } from "../../tenant-daemon/network/tenant-network-state.js";

function state() {
  const cfg = parseTenantConfig({ config: { host_groups: [{ name: "g", network: { mode: "isolated" } }] }, paddock: { tenant_id: "t1" } }, "<inline>", { baseDir: "/tmp", env: {} });
  return newTenantNetState(cfg);
}

/** An apply that records each text, failing while `fail` is set. */
function recorder() {
  const texts: string[] = [];
  const r = { texts, fail: false, apply: (text: string): Promise<void> => {
    texts.push(text);
    return r.fail ? Promise.reject(new PaddockError("ERR_NETWORK_SETUP_FAILED", "nft said no")) : Promise.resolve();
  } };
  return r;
}

describe("network: TenantFirewall applies only what changed", () => {
  it("a sync whose rendered table is the one last applied runs no nft; a change applies the whole table", async () => {
    const s = state();
    const r = recorder();
    const fw = new TenantFirewall(s, silentLogger, r.apply);
    await fw.sync();
    await fw.sync();
    await Promise.all([fw.sync(), fw.sync()]);
    expect(r.texts).to.have.length(1);
    expect(fw.lastRuleset()).to.equal(r.texts[0]);
    s.foreignRanges = ["198.18.0.0/24"];
    await fw.sync();
    expect(r.texts).to.have.length(2);
    expect(r.texts[1]).to.include("198.18.0.0/24").and.to.include("delete table inet paddock-t1");
  });

  it("after a failed apply the same text is applied again", async () => {
    const s = state();
    const r = recorder();
    const fw = new TenantFirewall(s, silentLogger, r.apply);
    await fw.sync();
    s.foreignRanges = ["198.18.0.0/24"];
    r.fail = true;
    await fw.sync().then(() => expect.fail("the apply failed"), (err: unknown) => expect((err as PaddockError).code).to.equal("ERR_NETWORK_SETUP_FAILED"));
    r.fail = false;
    await fw.sync();
    expect(r.texts).to.have.length(3);
    expect(r.texts[2]).to.equal(r.texts[1]);
    expect(fw.lastRuleset()).to.equal(r.texts[2]);
  });

  it("the table's removal goes through the same apply and forgets the last text", async () => {
    const r = recorder();
    const fw = new TenantFirewall(state(), silentLogger, r.apply);
    await fw.sync();
    fw.halt();
    await fw.removeTable();
    expect(r.texts[1]).to.equal("table inet paddock-t1\ndelete table inet paddock-t1\n");
    expect(fw.lastRuleset()).to.equal(undefined);
  });
});
