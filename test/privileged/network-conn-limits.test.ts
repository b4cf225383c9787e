/**
 * The tenant's connection bounds (tenant-daemon/network/conn-limits.ts) with REAL runc VMs: a VM
 * sends one UDP datagram from each of many fresh sockets (a new source port each, so a new
 * conntrack entry each, `[UNREPLIED]` for 30 s) to a test host in a netns made here
 * (198.18.0.0/15), and the host netns's conntrack table (/proc/net/nf_conntrack) is read for that
 * VM's address. A tenant with small bounds stays within them, also across a VM create (which
 * replaces the tenant's main table) during the flood; a tenant with the default bounds, the
 * positive control, shows every flow. Everything is removed in `after` and checked for leftovers.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import { run } from "../../shared/exec.js";
import { connLimitTableName } from "../../tenant-daemon/network/names.js";
import { TestDaemon, mountsUnder } from "../helpers/daemon.js";
import { skipUnlessRoot } from "../helpers/prerequisites.js";
import { ip4, leftovers, makeTestHost, randomBlock, type TestHost } from "./network-fixtures.js";

const PER_VM = 64;
const TENANT = 100;
/** Flows each flood sends: well above PER_VM, well below the default bound (2048). */
const FLOWS = 300;
/** Nothing listens there: the test host answers ICMP port unreachable, and the entries stay unreplied. */
const PORT = 9;

/** Send one datagram from each of `n` fresh sockets to host:port, `gapMs` apart per 50 (a flood spread over time). */
const FLOOD = "const d=require('dgram');const [h,p,n,gap]=process.argv.slice(1).map((x,i)=>i?Number(x):x);" +
  "let i=0;const one=()=>{const s=d.createSocket('udp4');s.send('x',p,h,()=>s.close());};" +
  "const batch=()=>{for(let k=0;k<50&&i<n;k++,i++)one();if(i<n)setTimeout(batch,gap);else setTimeout(()=>console.log('sent '+i),200);};batch();";

describe("tenant connection bounds with real runc VMs (privileged)", function () {
  this.timeout(300_000);
  let th: TestHost | undefined;
  const daemons: TestDaemon[] = [];
  let limited: TestDaemon, control: TestDaemon;
  let a1: Vm, c1: Vm;
  /** A VM's hostname and bare IP. */
  type Vm = { hostname: string; ip: string };

  async function createVm(d: TestDaemon): Promise<Vm> {
    const r = await d.post("/hostgroup/iso/nodes?wait=agent&timeout=120s", {});
    expect(r.status, r.text).to.equal(201);
    const j = r.json as { hostname: string; ip: string };
    return { hostname: j.hostname, ip: j.ip.split("/")[0] as string };
  }

  async function flood(d: TestDaemon, vm: Vm, gapMs = 0): Promise<void> {
    const q = new URLSearchParams({ cmd: "/.paddock/bin/node", buffered: "true" });
    for (const arg of ["-e", FLOOD, (th as TestHost).ip, String(PORT), String(FLOWS), String(gapMs)]) q.append("args", arg);
    const r = await d.post(`/vm/${vm.hostname}/exec?${q.toString()}`);
    expect(r.status, r.text).to.equal(200);
    expect((r.json as { stdout?: string }).stdout?.trim(), r.text).to.equal(`sent ${FLOWS}`);
  }

  /** Entries of the host netns's conntrack table from `ip` to the test host (original direction). */
  async function entriesFrom(ip: string): Promise<number> {
    const text = await fs.readFile("/proc/net/nf_conntrack", "utf8");
    const want = ` src=${ip} dst=${(th as TestHost).ip} `;
    return text.split("\n").filter((l) => l.includes(want)).length;
  }

  const group = () => ({ name: "iso", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "64M", network: { mode: "isolated", range: `${ip4(randomBlock("vm22"))}/22` } });

  before(async function () {
    skipUnlessRoot(this);
    th = await makeTestHost();
    limited = await TestDaemon.create({ hostGroups: [group()], paddock: { limits: { max_conns_per_vm: PER_VM, max_conns: TENANT } } });
    daemons.push(limited);
    control = await TestDaemon.create({ hostGroups: [group()] });
    daemons.push(control);
    await Promise.all([limited.start(), control.start()]);
    [a1, c1] = await Promise.all([createVm(limited), createVm(control)]);
  });

  after(async function () {
    for (const d of daemons.splice(0)) await d.destroy();
    await th?.remove().catch(() => undefined);
    for (const d of [limited, control]) {
      if (d === undefined) continue;
      expect(await leftovers(d.tenantId), `network leftovers of ${d.tenantId}`).to.deep.equal({ links: [], netns: [], table: false });
      const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
      expect(left, "runc containers left").to.deep.equal([]);
      expect(await mountsUnder(d.dir), "mounts left").to.deep.equal([]);
    }
  });

  it("a VM holds at most max_conns_per_vm entries, across a VM create mid-flood, and the tenant at most max_conns; the default bound lets every flow through", async () => {
    // Positive control: the same flood from a tenant with the default bounds makes an entry per
    // flow (less a few: the kernel may hand a closed socket's port to a later one, same tuple).
    await flood(control, c1);
    expect(await entriesFrom(c1.ip), "entries of the default-bound VM").to.be.at.least(FLOWS * 0.9);

    await flood(limited, a1);
    const first = await entriesFrom(a1.ip);
    expect(first, "entries of the bounded VM").to.be.at.most(PER_VM).and.at.least(PER_VM / 2);

    // A VM create replaces the tenant's main table; the bounds table (and its counts) stays.
    // a1's first flows are still in the table (30 s): a count reset would let FLOWS more in.
    const [a2] = await Promise.all([createVm(limited), flood(limited, a1, 600)]);
    await flood(limited, a1);
    expect(await entriesFrom(a1.ip), "entries of the bounded VM after a VM create").to.be.at.most(PER_VM);

    // The second VM has its own bound, and the tenant's bound caps both together.
    await flood(limited, a2);
    const second = await entriesFrom(a2.ip);
    expect(second, "entries of the second VM").to.be.at.most(PER_VM).and.at.least(1);
    expect((await entriesFrom(a1.ip)) + second, "entries of the tenant").to.be.at.most(TENANT);

    // Operators see the drops on each bound's counter.
    const chain = (await run("nft", ["list", "chain", "inet", connLimitTableName(limited.tenantId), "prerouting"])).stdout;
    const dropped = [...chain.matchAll(/counter packets (\d+) .* comment "(max_conns(?:_per_vm)?)"/g)].map((m) => [m[2], Number(m[1])]);
    expect(dropped.map(([c]) => c)).to.deep.equal(["max_conns_per_vm", "max_conns"]);
    expect(dropped.every(([, n]) => (n as number) > 0), chain).to.equal(true);
  });

  it("a daemon restart keeps the bounds table and its counts for the VMs that outlived it", async () => {
    const d = await TestDaemon.create({ hostGroups: [group()], paddock: { limits: { max_conns_per_vm: PER_VM } } });
    daemons.push(d);
    await d.start();
    const r = await d.post("/hostgroup/iso/nodes?wait=agent&timeout=120s", { persistent: true });
    expect(r.status, r.text).to.equal(201);
    const j = r.json as { hostname: string; ip: string };
    const p = { hostname: j.hostname, ip: j.ip.split("/")[0] as string };
    await flood(d, p);
    expect(await entriesFrom(p.ip), "entries before the restart").to.be.at.most(PER_VM).and.at.least(PER_VM / 2);
    // The VM outlives its daemon (persistent, and the daemon killed): the next start adopts it.
    // Its first flows are still in the table (30 s): a count that started from zero would let
    // PER_VM more in.
    await d.kill9();
    await d.start();
    await flood(d, p);
    expect(await entriesFrom(p.ip), "entries after the restart").to.be.at.most(PER_VM);
    expect(d.stderr, "the start kept the table").to.contain("keeping the connection-bounds table");
  });
});
