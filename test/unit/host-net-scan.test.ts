/**
 * The daemon's host scan in one `ip` run (tenant-daemon/network/host-net.ts `scanIp`,
 * `parseIpScan`): the batch's lines parsed as the three listings parse them, the missing
 * `netns list` line (no /run/netns) read as no netns, an unexpected shape handed back to the three
 * listings; and on this host, the real batch against the three real listings.
 */
import { randomBytes } from "node:crypto";
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { listAddresses, listLinks, listNetns, netnsAddress, parseIpScan, scanIp } from "../../tenant-daemon/network/host-net.js";

const LINKS = JSON.stringify([
  { ifindex: 1, ifname: "lo", flags: ["LOOPBACK", "UP"], mtu: 65536 },
  { ifindex: 7, ifname: "pdk-br0", ifalias: "paddock/t1/bridge/sbox", flags: ["UP"] },
  { ifindex: 8, ifname: "pdk-v1", master: "pdk-br0", ifalias: "with \"quotes\" and \\n" },
]);
const ADDRS = JSON.stringify([
  { ifindex: 1, ifname: "lo", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8 }] },
  { ifindex: 7, ifname: "pdk-br0", addr_info: [{ family: "inet", local: "169.254.8.1", prefixlen: 22 }, { family: "inet6", local: "fe80::1", prefixlen: 64 }] },
]);
const NETNS = JSON.stringify([{ name: "pdk-t1-sbox-1", id: 0 }, { name: "other" }]);

describe("host scan in one ip run (host-net.ts parseIpScan, scanIp)", () => {
  it("parses links (with ifalias), IPv4 addresses and netns from the three lines", () => {
    expect(parseIpScan(`${LINKS}\n${ADDRS}\n${NETNS}\n`)).to.deep.equal({
      links: [
        { ifname: "lo", ifalias: undefined, master: undefined },
        { ifname: "pdk-br0", ifalias: "paddock/t1/bridge/sbox", master: undefined },
        { ifname: "pdk-v1", ifalias: "with \"quotes\" and \\n", master: "pdk-br0" },
      ],
      addrs: [{ ifname: "lo", local: "127.0.0.1", prefixlen: 8 }, { ifname: "pdk-br0", local: "169.254.8.1", prefixlen: 22 }],
      netnsList: ["pdk-t1-sbox-1", "other"],
    });
  });

  it("two lines (ip prints nothing for netns list without /run/netns) mean no netns; empty arrays stay empty", () => {
    expect(parseIpScan(`${LINKS}\n[]\n`)?.netnsList).to.deep.equal([]);
    expect(parseIpScan(`${LINKS}\n[]\n`)?.addrs).to.deep.equal([]);
    expect(parseIpScan(`${LINKS}\n${ADDRS}\n[]\n`)?.netnsList).to.deep.equal([]);
  });

  it("another shape is undefined (the caller lists three times); a line that is not JSON is ERR_NETWORK_SETUP_FAILED", () => {
    expect(parseIpScan("")).to.equal(undefined);
    expect(parseIpScan(`${LINKS}${ADDRS}${NETNS}`), "arrays on one line").to.equal(undefined);
    expect(parseIpScan(`${LINKS}\n${ADDRS}\n${NETNS}\n[]\n`)).to.equal(undefined);
    expect(() => parseIpScan(`${LINKS}\nnot json\n`)).to.throw().with.property("code", "ERR_NETWORK_SETUP_FAILED");
  });

  it("on this host the one batch gives what the three listings give", async () => {
    // Links and netns of other work on the host may change between the runs: up to 3 tries.
    let last: unknown[] = [];
    for (let i = 0; i < 3; i++) {
      const [batch, links, addrs, netnsList] = await Promise.all([scanIp(), listLinks(), listAddresses(), listNetns()]);
      if (JSON.stringify(batch) === JSON.stringify({ links, addrs, netnsList })) return;
      last = [batch, { links, addrs, netnsList }];
    }
    expect(last[0]).to.deep.equal(last[1]);
  });

  it("a link alias or address label holding a control character does not make the listing unparsable (real ip in a scratch netns)", async () => {
    // iproute2 writes such bytes raw inside JSON strings (lib/json_writer.c); one such link on the
    // host made every tenant daemon's start and stop fail with "cannot parse ip -j link output".
    const ns = `pdkj-${randomBytes(3).toString("hex")}`;
    const alias = "paddock/x/\u0001\u001b[31m\u007f";
    await run("ip", ["netns", "add", ns]);
    try {
      const ip = (args: string[], input?: string) => run("ip", ["-n", ns, ...args], input === undefined ? {} : { input });
      await ip(["link", "add", "pdkj-a", "type", "veth", "peer", "name", "pdkj-b"]);
      await ip(["link", "set", "pdkj-a", "alias", alias]);
      await ip(["addr", "add", "198.18.77.1/30", "dev", "pdkj-a", "label", "pdkj-a:\u0001"]);
      const raw = (await ip(["-j", "-4", "-batch", "-"], "link show\naddress show\n")).stdout;
      // Positive control: the raw output is not JSON.
      expect(() => raw.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as unknown)).to.throw(SyntaxError);
      const scan = parseIpScan(raw);
      expect(scan?.links.find((l) => l.ifname === "pdkj-a")?.ifalias).to.equal(alias);
      expect(scan?.addrs).to.deep.include({ ifname: "pdkj-a", local: "198.18.77.1", prefixlen: 30 });
      expect(await netnsAddress(ns, "pdkj-a")).to.equal("198.18.77.1");
    } finally {
      await run("ip", ["netns", "del", ns], { allowFailure: true });
    }
  });
});
