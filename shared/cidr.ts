/**
 * IPv4 and CIDR maths (pure). Addresses are unsigned 32-bit integers internally. IPv6 is only
 * parsed and validated (for deny lists), never computed on.
 */
import { SocketAddress } from "node:net";
import { PaddockError } from "./errors.js";

/** A parsed IPv4 CIDR: `base` is the network address, `prefix` 0..32. */
export interface Cidr {
  base: number;
  prefix: number;
}

/** Parse dotted-quad IPv4; returns undefined when invalid. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n >>> 0;
}

/** Format an address as dotted quad. */
export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => String((n >>> s) & 255)).join(".");
}

/** Netmask of a prefix length as an unsigned int. */
export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parse `a.b.c.d/n` (or a bare address ⇒ /32). With `strict`, host bits must be zero.
 * @throws PaddockError `ERR_BAD_REQUEST` on invalid text.
 */
export function parseCidr(text: string, options: { strict?: boolean } = {}): Cidr {
  const [addr, len, extra] = text.trim().split("/");
  const ip = addr === undefined ? undefined : parseIpv4(addr);
  const prefix = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (ip === undefined || extra !== undefined || !(prefix >= 0 && prefix <= 32)) {
    throw new PaddockError("ERR_BAD_REQUEST", `invalid CIDR ${JSON.stringify(text)}`);
  }
  const base = (ip & maskOf(prefix)) >>> 0;
  if (options.strict && base !== ip) throw new PaddockError("ERR_BAD_REQUEST", `CIDR ${text} has host bits set (network is ${formatIpv4(base)}/${prefix})`);
  return { base, prefix };
}

/** `a.b.c.d/n` of a CIDR. */
export function formatCidr(c: Cidr): string {
  return `${formatIpv4(c.base)}/${c.prefix}`;
}

/** Number of addresses in a CIDR. */
export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

/** Last address of a CIDR. */
export function cidrLast(c: Cidr): number {
  return (c.base + cidrSize(c) - 1) >>> 0;
}

/** True when `ip` lies inside `c`. */
export function cidrContains(c: Cidr, ip: number): boolean {
  return ((ip & maskOf(c.prefix)) >>> 0) === c.base;
}

/** True when two CIDRs share at least one address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return a.base <= cidrLast(b) && b.base <= cidrLast(a);
}

/** A validated IPv6 prefix: the address as written (lowercased) and the prefix length 0..128. */
export interface Cidr6 {
  address: string;
  prefix: number;
}

/** What may stand in an IPv6 address's text before a zone: hex digits, `:` and `.` (an embedded IPv4). */
const IPV6_CHARS = /^[0-9a-fA-F:.]+$/;
/** A zone id after `%`, the characters node's `net.isIPv6` accepts there. */
const IPV6_ZONE = /^[0-9a-zA-Z.:-]+$/;

/**
 * True when `text` is an IPv6 address, with an optional `%zone`: the same answer as node's
 * `net.isIPv6` (test/unit/cidr-ipv6.test.ts compares them), without its regular expression,
 * whose first use compiles for 8–33 ms of CPU (measured on node 20; docs/performance.md,
 * "Daemon start, sixth look"), and every daemon start parses the default deny list's IPv6
 * entry. The address is checked by libuv's `inet_pton` (through `net.SocketAddress`,
 * https://nodejs.org/docs/latest-v20.x/api/net.html#class-netsocketaddress); the zone, which
 * it does not check the same way, by its own pattern.
 */
export function isIpv6Text(text: string): boolean {
  const pct = text.indexOf("%");
  const addr = pct < 0 ? text : text.slice(0, pct);
  if (!IPV6_CHARS.test(addr) || (pct >= 0 && !IPV6_ZONE.test(text.slice(pct + 1)))) return false;
  try {
    new SocketAddress({ address: addr, family: "ipv6" });
    return true;
  } catch {
    return false;
  }
}

/**
 * Parse `x:y::z/n` (or a bare IPv6 address ⇒ /128). No maths: the kernel (nft) masks host bits.
 * @returns undefined when the text is not an IPv6 address with an optional prefix length.
 */
export function parseIpv6Cidr(text: string): Cidr6 | undefined {
  const [addr, len, extra] = text.trim().split("/");
  const prefix = len === undefined ? 128 : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (addr === undefined || extra !== undefined || !isIpv6Text(addr) || !(prefix >= 0 && prefix <= 128)) return undefined;
  return { address: addr.toLowerCase(), prefix };
}
