/**
 * The supervisor's side of tenant uid ranges (shared/uid-ranges.ts): rendering as
 * `paddock.userns`, the registry field `uidRange`, the admin view, rollback of a create whose
 * claim fails, the claim of a tenant recorded before user namespaces, and release at delete.
 * Claims go to a temp dir through PADDOCK_UID_CLAIMS_DIR; no daemon is started.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { createLogger } from "../../shared/logger.js";
import { parseCidr } from "../../shared/cidr.js";
import { UID_RANGE_BASE, UID_RANGE_SIZE, UID_RANGE_SLOTS, listUidClaims } from "../../shared/uid-ranges.js";
import { parseSupervisorConfig } from "../../supervisor/supervisor-config.js";
import { poolComplement } from "../../supervisor/block-allocator.js";
import { hashToken } from "../../supervisor/tokens.js";
import { TenantRegistry } from "../../supervisor/tenant-registry.js";
import { loadTemplate, renderTenantConfig } from "../../supervisor/tenant-template.js";
import { TenantService } from "../../supervisor/tenant-service.js";
import { AuditLog } from "../../supervisor/audit-log.js";
import { tenantView } from "../../supervisor/admin-api.js";
import { Writable } from "node:stream";

const TEMPLATES_DIR = path.resolve(import.meta.dirname, "../../../templates");
/** An image store with the templates' debian-12 (the create checks it before claiming). */
const IMAGE_DIR = path.resolve(import.meta.dirname, "../../../test/fixtures/images");

describe("supervisor uid ranges", () => {
  let dir = "";
  let claimsDir = "";
  let savedEnv: string | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-supuid-"));
    claimsDir = path.join(dir, "claims");
    savedEnv = process.env.PADDOCK_UID_CLAIMS_DIR;
    process.env.PADDOCK_UID_CLAIMS_DIR = claimsDir;
  });
  afterEach(async () => {
    if (savedEnv === undefined) delete process.env.PADDOCK_UID_CLAIMS_DIR;
    else process.env.PADDOCK_UID_CLAIMS_DIR = savedEnv;
    await fs.rm(dir, { recursive: true, force: true });
  });

  const record = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    id, status: "failed", template: "sandbox", labels: {}, limits: {}, overrides: {}, blocks: [{ hostGroup: "sbox", cidr: "169.254.0.0/22" }],
    tokens: [{ id: "tok_1", hash: hashToken("x"), createdAt: "2026-01-01T00:00:00Z" }], daemon: { state: "stopped", restarts: 0 },
    createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z", ...extra,
  });

  async function service(): Promise<{ svc: TenantService; registry: TenantRegistry; stateDir: string }> {
    const stateDir = path.join(dir, "state");
    const config = parseSupervisorConfig({ state_dir: stateDir, run_dir: path.join(dir, "run"), image_dir: IMAGE_DIR, templates: { dir: TEMPLATES_DIR } }, "t", { env: {} });
    const registry = new TenantRegistry(path.join(stateDir, "supervisor", "registry.json"));
    await registry.init();
    const quiet = new Writable({ write: (_c, _e, cb) => cb() });
    const svc = new TenantService({ config, registry, audit: new AuditLog(path.join(dir, "audit.log")), log: createLogger({ stream: quiet }) });
    return { svc, registry, stateDir };
  }

  it("renders the range as paddock.userns, and nothing without one", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox");
    const input = {
      tenantId: "ta1", socketPath: "/run/paddock/tenants/ta1/api.sock", stateDir: "/var/lib/paddock/tenants/ta1", runDir: "/run/paddock/tenants/ta1",
      imageDir: "/var/lib/paddock/images", blocks: { sbox: "169.254.8.0/22" }, limits: {}, overrides: {}, deny: [],
      foreignRanges: poolComplement(parseCidr("169.254.0.0/16"), ["169.254.8.0/22"]),
    };
    const { text, config } = renderTenantConfig(t, { ...input, userns: { uidStart: 2_000_131_072, size: 65_536 } });
    expect(text).to.match(/userns:\n\s+uid_start: 2000131072\n\s+size: 65536\n/);
    expect(config.paddock.userns).to.deep.equal({ uidStart: 2_000_131_072, size: 65_536 });
    expect(renderTenantConfig(t, input).config.paddock.userns).to.equal(undefined);
  });

  it("the registry loads records with and without uidRange and refuses a malformed one", async () => {
    const file = path.join(dir, "registry.json");
    await fs.writeFile(file, JSON.stringify({ schemaVersion: 1, tenants: { ta: record("ta"), tb: record("tb", { uidRange: { uidStart: UID_RANGE_BASE, size: UID_RANGE_SIZE } }) } }));
    const reg = new TenantRegistry(file);
    await reg.init();
    expect(reg.get("ta").uidRange).to.equal(undefined);
    expect(reg.get("tb").uidRange).to.deep.equal({ uidStart: UID_RANGE_BASE, size: UID_RANGE_SIZE });
    await fs.writeFile(file, JSON.stringify({ schemaVersion: 1, tenants: { ta: record("ta", { uidRange: { uidStart: "2000000000", size: 65536 } }) } }));
    const err = await new TenantRegistry(file).init().then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err, "ERR_STATE_CORRUPT"), String(err)).to.equal(true);
  });

  it("a create whose claim fails leaves nothing: no registry entry, no state dir, no claim", async () => {
    const { svc, registry, stateDir } = await service();
    // Another tenant holds every slot (one claim over the whole slot range).
    const otherDir = path.join(dir, "other");
    await fs.mkdir(otherDir);
    await fs.mkdir(claimsDir, { mode: 0o700 });
    const blocker = { tenant_id: "zz", state_dir: otherDir, uid_start: UID_RANGE_BASE, size: UID_RANGE_SLOTS * UID_RANGE_SIZE, claimed_at: new Date().toISOString() };
    await fs.writeFile(path.join(claimsDir, `${UID_RANGE_BASE}.json`), JSON.stringify(blocker), { mode: 0o600 });
    const err = await svc.create({ id: "tx" }, { actor: "test" }).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err, "ERR_USERNS_EXHAUSTED"), String(err)).to.equal(true);
    expect(registry.find("tx")).to.equal(undefined);
    expect(await fs.access(path.join(stateDir, "tenants", "tx")).then(() => true, () => false)).to.equal(false);
    expect((await listUidClaims()).map((c) => (c.stale === "unparsable" ? "?" : c.tenantId))).to.deep.equal(["zz"]);
  });

  it("a tenant recorded without uidRange gets one at reconcile (config and view show it); delete releases it", async () => {
    const { svc, registry, stateDir } = await service();
    await registry.update((s) => { s.tenants.ta = record("ta") as never; });
    await svc.reconcile();
    const t = registry.get("ta");
    expect(t.uidRange).to.deep.equal({ uidStart: UID_RANGE_BASE, size: UID_RANGE_SIZE });
    expect(t.status).to.equal("failed");
    const configText = await fs.readFile(path.join(stateDir, "tenants", "ta", "config.yaml"), "utf8");
    expect(configText).to.match(/userns:\n\s+uid_start: 2000000000\n\s+size: 65536\n/);
    expect(tenantView(t, svc).userns).to.deep.equal({ uid_start: UID_RANGE_BASE, size: UID_RANGE_SIZE });
    const claims = await listUidClaims();
    expect(claims.map((c) => (c.stale === "unparsable" ? "?" : [c.tenantId, c.stateDir]))).to.deep.equal([["ta", await fs.realpath(path.join(stateDir, "tenants", "ta"))]]);
    // A second reconcile keeps the range.
    await svc.reconcile();
    expect(registry.get("ta").uidRange).to.deep.equal({ uidStart: UID_RANGE_BASE, size: UID_RANGE_SIZE });
    // Delete (no daemon and no config to purge with: only the supervisor's own release runs).
    await fs.rm(path.join(stateDir, "tenants", "ta", "config.yaml"));
    expect(await svc.delete("ta", { actor: "test" })).to.equal(true);
    expect(await listUidClaims()).to.deep.equal([]);
  });
});
