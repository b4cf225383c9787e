/**
 * A create against a real VmService (tenant-daemon/vm/vm-service.ts: its VM table, state file,
 * warm pool, secret delivery and agent wait) over scripted ports: a runtime whose `run` answers
 * at once, an agent whose health and secret pushes each test scripts, and no-op storage and
 * network. What it pins:
 * - a create without `wait` handed a warm VM still booting answers once its sandbox runs, as a
 *   cold create does, not after the VM's whole boot; the VM then gets its secrets and its
 *   `ready` when its agent answers;
 * - a create never answers 201 for a warm VM whose secrets could not be delivered at hand-out:
 *   that VM is deleted and a new one booted;
 * - a cold create with `wait=agent` whose secrets could not be delivered fails and the VM is
 *   deleted (event `deleted`, reason `wait_timeout`), instead of answering 201 without them;
 * - a fork (over a scripted commit store) whose secrets could not be delivered fails as such a
 *   create does and leaves no child (`wait=agent`: before the answer; `wait=none`: after it);
 * - a resume, and a restore with `wait=agent` (a runtime with scripted suspend/restore), whose
 *   secret push failed answer ERR_VM_START_FAILED naming it, with the VM left running.
 * The real boots are test/privileged/warm-pool.test.ts and secrets-sync.test.ts.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLogger, silentLogger } from "../../shared/logger.js";
import { JsonStateStore } from "../../shared/state-store.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import type { AgentEndpoint } from "../../tenant-daemon/agent-client/agent-endpoint.js";
import { EventLog } from "../../tenant-daemon/events/event-log.js";
import type { TenantNetwork } from "../../tenant-daemon/network/network.js";
import type { RuntimeDriver, VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import type { CommitRecord, CommitStore } from "../../tenant-daemon/storage/commit-store.js";
import type { ColdForkStorage } from "../../tenant-daemon/vm/vm-cold-fork.js";
import type { VmNamespaces } from "../../tenant-daemon/runtime/vm-namespaces.js";
import type { CreateVmRequest } from "../../tenant-daemon/vm/vm-request.js";
import { VmService, type AgentPort, type VmStorage } from "../../tenant-daemon/vm/vm-service.js";
import type { DaemonState } from "../../tenant-daemon/vm/vm-types.js";

const MiB = 2 ** 20;
const COMMIT_ID = "cmt-00000000000000aa";
const REQ: CreateVmRequest = { cpus: 1, ramBytes: 256 * MiB, persistent: false, tags: [], userdata: undefined, secrets: undefined, network: undefined, ip: undefined };

/** What a test scripts: which VMs' agents answer, and which VMs' secret pushes fail. */
interface Script {
  agentUp: Set<string>;
  /** Every agent answers (set before the daemon stop, so no boot is left waiting). */
  allUp: boolean;
  pushFails: Set<string>;
  pushes: string[];
}

async function fixture(warmPool: number) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-handout-"));
  const yaml = `config:\n  host_groups: [{name: g, count: 0, vcpu: 1, ram_mb: 256, storage_size: 1G}]\npaddock:\n  tenant_id: t1\n  state_dir: ${dir}/state\n  run_dir: ${dir}/run\n  warm_pool: {g: ${warmPool}}\n`;
  const config = parseTenantConfig(parseYamlSafe(yaml, "t.yaml"), "t.yaml", { baseDir: dir, env: {} });
  const script: Script = { agentUp: new Set(), allUp: false, pushFails: new Set(), pushes: [] };
  const running = new Set<string>();
  const runtime = {
    name: "fake",
    run: async (spec: VmRuntimeSpec) => {
      running.add(spec.id);
      return { status: "running", pid: process.pid };
    },
    state: async (id: string) => (running.has(id) ? { status: "running", pid: process.pid } : { status: "absent", pid: undefined }),
    destroy: async (id: string) => void running.delete(id),
    stop: async (id: string) => {
      running.delete(id);
      return { forced: false };
    },
    list: async () => [...running],
    update: async () => undefined,
    pause: async () => undefined,
    resume: async () => undefined,
    suspend: async (id: string) => {
      running.delete(id);
      return { imageBytes: 1 };
    },
    restore: async (id: string) => {
      running.add(id);
      return { status: "running", pid: process.pid };
    },
  } as unknown as RuntimeDriver;
  const storage: VmStorage = {
    prepare: async () => undefined,
    mount: async (h) => path.join(dir, "rootfs", h),
    unmount: async () => undefined,
    remove: async () => undefined,
    sweep: async () => undefined,
  };
  let next = 2;
  const network = {
    reserve: () => `169.254.77.${next++}/24`,
    attach: async () => ({ ipCidr: "169.254.77.2/24", netnsPath: undefined, resolvConf: undefined, egressProxy: undefined }),
    detach: async () => undefined,
    release: () => undefined,
  } as unknown as TenantNetwork;
  const agent: AgentPort = {
    health: async (e: AgentEndpoint) => {
      if (!script.allUp && !script.agentUp.has(e.hostname)) throw Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
      return { agent_uptime: 1, userdata_ran: true };
    },
    writeBoot: async () => undefined,
    syncSecrets: async (e: AgentEndpoint) => {
      script.pushes.push(e.hostname);
      if (script.pushFails.has(e.hostname)) throw new Error("agent answered 500: fork: Resource temporarily unavailable");
    },
  };
  const namespaces = { range: { uidStart: 0, size: 65536 }, usernsPath: (h: string) => path.join(dir, "userns", h), remove: async () => undefined, sweep: async () => undefined } as unknown as VmNamespaces;
  const store = new JsonStateStore<DaemonState>({ file: path.join(dir, "state.json"), schemaVersion: 1, initial: () => ({ schemaVersion: 1, tenantId: "t1", counters: {}, vms: {} }) });
  const events = new EventLog();
  // One commit of g over the tenant's image; a fork's disk seed does nothing.
  const commit: CommitRecord = {
    schemaVersion: 1, commitId: COMMIT_ID, sourceHostname: "g-99", sourceHostGroup: "g", createdAt: "2026-01-01T00:00:00Z", mode: "disk", tags: [], labels: {},
    cacheKey: "", image: config.image, storageSizeBytes: 2 ** 30, allocatedBytes: 0, source: { cpus: 1, ramBytes: 256 * MiB, tags: [], secrets: undefined, network: undefined },
  };
  const commits = {
    load: async () => undefined,
    purge: async () => undefined,
    totalBytes: () => 0,
    list: () => [commit],
    get: (id: string) => {
      if (id !== COMMIT_ID) throw new Error(`no commit ${id}`);
      return commit;
    },
    imagePath: () => path.join(dir, "commit.img"),
  } as unknown as CommitStore;
  const cold: ColdForkStorage = { store: commits, disks: { paths: (h) => ({ diskPath: path.join(dir, `${h}.img`), diskDir: dir }), seed: async () => undefined } };
  const svc = new VmService({ config, store, runtime, storage, network, agent, namespaces, logger: process.env.PDK_TEST_LOG ? createLogger({ stream: process.stderr, level: "debug" }) : silentLogger, events, reapIntervalMs: 3_600_000, cold });
  const seen = (type: string, hostname: string): string[] => events.since(0).events.filter((e) => e.type === type && "hostname" in e && e.hostname === hostname).map((e) => (e as { reason: string }).reason);
  return {
    svc, script, seen,
    async cleanup(): Promise<void> {
      script.allUp = true;
      await svc.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Poll `cond` every 10 ms until it holds; rejects after `ms` (a hang fails the test, not mocha's timeout). */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `p`'s value, or "pending" when it has not settled within `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | "pending"> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe("VmService create: warm hand-out and secrets", function () {
  this.timeout(20_000);

  it("a create without wait is handed a warm VM still booting once its sandbox runs, not after its boot", async () => {
    const f = await fixture(1);
    try {
      await f.svc.start();
      await until(() => f.svc.warmCounts().g?.booting === 1, 5_000, "a warm VM booting");
      // Its agent never answers during the create: the old hand-out awaited the whole boot (60 s).
      const answer = await within(f.svc.create("g", REQ), 3_000);
      expect(answer, "answered while the warm VM's agent was still down").to.not.equal("pending");
      expect((answer as { hostname: string }).hostname).to.equal("g-1");
      expect(f.seen("created", "g-1")).to.deep.equal(["warm_pool"]);
      expect(f.seen("ready", "g-1"), "no ready before the agent answers").to.deep.equal([]);
      expect(f.script.pushes).to.deep.equal([]);
      // The agent comes up: the boot delivery pushes its secrets and `ready` follows, as for a cold VM.
      f.script.agentUp.add("g-1");
      await until(() => f.script.pushes.includes("g-1") && f.seen("ready", "g-1").length === 1, 5_000, "secrets and ready once the agent answers");
    } finally {
      await f.cleanup();
    }
  });

  it("deletes a warm VM whose secrets fail at hand-out and boots a new one instead of answering 201 without them", async () => {
    const f = await fixture(1);
    try {
      f.script.agentUp.add("g-1");
      f.script.agentUp.add("g-2");
      f.script.pushFails.add("g-1");
      await f.svc.start();
      await until(() => f.svc.warmCounts().g?.ready === 1, 5_000, "a warm VM ready");
      const answer = await f.svc.create("g", REQ, { wait: "agent", timeoutMs: 5_000 });
      expect(answer.hostname, "a new VM, not the warm one without its secrets").to.equal("g-2");
      expect(f.script.pushes).to.include.members(["g-1", "g-2"]);
      expect(f.svc.list({ kind: "none" }).map((n) => n.hostname)).to.deep.equal(["g-2"]);
      expect(f.seen("created", "g-1"), "the warm VM was never shown").to.deep.equal([]);
    } finally {
      await f.cleanup();
    }
  });

  it("a cold create with wait=agent whose secrets fail is deleted and fails instead of answering 201", async () => {
    const f = await fixture(0);
    try {
      f.script.agentUp.add("g-1");
      f.script.pushFails.add("g-1");
      await f.svc.start();
      const err = await f.svc.create("g", REQ, { wait: "agent", timeoutMs: 5_000 }).then(() => undefined, (e: unknown) => e as { code?: string; message?: string });
      expect(err?.code).to.equal("ERR_VM_START_FAILED");
      expect(err?.message).to.contain("secrets of VM g-1 could not be delivered");
      expect(f.svc.list({ kind: "none" })).to.deep.equal([]);
      expect(f.seen("deleted", "g-1")).to.deep.equal(["wait_timeout"]);
    } finally {
      await f.cleanup();
    }
  });
  it("a fork whose secrets fail is deleted and fails as a create does (wait=agent), leaving no child", async () => {
    const f = await fixture(0);
    try {
      f.script.agentUp.add("g-1");
      f.script.pushFails.add("g-1");
      await f.svc.start();
      // Only the fix-up every boot does: no in-guest command, so nothing but the secrets can fail.
      const err = await f.svc.coldFork.fork(COMMIT_ID, { wait: undefined, timeout: undefined }, { fixups: ["hostname"] }).then(() => undefined, (e: unknown) => e as { code?: string; message?: string });
      expect(err?.code).to.equal("ERR_VM_START_FAILED");
      expect(err?.message).to.contain("secrets of VM g-1 could not be delivered");
      expect(f.script.pushes).to.deep.equal(["g-1"]);
      expect(f.svc.list({ kind: "none" }), "no forked VM left").to.deep.equal([]);
      expect(f.seen("deleted", "g-1")).to.deep.equal(["wait_timeout"]);
    } finally {
      await f.cleanup();
    }
  });

  it("a fork with wait=none whose secrets fail answers at once and its child is deleted after", async () => {
    const f = await fixture(0);
    try {
      f.script.agentUp.add("g-1");
      f.script.pushFails.add("g-1");
      await f.svc.start();
      const out = await f.svc.coldFork.fork(COMMIT_ID, { wait: "none", timeout: undefined }, { fixups: ["hostname"] });
      expect(out.hostname).to.equal("g-1");
      await until(() => f.seen("deleted", "g-1").length === 1, 3_000, "the child deleted");
      expect(f.seen("deleted", "g-1")).to.deep.equal(["wait_timeout"]);
      expect(f.svc.list({ kind: "none" })).to.deep.equal([]);
    } finally {
      await f.cleanup();
    }
  });

  it("a resume whose secret push fails answers ERR_VM_START_FAILED naming it; the VM stays running", async () => {
    const f = await fixture(0);
    try {
      f.script.agentUp.add("g-1");
      await f.svc.start();
      await f.svc.create("g", REQ, { wait: "agent", timeoutMs: 5_000 });
      await f.svc.transitions.pause("g-1");
      f.script.pushFails.add("g-1");
      const err = await f.svc.transitions.resume("g-1").then(() => undefined, (e: unknown) => e as { code?: string; message?: string });
      expect(err?.code).to.equal("ERR_VM_START_FAILED");
      expect(err?.message).to.contain("VM g-1 was resumed and keeps running, but its secrets could not be delivered");
      expect(f.svc.status("g-1")).to.equal("Running");
      expect(f.seen("deleted", "g-1")).to.deep.equal([]);
      // Pushed again by a resume of the running VM (what the message advises).
      f.script.pushFails.delete("g-1");
      expect(await f.svc.transitions.resume("g-1")).to.equal(true);
    } finally {
      await f.cleanup();
    }
  });

  it("a restore with wait=agent whose secret push fails answers ERR_VM_START_FAILED naming it; the VM stays running", async () => {
    const f = await fixture(0);
    try {
      f.script.agentUp.add("g-1");
      await f.svc.start();
      await f.svc.create("g", { ...REQ, persistent: true }, { wait: "agent", timeoutMs: 5_000 });
      await f.svc.transitions.suspend("g-1");
      f.script.pushFails.add("g-1");
      const err = await f.svc.transitions.restore("g-1", { wait: "agent", timeoutMs: 5_000 }).then(() => undefined, (e: unknown) => e as { code?: string; message?: string });
      expect(err?.code).to.equal("ERR_VM_START_FAILED");
      expect(err?.message).to.contain("VM g-1 was restored and keeps running, but its secrets could not be delivered");
      expect(f.svc.status("g-1")).to.equal("Running");
      expect(f.seen("restored", "g-1")).to.deep.equal(["api"]);
      expect(f.seen("deleted", "g-1")).to.deep.equal([]);
    } finally {
      await f.cleanup();
    }
  });
});
