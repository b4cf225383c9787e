/**
 * Proxy mode's engine and resolver are built on first use (tenant-daemon/network/egress-proxy-wiring.ts):
 * a daemon whose VMs never use proxy mode does not load them, and the engine's counters are in
 * the daemon's registry from the start all the same (tenant-daemon/proxy/egress-telemetry.ts
 * `egressCounters`, called by tenant-daemon/main.ts). Pure: a stand-in engine, no sockets.
 */
import { expect } from "chai";
import { Registry } from "prom-client";
import { silentLogger } from "../../shared/logger.js";
import { EgressProxyWiring, type EgressProxyEngine } from "../../tenant-daemon/network/egress-proxy-wiring.js";
import { EgressTelemetry, egressCounters } from "../../tenant-daemon/proxy/egress-telemetry.js";

/** A stand-in engine that counts what was asked of it. */
function fakeEngine(): EgressProxyEngine & { closed: number } {
  return {
    closed: 0,
    listen: () => Promise.resolve(),
    unlisten: () => Promise.resolve(),
    close() {
      this.closed++;
      return Promise.resolve();
    },
    caCertificatePem: () => Promise.resolve("-----BEGIN CERTIFICATE-----\n"),
  };
}

describe("egress proxy wiring: engine built on first use", () => {
  it("serving no gateway builds nothing; the first guest boot builds the engine once; close closes it", async () => {
    const engine = fakeEngine();
    let made = 0;
    const wiring = new EgressProxyWiring({ logger: silentLogger, policy: { hostAllowed: () => false }, makeEngine: () => (made++, Promise.resolve(engine)) });
    await wiring.serve(new Set(), new Map());
    expect(made, "engines built by a serve of no gateway").to.equal(0);
    expect((await wiring.guestBoot()).caPem).to.contain("BEGIN CERTIFICATE");
    await wiring.guestBoot();
    expect(made, "engines built by two boots").to.equal(1);
    await wiring.close();
    expect(engine.closed).to.equal(1);
  });

  it("close without any use builds nothing", async () => {
    let made = 0;
    const wiring = new EgressProxyWiring({ logger: silentLogger, policy: { hostAllowed: () => false }, makeEngine: () => (made++, Promise.resolve(fakeEngine())) });
    await wiring.close();
    expect(made).to.equal(0);
  });

  it("an engine that failed to build is built again on the next use, and close does not throw for it", async () => {
    let made = 0;
    const engine = fakeEngine();
    const wiring = new EgressProxyWiring({
      logger: silentLogger,
      policy: { hostAllowed: () => false },
      makeEngine: () => (++made === 1 ? Promise.reject(new Error("no engine")) : Promise.resolve(engine)),
    });
    const first = await wiring.guestBoot().then(() => undefined, (e: unknown) => e);
    expect((first as Error).message).to.equal("no engine");
    await wiring.guestBoot();
    expect(made).to.equal(2);
    await wiring.close();
    expect(engine.closed).to.equal(1);
  });

  it("egressCounters registers the three counters once; an engine's telemetry shares them", async () => {
    const registry = new Registry();
    const a = egressCounters(registry);
    expect(egressCounters(registry).requests).to.equal(a.requests);
    const text = await registry.metrics();
    for (const name of ["paddock_egress_requests_total", "paddock_egress_bytes_total", "paddock_egress_denials_total"]) expect(text).to.contain(`# TYPE ${name} counter`);
    new EgressTelemetry(registry, () => undefined).allowed("c1", "example.test");
    expect(await registry.metrics()).to.match(/paddock_egress_requests_total\{client="c1",rule="example\.test"\} 1/);
  });
});
