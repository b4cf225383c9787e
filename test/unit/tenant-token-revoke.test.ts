import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { TenantRegistry } from "../../supervisor/tenant-registry.js";
import { TenantLocks, type TenantContext } from "../../supervisor/tenant-context.js";
import { TenantTokens } from "../../supervisor/tenant-tokens.js";

/**
 * supervisor/tenant-tokens.ts `revoke` over a real registry file: a revoke of a token already
 * revoked is recorded too, but its audit entry says `already_revoked: true` (README "Tenant
 * tokens"), so supervisor/audit.log tells it from the real revoke.
 */
describe("supervisor: token revoke and its audit entry", () => {
  let dir: string;
  let registry: TenantRegistry;
  let tokens: TenantTokens;
  const audited: Array<{ action: string; tenant: string | undefined; details: Record<string, unknown> | undefined }> = [];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-revoke-"));
    registry = new TenantRegistry(path.join(dir, "registry.json"));
    await registry.init();
    audited.length = 0;
    const ctx = {
      registry, locks: new TenantLocks(),
      recordAudit: (_who: unknown, action: string, tenant: string | undefined, details?: Record<string, unknown>) => { audited.push({ action, tenant, details }); },
      endSessions: () => undefined,
    } as unknown as TenantContext;
    tokens = new TenantTokens(ctx);
    await registry.update((s) => {
      s.tenants.t1 = {
        id: "t1", status: "active", template: "sandbox", labels: {}, limits: {}, overrides: {},
        blocks: [{ hostGroup: "sbox", cidr: "169.254.0.0/22" }], tokens: [], daemon: { state: "stopped", restarts: 0 },
        createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z",
      } as never;
    });
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("a second revoke of a token answers already revoked (same time) and its audit entry is marked already_revoked", async () => {
    const who = { actor: "admin", requestId: "r1" };
    const issued = await tokens.issue("t1", { expiresAt: undefined }, who);
    const first = await tokens.revoke("t1", issued.id, who);
    expect(first.alreadyRevoked).to.equal(false);
    expect(registry.get("t1").tokens.find((k) => k.id === issued.id)?.revokedAt).to.equal(first.revokedAt);
    const again = await tokens.revoke("t1", issued.id, who);
    expect(again).to.deep.equal({ revokedAt: first.revokedAt, alreadyRevoked: true });
    const revokes = audited.filter((e) => e.action === "token.revoke");
    expect(revokes).to.deep.equal([
      { action: "token.revoke", tenant: "t1", details: { token_id: issued.id } },
      { action: "token.revoke", tenant: "t1", details: { token_id: issued.id, already_revoked: true } },
    ]);
    // An unknown token is an error, not an entry.
    try {
      await tokens.revoke("t1", "tok_nope", who);
      expect.fail("expected ERR_TOKEN_NOT_FOUND");
    } catch (err) {
      expect(isPaddockError(err, "ERR_TOKEN_NOT_FOUND"), String(err)).to.equal(true);
    }
    expect(audited.filter((e) => e.action === "token.revoke")).to.have.length(2);
  });

  it("a revoke of a token already revoked writes nothing: same registry file (inode, bytes), no new committed copy, no index rebuild", async () => {
    const who = { actor: "admin", requestId: "r2" };
    const issued = await tokens.issue("t1", { expiresAt: undefined }, who);
    await tokens.revoke("t1", issued.id, who);
    const before = { stat: await fs.stat(registry.file), text: await fs.readFile(registry.file, "utf8"), snapshot: registry.snapshot() };
    let changes = 0;
    registry.onChange(() => changes++);
    changes = 0;
    const again = await tokens.revoke("t1", issued.id, who);
    expect(again.alreadyRevoked).to.equal(true);
    const after = await fs.stat(registry.file);
    expect(after.ino, "the file was not replaced").to.equal(before.stat.ino);
    expect(await fs.readFile(registry.file, "utf8")).to.equal(before.text);
    expect(registry.snapshot(), "the committed copy is the same object").to.equal(before.snapshot);
    expect(changes, "no change listener ran").to.equal(0);
    expect(audited.filter((e) => e.action === "token.revoke").map((e) => e.details)).to.deep.equal([{ token_id: issued.id }, { token_id: issued.id, already_revoked: true }]);
  });

  it("of two racing revokes exactly one is the real one (one write), the other answers already revoked with its time", async () => {
    const who = { actor: "admin", requestId: "r3" };
    const issued = await tokens.issue("t1", { expiresAt: undefined }, who);
    let changes = 0;
    registry.onChange(() => changes++);
    changes = 0;
    const [a, b] = await Promise.all([tokens.revoke("t1", issued.id, who), tokens.revoke("t1", issued.id, who)]);
    expect([a.alreadyRevoked, b.alreadyRevoked].sort()).to.deep.equal([false, true]);
    expect(a.revokedAt).to.equal(b.revokedAt);
    expect(registry.get("t1").tokens.find((k) => k.id === issued.id)?.revokedAt).to.equal(a.revokedAt);
    expect(changes, "one committed change").to.equal(1);
  });
});
