/**
 * VmTable.persist (tenant-daemon/vm/vm-table.ts) over a real state file (shared/state-store.ts
 * JsonStateStore in a temp dir): calls made while a write runs share the one write after it, and
 * every call resolves only after a write that began after it, so what the table held at the call
 * is on disk; a failed write rejects every call that shared it.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { JsonStateStore } from "../../shared/state-store.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { VmTable } from "../../tenant-daemon/vm/vm-table.js";
import type { DaemonState, VmRecord } from "../../tenant-daemon/vm/vm-types.js";

describe("VmTable.persist", () => {
  let dir: string;
  let store: JsonStateStore<DaemonState>;
  let updates: number;
  let failNext: boolean;
  let table: VmTable;

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-persist-"));
    store = new JsonStateStore<DaemonState>({ file: path.join(dir, "state.json"), schemaVersion: 1, initial: () => ({ schemaVersion: 1, tenantId: "t", counters: {}, vms: {} }) });
    await store.init();
    updates = 0;
    failNext = false;
    const real = store.update.bind(store);
    store.update = (<R>(mutate: (s: DaemonState) => R | Promise<R>): Promise<R> => {
      updates++;
      if (failNext) {
        failNext = false;
        return Promise.reject(new Error("disk full"));
      }
      return real(mutate);
    }) as typeof store.update;
    table = new VmTable({ config: {} as TenantConfig, store });
  });

  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const add = (hostname: string): void => {
    table.vms.set(hostname, { record: { hostname } as VmRecord, phase: "running", pid: undefined });
  };
  const saved = async (): Promise<string[]> => Object.keys((JSON.parse(await fs.readFile(store.file, "utf8")) as DaemonState).vms).sort();

  it("shares one write among the calls made while a write runs", async () => {
    add("a-1");
    const first = table.persist();
    const rest: Promise<void>[] = [];
    for (let i = 2; i <= 20; i++) {
      add(`a-${i}`);
      rest.push(table.persist());
    }
    await Promise.all([first, ...rest]);
    expect(updates).to.equal(2);
    expect(await saved()).to.have.length(20);
    // Idle again: the next call writes at once, on its own.
    add("a-21");
    await table.persist();
    expect(updates).to.equal(3);
    expect(await saved()).to.include("a-21");
  });

  it("resolves a call only after a write that saw the table as it was at the call", async () => {
    add("b-1");
    const first = table.persist();
    // The first write snapshots when its lock is taken; this change may come after that.
    add("b-2");
    const second = table.persist();
    await second;
    expect(await saved()).to.deep.equal(["b-1", "b-2"]);
    await first;
  });

  it("rejects every call that shared a failed write, and the next call writes again", async () => {
    add("c-1");
    const first = table.persist();
    const shared = [table.persist(), table.persist()];
    // The write they share is the second update.
    failNext = true;
    await first.then(() => undefined, () => undefined);
    const results = await Promise.allSettled(shared);
    expect(results.map((r) => r.status)).to.deep.equal(["rejected", "rejected"]);
    add("c-2");
    await table.persist();
    expect(await saved()).to.deep.equal(["c-1", "c-2"]);
  });
});
