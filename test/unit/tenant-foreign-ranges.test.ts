/**
 * A tenant's `foreign_ranges` after `network.pool` moved (supervisor/block-allocator.ts
 * `tenantForeignRanges`, rendered by supervisor/tenant-configs.ts `render`): a tenant rendered
 * from the new pool also names every other tenant's block outside it, so its firewall drops the
 * traffic between the two pools whatever order the daemons start in.
 */
import os from "node:os";
import path from "node:path";
import { promises as fs } from "node:fs";
import { expect } from "chai";
import { parseCidr } from "../../shared/cidr.js";
import { silentLogger } from "../../shared/logger.js";
import { poolComplement, tenantForeignRanges } from "../../supervisor/block-allocator.js";
import { parseSupervisorConfig } from "../../supervisor/supervisor-config.js";
import { TenantConfigs } from "../../supervisor/tenant-configs.js";
import type { TenantContext } from "../../supervisor/tenant-context.js";
import { TenantPaths } from "../../supervisor/tenant-paths.js";
import { TenantRegistry, type TenantRecord } from "../../supervisor/tenant-registry.js";
import { loadTemplate } from "../../supervisor/tenant-template.js";

const TEMPLATES_DIR = path.resolve(import.meta.dirname, "../../../templates");

describe("tenant foreign_ranges after the network pool moved", () => {
  it("tenantForeignRanges: the pool's rest, then other tenants' blocks outside the pool (not those inside, not one overlapping its own, not a non-CIDR)", () => {
    const pool = parseCidr("198.19.200.0/22");
    const own = ["198.19.200.0/26"];
    const got = tenantForeignRanges(pool, own, ["198.19.192.64/26", "198.19.200.64/26", "198.19.192.0/26", "198.19.192.64/26", "nope", "198.19.200.0/24"]);
    expect(got).to.deep.equal([...poolComplement(pool, own), "198.19.192.0/26", "198.19.192.64/26"]);
    expect(tenantForeignRanges(pool, own, [])).to.deep.equal(poolComplement(pool, own));
  });

  describe("TenantConfigs.render with a real registry and the sandbox template", () => {
    let dir: string;
    beforeEach(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-foreign-")); });
    afterEach(async () => { await fs.rm(dir, { recursive: true, force: true }); });

    const record = (id: string, cidr: string): TenantRecord => ({
      id, status: "active", template: "sandbox", labels: {}, limits: {}, overrides: {}, blocks: [{ hostGroup: "sbox", cidr }],
      tokens: [], daemon: { state: "stopped", restarts: 0 }, createdAt: "2026-01-01T00:00:00Z", updatedAt: "2026-01-01T00:00:00Z",
    }) as unknown as TenantRecord;

    it("a tenant rendered from the new pool names the old pool's tenant blocks, never its own", async () => {
      const config = parseSupervisorConfig({ state_dir: path.join(dir, "state"), run_dir: path.join(dir, "run"), network: { pool: "198.19.200.0/22", block_prefix: 26 } }, "test");
      const registry = new TenantRegistry(path.join(dir, "registry.json"));
      await registry.init();
      await registry.update((s) => {
        s.tenants.old1 = record("old1", "198.19.192.0/26");
        s.tenants.new1 = record("new1", "198.19.200.0/26");
      });
      const ctx = { config, registry, paths: new TenantPaths(config), log: silentLogger } as unknown as TenantContext;
      const configs = new TenantConfigs(ctx);
      const template = await loadTemplate(TEMPLATES_DIR, "sandbox");
      const fresh = configs.render(template, record("new2", "198.19.200.64/26")).config.paddock.foreignRanges;
      expect(fresh, "the old pool's tenant block").to.include("198.19.192.0/26");
      expect(fresh.some((c) => c === "198.19.200.64/26"), "never its own block").to.equal(false);
      // new1 is inside the pool: covered by the pool's rest, not listed again.
      expect(fresh.filter((c) => c.startsWith("198.19.200.0/"))).to.deep.equal(["198.19.200.0/26"]);
    });
  });
});
