import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { TenantRegistry } from "../../supervisor/tenant-registry.js";
import { TenantLocks, type TenantContext } from "../../supervisor/tenant-context.js";
import type { TenantDaemons } from "../../supervisor/tenant-daemons.js";
import { resumeTenant, suspendTenant } from "../../supervisor/tenant-suspension.js";

/** supervisor/tenant-suspension.ts over a real registry file; no daemon runs (as for a failed tenant). */
describe("supervisor: tenant suspension", () => {
  let dir: string;
  let registry: TenantRegistry;
  let ctx: TenantContext;
  const audited: string[] = [];
  const daemons = { isRunning: () => false, get: () => undefined, pauseAll: () => Promise.resolve({ paused: [], errors: [] }) } as unknown as TenantDaemons;
  const who = { actor: "admin" };

  const seed = async (id: string, status: string, statusReason?: string): Promise<void> => {
    await registry.update((s) => {
      s.tenants[id] = {
        id, status, ...(statusReason !== undefined ? { statusReason } : {}), template: "sandbox", labels: {}, limits: {}, overrides: {},
        blocks: [{ hostGroup: "sbox", cidr: "169.254.0.0/22" }], tokens: [], daemon: { state: "stopped", restarts: 0 },
        createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z",
      } as never;
    });
  };

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-susp-"));
    registry = new TenantRegistry(path.join(dir, "registry.json"));
    await registry.init();
    audited.length = 0;
    ctx = {
      registry, locks: new TenantLocks(),
      recordAudit: (_who: unknown, action: string) => { audited.push(action); },
      endSessions: () => undefined,
      paths: { socketPath: (id: string) => path.join(dir, id, "api.sock") },
    } as unknown as TenantContext;
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("refuses to suspend a failed tenant (ERR_TENANT_INVALID, 400) and leaves it failed with its reason", async () => {
    await seed("tf", "failed", "image alpine-missing not found");
    try {
      await suspendTenant(ctx, daemons, "tf", "maintenance", who);
      expect.fail("expected ERR_TENANT_INVALID");
    } catch (err) {
      expect(isPaddockError(err, "ERR_TENANT_INVALID"), String(err)).to.equal(true);
      expect((err as Error).message).to.equal("tenant tf is failed (image alpine-missing not found) and cannot be suspended: it has no daemon to pause and the gateway already refuses it (503); restart or delete it");
    }
    const t = registry.get("tf");
    expect(t.status).to.equal("failed");
    expect(t.statusReason).to.equal("image alpine-missing not found");
    expect(audited).to.deep.equal([]);
    // Resume of it stays refused as before: it never turns a failed tenant active.
    try {
      await resumeTenant(ctx, daemons, "tf", who);
      expect.fail("expected ERR_TENANT_INVALID");
    } catch (err) {
      expect(isPaddockError(err, "ERR_TENANT_INVALID"), String(err)).to.equal(true);
    }
    expect(registry.get("tf").status).to.equal("failed");
  });

  it("suspends and resumes an active tenant (no daemon running: nothing paused or resumed)", async () => {
    await seed("ta", "active");
    const s = await suspendTenant(ctx, daemons, "ta", "maintenance", who);
    expect([s.tenant.status, s.tenant.statusReason, s.alreadySuspended]).to.deep.equal(["suspended", "maintenance", false]);
    const r = await resumeTenant(ctx, daemons, "ta", who);
    expect([r.tenant.status, r.tenant.statusReason, r.alreadyActive]).to.deep.equal(["active", undefined, false]);
    expect(audited).to.deep.equal(["tenant.suspend", "tenant.resume"]);
  });
});
