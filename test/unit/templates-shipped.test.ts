/**
 * The tenant templates shipped in templates/: the admin API doc (docs/admin-api.openapi.yaml,
 * TenantCreate `template`) names exactly them, and `sandbox-proxy` renders a proxy-mode host
 * group (`egress_proxy`, no CIDR lists) with a warm pool of 1.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { expect } from "chai";
import { parseCidr } from "../../shared/cidr.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { poolComplement } from "../../supervisor/block-allocator.js";
import { listTemplateNames, loadTemplate, renderTenantConfig } from "../../supervisor/tenant-template.js";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const TEMPLATES_DIR = path.join(ROOT, "templates");

describe("shipped tenant templates", () => {
  it("docs/admin-api.openapi.yaml TenantCreate.template names exactly the tenant templates in templates/", async () => {
    const doc = parseYamlSafe(await fs.readFile(path.join(ROOT, "docs", "admin-api.openapi.yaml"), "utf8"), "admin-api.openapi.yaml") as {
      components: { schemas: { TenantCreate: { properties: { template: { description: string } } } } };
    };
    const text = doc.components.schemas.TenantCreate.properties.template.description;
    // Backquoted names, less the file pattern `templates/<name>.yaml` and API paths.
    const documented = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1] as string).filter((n) => /^[a-z0-9][a-z0-9-]*$/.test(n)).sort();
    const shipped = await listTemplateNames(TEMPLATES_DIR);
    expect(shipped, "templates/ itself").to.include.members(["sandbox", "workspace"]);
    expect(documented).to.deep.equal(shipped);
  });

  it("sandbox-proxy renders one isolated proxy-mode group (client sbox, no allow/drop, warm pool 1)", async () => {
    const t = await loadTemplate(TEMPLATES_DIR, "sandbox-proxy");
    expect(t.hostGroups).to.deep.equal(["sbox"]);
    const block = "169.254.8.0/22";
    const { config } = renderTenantConfig(t, {
      tenantId: "ta1", socketPath: "/run/paddock/tenants/ta1/api.sock", stateDir: "/var/lib/paddock/tenants/ta1", runDir: "/run/paddock/tenants/ta1",
      imageDir: "/var/lib/paddock/images", blocks: { sbox: block }, limits: {}, overrides: {},
      deny: ["169.254.169.254/32"], foreignRanges: poolComplement(parseCidr("169.254.0.0/16"), [block]),
    });
    const g = config.hostGroups[0];
    expect(g?.egressProxy).to.deep.equal({ client: "sbox" });
    expect(g?.network).to.deep.include({ mode: "isolated", range: block });
    expect(g?.network.mode === "isolated" && [g.network.allow, g.network.drop]).to.deep.equal([[], []]);
    expect(config.paddock.warmPool).to.deep.equal({ sbox: 1 });
    expect(config.warnings).to.deep.equal([]);
  });
});
