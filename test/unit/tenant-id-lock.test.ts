/**
 * shared/tenant-id-lock.ts on a temp lock dir (never the host's /run/paddock/tenant-locks):
 * a held id is refused naming the holder's pid and config, release frees it, a dead holder's
 * lock is taken over at once. Two real daemons: test/privileged/tenant-budget.test.ts.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isPaddockError } from "../../shared/errors.js";
import { acquireTenantIdLock, liveTenantLockOwners, readTenantLockOwner } from "../../shared/tenant-id-lock.js";
import { TENANT_ID_PATTERN } from "../../shared/tenant-config-defaults.js";

describe("tenant id lock (shared/tenant-id-lock.ts)", () => {
  let dir = "";
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-idlock-"));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("records the holder; a second taker is refused with ERR_TENANT_ID_IN_USE naming pid and config; release frees it", async () => {
    const release = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "serve", dir });
    expect(await readTenantLockOwner("acme", dir)).to.include({ pid: process.pid, config: "/etc/a/config.yaml", purpose: "serve" });
    const err = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/b/config.yaml", purpose: "serve", dir }).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err) && err.code).to.equal("ERR_TENANT_ID_IN_USE");
    expect(isPaddockError(err) && err.status).to.equal(409);
    expect((err as Error).message).to.contain(`pid ${process.pid}`).and.contain("config /etc/a/config.yaml").and.contain("/etc/b/config.yaml");
    // Another id is independent.
    const other = await acquireTenantIdLock({ tenantId: "beta", configPath: "/etc/b/config.yaml", purpose: "serve", dir });
    await other();
    await release();
    await release(); // idempotent
    expect(await readTenantLockOwner("acme", dir)).to.equal(undefined);
    const again = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/b/config.yaml", purpose: "purge", dir });
    expect(await readTenantLockOwner("acme", dir)).to.include({ config: "/etc/b/config.yaml", purpose: "purge" });
    await again();
  });

  it("a purge of a tenant whose daemon runs is refused saying the daemon runs and how to stop it, not to choose another id", async () => {
    const release = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "serve", dir });
    try {
      const err = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "purge", dir }).then(() => undefined, (e: unknown) => e);
      expect(isPaddockError(err) && err.code).to.equal("ERR_TENANT_ID_IN_USE");
      const msg = (err as Error).message;
      expect(msg).to.contain(`cannot purge tenant acme while its daemon is running (pid ${process.pid}, config /etc/a/config.yaml): stop the daemon first`)
        .and.contain(`kill ${process.pid}`).and.contain("paddock tenant delete acme").and.contain("then run the purge again");
      expect(msg).not.to.contain("tenant_id");
      expect(msg).not.to.contain("another");
    } finally {
      await release();
    }
    // A purge already running: wait for it.
    const purging = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "purge", dir });
    try {
      const err = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "purge", dir }).then(() => undefined, (e: unknown) => e);
      expect((err as Error).message).to.contain("a purge of it is already running").and.contain("wait for it to end");
    } finally {
      await purging();
    }
  });

  it("records a serving daemon's dirs; lists the live holders; a purge locking another tenant's id names the purged tenant", async () => {
    const release = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "serve", dirs: ["/srv/acme/state", "/run/acme/../acme-run"], dir });
    try {
      expect(await readTenantLockOwner("acme", dir)).to.deep.include({ dirs: ["/srv/acme/state", "/run/acme-run"] });
      const live = await liveTenantLockOwners(TENANT_ID_PATTERN, dir);
      expect(live.map((l) => [l.tenantId, l.owner.pid, l.owner.dirs])).to.deep.equal([["acme", process.pid, ["/srv/acme/state", "/run/acme-run"]]]);
      const err = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/b/config.yaml", purpose: "purge", purging: { tenantId: "beta", configPath: "/etc/b/config.yaml" }, dir }).then(() => undefined, (e: unknown) => e);
      expect(isPaddockError(err) && err.code).to.equal("ERR_TENANT_ID_IN_USE");
      expect((err as Error).message).to.contain("cannot purge tenant beta: a dir it would remove is, or is inside, tenant acme's dir").and.contain("/etc/b/config.yaml");
    } finally {
      await release();
    }
    expect(await liveTenantLockOwners(TENANT_ID_PATTERN, dir)).to.deep.equal([]);
    expect(await liveTenantLockOwners(TENANT_ID_PATTERN, path.join(dir, "missing"))).to.deep.equal([]);
  });

  it("takes over at once a lock whose recorded holder is dead (SIGKILLed daemon)", async () => {
    const dead = spawnSync(process.execPath, ["-e", "0"]).pid;
    await fs.mkdir(path.join(dir, "acme.lock.mutex"));
    await fs.writeFile(path.join(dir, "acme.lock"), JSON.stringify({ pid: dead, config: "/gone/config.yaml", purpose: "serve", started_at: new Date().toISOString() }));
    const release = await acquireTenantIdLock({ tenantId: "acme", configPath: "/etc/a/config.yaml", purpose: "serve", dir });
    expect(await readTenantLockOwner("acme", dir)).to.include({ pid: process.pid, config: "/etc/a/config.yaml" });
    await release();
  });
});
