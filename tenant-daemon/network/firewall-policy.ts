/**
 * Isolated-mode firewall semantics (docs/slicer-api.md#firewall-rules), pure.
 *
 * Entries are `a.b.c.d`, `a.b.c.d/n` or either followed by `:port`. Decision for a packet:
 * the most specific matching entry wins — longer prefix beats shorter; at equal prefix an
 * entry with a port beats one without; at a full tie `drop` wins. When nothing matches, the
 * default is `drop` if an `allow` list is non-empty (whitelist), else `accept` (Slicer documents:
 * only drop ⇒ all else allowed; only allow ⇒ whitelist; neither ⇒ all allowed; both is our
 * reading: the whitelist default). So `drop:[0.0.0.0/0]` + `allow:[ip:port]` admits exactly
 * that port, and `drop:[192.168.1.0/24]` + `allow:[0.0.0.0/0]` admits all but the LAN.
 *
 * The floor: the host group's lists are written by the operator (template), a create's
 * per-VM `network` override by the tenant. An override replaces the group's lists above a
 * floor: every destination the group's own lists drop (an explicit drop entry winning by
 * most-specific-wins, not the whitelist default) stays dropped whatever the override allows,
 * even with a more specific allow. So the group's `drop:[10.0.0.0/8]` holds against an
 * override `allow:[10.1.2.3:22]`, and a group whitelist becomes binding by writing
 * `drop:[0.0.0.0/0]`. The operator's `paddock.deny` is a floor of its own, applied before
 * either (nft-ruleset.ts chain `deny`).
 */
import { formatCidr, parseCidr, type Cidr } from "../../shared/cidr.js";
import { PaddockError } from "../../shared/errors.js";
import type { VmNetworkOverride } from "./network.js";

/** One parsed allow/drop entry. `port` applies to TCP and UDP. */
export interface FirewallEntry {
  cidr: Cidr;
  port: number | undefined;
  /** The entry as written in config or request. */
  text: string;
}

/** One compiled rule: first match wins in the order returned by {@link compileFirewall}. */
export interface FirewallRule {
  /** `a.b.c.d/n` */
  cidr: string;
  port: number | undefined;
  verdict: "accept" | "drop";
}

/** Ordered rules plus the verdict when none matches. */
export interface CompiledFirewall {
  rules: FirewallRule[];
  defaultVerdict: "accept" | "drop";
}

/** Both lists, always present (the describe-VM `host_group` / `effective` shape). */
export interface FirewallLists {
  allow: string[];
  drop: string[];
}

/**
 * Parse one entry.
 * @throws PaddockError `ERR_VM_INVALID_REQUEST` naming the entry when it is not a CIDR, IP or ip:port.
 */
export function parseFirewallEntry(text: string): FirewallEntry {
  const parts = text.trim().split(":");
  if (parts.length > 2) throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid firewall entry ${JSON.stringify(text)}: expected a CIDR, an IP or ip:port`);
  let cidr: Cidr;
  try {
    cidr = parseCidr(parts[0] ?? "");
  } catch {
    throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid firewall entry ${JSON.stringify(text)}: expected a CIDR, an IP or ip:port`);
  }
  let port: number | undefined;
  if (parts[1] !== undefined) {
    port = /^\d{1,5}$/.test(parts[1]) ? Number(parts[1]) : NaN;
    if (!(port >= 1 && port <= 65535)) throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid port in firewall entry ${JSON.stringify(text)} (1-65535)`);
  }
  return { cidr, port, text };
}

/**
 * Validate a create request's `network` override (docs/slicer-api.md#create-a-vm): only for
 * isolated groups, lists of strings, every entry parseable.
 * @throws PaddockError `ERR_VM_INVALID_REQUEST`.
 */
export function validateOverride(override: unknown, mode: "bridge" | "isolated", group: string): VmNetworkOverride | undefined {
  if (override === undefined || override === null) return undefined;
  if (typeof override !== "object" || Array.isArray(override)) throw new PaddockError("ERR_VM_INVALID_REQUEST", "network must be an object {allow?: string[], drop?: string[]}");
  if (mode !== "isolated") throw new PaddockError("ERR_VM_INVALID_REQUEST", `network overrides are only meaningful for isolated host groups; ${group} is in ${mode} mode`);
  const out: VmNetworkOverride = {};
  for (const key of ["allow", "drop"] as const) {
    const v = (override as Record<string, unknown>)[key];
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.some((e) => typeof e !== "string")) throw new PaddockError("ERR_VM_INVALID_REQUEST", `network.${key} must be a list of strings`);
    for (const e of v as string[]) parseFirewallEntry(e);
    out[key] = [...(v as string[])];
  }
  return out;
}

/**
 * Effective lists above the floor: a key present in the override replaces the host group's
 * list (`[]` empties it). The group's floor ({@link compileFloor}) still applies on top.
 */
export function effectiveLists(hostGroup: FirewallLists, override: VmNetworkOverride | undefined): FirewallLists {
  return {
    allow: [...(override?.allow ?? hostGroup.allow)],
    drop: [...(override?.drop ?? hostGroup.drop)],
  };
}

/**
 * Compile allow/drop lists to first-match rules implementing most-specific-wins (module doc).
 * Rules made redundant by the default (e.g. the lone `allow 0.0.0.0/0` when the default is
 * already accept) are kept: they are cheap and make the ruleset read like the config.
 * @throws PaddockError `ERR_VM_INVALID_REQUEST` on an unparseable entry.
 */
export function compileFirewall(lists: FirewallLists): CompiledFirewall {
  const entries = [
    ...lists.drop.map((t) => ({ e: parseFirewallEntry(t), verdict: "drop" as const })),
    ...lists.allow.map((t) => ({ e: parseFirewallEntry(t), verdict: "accept" as const })),
  ];
  entries.sort((a, b) =>
    b.e.cidr.prefix - a.e.cidr.prefix ||
    Number(b.e.port !== undefined) - Number(a.e.port !== undefined) ||
    (a.verdict === b.verdict ? 0 : a.verdict === "drop" ? -1 : 1) ||
    a.e.cidr.base - b.e.cidr.base ||
    (a.e.port ?? 0) - (b.e.port ?? 0),
  );
  const seen = new Set<string>();
  const rules: FirewallRule[] = [];
  for (const { e, verdict } of entries) {
    const key = `${formatCidr(e.cidr)}:${e.port ?? ""}`;
    if (seen.has(key)) continue; // an identical earlier entry (drop sorts first on ties) already decides
    seen.add(key);
    rules.push({ cidr: formatCidr(e.cidr), port: e.port, verdict });
  }
  return { rules, defaultVerdict: lists.allow.length > 0 ? "drop" : "accept" };
}

/**
 * The host group's floor: its compiled rules (most-specific-wins) cut after the last `drop`.
 * A `drop` drops; an `accept` ends the floor and leaves the decision to the VM's own policy;
 * the end of the list too. Empty when the group drops nothing.
 * @throws PaddockError `ERR_VM_INVALID_REQUEST` on an unparseable entry.
 */
export function compileFloor(hostGroup: FirewallLists): FirewallRule[] {
  const rules = compileFirewall(hostGroup).rules;
  let end = rules.length;
  while (end > 0 && rules[end - 1]?.verdict === "accept") end--;
  return rules.slice(0, end);
}

/** Decide a destination by the floor first, then by the VM's compiled rules (unit tests, reasoning). */
export function decideWithFloor(floor: readonly FirewallRule[], fw: CompiledFirewall, dst: number, port: number | undefined): "accept" | "drop" {
  const r = firstMatch(floor, dst, port);
  if (r?.verdict === "drop") return "drop";
  return decide(fw, dst, port);
}

function firstMatch(rules: readonly FirewallRule[], dst: number, port: number | undefined): FirewallRule | undefined {
  for (const r of rules) {
    const c = parseCidr(r.cidr);
    const inCidr = c.prefix === 0 || (dst >>> (32 - c.prefix)) === (c.base >>> (32 - c.prefix));
    if (inCidr && (r.port === undefined || r.port === port)) return r;
  }
  return undefined;
}

/** Decide a destination by the compiled rules (for unit tests and the describe endpoint's reasoning). */
export function decide(fw: CompiledFirewall, dst: number, port: number | undefined): "accept" | "drop" {
  return firstMatch(fw.rules, dst, port)?.verdict ?? fw.defaultVerdict;
}
