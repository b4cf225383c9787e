/**
 * Proxy mode's network side: where the tenant's egress proxy (tenant-daemon/proxy/egress-proxy.ts,
 * the engine) and its resolver (egress-dns.ts) listen, how a proxy-mode VM reaches them, and who
 * is asking.
 *
 * - A host group with `egress_proxy: {client}` (shared/tenant-config-groups.ts) is in proxy mode:
 *   its VMs reach nothing past the host but the proxy and the resolver (nft-ruleset.ts).
 * - Inside such a VM both are at {@link EGRESS_PROXY_GUEST_ADDRESS}: TCP {@link EGRESS_PROXY_PORT}
 *   for the proxy, TCP/UDP 53 for the resolver. The address sits in 169.254.168.0/22, the block
 *   of the cloud metadata address that no derived isolated range ever takes
 *   (address-plan.ts `deriveIsolatedRange`), and a group's explicit range or bridge network may
 *   not hold it (config check), so it is never a VM's or a gateway's address. nftables DNATs it
 *   to the link's own host-side gateway (an isolated VM's /30 gateway, or the group's bridge
 *   gateway), where the daemon listens: the proxy on {@link EGRESS_PROXY_PORT}, the resolver on
 *   {@link EGRESS_DNS_PORT}. No source NAT is involved, so the proxy sees the VM's own address and
 *   {@link EgressProxyWiring.identify} maps it to the group's proxy client (an isolated VM cannot
 *   send from another address: nft-ruleset.ts drops it at input).
 * - The guest learns this at boot (boot.json `egress_proxy`, tenant-daemon/agent/egress-env.ts):
 *   `HTTP_PROXY`/`HTTPS_PROXY` (and lowercase) `http://169.254.169.250:3128`, `NO_PROXY` for
 *   loopback, its resolv.conf names the proxy address, and the tenant's proxy CA is put in its
 *   trust store by the agent from inside the VM (bytes in boot.json; the host writes no guest path).
 */
import type { Logger } from "../../shared/logger.js";
import { EGRESS_PROXY_GUEST_ADDRESS } from "../../shared/tenant-config-defaults.js";
import type { EgressDns } from "./egress-dns.js";

/** The proxy's and resolver's address as every proxy-mode guest sees it (defined beside the config check). */
export { EGRESS_PROXY_GUEST_ADDRESS };
/** The proxy's TCP port, in the guest and on the host-side gateways. */
export const EGRESS_PROXY_PORT = 3128;
/** The resolver's TCP/UDP port on the host-side gateways (53 in the guest). */
export const EGRESS_DNS_PORT = 53;

/** The proxy engine as this wiring needs it (structurally tenant-daemon/proxy/egress-proxy.ts `EgressProxy`). */
export interface EgressProxyEngine {
  /** Start listening on `host:port`; may be called for several addresses. */
  listen(host: string, port: number): Promise<void>;
  /** Stop listening on `host:port`. */
  unlisten(host: string, port: number): Promise<void>;
  /** Stop everything. */
  close(): Promise<void>;
  /** PEM of the tenant's proxy CA certificate (created on first use). */
  caCertificatePem(): Promise<string>;
}

/** The proxy store as the resolver needs it (structurally tenant-daemon/proxy `ProxyStore`). */
export interface EgressHostPolicy {
  /** Whether `client` has an unexpired allow rule whose host matches `host` (lowercase, no trailing dot). */
  hostAllowed(client: string, host: string): boolean;
}

/** What the tenant network tells proxy mode (tenant-network.ts calls it after every change). */
export interface EgressListenerPort {
  /**
   * Listen (proxy and resolver) on exactly `gateways` (bare IPv4 host-side addresses of
   * proxy-mode links), and identify senders by `clients` (VM address → proxy client).
   * @throws Error from a listen that failed (the others stay as they are).
   */
  serve(gateways: ReadonlySet<string>, clients: ReadonlyMap<string, string>): Promise<void>;
}

/** What a proxy-mode guest is given at boot (boot.json `egress_proxy`). */
export interface EgressGuestBoot {
  /** Environment for every exec, shell and login shell. */
  env: Record<string, string>;
  /** The tenant's proxy CA certificate, PEM. */
  caPem: string;
}

/** The guest environment of proxy mode (proxy URL in both cases, loopback excluded). */
export function egressGuestEnv(): Record<string, string> {
  const url = `http://${EGRESS_PROXY_GUEST_ADDRESS}:${EGRESS_PROXY_PORT}`;
  const noProxy = "localhost,127.0.0.1,::1";
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: noProxy, no_proxy: noProxy };
}

/** resolv.conf of a proxy-mode guest: the proxy's resolver only. */
export function egressResolvConf(): string {
  return `# Written by Paddock (egress proxy resolver)\nnameserver ${EGRESS_PROXY_GUEST_ADDRESS}\n`;
}

/** Options of {@link EgressProxyWiring}. */
export interface EgressProxyWiringOptions {
  /**
   * Builds the engine with the wiring's {@link EgressProxyWiring.identify}; called once, on first
   * use (a listen or a guest's boot data), so a daemon without proxy-mode VMs never loads it.
   * @throws (rejects with) whatever building the engine throws.
   */
  makeEngine(identify: (remoteAddress: string) => string | undefined): Promise<EgressProxyEngine>;
  /** The proxy store's rule check, for the resolver. */
  policy: EgressHostPolicy;
  logger: Logger;
}

/** A value built by `make` on the first {@link get}; a build that fails is tried again on the next. */
class LazyRetry<T> {
  private made: Promise<T> | undefined;

  constructor(private readonly make: () => Promise<T>) {}

  /** The value, building it if no build is done or running. @throws (rejects with) what `make` throws. */
  get(): Promise<T> {
    if (this.made === undefined) {
      const made = this.make();
      this.made = made;
      made.catch(() => {
        if (this.made === made) this.made = undefined;
      });
    }
    return this.made;
  }

  /** The value if a build was started and succeeds, else undefined (never builds, never rejects). */
  built(): Promise<T | undefined> {
    return this.made?.catch(() => undefined) ?? Promise.resolve(undefined);
  }
}

/**
 * The engine and the resolver, listening where the tenant network says, for the VMs it names.
 * Both are built on first use: the engine (tenant-daemon/proxy/, with http-proxy and node-forge)
 * and the resolver (egress-dns.ts, with dns-packet) are loaded by dynamic `import()`, which the
 * daemon's bundle (scripts/build-daemon-bundle.ts, esbuild) keeps as a module initialised on
 * first call, so a daemon whose VMs never use proxy mode does not initialise them (the way
 * tenant-daemon/api/ws-upgrade.ts loads `ws`).
 */
export class EgressProxyWiring implements EgressListenerPort {
  private readonly options: EgressProxyWiringOptions;
  private readonly engineOnce: LazyRetry<EgressProxyEngine>;
  private readonly dnsOnce: LazyRetry<EgressDns>;
  private readonly log: Logger;
  /** Host-side ports: the ones nft-ruleset.ts DNATs to (tenant-firewall.ts), fixed. */
  private readonly proxyPort = EGRESS_PROXY_PORT;
  private readonly dnsPort = EGRESS_DNS_PORT;
  private clients: ReadonlyMap<string, string> = new Map();
  private readonly serving = new Set<string>();
  /** serve() calls run one after the other. */
  private chain: Promise<void> = Promise.resolve();

  constructor(o: EgressProxyWiringOptions) {
    this.options = o;
    this.log = o.logger.child({ component: "egress-net" });
    this.engineOnce = new LazyRetry(() => this.options.makeEngine((a) => this.identify(a)));
    const policy = { identify: (a: string) => this.identify(a), hostAllowed: (c: string, h: string) => this.options.policy.hostAllowed(c, h) };
    this.dnsOnce = new LazyRetry(() => import("./egress-dns.js").then((m) => new m.EgressDns(policy, EGRESS_PROXY_GUEST_ADDRESS, this.log)));
  }

  /** The engine, built on the first call. */
  private engine(): Promise<EgressProxyEngine> {
    return this.engineOnce.get();
  }

  /** The resolver, built on the first call. */
  private dns(): Promise<EgressDns> {
    return this.dnsOnce.get();
  }

  /** The proxy client of the VM at `remoteAddress` (IPv4, bare or `::ffff:`-mapped), else undefined. */
  identify(remoteAddress: string): string | undefined {
    const a = remoteAddress.startsWith("::ffff:") ? remoteAddress.slice(7) : remoteAddress;
    return this.clients.get(a);
  }

  serve(gateways: ReadonlySet<string>, clients: ReadonlyMap<string, string>): Promise<void> {
    // Identities change at once (a new VM's first packet may beat its listener); listeners in turn.
    this.clients = new Map(clients);
    const next = this.chain.then(() => this.apply(new Set(gateways)));
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Boot data of a proxy-mode guest. @throws Error when the engine cannot give its CA. */
  async guestBoot(): Promise<EgressGuestBoot> {
    return { env: egressGuestEnv(), caPem: await (await this.engine()).caCertificatePem() };
  }

  /** Addresses listened on (tests). */
  addresses(): string[] {
    return [...this.serving].sort();
  }

  /** Stop the resolver and the engine (those that were built). */
  async close(): Promise<void> {
    await this.chain;
    this.serving.clear();
    const [dns, engine] = await Promise.all([this.dnsOnce.built(), this.engineOnce.built()]);
    await Promise.all([dns?.close(), engine?.close()]);
  }

  private async apply(wanted: Set<string>): Promise<void> {
    // Nothing served and nothing wanted: nothing to build (the usual case without proxy mode).
    if (this.serving.size === 0 && wanted.size === 0) return;
    const [engine, dns] = await Promise.all([this.engine(), this.dns()]);
    for (const gw of [...this.serving]) {
      if (wanted.has(gw)) continue;
      this.serving.delete(gw);
      await Promise.all([engine.unlisten(gw, this.proxyPort), dns.unlisten(gw)]);
      this.log.debug("egress proxy stopped listening", { address: gw });
    }
    let failure: unknown;
    for (const gw of wanted) {
      if (this.serving.has(gw)) continue;
      try {
        await engine.listen(gw, this.proxyPort);
        try {
          await dns.listen(gw, this.dnsPort);
        } catch (err) {
          await engine.unlisten(gw, this.proxyPort).catch(() => undefined);
          throw err;
        }
        this.serving.add(gw);
        this.log.debug("egress proxy listening", { address: gw, proxyPort: this.proxyPort, dnsPort: this.dnsPort });
      } catch (err) {
        this.log.error("egress proxy cannot listen", { address: gw, err });
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  }
}
