import { expect } from "chai";
import { PaddockError } from "../../shared/errors.js";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { checkHypervisor } from "../../tenant-daemon/main.js";
import { NO_KVM, chooseRunscPlatform, cpuHardwareVirt, type KvmFacts } from "../../tenant-daemon/runtime/runsc-host.js";

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
  it("gvisor platform: auto is kvm with a usable /dev/kvm on a CPU with vmx/svm, else ptrace; kvm where it cannot work is refused", () => {
    const hw: KvmFacts = { device: true, hardwareVirt: true };
    const pvm: KvmFacts = { device: true, hardwareVirt: false };
    const otherArch: KvmFacts = { device: true, hardwareVirt: undefined };
    expect(chooseRunscPlatform("auto", hw)).to.equal("kvm");
    expect(chooseRunscPlatform("auto", NO_KVM)).to.equal("ptrace");
    expect(chooseRunscPlatform("auto", pvm), "a /dev/kvm without vmx/svm (a PVM guest's KVM)").to.equal("ptrace");
    expect(chooseRunscPlatform("auto", otherArch), "no flag to read: the open check decides").to.equal("kvm");
    expect(chooseRunscPlatform("ptrace", hw)).to.equal("ptrace");
    expect(chooseRunscPlatform("kvm", hw)).to.equal("kvm");
    expect(() => chooseRunscPlatform("kvm", NO_KVM)).to.throw(PaddockError, /\/dev\/kvm/);
    try {
      chooseRunscPlatform("kvm", pvm);
      expect.fail("expected a refusal");
    } catch (err) {
      expect((err as PaddockError).code).to.equal("ERR_RUNTIME_UNAVAILABLE");
      expect((err as Error).message).to.match(/no hardware virtualisation/).and.match(/vmx or svm/).and.match(/use platform ptrace/);
    }
  });
  it("hardware virtualisation is read from the x86 cpuinfo flags (vmx or svm); other architectures are unknown", () => {
    const flags = (f: string): string => `processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme ${f} sse2 hypervisor\nbugs\t\t: sysret_ss_attrs\n`;
    expect(cpuHardwareVirt(flags("svm"), "x64")).to.equal(true);
    expect(cpuHardwareVirt(flags("vmx"), "x64")).to.equal(true);
    expect(cpuHardwareVirt(flags("vmmcall svm_lock"), "x64"), "svm_lock alone is not svm").to.equal(false);
    expect(cpuHardwareVirt(flags("vmmcall"), "x64")).to.equal(false);
    expect(cpuHardwareVirt(`vmx is mentioned\n${flags("")}`, "x64"), "only a flags line counts").to.equal(false);
    expect(cpuHardwareVirt(flags(""), "arm64")).to.equal(undefined);
  });
  it("checkHypervisor: gvisor with platform kvm on a /dev/kvm without hardware virtualisation is refused; auto is accepted", () => {
    const g = cfg("gvisor");
    const pvm = (): KvmFacts => ({ device: true, hardwareVirt: false });
    expect(() => checkHypervisor({ ...g, paddock: { ...g.paddock, gvisor: { platform: "kvm" } } }, true, "/usr/bin/runsc", pvm)).to.throw(PaddockError, /no hardware virtualisation/);
    expect(() => checkHypervisor(g, true, "/usr/bin/runsc", pvm)).to.not.throw();
  });
  it("paddock.gvisor.platform is read and checked", () => {
    const parse = (body: string) => parseTenantConfig(parseYamlSafe(`config:\n  host_groups: [{name: a}]\n  hypervisor: gvisor\n${body}`, "t.yaml"), "t.yaml", { baseDir: "/", env: {} });
    expect(parse("").paddock.gvisor.platform).to.equal("auto");
    expect(parse("paddock:\n  gvisor: {platform: ptrace}\n").paddock.gvisor.platform).to.equal("ptrace");
    expect(() => parse("paddock:\n  gvisor: {platform: systrap}\n")).to.throw(PaddockError, /paddock\.gvisor\.platform/);
    expect(parse("").hypervisor).to.equal("gvisor");
  });
});
