/**
 * paddock-nsutil `pin … noipv6` (tenant-daemon/runtime/nsutil.ts pinUserAndNetns): the VM's
 * netns is made with IPv6 off by default, and a link made in it afterwards (the VM's eth0, as
 * tenant-daemon/network/vm-links.ts makes it) has IPv6 off with no per-link sysctl. No VM, no
 * daemon: two pins and two veth pairs, all removed in the after hook. Needs root.
 */
import { expect } from "chai";
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { pinUserAndNetns, unpinNamespace } from "../../tenant-daemon/runtime/nsutil.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";

describe("paddock-nsutil pin: the VM netns starts with IPv6 off (privileged)", function () {
  this.timeout(60_000);
  const tag = crypto.randomBytes(3).toString("hex");
  const range = { uidStart: 1_900_000_000, size: 65_536 };
  let dir: string | undefined;
  const made: { netns: string; userns: string; veth: string }[] = [];

  before(function () {
    skipUnlessRoot(this);
  });

  after(async () => {
    for (const m of made) {
      await run("ip", ["link", "del", m.veth], { allowFailure: true });
      await run("ip", ["netns", "del", m.netns], { allowFailure: true });
      await unpinNamespace(m.userns).catch(() => undefined);
    }
    if (dir !== undefined) await fs.rm(dir, { recursive: true, force: true });
  });

  /** Pin a userns + netns (with or without `noipv6`), make eth0 in it by a veth pair, and read its sysctls. */
  async function pinAndLink(name: string, disableIpv6: boolean): Promise<{ dflt: string; eth0: string; hostDefault: string }> {
    dir ??= await fs.mkdtemp(path.join(os.tmpdir(), "pdk-pin-"));
    const m = { netns: `pdk-pin${tag}-${name}`, userns: path.join(dir, `userns-${name}`), veth: `pdkp${tag}${name}` };
    made.push(m);
    await pinUserAndNetns(m.userns, `/var/run/netns/${m.netns}`, range, { disableIpv6 });
    await run("ip", ["link", "add", m.veth, "type", "veth", "peer", "name", "eth0", "netns", m.netns]);
    const read = async (key: string): Promise<string> => (await run("ip", ["netns", "exec", m.netns, "sysctl", "-n", key])).stdout.trim();
    return { dflt: await read("net.ipv6.conf.default.disable_ipv6"), eth0: await read("net.ipv6.conf.eth0.disable_ipv6"), hostDefault: (await fs.readFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", "utf8")).trim() };
  }

  it("with disableIpv6, eth0 made later has IPv6 off; without it (the control) it has IPv6 on; the host's default is untouched", async function () {
    if (!(await fs.stat("/proc/sys/net/ipv6").then(() => true, () => false))) this.skip();
    const hostBefore = (await fs.readFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", "utf8")).trim();
    const control = await pinAndLink("a", false);
    expect(control.eth0, "control: a plain pin leaves IPv6 on").to.equal("0");
    const off = await pinAndLink("b", true);
    expect(off).to.deep.equal({ dflt: "1", eth0: "1", hostDefault: hostBefore });
  });
});
