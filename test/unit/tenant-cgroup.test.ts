/**
 * tenant-daemon/runtime/tenant-cgroup.ts and shared/host-pids.ts, pure: the budget derived from
 * limits and pid_max, the cgroup layout found under a root laid out with the real v1 and v2
 * file names (v2 read from real `cgroup.controllers` contents), the steps rendered for each,
 * and the applier writing them into a temp dir. No root needed; the host's cgroups are not
 * touched (test/privileged/tenant-budget.test.ts does that).
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { checkTenantPidsBudget, largestGuestPids, readPidMax, runscTenantPidsMax, tenantHostPids, tenantPidsRoom } from "../../shared/host-pids.js";
import type { TenantLimits } from "../../shared/tenant-config.js";
import {
  applyTenantCgroup, computeTenantBudget, detectCgroupLayout, renderTenantCgroup, type CgroupLayout, type TenantBudget,
} from "../../tenant-daemon/runtime/tenant-cgroup.js";

const NO_LIMITS: TenantLimits = { maxVms: undefined, maxVcpu: undefined, maxRamBytes: undefined, maxDiskBytes: undefined, maxPids: undefined };
const MiB = 2 ** 20;

async function touch(file: string, content = ""): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, content);
}

describe("tenant cgroup budget (tenant-daemon/runtime/tenant-cgroup.ts)", () => {
  let root = "";
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-cg-"));
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  describe("computeTenantBudget", () => {
    it("takes the tenant's limits; CPU quota = max_vcpu × period; per-VM pids never above the budget", () => {
      const plan = computeTenantBudget({ limits: { ...NO_LIMITS, maxPids: 2048, maxRamBytes: 4 * 2 ** 30, maxVcpu: 4 }, hostGroupVcpus: [1, 2], vmPidsLimit: 4096, pidMax: 32768, reservePids: 8192 });
      expect(plan.budget).to.deep.equal({ pidsMax: 2048, memoryBytes: 4 * 2 ** 30, cpuQuotaUs: 400_000, cpuPeriodUs: 100_000 });
      expect(plan.vmPidsLimit).to.equal(2048);
      // The default pids_limit (4096) above the default max_pids (2048) is clamped without a
      // warning at every tenant start; a pids_limit the config set is noted.
      expect(plan.notes).to.deep.equal([]);
      const set = computeTenantBudget({ limits: { ...NO_LIMITS, maxPids: 2048 }, hostGroupVcpus: [1], vmPidsLimit: 3000, pidMax: 32768, reservePids: 8192 });
      expect(set.vmPidsLimit).to.equal(2048);
      expect(set.notes.join("\n")).to.contain("paddock.pids_limit 3000 exceeds the tenant's pids budget; each VM gets 2048");
    });
    it("clamps a pids budget to pid_max minus the reserve, and defaults to that room without a limit", () => {
      const over = computeTenantBudget({ limits: { ...NO_LIMITS, maxPids: 30_000 }, hostGroupVcpus: [1], vmPidsLimit: 4096, pidMax: 32768, reservePids: 8192 });
      expect(over.budget.pidsMax).to.equal(24_576);
      expect(over.notes[0]).to.contain("max_pids 30000 exceeds what pid_max 32768 leaves after the host reserve of 8192");
      const none = computeTenantBudget({ limits: NO_LIMITS, hostGroupVcpus: [1], vmPidsLimit: 4096, pidMax: 32768, reservePids: 8192 });
      expect(none.budget).to.deep.equal({ pidsMax: 24_576, memoryBytes: undefined, cpuQuotaUs: undefined, cpuPeriodUs: 100_000 });
      expect(none.vmPidsLimit).to.equal(4096);
      expect(none.notes).to.deep.equal([]);
    });
    it("raises the CPU quota to the largest host group's vCPUs (a child's quota may not exceed its parent's)", () => {
      const plan = computeTenantBudget({ limits: { ...NO_LIMITS, maxVcpu: 1 }, hostGroupVcpus: [1, 3], vmPidsLimit: 64, pidMax: 32768, reservePids: 8192 });
      expect(plan.budget.cpuQuotaUs).to.equal(300_000);
      expect(plan.notes[0]).to.contain("max_vcpu 1 is below a host group's vCPUs");
    });
    it("gVisor: pids.max counts the sandboxes' host tasks (96 per VM + 12 per guest process); the per-VM limit stays in guest processes", () => {
      const hostTasks = (guestPids: number): number => runscTenantPidsMax(guestPids, 4);
      const plan = computeTenantBudget({ limits: { ...NO_LIMITS, maxPids: 512, maxVms: 4 }, hostGroupVcpus: [1], vmPidsLimit: 4096, pidMax: 32768, reservePids: 8192, hostTasks });
      expect(plan.budget.pidsMax).to.equal(4 * 96 + 12 * 512);
      expect(plan.vmPidsLimit).to.equal(512);
      // Without max_vms the VMs are bounded by the budget (each runs tini and the agent).
      expect(runscTenantPidsMax(64, undefined)).to.equal(32 * 96 + 12 * 64);
      const big = computeTenantBudget({ limits: { ...NO_LIMITS, maxPids: 4096 }, hostGroupVcpus: [1], vmPidsLimit: 64, pidMax: 32768, reservePids: 8192, hostTasks: (g) => runscTenantPidsMax(g, undefined) });
      expect(big.budget.pidsMax).to.equal(24_576);
      expect(big.notes.join("\n")).to.contain("the host tasks of 4096 guest processes");
      const none = computeTenantBudget({ limits: NO_LIMITS, hostGroupVcpus: [1], vmPidsLimit: 64, pidMax: 32768, reservePids: 8192, hostTasks: (g) => runscTenantPidsMax(g, undefined) });
      expect(none.budget.pidsMax).to.equal(24_576);
      expect(none.notes).to.deep.equal([]);
    });
  });

  describe("cgroup v1 (hybrid host: /sys/fs/cgroup/<controller>)", () => {
    const budget: TenantBudget = { pidsMax: 512, memoryBytes: 256 * MiB, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000 };

    async function v1Root(opts: { memsw: boolean; cpuDir: string }): Promise<void> {
      await touch(path.join(root, "pids", "cgroup.procs"));
      await touch(path.join(root, "memory", "memory.limit_in_bytes"), "9223372036854771712\n");
      await touch(path.join(root, "memory", "memory.use_hierarchy"), "1\n");
      if (opts.memsw) await touch(path.join(root, "memory", "memory.memsw.limit_in_bytes"), "9223372036854771712\n");
      await touch(path.join(root, opts.cpuDir, "cpu.cfs_quota_us"), "-1\n");
      await touch(path.join(root, opts.cpuDir, "cpu.cfs_period_us"), "100000\n");
      // The v2 hierarchy of a hybrid host, with no controllers: must not be taken for v2.
      await touch(path.join(root, "unified", "cgroup.controllers"), "");
    }

    it("finds the v1 mounts and swap accounting, and renders pids.max, memory (memsw opened first) and the CFS quota", async () => {
      await v1Root({ memsw: true, cpuDir: "cpu" });
      const layout = await detectCgroupLayout(root);
      expect(layout).to.deep.equal({ version: 1, pids: path.join(root, "pids"), memory: path.join(root, "memory"), cpu: path.join(root, "cpu"), memsw: true });
      const steps = renderTenantCgroup(budget, layout, "acme");
      const rel = (p: string): string => path.relative(root, p);
      expect(steps.map((s) => (s.op === "mkdir" ? `mkdir ${rel(s.path)}` : `${rel(s.path)} = ${s.value}`))).to.deep.equal([
        "mkdir pids/paddock/acme",
        "pids/paddock/acme/pids.max = 512",
        "mkdir memory/paddock/acme",
        "memory/paddock/acme/memory.memsw.limit_in_bytes = -1",
        "memory/paddock/acme/memory.limit_in_bytes = 268435456",
        "memory/paddock/acme/memory.memsw.limit_in_bytes = 268435456",
        "mkdir cpu/paddock/acme",
        "cpu/paddock/acme/cpu.cfs_period_us = 100000",
        "cpu/paddock/acme/cpu.cfs_quota_us = 200000",
      ]);
      await applyTenantCgroup(steps);
      expect((await fs.readFile(path.join(root, "memory/paddock/acme/memory.memsw.limit_in_bytes"), "utf8"))).to.equal("268435456");
      expect((await fs.readFile(path.join(root, "cpu/paddock/acme/cpu.cfs_quota_us"), "utf8"))).to.equal("200000");
    });

    it("without swap accounting writes no memsw file; cpu,cpuacct is found; no limit ⇒ -1", async () => {
      await v1Root({ memsw: false, cpuDir: "cpu,cpuacct" });
      const layout = await detectCgroupLayout(root);
      expect(layout).to.include({ version: 1, memsw: false, cpu: path.join(root, "cpu,cpuacct") });
      const steps = renderTenantCgroup({ ...budget, memoryBytes: undefined, cpuQuotaUs: undefined }, layout, "acme");
      expect(steps.some((s) => s.path.includes("memsw"))).to.equal(false);
      expect(steps.filter((s) => s.op === "write").map((s) => (s.op === "write" ? s.value : ""))).to.deep.equal(["512", "-1", "100000", "-1"]);
    });

    it("refuses a host without a pids hierarchy (no budget could hold)", async () => {
      await touch(path.join(root, "memory", "memory.limit_in_bytes"));
      await touch(path.join(root, "cpu", "cpu.cfs_quota_us"));
      const err = await detectCgroupLayout(root).then(() => undefined, (e: unknown) => e);
      expect(isPaddockError(err) && err.code).to.equal("ERR_CGROUP_SETUP_FAILED");
      expect((err as Error).message).to.contain("pids");
    });
  });

  describe("cgroup v2 (unified: /sys/fs/cgroup/cgroup.controllers)", () => {
    const budget: TenantBudget = { pidsMax: 512, memoryBytes: 256 * MiB, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000 };

    it("reads cgroup.controllers and enables cpu, memory and pids top-down before writing the limits", async () => {
      // The contents of a Debian 12 host booted with the unified hierarchy.
      await touch(path.join(root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n");
      await touch(path.join(root, "cgroup.subtree_control"), "");
      const layout = await detectCgroupLayout(root);
      expect(layout).to.deep.equal({ version: 2, root, controllers: ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"] });
      const steps = renderTenantCgroup(budget, layout, "acme");
      const rel = (p: string): string => path.relative(root, p);
      expect(steps.map((s) => (s.op === "mkdir" ? `mkdir ${rel(s.path)}` : `${rel(s.path)} = ${s.value}${s.optional ? " (if present)" : ""}`))).to.deep.equal([
        "cgroup.subtree_control = +cpu +memory +pids",
        "mkdir paddock",
        "paddock/cgroup.subtree_control = +cpu +memory +pids",
        "mkdir paddock/acme",
        "paddock/acme/pids.max = 512",
        "paddock/acme/memory.max = 268435456",
        "paddock/acme/memory.swap.max = 0 (if present)",
        "paddock/acme/cpu.max = 200000 100000",
        "paddock/acme/cgroup.subtree_control = +cpu +memory +pids",
      ]);
      // A real v2 mkdir creates the interface files; here memory.swap.max exists only when made.
      await fs.mkdir(path.join(root, "paddock", "acme"), { recursive: true });
      await touch(path.join(root, "paddock", "acme", "memory.swap.max"), "max\n");
      await applyTenantCgroup(steps);
      const read = (f: string): Promise<string> => fs.readFile(path.join(root, f), "utf8");
      expect(await read("paddock/acme/memory.swap.max")).to.equal("0");
      expect(await read("paddock/acme/cpu.max")).to.equal("200000 100000");
      expect(await read("cgroup.subtree_control")).to.equal("+cpu +memory +pids");
    });

    it("no limits ⇒ max; memory.swap.max is skipped where swap is not accounted", async () => {
      const layout: CgroupLayout = { version: 2, root, controllers: ["cpu", "memory", "pids"] };
      const steps = renderTenantCgroup({ ...budget, memoryBytes: undefined, cpuQuotaUs: undefined }, layout, "acme");
      await applyTenantCgroup(steps);
      const files = await fs.readdir(path.join(root, "paddock", "acme"));
      expect(files).to.not.include("memory.swap.max");
      expect(await fs.readFile(path.join(root, "paddock/acme/memory.max"), "utf8")).to.equal("max");
      expect(await fs.readFile(path.join(root, "paddock/acme/cpu.max"), "utf8")).to.equal("max 100000");
    });

    it("refuses a v2 host whose root lacks the pids controller", async () => {
      await touch(path.join(root, "cgroup.controllers"), "cpuset cpu io memory\n");
      const err = await detectCgroupLayout(root).then(() => undefined, (e: unknown) => e);
      expect(isPaddockError(err) && err.code).to.equal("ERR_CGROUP_SETUP_FAILED");
      expect((err as Error).message).to.contain("lacks the pids controller");
    });
  });

  it("the applier names the file, the value and the kernel's error", async () => {
    const err = await applyTenantCgroup([{ op: "write", path: path.join(root, "no", "such", "pids.max"), value: "5" }]).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err) && err.code).to.equal("ERR_CGROUP_SETUP_FAILED");
    expect((err as Error).message).to.contain(`cannot write "5" to ${path.join(root, "no", "such", "pids.max")}: ENOENT`);
  });
});

describe("host pids budget (shared/host-pids.ts)", () => {
  it("reads pid_max and leaves the reserve", async () => {
    expect(await readPidMax()).to.be.greaterThan(0);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-pm-"));
    try {
      await fs.writeFile(path.join(dir, "pid_max"), "32768\n");
      expect(await readPidMax(path.join(dir, "pid_max"))).to.equal(32768);
      await fs.writeFile(path.join(dir, "pid_max"), "lots\n");
      const err = await readPidMax(path.join(dir, "pid_max")).then(() => undefined, (e: unknown) => e);
      expect((err as Error).message).to.contain("not a positive integer");
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    expect(tenantPidsRoom(32768, 8192)).to.equal(24576);
    expect(tenantPidsRoom(4096, 8192)).to.equal(0);
  });
  it("accepts budgets that fit and refuses the one that would eat into the reserve, saying what is left", () => {
    const others = [{ id: "a", maxPids: 12_000 }, { id: "b", maxPids: 10_000 }, { id: "old", maxPids: undefined }];
    checkTenantPidsBudget({ tenant: { id: "c", maxPids: 2576 }, others, pidMax: 32768, reservePids: 8192 });
    let err: unknown;
    try {
      checkTenantPidsBudget({ tenant: { id: "c", maxPids: 2577 }, others, pidMax: 32768, reservePids: 8192 });
    } catch (e) {
      err = e;
    }
    expect(isPaddockError(err) && err.code).to.equal("ERR_PIDS_BUDGET_EXCEEDED");
    expect(isPaddockError(err) && err.status).to.equal(507);
    expect((err as Error).message).to.contain("limits.max_pids 2577").and.contain("hold 22000 pids").and.contain("at most 2576 host pids remain");
  });
  it("counts a gVisor tenant's host pids (its sentry's, gofer's and stubs' threads), not its max_pids, for it and for the others", () => {
    // The sandbox-gvisor template's old default: 2048 guest processes in up to 16 VMs.
    expect(tenantHostPids({ hypervisor: "gvisor", maxPids: 2048, maxVms: 16 })).to.equal(16 * 96 + 12 * 2048);
    expect(tenantHostPids({ hypervisor: "oci", maxPids: 2048, maxVms: 16 })).to.equal(2048);
    expect(tenantHostPids({ maxPids: 2048 })).to.equal(2048);
    const room = { pidMax: 32768, reservePids: 8192 };
    // One runc tenant of 2048 beside it: a gVisor tenant of 2048 guest processes takes 26112 host pids.
    let err: unknown;
    try {
      checkTenantPidsBudget({ tenant: { id: "g", maxPids: 2048, hypervisor: "gvisor", maxVms: 16 }, others: [{ id: "r", maxPids: 2048 }], ...room });
    } catch (e) {
      err = e;
    }
    expect(isPaddockError(err) && err.code).to.equal("ERR_PIDS_BUDGET_EXCEEDED");
    // What fits is said in max_pids (guest processes) for this max_vms: 16 × 96 + 12 × 1749 = 22524 ≤ 22528.
    expect((err as Error).message).to.contain("limits.max_pids 2048 (26112 host pids under gVisor").and.contain("at most 22528 host pids remain").and.contain("with max_vms 16 at most max_pids 1749 fits").and.contain("--max-pids");
    expect(largestGuestPids({ hypervisor: "gvisor", maxVms: 16 }, 22528)).to.equal(1749);
    expect(tenantHostPids({ hypervisor: "gvisor", maxPids: 1750, maxVms: 16 })).to.be.greaterThan(22528);
    expect(largestGuestPids({ hypervisor: "oci" }, 22528)).to.equal(22528);
    expect(largestGuestPids({ hypervisor: "gvisor", maxVms: 16 }, 10)).to.equal(0);
    // The other way round: a gVisor tenant already there holds its host pids.
    const gvisor = { id: "g", maxPids: 512, hypervisor: "gvisor", maxVms: 16 };
    expect(tenantHostPids(gvisor)).to.equal(7680);
    checkTenantPidsBudget({ tenant: { id: "r", maxPids: 24576 - 7680 }, others: [gvisor], ...room });
    expect(() => checkTenantPidsBudget({ tenant: { id: "r", maxPids: 24576 - 7680 + 1 }, others: [gvisor], ...room })).to.throw(/hold 7680 pids/);
  });

  it("names the template made for gVisor in a gVisor tenant's refusal when given one (a create from another template), never for runc", () => {
    const room = { pidMax: 32768, reservePids: 8192 };
    const refusal = (tenant: { id: string; maxPids: number; hypervisor?: string; maxVms?: number }, gvisorTemplate?: string): string => {
      try {
        checkTenantPidsBudget({ tenant, others: [], ...room, gvisorTemplate });
      } catch (err) {
        expect(isPaddockError(err, "ERR_PIDS_BUDGET_EXCEEDED"), String(err)).to.equal(true);
        return (err as Error).message;
      }
      return expect.fail("expected ERR_PIDS_BUDGET_EXCEEDED");
    };
    // `paddock tenant create X --hypervisor gvisor` from the sandbox template: 2048 guest processes in 16 VMs.
    const g = refusal({ id: "g", maxPids: 2048, hypervisor: "gvisor", maxVms: 16 }, "sandbox-gvisor");
    expect(g).to.contain("lower limits.max_pids (paddock tenant create --max-pids) or max_vms, or create it from the template made for gVisor (paddock tenant create --template sandbox-gvisor, its limits sized for gVisor's host threads), or lower another tenant's");
    expect(refusal({ id: "g", maxPids: 2048, hypervisor: "gvisor", maxVms: 16 })).to.not.contain("--template");
    expect(refusal({ id: "r", maxPids: 30000 }, "sandbox-gvisor")).to.not.contain("--template");
  });
});
