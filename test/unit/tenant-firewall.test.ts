import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { TenantFirewall } from "../../tenant-daemon/network/tenant-firewall.js";
import { connLimitsTag } from "../../tenant-daemon/network/conn-limits.js";
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
    // The first apply also makes the connection-bounds table (conn-limits.ts), in the same transaction.
    expect(r.texts[0]).to.match(/^# Paddock tenant t1: connection bounds/).and.to.include("delete table inet paddock-t1-ct\n");
    expect(r.texts[0]?.endsWith(fw.lastRuleset() as string)).to.equal(true);
    s.foreignRanges = ["198.18.0.0/24"];
    await fw.sync();
    expect(r.texts).to.have.length(2);
    expect(r.texts[1]).to.include("198.18.0.0/24").and.to.include("delete table inet paddock-t1");
    // Later applies (a VM create or delete) never touch the bounds table: its counts survive them.
    expect(r.texts[1]).to.not.include("paddock-t1-ct");
    expect(r.texts[1]).to.equal(fw.lastRuleset());
  });

  it("a first apply that failed makes the bounds table again with the next one", async () => {
    const r = recorder();
    const fw = new TenantFirewall(state(), silentLogger, r.apply);
    r.fail = true;
    await fw.sync().then(() => expect.fail("the apply failed"), (err: unknown) => expect((err as PaddockError).code).to.equal("ERR_NETWORK_SETUP_FAILED"));
    r.fail = false;
    await fw.sync();
    expect(r.texts).to.have.length(2);
    expect(r.texts[1]).to.include("table inet paddock-t1-ct {");
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
    expect(r.texts[1]).to.equal("table inet paddock-t1\ndelete table inet paddock-t1\ntable inet paddock-t1-ct\ndelete table inet paddock-t1-ct\n");
    expect(fw.lastRuleset()).to.equal(undefined);
  });

  it("a start that finds the bounds table an earlier daemon made from the same ranges and bounds keeps it (its counts carry over); another one is made anew", async () => {
    const s = state();
    const { maxConns, maxConnsPerVm } = s.cfg.paddock.conntrack;
    const same = connLimitsTag({ tenantId: "t1", ownRanges: [], maxConns, maxConnsPerVm });
    const other = connLimitsTag({ tenantId: "t1", ownRanges: [], maxConns: maxConns + 1, maxConnsPerVm });
    expect(other).to.not.equal(same);
    const kept = recorder();
    const fw = new TenantFirewall(s, silentLogger, kept.apply);
    fw.keepBoundsIfSame(["prerouting", same]);
    await fw.sync();
    expect(kept.texts).to.have.length(1);
    expect(kept.texts[0], "the found table is kept").to.not.include("paddock-t1-ct");
    const remade = recorder();
    const fw2 = new TenantFirewall(state(), silentLogger, remade.apply);
    fw2.keepBoundsIfSame(["prerouting", other]);
    await fw2.sync();
    expect(remade.texts[0]).to.include("delete table inet paddock-t1-ct\n").and.to.include(`chain ${same} {`);
  });
});
