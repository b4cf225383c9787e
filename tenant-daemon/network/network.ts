/**
 * The tenant network interface (docs/ARCHITECTURE.md, `tenant-daemon/network/`) used by the VM
 * service. The implementation (tenant-network.ts) owns one nftables table per daemon and only the
 * links it names deterministically (names.ts).
 */

/** Per-VM firewall override from a create request (`network`, docs/slicer-api.md#create-a-vm). */
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
  /** The create request's `ip`: must be a free VM address of the group (400/409 otherwise). */
  requestedIp?: string | undefined;
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
  /** Proxy mode (`egress_proxy`): the VM's proxy client; undefined ⇒ the CIDR policy. */
  egressProxy: { client: string } | undefined;
}

/** The describe-VM `network` object (`GET /vm/{h}`, docs/slicer-api.md#describe-a-vm). */
export interface VmNetworkDescription {
  mode: "bridge" | "isolated";
  /** `vm` when the create request carried an override, else `host_group`. */
  policy_source: "vm" | "host_group";
  host_group: { allow: string[]; drop: string[] };
  /** Present only with an override; a key present with `[]` was explicitly emptied. */
  override?: { allow?: string[]; drop?: string[] };
  /** The lists above the floor: the override's keys replace the group's (most-specific-wins among them). */
  effective: { allow: string[]; drop: string[] };
  /**
   * What no override reopens: the host group's `drop` list (its drops as decided with its own
   * `allow`, firewall-policy.ts) and the operator's `paddock.deny`, checked before `effective`.
   */
  floor: { drop: string[]; deny: string[] };
  /**
   * Proxy mode (`egress_proxy` host group): the VM's proxy client. Present ⇒ the lists above are
   * empty and nothing but the egress proxy and its resolver is reachable (docs/slicer-api.md#proxy-mode-egress_proxy).
   */
  egress_proxy?: { client: string };
}

/** The network of one tenant daemon. */
export interface TenantNetwork {
  /**
   * Check ranges (refuse overlaps naming both sides), create the table and group bridges,
   * remove dead leftovers of a previous run; a VM netns still used by a live process (a
   * sandbox that survived a daemon crash) is kept and adopted by the next `reserve` of its
   * hostname. @throws ERR_NETWORK_OVERLAP, ERR_NETWORK_SETUP_FAILED
   */
  start(): Promise<void>;
  /**
   * Reserve an address for a VM (synchronous so concurrent creates never collide).
   * @returns `a.b.c.d/prefix`.
   * @throws ERR_NETWORK_EXHAUSTED (409), ERR_NETWORK_ADDRESS_IN_USE (409), ERR_VM_INVALID_REQUEST (400),
   *   ERR_HOSTGROUP_NOT_FOUND (404)
   */
  reserve(req: VmNetworkRequest): string;
  /**
   * Refuse now what {@link reserve} would refuse whatever the tenant holds (a create checks this
   * before the tenant's limits, so a malformed request is a 400 at any usage): an invalid or
   * misplaced override, a requested `ip` that is not a VM address of the group. Reserves nothing.
   * @throws ERR_VM_INVALID_REQUEST (400), ERR_HOSTGROUP_NOT_FOUND (404)
   */
  check?(req: Omit<VmNetworkRequest, "hostname" | "previousIp">): void;
  /** Build the VM's netns, links, routes and rules (idempotent). @throws ERR_NETWORK_SETUP_FAILED (nothing left behind) */
  attach(req: VmNetworkRequest): Promise<VmNetworkAttachment>;
  /** Remove the VM's netns, links and rules (address stays reserved). Idempotent. */
  detach(hostname: string): Promise<void>;
  /**
   * From now until {@link flushDetaches}, `detach` removes links but leaves the VM's rules in the
   * table (a rule naming a deleted veth matches nothing): a daemon stop tears down every VM and
   * then deletes the table, or brings it up to date once, instead of rewriting it per VM (each
   * `nft -f` reads every table on the host, shared/nft-cli.ts). `attach` still applies at once.
   */
  deferDetachRules(): void;
  /**
   * End {@link deferDetachRules}: one apply when a deferred detach changed the rules; a no-op
   * after `stop` began. @throws ERR_NETWORK_SETUP_FAILED from `nft`
   */
  flushDetaches(): Promise<void>;
  /** Free the VM's address. */
  release(hostname: string): void;
  /** The describe-VM `network` object of a reserved VM; undefined when unknown. */
  describe(hostname: string): VmNetworkDescription | undefined;
  /** Remove leftovers kept by `start` (live netns) that no `reserve` adopted. Call after reconcile. */
  sweep(): Promise<void>;
  /** Remove everything this daemon created (links, netns, bridges, table); works without `start` too (purge). */
  stop(): Promise<void>;
}
