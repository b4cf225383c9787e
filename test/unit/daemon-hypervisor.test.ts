import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { checkHypervisor } from "../../tenant-daemon/main.js";

const cfg = (hv: string) => parseTenantConfig(parseYamlSafe(`config:\n  host_groups: [{name: a}]\n  hypervisor: ${hv}\n`, "t.yaml"), "t.yaml", { baseDir: "/", env: {} });

describe("hypervisor selection", () => {
  it("oci runs anywhere", () => {
    expect(() => checkHypervisor(cfg("oci"), false)).to.not.throw();
  });
  it("firecracker without /dev/kvm refuses and names hypervisor: oci", () => {
    try {
      checkHypervisor(cfg("firecracker"), false);
      expect.fail("expected a refusal");
    } catch (err) {
      expect(err).to.be.instanceOf(PaddockError);
      expect((err as PaddockError).code).to.equal("ERR_CONFIG_UNSUPPORTED");
      expect((err as Error).message).to.match(/\/dev\/kvm/).and.match(/hypervisor: oci/);
    }
  });
  it("firecracker with /dev/kvm is refused as not in this release (never silently run as OCI)", () => {
    expect(() => checkHypervisor(cfg("firecracker"), true)).to.throw(PaddockError, /not available in this Paddock release/);
  });
});
