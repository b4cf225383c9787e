/**
 * The daemon's host scan in one `ip` run (tenant-daemon/network/host-net.ts `scanIp`,
 * `parseIpScan`): the batch's lines parsed as the three listings parse them, the missing
 * `netns list` line (no /run/netns) read as no netns, an unexpected shape handed back to the three
 * listings; and on this host, the real batch against the three real listings.
 */
import { expect } from "chai";
import { listAddresses, listLinks, listNetns, parseIpScan, scanIp } from "../../tenant-daemon/network/host-net.js";

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
});
