import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { checkHypervisor } from "../../tenant-daemon/main.js";
import { chooseRunscPlatform } from "../../tenant-daemon/runtime/runsc-host.js";

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
  it("gvisor without runsc refuses with ERR_RUNTIME_UNAVAILABLE and the install command", () => {
    try {
      checkHypervisor(cfg("gvisor"), false, null);
      expect.fail("expected a refusal");
    } catch (err) {
      expect((err as PaddockError).code).to.equal("ERR_RUNTIME_UNAVAILABLE");
      expect((err as Error).message).to.contain("apt-get install runsc");
    }
  });
  it("gvisor with runsc is accepted; an explicit kvm platform without /dev/kvm is refused", () => {
    expect(() => checkHypervisor(cfg("gvisor"), false, "/usr/bin/runsc")).to.not.throw();
    const kvm = cfg("gvisor");
    expect(() => checkHypervisor({ ...kvm, paddock: { ...kvm.paddock, gvisor: { platform: "kvm" } } }, false, "/usr/bin/runsc")).to.throw(PaddockError, /\/dev\/kvm/);
  });
  it("gvisor platform: auto is kvm with a usable /dev/kvm, else ptrace; kvm without it is refused", () => {
    expect(chooseRunscPlatform("auto", true)).to.equal("kvm");
    expect(chooseRunscPlatform("auto", false)).to.equal("ptrace");
    expect(chooseRunscPlatform("ptrace", true)).to.equal("ptrace");
    expect(chooseRunscPlatform("kvm", true)).to.equal("kvm");
    expect(() => chooseRunscPlatform("kvm", false)).to.throw(PaddockError, /\/dev\/kvm/);
  });
  it("paddock.gvisor.platform is read and checked", () => {
    const parse = (body: string) => parseTenantConfig(parseYamlSafe(`config:\n  host_groups: [{name: a}]\n  hypervisor: gvisor\n${body}`, "t.yaml"), "t.yaml", { baseDir: "/", env: {} });
    expect(parse("").paddock.gvisor.platform).to.equal("auto");
    expect(parse("paddock:\n  gvisor: {platform: ptrace}\n").paddock.gvisor.platform).to.equal("ptrace");
    expect(() => parse("paddock:\n  gvisor: {platform: systrap}\n")).to.throw(PaddockError, /paddock\.gvisor\.platform/);
    expect(parse("").hypervisor).to.equal("gvisor");
  });
});
