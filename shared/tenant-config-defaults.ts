/**
 * Constants of the tenant config: name patterns, the default operator deny list and its entry
 * check, the default state and run roots, and bounds the config parser enforces.
 */
import { parseCidr, parseIpv6Cidr } from "./cidr.js";

/** Host group and VM names: lowercase DNS-label characters. */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
/**
 * The image a tenant config names when `config.image` is absent (Debian 12 "bookworm" minbase,
 * built by `paddock image build`; shared/image-store.ts re-exports it).
 */
export const DEFAULT_IMAGE_NAME = "debian-12";
/** Tenant ids: short so socket paths stay under 108 bytes and link names under 15 bytes. */
export const TENANT_ID_PATTERN = /^[a-z][a-z0-9]{0,11}$/;

/**
 * Whether this release has a Firecracker driver (one more implementation of
 * tenant-daemon/runtime/driver.ts). It has not: `hypervisor: firecracker` is refused at daemon
 * start, and `paddock new` writes `oci` even on a KVM host.
 */
export const FIRECRACKER_DRIVER = false;

/**
 * The default operator deny list (`paddock.deny` and the supervisor's `deny` when absent): the
 * cloud metadata services (169.254.169.254 of AWS, GCP, Azure and OpenStack, its IPv6 twin
 * fd00:ec2::254 on AWS Nitro, 100.100.100.200 of Alibaba Cloud) and the private networks of
 * RFC 1918 (https://www.rfc-editor.org/rfc/rfc1918#section-3). Paddock's own ranges are not
 * affected (they come from 169.254.0.0/16 and the deny rules skip the tenant's own ranges).
 */
export const DEFAULT_DENY: readonly string[] = Object.freeze([
  "169.254.169.254/32",
  "fd00:ec2::254/128",
  "100.100.100.200/32",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
]);

/**
 * Check one deny-list entry: an IPv4 CIDR or IP, optionally `:port` (1-65535), or an IPv6
 * CIDR or address (no port: an IPv6 address has colons of its own).
 * @returns undefined when valid, else what is wrong (for the config's problem list).
 */
export function denyEntryProblem(entry: string): string | undefined {
  if (parseIpv6Cidr(entry) !== undefined) return undefined;
  const [addr, port, extra] = entry.split(":");
  try {
    parseCidr(addr ?? "");
    if (extra !== undefined || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))) throw new Error();
    return undefined;
  } catch {
    return `expected an IPv4 CIDR, IP or ip:port, or an IPv6 CIDR, got ${JSON.stringify(entry)}`;
  }
}

/** Upper bound of `paddock.warm_pool.<group>`: warm VMs hold memory and an address each. */
export const MAX_WARM_POOL = 16;

/** Default state root of a standalone daemon; `PADDOCK_STATE_DIR` overrides it (tenant-config-paddock.ts). */
export const DEFAULT_STATE_DIR = "/var/lib/paddock";
/** Default run root of a standalone daemon; `PADDOCK_RUN_DIR` overrides it (tenant-config-paddock.ts). */
export const DEFAULT_RUN_DIR = "/run/paddock";

/**
 * The egress proxy's address inside proxy-mode VMs (`egress_proxy` host groups): in
 * 169.254.168.0/22, the block of the cloud metadata address that no derived isolated range takes,
 * and refused in a proxy-mode group's explicit network (tenant-daemon/network/egress-proxy-wiring.ts).
 */
export const EGRESS_PROXY_GUEST_ADDRESS = "169.254.169.250";
