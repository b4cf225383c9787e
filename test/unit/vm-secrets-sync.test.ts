/**
 * VmSecretsSync (tenant-daemon/vm/vm-secrets-sync.ts) against an in-memory VM table and an agent
 * port that records its calls: which VMs a change reaches, the concurrency bound, and that pushes
 * to one VM never overlap and end with one made after the last request. The real pushes into
 * runc VMs are test/privileged/secrets-sync.test.ts.
 */
import { expect } from "chai";
import { silentLogger } from "../../shared/logger.js";
import type { AgentEndpoint } from "../../tenant-daemon/agent-client/agent-endpoint.js";
import type { VmAgentWait } from "../../tenant-daemon/vm/vm-agent-wait.js";
import type { VmPaths } from "../../tenant-daemon/vm/vm-paths.js";
import type { AgentPort } from "../../tenant-daemon/vm/vm-ports.js";
import { SECRET_PUSH_CONCURRENCY, VmSecretsSync } from "../../tenant-daemon/vm/vm-secrets-sync.js";
import type { LiveVm, VmTable } from "../../tenant-daemon/vm/vm-table.js";
import type { VmPhase, VmRecord } from "../../tenant-daemon/vm/vm-types.js";

function vm(hostname: string, phase: VmPhase, secrets: string[] | undefined): LiveVm {
  return { record: { hostname, secrets } as VmRecord, phase, pid: 1 };
}

/** A sync over `vms` whose pushes wait for `gate` (when set) and are recorded in `pushes`. */
function fixture(vms: LiveVm[]) {
  const map = new Map(vms.map((v) => [v.record.hostname, v]));
  const table = { vms: map, lookup: (h: string) => map.get(h) } as unknown as VmTable;
  const pushes: { hostname: string; names: string[] | undefined }[] = [];
  let active = 0;
  const state = { maxActive: 0, overlap: false, gate: undefined as Promise<void> | undefined, fail: undefined as Error | undefined };
  const busy = new Set<string>();
  const agent = {
    syncSecrets: async (endpoint: AgentEndpoint, names: string[] | undefined) => {
      if (busy.has(endpoint.hostname)) state.overlap = true;
      busy.add(endpoint.hostname);
      active++;
      state.maxActive = Math.max(state.maxActive, active);
      await (state.gate ?? new Promise((r) => setImmediate(r)));
      if (state.fail) {
        active--;
        busy.delete(endpoint.hostname);
        throw state.fail;
      }
      pushes.push({ hostname: endpoint.hostname, names });
      active--;
      busy.delete(endpoint.hostname);
    },
  } as unknown as AgentPort;
  const paths = { endpoint: (r: VmRecord) => ({ hostname: r.hostname, socketPath: "/nonexistent", proof: "" }) } as unknown as VmPaths;
  const agentWait = { waitForAgent: () => Promise.resolve() } as unknown as VmAgentWait;
  return { sync: new VmSecretsSync({ table, agent, paths, agentWait, log: silentLogger }), pushes, state };
}

describe("VmSecretsSync", () => {
  it("pushes a change only to running VMs granted the name, with their own grants", async () => {
    const f = fixture([vm("a", "running", ["x"]), vm("b", "running", ["y"]), vm("c", "running", undefined), vm("d", "paused", undefined), vm("e", "creating", undefined)]);
    await f.sync.secretChanged("x");
    expect(f.pushes.map((p) => p.hostname).sort()).to.deep.equal(["a", "c"]);
    expect(f.pushes.find((p) => p.hostname === "a")?.names).to.deep.equal(["x"]);
    expect(f.pushes.find((p) => p.hostname === "c")?.names).to.equal(undefined);
  });

  it(`keeps at most ${SECRET_PUSH_CONCURRENCY} pushes in flight`, async () => {
    const f = fixture(Array.from({ length: 3 * SECRET_PUSH_CONCURRENCY }, (_, i) => vm(`v-${i}`, "running", undefined)));
    await f.sync.secretChanged("x");
    expect(f.pushes).to.have.length(3 * SECRET_PUSH_CONCURRENCY);
    expect(f.state.maxActive).to.equal(SECRET_PUSH_CONCURRENCY);
  });

  it("never overlaps pushes to one VM and coalesces requests made during one into one more", async () => {
    const f = fixture([vm("a", "running", undefined)]);
    let release = (): void => undefined;
    f.state.gate = new Promise<void>((r) => (release = r));
    const first = f.sync.secretChanged("x");
    const more = [f.sync.secretChanged("y"), f.sync.secretChanged("z")];
    release();
    f.state.gate = undefined;
    await Promise.all([first, ...more]);
    expect(f.pushes).to.have.length(2);
    expect(f.state.overlap).to.equal(false);
  });

  it("skips a VM that stopped running before its turn, and says it delivered nothing", async () => {
    const a = vm("a", "running", undefined);
    const f = fixture([a]);
    const done = f.sync.request(a, { agentReady: false });
    a.phase = "paused";
    const outcome = await done;
    expect(f.pushes).to.deep.equal([]);
    expect(outcome.delivered).to.equal(false);
  });

  it("resolves with what the last push came to: delivered, or the agent's error (a create must not answer 201 without its secrets)", async () => {
    const a = vm("a", "running", undefined);
    const f = fixture([a]);
    expect(await f.sync.request(a, { agentReady: true })).to.deep.equal({ delivered: true });
    const refused = new Error("agent answered 500");
    f.state.fail = refused;
    expect(await f.sync.request(a, { agentReady: true })).to.deep.equal({ delivered: false, err: refused });
  });
});
