import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { parseIpv4 } from "../../shared/cidr.js";
import { isPaddockError } from "../../shared/errors.js";
import { DEFAULT_DENY, parseTenantConfig } from "../../shared/tenant-config.js";
import { AddressPlan, deriveIsolatedRange, groupAddressing, METADATA_IP } from "../../tenant-daemon/network/address-plan.js";
import { compileFirewall, compileFloor, decide, decideWithFloor, effectiveLists, validateOverride } from "../../tenant-daemon/network/firewall-policy.js";
import { parseResolvConfServers } from "../../tenant-daemon/network/host-net.js";
import { defaultBridgeName, vmNetnsName, vmVethName } from "../../tenant-daemon/network/names.js";
import { normaliseCidrs, renderRuleset, type RulesetInput } from "../../tenant-daemon/network/nft-ruleset.js";
import { cidrContains, parseCidr } from "../../shared/cidr.js";

// dist/test/unit → repository root
const GOLDEN_DIR = path.resolve(import.meta.dirname, "../../../test/unit/golden");

async function golden(name: string, actual: string): Promise<void> {
  const file = path.join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === "1") await fs.writeFile(file, actual);
  expect(actual).to.equal(await fs.readFile(file, "utf8"));
}

const ip = (s: string): number => parseIpv4(s) as number;

function config(groups: unknown[]) {
  return parseTenantConfig({ config: { host_groups: groups }, paddock: { tenant_id: "t1" } }, "<inline>", { baseDir: "/tmp", env: {} });
}

describe("network: names", () => {
  it("link names fit 15 bytes, are deterministic and differ per tenant and VM, also for long host group names", () => {
    const long = "a-very-long-host-group-name-of-forty-chr";
    const a = vmVethName("t1", `${long}-1`);
    expect(Buffer.byteLength(a)).to.be.at.most(15);
    expect(a).to.equal(vmVethName("t1", `${long}-1`));
    expect(a).to.not.equal(vmVethName("t2", `${long}-1`));
    expect(a).to.not.equal(vmVethName("t1", `${long}-2`));
    expect(Buffer.byteLength(defaultBridgeName("abcdefghijkl", long))).to.be.at.most(15);
    expect(vmNetnsName("t1", "sbox-1")).to.equal("pdk-t1-sbox-1");
  });
});

describe("network: firewall semantics", () => {
  const d = (lists: { allow: string[]; drop: string[] }, dst: string, port?: number) => decide(compileFirewall(lists), ip(dst), port);

  it("only drop: everything else allowed", () => {
    const l = { allow: [], drop: ["192.168.1.0/24"] };
    expect(d(l, "192.168.1.7")).to.equal("drop");
    expect(d(l, "198.18.0.1")).to.equal("accept");
  });
  it("only allow: whitelist", () => {
    const l = { allow: ["198.18.0.0/24"], drop: [] };
    expect(d(l, "198.18.0.9")).to.equal("accept");
    expect(d(l, "198.18.1.9")).to.equal("drop");
  });
  it("neither: all allowed", () => {
    expect(d({ allow: [], drop: [] }, "1.2.3.4")).to.equal("accept");
  });
  it("drop LAN + allow all admits all but the LAN", () => {
    const l = { allow: ["0.0.0.0/0"], drop: ["192.168.1.0/24"] };
    expect(d(l, "192.168.1.1")).to.equal("drop");
    expect(d(l, "8.8.8.8")).to.equal("accept");
  });
  it("drop all + allow ip:port admits exactly that port", () => {
    const l = { allow: ["192.168.222.1:3128", "192.168.222.1:3129"], drop: ["0.0.0.0/0"] };
    expect(d(l, "192.168.222.1", 3128)).to.equal("accept");
    expect(d(l, "192.168.222.1", 3129)).to.equal("accept");
    expect(d(l, "192.168.222.1", 80)).to.equal("drop");
    expect(d(l, "192.168.222.1")).to.equal("drop");
    expect(d(l, "192.168.222.2", 3128)).to.equal("drop");
  });
  it("longer prefix wins; ip:port beats bare ip; full tie ⇒ drop", () => {
    expect(d({ allow: ["10.1.0.0/16"], drop: ["10.0.0.0/8"] }, "10.1.2.3")).to.equal("accept");
    expect(d({ allow: ["10.0.0.0/8"], drop: ["10.1.0.0/16"] }, "10.1.2.3")).to.equal("drop");
    expect(d({ allow: ["10.0.0.1:22"], drop: ["10.0.0.1"] }, "10.0.0.1", 22)).to.equal("accept");
    expect(d({ allow: ["10.0.0.0/8"], drop: ["10.0.0.0/8"] }, "10.0.0.1")).to.equal("drop");
  });
  it("override keys replace the host group's lists; [] empties", () => {
    expect(effectiveLists({ allow: ["1.0.0.0/8"], drop: ["2.0.0.0/8"] }, { allow: [] })).to.deep.equal({ allow: [], drop: ["2.0.0.0/8"] });
    expect(effectiveLists({ allow: ["1.0.0.0/8"], drop: [] }, undefined)).to.deep.equal({ allow: ["1.0.0.0/8"], drop: [] });
  });
  it("the group's drops are a floor: an override's allow, even a more specific one, never reopens them", () => {
    const group = { allow: ["0.0.0.0/0"], drop: ["10.0.0.0/8", "198.18.0.0/15"] };
    const floor = compileFloor(group);
    const fw = (o: { allow?: string[]; drop?: string[] }) => compileFirewall(effectiveLists(group, o));
    const dw = (o: { allow?: string[]; drop?: string[] }, dst: string, port?: number) => decideWithFloor(floor, fw(o), ip(dst), port);
    // Without the floor the override would win (most-specific-wins): the regression.
    expect(decide(fw({ allow: ["198.18.4.2/32"] }), ip("198.18.4.2"), undefined)).to.equal("accept");
    expect(dw({ allow: ["198.18.4.2/32"] }, "198.18.4.2")).to.equal("drop");
    expect(dw({ allow: ["10.1.2.3:22"], drop: [] }, "10.1.2.3", 22)).to.equal("drop");
    expect(dw({ drop: [] }, "10.9.9.9")).to.equal("drop");
    // Above the floor the override decides: it may add drops and allows.
    expect(dw({ allow: ["203.0.113.0/24"], drop: ["0.0.0.0/0"] }, "203.0.113.5")).to.equal("accept");
    expect(dw({ allow: ["203.0.113.0/24"], drop: ["0.0.0.0/0"] }, "8.8.8.8")).to.equal("drop");
    expect(dw({ drop: ["8.8.8.8"] }, "8.8.8.8")).to.equal("drop");
  });
  it("a group whitelist with drop 0.0.0.0/0 is binding; its own exceptions stay open to the override", () => {
    const group = { allow: ["198.18.0.1:3128"], drop: ["0.0.0.0/0"] };
    const floor = compileFloor(group);
    expect(floor.map((r) => `${r.cidr}:${r.port ?? ""}:${r.verdict}`)).to.deep.equal(["198.18.0.1/32:3128:accept", "0.0.0.0/0::drop"]);
    const dw = (o: { allow?: string[]; drop?: string[] }, dst: string, port?: number) => decideWithFloor(floor, compileFirewall(effectiveLists(group, o)), ip(dst), port);
    expect(dw({ allow: ["0.0.0.0/0"], drop: [] }, "198.18.0.1", 3128)).to.equal("accept");
    expect(dw({ allow: ["0.0.0.0/0"], drop: [] }, "198.18.0.1", 80)).to.equal("drop");
    expect(dw({ allow: [], drop: ["198.18.0.1"] }, "198.18.0.1", 3128)).to.equal("drop");
    // Without drops, the group's floor is empty and its whitelist default is not a floor.
    expect(compileFloor({ allow: ["198.18.0.0/24"], drop: [] })).to.deep.equal([]);
    expect(compileFloor({ allow: ["0.0.0.0/0"], drop: ["10.0.0.0/8"] }).map((r) => r.verdict)).to.deep.equal(["drop"]);
  });
  it("validateOverride rejects bridge groups and bad entries with 400", () => {
    for (const [o, mode] of [[{ allow: ["x"] }, "isolated"], [{ drop: ["1.2.3.4:99999"] }, "isolated"], [{ allow: [] }, "bridge"], [{ allow: "1.2.3.4" }, "isolated"]] as const) {
      try {
        validateOverride(o, mode, "g");
        expect.fail("accepted");
      } catch (err) {
        expect(isPaddockError(err, "ERR_VM_INVALID_REQUEST")).to.equal(true);
      }
    }
    expect(validateOverride({ allow: [], drop: ["10.0.0.0/8"] }, "isolated", "g")).to.deep.equal({ allow: [], drop: ["10.0.0.0/8"] });
  });
});

describe("network: address plan", () => {
  it("isolated: one /30 per VM, VM = block+2, gateway = block+1; previous address kept; exhaustion is a 409", () => {
    const cfg = config([{ name: "iso", network: { mode: "isolated", range: "198.18.4.0/28" } }]);
    const plan = new AddressPlan([groupAddressing(cfg.hostGroups[0]!, undefined)]);
    const a = plan.reserve("iso-1", "iso", new Set());
    expect([a.ip, a.gateway, a.prefix]).to.deep.equal([ip("198.18.4.2"), ip("198.18.4.1"), 30]);
    // a host interface address inside the next block makes it skipped
    const b = plan.reserve("iso-2", "iso", new Set([ip("198.18.4.5")]));
    expect(b.ip).to.equal(ip("198.18.4.10"));
    const c = plan.reserve("iso-3", "iso", new Set(), { ip: "198.18.4.14/30", strict: false });
    expect(c.ip).to.equal(ip("198.18.4.14"));
    expect(plan.reserve("iso-1", "iso", new Set()).ip).to.equal(a.ip);
    const d = plan.reserve("iso-4", "iso", new Set());
    expect(d.ip).to.equal(ip("198.18.4.6"));
    try {
      plan.reserve("iso-5", "iso", new Set());
      expect.fail("not exhausted");
    } catch (err) {
      expect(isPaddockError(err, "ERR_NETWORK_EXHAUSTED")).to.equal(true);
      expect((err as { status: number }).status).to.equal(409);
    }
    plan.release("iso-2");
    expect(plan.reserve("iso-5", "iso", new Set()).ip).to.equal(ip("198.18.4.10"));
  });

  it("bridge: .2 upwards skipping the gateway, or the range / addresses; strict requested ip errors", () => {
    const cfg = config([
      { name: "br", network: { gateway: "198.18.8.1/29" } },
      { name: "rg", network: { gateway: "198.18.9.1/24", range: "198.18.9.20-198.18.9.21" } },
    ]);
    const plan = new AddressPlan(cfg.hostGroups.map((g) => groupAddressing(g, undefined)));
    expect(plan.reserve("br-1", "br", new Set()).ip).to.equal(ip("198.18.8.2"));
    expect(plan.reserve("br-1", "br", new Set()).prefix).to.equal(29);
    expect(plan.reserve("rg-1", "rg", new Set()).ip).to.equal(ip("198.18.9.20"));
    expect(plan.reserve("rg-2", "rg", new Set(), { ip: "198.18.9.21", strict: true }).ip).to.equal(ip("198.18.9.21"));
    expect(() => plan.reserve("rg-3", "rg", new Set(), { ip: "198.18.9.21", strict: true })).to.throw(/already in use/);
    expect(() => plan.reserve("rg-4", "rg", new Set(), { ip: "198.18.9.99", strict: true })).to.throw(/not a VM address/);
    expect(() => plan.reserve("rg-5", "rg", new Set())).to.throw(/no free address/);
  });

  it("50 reservations in one tick are distinct", () => {
    const cfg = config([{ name: "iso", network: { mode: "isolated", range: "169.254.100.0/22" } }]);
    const plan = new AddressPlan([groupAddressing(cfg.hostGroups[0]!, undefined)]);
    const ips = Array.from({ length: 50 }, (_, i) => plan.reserve(`iso-${i + 1}`, "iso", new Set()).ip);
    expect(new Set(ips).size).to.equal(50);
  });

  it("derived /22 is stable, inside 169.254.0.0/16, never the metadata block, and avoids taken blocks", () => {
    const a = deriveIsolatedRange("t1", "sbox", [])!;
    expect(a).to.deep.equal(deriveIsolatedRange("t1", "sbox", []));
    expect(a.prefix).to.equal(22);
    expect(cidrContains(parseCidr("169.254.0.0/16"), a.base)).to.equal(true);
    const b = deriveIsolatedRange("t1", "sbox", [a])!;
    expect(b).to.not.deep.equal(a);
    // every block taken but one
    const all = Array.from({ length: 64 }, (_, i) => ({ base: (ip("169.254.0.0") + i * 1024) >>> 0, prefix: 22 }));
    const keep = all[5]!;
    expect(deriveIsolatedRange("t1", "sbox", all.filter((c) => c !== keep))).to.deep.equal(keep);
    const meta = all.find((c) => cidrContains(c, METADATA_IP))!;
    expect(deriveIsolatedRange("t1", "sbox", all.filter((c) => c !== meta))).to.equal(undefined);
  });
});

describe("network: misc", () => {
  it("normaliseCidrs drops contained ranges and ports", () => {
    expect(normaliseCidrs(["10.1.0.0/16", "10.0.0.0/8", "198.18.0.1:80", "198.18.0.0/30"])).to.deep.equal(["10.0.0.0/8", "198.18.0.0/30"]);
  });
  it("resolv.conf parsing keeps IPv4 nameservers only", () => {
    expect(parseResolvConfServers("# x\nnameserver 10.255.255.53\nnameserver ::1\nsearch a\nnameserver 127.0.0.53 # stub\n")).to.deep.equal(["10.255.255.53", "127.0.0.53"]);
  });
});

describe("network: renderRuleset golden files", () => {
  const fw = compileFirewall({ allow: ["198.18.0.1:3128"], drop: ["0.0.0.0/0"] });
  const input: RulesetInput = {
    tenantId: "acme",
    ownRanges: ["169.254.100.0/22", "198.18.8.0/24"],
    foreignRanges: ["169.254.104.0/22", "169.254.104.0/24", "198.19.0.0/16"],
    deny: ["169.254.169.254", "198.18.200.0/24:22", "fd00:ec2::254/128", "fd00:ec3::/64"],
    bridges: [{ group: "web", bridge: "pbweb", range: "198.18.8.0/24", gateway: "198.18.8.1", hostPorts: [8080, 53, 8080] }, { group: "db", bridge: "pbdb", range: "198.18.9.0/24", gateway: "198.18.9.1", hostPorts: [] }],
    isolatedVms: [
      // iso-3 has a per-VM override: it jumps to the group's floor (the group drops RFC 1918 and 198.18.0.0/15).
      { hostname: "iso-3", group: "iso", veth: "pkcccc", ip: "169.254.100.10", firewall: compileFirewall({ allow: ["198.18.4.2/32"], drop: [] }), useFloor: true },
      { hostname: "iso-2", group: "iso", veth: "pkbbbb", ip: "169.254.100.6", firewall: compileFirewall({ allow: [], drop: [] }), useFloor: false },
      { hostname: "iso-1", group: "iso", veth: "pkaaaa", ip: "169.254.100.2", firewall: fw, useFloor: false },
    ],
    floors: [
      { group: "iso", rules: compileFloor({ allow: ["0.0.0.0/0", "198.18.0.1:3128"], drop: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15"] }) },
      { group: "unused", rules: compileFloor({ allow: [], drop: ["0.0.0.0/0"] }) },
    ],
  };
  it("full ruleset", async () => {
    await golden("network-ruleset-full.nft", renderRuleset(input));
  });
  it("renders without String.prototype.localeCompare (its first call sets up ICU's collator at every daemon start), deny entries in the order localeCompare gave", () => {
    const deny = ["192.168.0.0/16", "10.0.0.0/8", "100.100.100.200/32", "172.16.0.0/12", "169.254.169.254/32", "10.0.0.0/8:22", "10.0.0.0/8:3", "1.2.3.0/24", "198.18.200.0/24:22"];
    const real = Object.getOwnPropertyDescriptor(String.prototype, "localeCompare") as PropertyDescriptor;
    let text: string;
    Object.defineProperty(String.prototype, "localeCompare", { ...real, value: () => { throw new Error("localeCompare called"); } });
    try {
      text = renderRuleset({ ...input, deny });
    } finally {
      Object.defineProperty(String.prototype, "localeCompare", real);
    }
    const chain = text.slice(text.indexOf("\tchain deny {\n"), text.indexOf("\n\t}\n", text.indexOf("\tchain deny {\n")));
    const rendered = [...chain.matchAll(/ip daddr ([0-9][^\s]*)(?: meta l4proto \{ tcp, udp \} th dport (\d+))?/g)].map((m) => (m[2] === undefined ? m[1] : `${m[1]}:${m[2]}`));
    const byLocale = deny.map((t) => t.replace(/\/32(?=$|:)/, "")).sort((a, b) => (a.split(":")[0] ?? "").localeCompare(b.split(":")[0] ?? "") || Number(a.split(":")[1] ?? 0) - Number(b.split(":")[1] ?? 0));
    expect(rendered).to.deep.equal(byLocale);
  });
  it("empty tenant (no VMs, no bridges)", async () => {
    await golden("network-ruleset-empty.nft", renderRuleset({ tenantId: "empty", ownRanges: [], foreignRanges: [], deny: [], bridges: [], isolatedVms: [], floors: [] }));
  });
  it("the VMs' DNS servers are reachable on port 53 ahead of the deny list and the groups' drops; loopback resolvers are left out; none ⇒ no rule", () => {
    const text = renderRuleset({ ...input, deny: [...DEFAULT_DENY], dnsServers: ["10.255.255.53", "127.0.0.53", "10.255.255.53", "198.18.0.53"] });
    const rule = "iifname @vm_ifaces ip daddr { 10.255.255.53, 198.18.0.53 } meta l4proto { tcp, udp } th dport 53 accept";
    // In forward (before the deny jump and every VM's own chain) and in input.
    expect(text).to.include(`\t\t${rule}\n\t\tiifname @vm_ifaces jump deny\n\t\tct state established,related accept`);
    expect(text).to.include(`\t\t${rule}\n\t\tiifname @vm_ifaces jump deny\n\t\tiifname @vm_ifaces ct state established,related accept`);
    expect(text).to.not.include("127.0.0.53");
    expect(renderRuleset({ ...input, dnsServers: [] })).to.not.include("dport 53");
  });
  it("default deny list: cloud metadata and RFC 1918 in the rendered ruleset, skipping the tenant's own ranges", () => {
    const text = renderRuleset({ ...input, deny: [...DEFAULT_DENY] });
    const chain = /\tchain deny \{\n([^}]*)\t\}/.exec(text)?.[1] ?? "";
    expect(chain.trim().split("\n").map((l) => l.trim())).to.deep.equal([
      "ip daddr @own_ranges return",
      "ip daddr 10.0.0.0/8 drop",
      "ip daddr 100.100.100.200 drop",
      "ip daddr 169.254.169.254 drop",
      "ip daddr 172.16.0.0/12 drop",
      "ip daddr 192.168.0.0/16 drop",
      "ip6 daddr fd00:ec2::254 drop",
    ]);
    expect(text).to.include("\t\tiifname @vm_ifaces jump deny\n\t\tct state established,related accept");
    // A config without paddock.deny gets the default; [] opts out.
    expect(config([{ name: "g", network: { mode: "isolated" } }]).paddock.deny).to.deep.equal([...DEFAULT_DENY]);
    const none = parseTenantConfig({ config: { host_groups: [{ name: "g" }] }, paddock: { tenant_id: "t1", deny: [] } }, "<inline>", { baseDir: "/tmp", env: {} });
    expect(none.paddock.deny).to.deep.equal([]);
    expect(renderRuleset({ ...input, deny: [] })).to.not.include("jump deny");
  });
  it("paddock.host_ports: bridge groups only, ports 1-65535, known groups; rendered on the bridge's gateway address", () => {
    const parse = (hostPorts: unknown) => parseTenantConfig({
      config: { host_groups: [{ name: "br", network: { mode: "bridge", gateway: "198.18.8.1/24" } }, { name: "iso", network: { mode: "isolated" } }] },
      paddock: { tenant_id: "t1", host_ports: hostPorts },
    }, "<inline>", { baseDir: "/tmp", env: {} });
    expect(parse({ br: [8080, 53] }).paddock.hostPorts).to.deep.equal({ br: [8080, 53] });
    expect(parse(undefined).paddock.hostPorts).to.deep.equal({});
    try {
      parse({ iso: [22], nope: [22], br: [0, "x"] });
      expect.fail("accepted");
    } catch (err) {
      expect(isPaddockError(err, "ERR_CONFIG_INVALID")).to.equal(true);
      const paths = ((err as { details?: { problems?: { path: string }[] } }).details?.problems ?? []).map((p) => p.path);
      expect(paths).to.have.members(["paddock.host_ports.iso", "paddock.host_ports.nope", "paddock.host_ports.br[0]", "paddock.host_ports.br[1]"]);
    }
  });
  it("a VM with useFloor but no floor given is refused rather than rendered without its floor", () => {
    expect(() => renderRuleset({ ...input, floors: [] })).to.throw(/no floor given for host group iso/);
  });
  it("is deterministic whatever the input order", () => {
    const shuffled = { ...input, isolatedVms: [...input.isolatedVms].reverse(), foreignRanges: [...input.foreignRanges].reverse(), deny: [...input.deny].reverse(), bridges: [...input.bridges].reverse(), floors: [...input.floors].reverse() };
    expect(renderRuleset(shuffled)).to.equal(renderRuleset(input));
  });
});

describe("network: proxy mode (egress_proxy)", () => {
  const proxyInput: RulesetInput = {
    tenantId: "acme",
    ownRanges: ["169.254.100.0/22", "198.18.8.0/24"],
    foreignRanges: ["169.254.104.0/22"],
    deny: ["169.254.169.254"],
    dnsServers: ["198.18.0.53"],
    bridges: [{ group: "web", bridge: "pbweb", range: "198.18.8.0/24", gateway: "198.18.8.1", hostPorts: [] }],
    isolatedVms: [{ hostname: "px-1", group: "px", veth: "pkpppp", ip: "169.254.100.2", firewall: { rules: [], defaultVerdict: "drop" }, useFloor: false }],
    floors: [],
    proxy: {
      guestAddress: "169.254.169.250", proxyPort: 3128, dnsPort: 53,
      links: [{ iface: "pkpppp", gateway: "169.254.100.1", vmIp: "169.254.100.2" }, { iface: "pbweb", gateway: "198.18.8.1", vmIp: undefined }],
    },
  };
  it("golden ruleset: proxy links forward nothing, reach the proxy and resolver on their gateway only, and the guest address is DNATed there", async () => {
    await golden("network-ruleset-proxy.nft", renderRuleset(proxyInput));
  });
  it("proxy-mode links are dropped in forward before the resolver accept and the replies; in input before everything they could reach", () => {
    const text = renderRuleset(proxyInput);
    const chain = (name: string): string[] => (text.split(`\tchain ${name} {\n`)[1] ?? "").split("\n\t}\n")[0]?.split("\n").map((l) => l.trim()) ?? [];
    const lines = chain("forward");
    const drop = lines.indexOf("iifname @proxy_ifaces drop");
    expect(drop).to.be.greaterThan(0);
    expect(drop).to.be.lessThan(lines.findIndex((l) => l.includes("th dport 53 accept")));
    expect(drop).to.be.lessThan(lines.indexOf("ct state established,related accept"));
    const input = chain("input");
    expect(input.indexOf("iifname @proxy_ifaces drop")).to.be.lessThan(input.findIndex((l) => l.includes("198.18.0.53")));
    expect(input).to.include("iifname \"pkpppp\" ip saddr != 169.254.100.2 drop");
  });
  it("no proxy links ⇒ no proxy rules at all", () => {
    const text = renderRuleset({ ...proxyInput, proxy: { ...proxyInput.proxy!, links: [] } });
    expect(text).to.not.include("proxy_ifaces");
    expect(text).to.not.include("prerouting");
  });
  it("config: egress_proxy with its client (default: the group's name); CIDR lists, dns_servers and a network holding the proxy address refused", () => {
    const c = config([
      { name: "px", network: { mode: "isolated" }, egress_proxy: { client: "build-1" } },
      { name: "py", network: { mode: "isolated" }, egress_proxy: {} },
      { name: "pz", network: { mode: "isolated" } },
    ]);
    expect(c.hostGroups.map((g) => g.egressProxy)).to.deep.equal([{ client: "build-1" }, { client: "py" }, undefined]);
    const bad = (g: unknown): string => {
      try {
        config([g]);
        return "";
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(bad({ name: "px", network: { mode: "isolated", allow: ["198.18.0.1"] }, egress_proxy: {} })).to.include("egress_proxy");
    expect(bad({ name: "px", dns_servers: ["198.18.0.53"], network: { mode: "isolated" }, egress_proxy: {} })).to.include("dns_servers");
    expect(bad({ name: "px", network: { mode: "isolated", range: "169.254.168.0/22" }, egress_proxy: {} })).to.include("169.254.169.250");
    expect(bad({ name: "px", network: { mode: "isolated" }, egress_proxy: { client: "Bad Name" } })).to.include("egress_proxy.client");
  });
});
