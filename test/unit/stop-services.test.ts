/**
 * tenant-daemon/daemon-services.ts `stopServices` when no VM survives: the tenant's cgroups are
 * pruned even when the network's stop fails, and that failure is still thrown.
 */
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { stopServices, type Services } from "../../tenant-daemon/daemon-services.js";

function services(networkStop: () => Promise<void>, pruned: string[]): Services {
  return {
    proxyStore: { close: () => undefined },
    network: { deferDetachRules: () => undefined, stop: networkStop, flushDetaches: () => Promise.resolve() },
    vms: { stop: () => Promise.resolve(), list: () => [] },
    egress: undefined,
    runtime: { pruneCgroups: (p: string) => Promise.resolve(void pruned.push(p)) },
  } as unknown as Services;
}

const config = { paddock: { tenantId: "tstop1" } } as unknown as TenantConfig;

describe("stopServices (no VM survives)", () => {
  it("prunes the tenant's cgroups when the network's stop fails, then throws that failure", async () => {
    const pruned: string[] = [];
    const err = await stopServices(services(() => Promise.reject(new Error("cannot parse ip -j link output")), pruned), config, silentLogger).then(() => undefined, (e: unknown) => e as Error);
    expect(err?.message).to.equal("cannot parse ip -j link output");
    expect(pruned).to.deep.equal(["/paddock/tstop1"]);
  });

  it("prunes them after a network stop that succeeds", async () => {
    const pruned: string[] = [];
    await stopServices(services(() => Promise.resolve(), pruned), config, silentLogger);
    expect(pruned).to.deep.equal(["/paddock/tstop1"]);
  });
});
