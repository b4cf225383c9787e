/**
 * Guest root against the tenant's connection bounds (tenant-daemon/network/conn-limits.ts) with
 * a REAL runc VM: the bounds count new connections whose source is in the tenant's ranges, so a
 * packet with a source outside them must be dropped before conntrack confirms it, on every path
 * the main table accepts (tenant-daemon/network/nft-ruleset.ts). Guest root binds UDP sockets to an
 * address outside the tenant's ranges (198.18.0.0/15) with IP_TRANSPARENT and sends one UDP datagram from
 * each of many fresh sockets from it to the group's resolver (`dns_servers`: a test host in a
 * netns made here), port 53, which the forward chain accepts ahead of the VM's own chain; the
 * same again to a resolver on a host address (the input chain). The host netns's conntrack
 * table (/proc/net/nf_conntrack) must show none of them. Positive control: the same flood from
 * the VM's own address shows an entry per datagram (less a few reused source ports).
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import { run } from "../../shared/exec.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { ip4, leftovers, makeTestHost, randomBlock, type TestHost } from "../privileged/network-fixtures.js";
import { createVm, sh } from "./guest-exec.js";

const FLOWS = 100;
/** An address outside every Paddock range (and outside the test hosts' /30s): the spoofed source. */
const SPOOF = `198.19.${200 + Math.floor(Math.random() * 15)}.${2 + Math.floor(Math.random() * 250)}`;

/**
 * Guest side (perl; the guest has CAP_NET_RAW, tenant-daemon/runtime/oci-spec.ts): one datagram from
 * each of `n` fresh UDP sockets bound to `src` with IP_TRANSPARENT (19, ip(7): lets a socket
 * bind to and send from an address the guest does not own). Prints `sent <n>`.
 */
const FLOOD = String.raw`perl -MSocket -e 'my ($src, $dst, $port, $n) = @ARGV; my $c = 0; for (1 .. $n) { socket(my $s, PF_INET, SOCK_DGRAM, 0) or die "socket: $!\n"; setsockopt($s, 0, 19, 1) or die "IP_TRANSPARENT: $!\n"; bind($s, pack_sockaddr_in(0, inet_aton($src))) or die "bind: $!\n"; send($s, "x", 0, pack_sockaddr_in($port, inet_aton($dst))) or die "send: $!\n"; $c++; close $s } print "sent $c\n"'`;

describe("hostile guest vs the connection bounds: spoofed sources (privileged)", function () {
  this.timeout(300_000);
  let th: TestHost | undefined;
  let d: TestDaemon | undefined;
  let vm = "";
  let vmIp = "";

  before(async function () {
    skipUnlessRoot(this);
    th = await makeTestHost();
    const group = { name: "iso", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", dns_servers: [th.ip, th.hostSideIp], network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } };
    d = await TestDaemon.create({ hostGroups: [group] });
    await d.start();
    vm = await createVm(d, "iso");
    vmIp = (await sh(d, vm, "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1")).stdout.trim().split("\n")[0] ?? "";
    expect(vmIp).to.match(/^\d+\.\d+\.\d+\.\d+$/);
  });

  after(async function () {
    const tenant = d?.tenantId;
    await d?.destroy();
    await th?.remove().catch(() => undefined);
    if (d === undefined || tenant === undefined) return;
    expect(await leftovers(tenant), `network leftovers of ${tenant}`).to.deep.equal({ links: [], netns: [], table: false });
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${tenant}-`));
    expect(left, "runc containers left").to.deep.equal([]);
    expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
  });

  /** Send FLOWS datagrams from `src` (guest side) to dst:53. */
  async function flood(src: string, dst: string): Promise<void> {
    const r = await sh(d as TestDaemon, vm, `${FLOOD} ${src} ${dst} 53 ${FLOWS}`);
    expect(r.stdout.trim(), r.stderr).to.equal(`sent ${FLOWS}`);
  }

  /** Entries in the host netns's conntrack table from `src` to dst:53 (original direction). */
  async function entries(src: string, dst: string): Promise<number> {
    const text = await fs.readFile("/proc/net/nf_conntrack", "utf8");
    return text.split("\n").filter((l) => l.includes(` src=${src} dst=${dst} `) && l.includes(" dport=53 ")).length;
  }

  it("datagrams to the resolver from a source outside the tenant's ranges leave no conntrack entry, forwarded or to a host address; from the VM's own address they do", async () => {
    const t = th as TestHost;
    // Forward path (a resolver past the host) and input path (a resolver on a host address).
    for (const dst of [t.ip, t.hostSideIp]) {
      await flood(vmIp, dst);
      expect(await entries(vmIp, dst), `control: entries from the VM's own address to ${dst}`).to.be.at.least(FLOWS * 0.9);
      await flood(SPOOF, dst);
      expect(await entries(SPOOF, dst), `entries from the spoofed source ${SPOOF} to ${dst}`).to.equal(0);
    }
  });
});
