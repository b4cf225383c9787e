/**
 * Proxy mode's listeners follow the VM links that exist (tenant-daemon/network/tenant-network.ts
 * `syncEgress`): a VM whose links are still being built has no gateway address on the host yet,
 * so a sync that runs meanwhile (the start's sweep, another VM's attach) must not ask the proxy
 * to listen there. It did, and the listen failed EADDRNOTAVAIL: a proxy-mode tenant with a warm
 * pool could not start (its warm VM attached while the start's sweep synced). Real netns, veth
 * and nftables; the egress port here binds a real socket on each gateway it is given, as the
 * proxy does. Run as root.
 */
import net from "node:net";
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { run } from "../../shared/exec.js";
import { createTenantNetwork, type TenantNetworkService } from "../../tenant-daemon/network/tenant-network.js";
import type { EgressListenerPort } from "../../tenant-daemon/network/egress-proxy-wiring.js";
import { ip4, leftovers, randomBlock, randomTenant, tempDir, tenantConfig } from "./network-fixtures.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";

/** An egress port that binds (and at once closes) a TCP socket on every gateway it is told to serve. */
class BindingEgress implements EgressListenerPort {
  readonly served: string[][] = [];
  async serve(gateways: ReadonlySet<string>): Promise<void> {
    this.served.push([...gateways].sort());
    for (const gw of gateways) {
      await new Promise<void>((resolve, reject) => {
        const s = net.createServer();
        s.once("error", reject);
        s.listen({ host: gw, port: 0 }, () => s.close(() => resolve()));
      });
    }
  }
}

describe("tenant network: proxy mode listens only on built links (privileged)", function () {
  this.timeout(60_000);
  let tenant: string;
  let dir: string;
  let netw: TenantNetworkService | undefined;
  /** Lets a held netns be made (so a failed test's attach ends before the clean-up). */
  let release: () => void = () => undefined;
  let attaching: Promise<unknown> | undefined;

  before(function () {
    skipUnlessRoot(this);
  });

  afterEach(async function () {
    release();
    await attaching?.catch(() => undefined);
    await netw?.stop().catch(() => undefined);
    netw = undefined;
    if (dir) await fs.rm(dir, { recursive: true, force: true });
    if (tenant) expect(await leftovers(tenant), `leftovers of tenant ${tenant}`).to.deep.equal({ links: [], netns: [], table: false });
  });

  it("a sync while a VM's links are being built leaves that VM's gateway out; its attach adds it once the address exists", async function () {
    tenant = randomTenant();
    dir = await tempDir();
    const egress = new BindingEgress();
    let netnsMade!: () => void;
    const netnsStarted = new Promise<void>((resolve) => (netnsMade = resolve));
    const held = new Promise<void>((resolve) => (release = resolve));
    netw = createTenantNetwork({
      config: tenantConfig(tenant, [{ name: "px", count: 0, network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` }, egress_proxy: { client: "c1" } }]),
      logger: silentLogger,
      stateDir: dir,
      egress,
      // The VM's netns is made only when the test says so: its links (and gateway address) wait.
      makeNetns: async (_h, name) => {
        netnsMade();
        await held;
        await run("ip", ["netns", "add", name]);
      },
    });
    await netw.start();
    netw.reserve({ hostname: "px-1", hostGroup: "px" });
    attaching = netw.attach({ hostname: "px-1", hostGroup: "px" });
    await netnsStarted;
    // What the start's sweep does while a warm VM attaches.
    await netw.sweep();
    const gateway = egress.served.at(-1);
    expect(gateway, "the sync during the link build served no gateway").to.deep.equal([]);
    release();
    await attaching;
    expect(egress.served.at(-1), "after the attach the gateway is served").to.have.lengthOf(1);
  });
});
