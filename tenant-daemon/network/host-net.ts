/**
 * Adapter for the host's network stack: `ip` (iproute2, JSON output with `-j`) and `nft`
 * (nftables), always through shared/exec.ts `run` with argv arrays. No rules live here.
 */
import { promises as fs } from "node:fs";
import { run } from "../../shared/exec.js";
import { PaddockError } from "../../shared/errors.js";
import { nftEnv } from "../../shared/nft-cli.js";

const IP_TIMEOUT_MS = 15_000;
// 120 s: with 200 tenant tables on a loaded 2-core host one `nft -f` waited past 30 s (figure 13).
const NFT_TIMEOUT_MS = 120_000;

/** One link from `ip -j link show`. */
export interface HostLink {
  ifname: string;
  /** `ip link set … alias` text, if any. */
  ifalias: string | undefined;
  /** Kind-independent: master bridge name, if enslaved. */
  master: string | undefined;
}

/** One IPv4 address from `ip -j addr show`. */
export interface HostAddress {
  ifname: string;
  /** Dotted quad. */
  local: string;
  prefixlen: number;
}

/**
 * Control characters that are valid JSON nowhere raw: in a string they must be escaped, and
 * outside one only tab, newline and carriage return are whitespace. iproute2 escapes `\b \t \n
 * \f \r` in strings and writes every other byte as is (lib/json_writer.c `jsonw_puts`,
 * iproute2 6.1), so a link alias (`ip link set … alias`) or an address label holding another
 * control character made the whole listing unparsable, and with it every tenant daemon's start
 * and stop on the host.
 */
// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g;

/**
 * `ip -j` output made valid JSON: each raw control character of {@link RAW_CONTROL} written as
 * its `\u00XX` escape. Outside a string such a character is not valid JSON either, so only text
 * inside strings changes meaning (it now holds the character). Pure.
 */
export function escapeIpJsonControls(text: string): string {
  return text.replace(RAW_CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function parseJsonArray(text: string, what: string): unknown[] {
  const t = escapeIpJsonControls(text.trim());
  if (t === "") return [];
  try {
    const v: unknown = JSON.parse(t);
    return Array.isArray(v) ? v : [];
  } catch (err) {
    throw new PaddockError("ERR_NETWORK_SETUP_FAILED", `cannot parse ${what} output`, { cause: err });
  }
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function parseLinks(text: string): HostLink[] {
  return parseJsonArray(text, "ip -j link").flatMap((l) => {
    const o = l as Record<string, unknown>;
    const ifname = str(o.ifname);
    return ifname === undefined ? [] : [{ ifname, ifalias: str(o.ifalias), master: str(o.master) }];
  });
}

function parseAddresses(text: string): HostAddress[] {
  const out: HostAddress[] = [];
  for (const l of parseJsonArray(text, "ip -j addr")) {
    const o = l as Record<string, unknown>;
    const ifname = str(o.ifname);
    const infos = Array.isArray(o.addr_info) ? (o.addr_info as Record<string, unknown>[]) : [];
    for (const a of infos) {
      const local = str(a.local);
      if (ifname && local && a.family === "inet" && typeof a.prefixlen === "number") out.push({ ifname, local, prefixlen: a.prefixlen });
    }
  }
  return out;
}

function parseNetns(text: string): string[] {
  return parseJsonArray(text, "ip -j netns list").flatMap((n) => {
    const name = str((n as Record<string, unknown>).name);
    return name === undefined ? [] : [name];
  });
}

/** Every link in the host namespace. */
export async function listLinks(): Promise<HostLink[]> {
  const r = await run("ip", ["-j", "link", "show"], { timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
  return parseLinks(r.stdout);
}

/** Every IPv4 address on a host interface. */
export async function listAddresses(): Promise<HostAddress[]> {
  const r = await run("ip", ["-j", "-4", "addr", "show"], { timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
  return parseAddresses(r.stdout);
}

/** Names of every named network namespace (`ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const r = await run("ip", ["-j", "netns", "list"], { timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
  return parseNetns(r.stdout);
}

/** The host's links, IPv4 addresses and named netns, as {@link listLinks}, {@link listAddresses} and {@link listNetns} give them. */
export interface IpScan {
  links: HostLink[];
  addrs: HostAddress[];
  netnsList: string[];
}

/** What {@link scanIp} has one `ip` run do (`-4` is a global option there: `link show` and `netns list` ignore it). */
const SCAN_BATCH = "link show\naddress show\nnetns list\n";

/**
 * The output of `ip -j -4 -batch -` for {@link SCAN_BATCH}: one JSON array per line, links then
 * addresses then netns; iproute2 prints no line at all for `netns list` when /run/netns does not
 * exist (no netns yet), so two lines mean no netns. Pure.
 * @returns undefined when the text is not two or three lines (then the caller asks ip three times).
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED when a line is not JSON.
 */
export function parseIpScan(text: string): IpScan | undefined {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (lines.length < 2 || lines.length > 3) return undefined;
  return { links: parseLinks(lines[0] as string), addrs: parseAddresses(lines[1] as string), netnsList: lines[2] === undefined ? [] : parseNetns(lines[2]) };
}

/**
 * Links, IPv4 addresses and named netns from one `ip -j -4 -batch -` (one child instead of
 * three, for the daemon's start: tenant-ranges.ts `scanHost`); when its output does not have the
 * expected shape (another iproute2), the three separate listings.
 * @throws PaddockError ERR_NETWORK_SETUP_FAILED from `ip`.
 */
export async function scanIp(): Promise<IpScan> {
  const r = await run("ip", ["-j", "-4", "-batch", "-"], { input: SCAN_BATCH, timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
  const scan = parseIpScan(r.stdout);
  if (scan !== undefined) return scan;
  const [links, addrs, netnsList] = await Promise.all([listLinks(), listAddresses(), listNetns()]);
  return { links, addrs, netnsList };
}

/**
 * Run `ip -batch -` (optionally inside `netns` with `-n`): stops at the first failing line.
 * @throws PaddockError `ERR_NETWORK_SETUP_FAILED` with ip's stderr.
 */
export async function ipBatch(lines: readonly string[], netns?: string): Promise<void> {
  const args = netns === undefined ? ["-batch", "-"] : ["-n", netns, "-batch", "-"];
  await run("ip", args, { input: lines.join("\n") + "\n", timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
}

/** `ip link del <name>`; true when something was deleted. */
export async function deleteLink(name: string): Promise<boolean> {
  const r = await run("ip", ["link", "del", "dev", name], { timeoutMs: IP_TIMEOUT_MS, allowFailure: true });
  return r.exitCode === 0;
}

/**
 * Delete links, then named netns, in one `ip -force -batch` (every line is tried even when
 * an earlier one fails, e.g. because the link is already gone). Missing ones are fine.
 */
export async function deleteLinksAndNetns(links: readonly string[], netns: readonly string[]): Promise<void> {
  const lines = [...links.map((l) => `link del dev ${l}`), ...netns.map((n) => `netns del ${n}`)];
  if (lines.length === 0) return;
  await run("ip", ["-force", "-batch", "-"], { input: lines.join("\n") + "\n", timeoutMs: IP_TIMEOUT_MS, allowFailure: true });
}

/** `ip netns del <name>`; true when something was deleted. */
export async function deleteNetns(name: string): Promise<boolean> {
  const r = await run("ip", ["netns", "del", name], { timeoutMs: IP_TIMEOUT_MS, allowFailure: true });
  return r.exitCode === 0;
}

/**
 * Apply a transaction with one `nft -f -`. nft sends a file as one netlink batch that the
 * kernel commits all-or-nothing (nft(8), "-f"; https://wiki.nftables.org/wiki-nftables/index.php/Atomic_rule_replacement),
 * and a file it cannot parse sends nothing: a separate `nft -c` check first would only cost a
 * second process per apply. nft runs with {@link nftEnv} (its cache costs half the CPU).
 * @throws PaddockError `ERR_NETWORK_SETUP_FAILED` with nft's stderr (the ruleset is unchanged).
 */
export async function applyNft(text: string): Promise<void> {
  await run("nft", ["-f", "-"], { input: text, timeoutMs: NFT_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED", env: nftEnv() });
}

/**
 * Whether the host has the nftables table `inet <name>`: `nft list table inet <name>` reads that
 * one table (a few ms at 200 tables on the host), where any write, a table's deletion included,
 * first reads every table's chains and sets (~0.1 s of CPU with 200 small tenant tables; more
 * under load, docs/performance.md). False only when nft says it does not exist (ENOENT); any
 * other failure counts as present, so the caller's write reports it.
 * @param name - a table name Paddock renders (nft-ruleset.ts), never guest input.
 */
export async function nftTableExists(name: string): Promise<boolean> {
  const r = await run("nft", ["list", "table", "inet", name], { timeoutMs: NFT_TIMEOUT_MS, allowFailure: true, env: nftEnv() });
  return r.exitCode === 0 || !/No such file or directory/.test(r.stderr);
}

/**
 * The host's own IPv4 resolvers from /etc/resolv.conf; when those are only loopback stubs
 * (systemd-resolved's 127.0.0.53, unreachable from a VM), the upstream list in
 * /run/systemd/resolve/resolv.conf. Never a public fallback.
 */
export async function readHostResolvers(files = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]): Promise<string[]> {
  for (const f of files) {
    let text: string;
    try {
      text = await fs.readFile(f, "utf8");
    } catch {
      continue;
    }
    const servers = parseResolvConfServers(text).filter((s) => !s.startsWith("127.") && s !== "0.0.0.0");
    if (servers.length > 0) return servers;
  }
  return [];
}

/** IPv4 `nameserver` entries of a resolv.conf text (pure). */
export function parseResolvConfServers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*(?:#.*)?$/.exec(line);
    if (m?.[1]) out.push(m[1]);
  }
  return out;
}

const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";

/**
 * Make sure IPv4 forwarding is on (VM traffic is routed by the host). Returns true when it
 * had to be switched on (the caller logs it: it is a host-wide setting, left on at stop
 * because other tenants may rely on it).
 */
export async function ensureIpForward(): Promise<boolean> {
  const cur = (await fs.readFile(IP_FORWARD, "utf8")).trim();
  if (cur === "1") return false;
  await fs.writeFile(IP_FORWARD, "1\n");
  return true;
}

/** Pids of processes living in a named netns (`ip netns pids`); [] when none or on error. */
export async function netnsPids(name: string): Promise<number[]> {
  const r = await run("ip", ["netns", "pids", name], { timeoutMs: IP_TIMEOUT_MS, allowFailure: true });
  if (r.exitCode !== 0) return [];
  return r.stdout.split(/\s+/).filter((s) => /^\d+$/.test(s)).map(Number);
}

/** First IPv4 address of `dev` inside netns `name` (bare), or undefined. */
export async function netnsAddress(name: string, dev: string): Promise<string | undefined> {
  const r = await run("ip", ["-n", name, "-j", "-4", "addr", "show", "dev", dev], { timeoutMs: IP_TIMEOUT_MS, allowFailure: true });
  if (r.exitCode !== 0) return undefined;
  for (const l of parseJsonArray(r.stdout, "ip -j addr")) {
    const infos = (l as Record<string, unknown>).addr_info;
    if (Array.isArray(infos)) for (const a of infos as Record<string, unknown>[]) if (typeof a.local === "string") return a.local;
  }
  return undefined;
}

/** Whether the host kernel has IPv6 at all (absent with the `ipv6.disable=1` boot parameter). */
export async function hostHasIpv6(): Promise<boolean> {
  return fs.access("/proc/sys/net/ipv6/conf/default/disable_ipv6").then(() => true, () => false);
}

/**
 * Turn IPv6 off on a host interface (`net.ipv6.conf.<ifname>.disable_ipv6=1`, see
 * https://docs.kernel.org/networking/ip-sysctl.html): it loses its link-local address and
 * the host stack drops IPv6 arriving on it. A missing interface is fine (it raced a delete).
 */
export async function disableHostIpv6(ifname: string): Promise<void> {
  await fs.writeFile(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, "1\n").catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw new PaddockError("ERR_NETWORK_SETUP_FAILED", `cannot disable IPv6 on ${ifname}: ${err.message}`, { cause: err });
  });
}

/**
 * Turn IPv6 off inside a VM's netns for its link and any link made later:
 * `net.ipv6.conf.{default,<dev>}.disable_ipv6=1`, written with sysctl(8) run in the netns by
 * nsenter(1) (/proc/sys/net is per network namespace). Loopback keeps `::1`: it never leaves
 * the netns. @throws PaddockError `ERR_NETWORK_SETUP_FAILED` with the tools' stderr.
 */
export async function disableNetnsIpv6(netns: string, dev: string): Promise<void> {
  await run("nsenter", [`--net=/var/run/netns/${netns}`, "--", "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1", `net.ipv6.conf.${dev}.disable_ipv6=1`], { timeoutMs: IP_TIMEOUT_MS, errorCode: "ERR_NETWORK_SETUP_FAILED" });
}
