/**
 * The tenant network interface (DESIGN.md §4) used by the VM service. The implementation
 * owns one nftables table per daemon and only the links it names deterministically.
 */

/** Per-VM firewall override from a create request (spec §2.2 `network`). */
export interface VmNetworkOverride {
  allow?: string[];
  drop?: string[];
}

/** What the VM service tells the network about one VM. */
export interface VmNetworkRequest {
  hostname: string;
  hostGroup: string;
  /** The address the VM had before (persistent VM after restart); reserved again if possible. */
  previousIp?: string | undefined;
  override?: VmNetworkOverride | undefined;
}

/** What the network gives back for one VM. */
export interface VmNetworkAttachment {
  /** Address as reported in create responses (`a.b.c.d/prefix`), bare form in lists. */
  ipCidr: string;
  /** Network namespace the sandbox joins; undefined ⇒ the runtime makes a loopback-only one. */
  netnsPath: string | undefined;
  /** Guest resolv.conf content, or undefined to leave the image's. */
  resolvConf: string | undefined;
}

/** The network of one tenant daemon. */
export interface TenantNetwork {
  /** Create the table and group links, sweep leftovers of a previous run. */
  start(): Promise<void>;
  /** Reserve an address for a VM (synchronous so concurrent creates never collide). @throws ERR_NETWORK_EXHAUSTED */
  reserve(req: VmNetworkRequest): string;
  /** Build the VM's netns, links, routes and rules. @throws ERR_NETWORK_SETUP_FAILED (nothing left behind) */
  attach(req: VmNetworkRequest): Promise<VmNetworkAttachment>;
  /** Remove the VM's netns, links and rules (address stays reserved). Idempotent. */
  detach(hostname: string): Promise<void>;
  /** Free the VM's address. */
  release(hostname: string): void;
  /** Remove everything this daemon created (links, table). */
  stop(): Promise<void>;
}
