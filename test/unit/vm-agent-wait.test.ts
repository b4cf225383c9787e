/**
 * VmAgentWait (tenant-daemon/vm/vm-agent-wait.ts) against an in-memory VM table and an agent
 * port whose health answers are scripted: concurrent waits for one VM's agent share one poll
 * (one health check per round, not one per waiter), a waiter's own timeout leaves the others
 * waiting, the poll stops once nobody waits, and a VM deleted meanwhile ends every wait.
 */
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import { VmAgentWait } from "../../tenant-daemon/vm/vm-agent-wait.js";
import type { VmPaths } from "../../tenant-daemon/vm/vm-paths.js";
import type { AgentPort } from "../../tenant-daemon/vm/vm-ports.js";
import type { LiveVm, VmTable } from "../../tenant-daemon/vm/vm-table.js";
import type { VmRecord } from "../../tenant-daemon/vm/vm-types.js";

function fixture() {
  const vm: LiveVm = { record: { hostname: "g-1" } as VmRecord, phase: "running", pid: 1 };
  const map = new Map([["g-1", vm]]);
  const table = { lookup: (h: string) => map.get(h), stopping: false } as unknown as VmTable;
  const state = { ready: false, checks: 0 };
  const agent = {
    health: async () => {
      state.checks++;
      await new Promise((r) => setTimeout(r, 2));
      return { agent_uptime: state.ready ? 1 : 0, userdata_ran: true };
    },
  } as unknown as AgentPort;
  const paths = { agentDir: () => "/nonexistent/pdk-agent-wait", endpoint: (r: VmRecord) => ({ hostname: r.hostname, socketPath: "/nonexistent", proof: "" }) } as unknown as VmPaths;
  return { wait: new VmAgentWait({ table, agent, paths, log: silentLogger }), state, map, vm };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe("VmAgentWait", () => {
  it("shares one poll among concurrent waits for a VM's agent", async () => {
    const f = fixture();
    const waits = [f.wait.waitForAgent("g-1", "agent", 5000), f.wait.waitForAgent("g-1", "agent", 5000), f.wait.waitForAgent("g-1", "agent", 5000)];
    await sleep(150);
    const during = f.state.checks;
    f.state.ready = true;
    await Promise.all(waits);
    // One poller backs off to a check every ≤ 100 ms; three would have made three times as many.
    expect(during).to.be.within(1, 8);
    expect(f.state.checks).to.be.at.most(during + 1);
  });

  it("times out one waiter on its own, keeps the others waiting, and stops polling when none is left", async () => {
    const f = fixture();
    const short = f.wait.waitForAgent("g-1", "agent", 50);
    const long = f.wait.waitForAgent("g-1", "agent", 5000);
    const err = await short.then(() => undefined, (e: unknown) => e as { code?: string });
    expect(err?.code).to.equal("ERR_VM_WAIT_TIMEOUT");
    f.state.ready = true;
    await long;
    f.state.ready = false;
    const alone = f.wait.waitForAgent("g-1", "agent", 60);
    expect(await alone.then(() => "ok", (e: unknown) => (e as { code?: string }).code)).to.equal("ERR_VM_WAIT_TIMEOUT");
    await sleep(150);
    const after = f.state.checks;
    await sleep(300);
    expect(f.state.checks, "no poll runs once nobody waits").to.be.at.most(after + 1);
  });

  it("ends every wait when the VM is deleted meanwhile", async () => {
    const f = fixture();
    const waits = [f.wait.waitForAgent("g-1", "agent", 5000), f.wait.waitForAgent("g-1", "agent", 5000)];
    await sleep(20);
    f.vm.phase = "deleting";
    const codes = await Promise.all(waits.map((w) => w.then(() => "ok", (e: unknown) => (e as { code?: string }).code)));
    expect(codes).to.deep.equal(["ERR_VM_NOT_RUNNING", "ERR_VM_NOT_RUNNING"]);
  });
});
