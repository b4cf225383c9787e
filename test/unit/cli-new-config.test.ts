import { expect } from "chai";
import { parse as parseYaml } from "yaml";
import { parseTenantConfig } from "../../shared/tenant-config.js";
import { parseYamlSafe } from "../../shared/yaml-reader.js";
import { EXIT, UsageError, exitCodeFor } from "../../cli/cli-errors.js";
import { isPaddockError } from "../../shared/errors.js";
import { renderNewConfig, SLICER_IMAGE_X86_64 } from "../../cli/new-config.js";
import { parseNewArgs } from "../../cli/new-command.js";

/** Render from a `slicer new …` command line exactly as the spec writes it (argv after `new`). */
function renderCli(argv: string[], kvm = true): string {
  const { name, flags } = parseNewArgs(argv);
  return renderNewConfig(name, flags, { kvm, arch: "x64" });
}

/** Split a documented command line into argv (the spec's examples have no quoting). */
function words(cmd: string): string[] {
  return cmd.trim().split(/\s+/).slice(2); // drop "slicer new"
}

// The Slicer documentation's base output for `slicer new vm`, with its two trailing comments removed and the
// github_user line (present "only when a GitHub user is configured/passed") tested separately.
const BASE_VM = `config:
  host_groups:
  - name: vm
    storage: image
    storage_size: 25G
    count: 1
    vcpu: 2
    ram_gb: 4
    network:
      bridge: brvm0
      tap_prefix: vmtap
      gateway: 192.168.137.1/24
  image: "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest"
  hypervisor: firecracker
  api:
    port: 8080
    bind_address: "127.0.0.1"
    auth:
      enabled: true
`;

// The Slicer documentation's worked output for a3cf, verbatim.
const A3CF = `config:
  host_groups:
    - name: a3cf
      storage: image
      storage_size: 25G
      count: 0
      vcpu: 2
      ram_gb: 4
      network:
        mode: "isolated"
        range: "169.254.100.0/22"
        drop: ["192.168.1.0/24"]
        allow: ["0.0.0.0/0"]
  image: "ghcr.io/openfaasltd/slicer-systemd:6.1.90-x86_64-latest"
  hypervisor: firecracker
  graceful_shutdown: false
  api:
    bind_address: "/run/slicer/a3cf.sock"
`;

/** The oci variant of a documented output: only the image and hypervisor lines differ. */
function ociVariant(text: string): string {
  return text
    .replace(`  image: "${SLICER_IMAGE_X86_64}"\n`, `  image: "debian-12"\n`)
    .replace("  hypervisor: firecracker\n", "  hypervisor: oci\n");
}

function loadTenant(text: string) {
  return parseTenantConfig(parseYamlSafe(text, "new.yaml"), "new.yaml", { baseDir: "/etc/paddock", env: { PADDOCK_STATE_DIR: "/tmp/s", PADDOCK_RUN_DIR: "/tmp/r" } });
}

describe("cli: paddock new (renderNewConfig)", () => {
  describe("worked outputs, byte for byte (kvm host)", () => {
    it("slicer new vm ⇒ the base output", () => {
      expect(renderCli(["vm"])).to.equal(BASE_VM);
    });

    it("slicer new vm --github alexellis ⇒ the base output with github_user where the spec shows it", () => {
      expect(renderCli(["vm", "--github", "alexellis"])).to.equal(
        BASE_VM.replace('  image: "', '  github_user: alexellis\n  image: "'),
      );
    });

    it("slicer new a3cf --net=isolated --isolated-range … --socket … --count=0 --graceful-shutdown=false --drop … ⇒ the a3cf output", () => {
      const argv = words("slicer new a3cf --net=isolated --isolated-range 169.254.100.0/22 --socket /run/slicer/a3cf.sock --count=0 --graceful-shutdown=false --drop 192.168.1.0/24");
      expect(renderCli(argv)).to.equal(A3CF);
    });

    it("same with TCP (no --socket) ⇒ api {port: 8080, bind_address: \"127.0.0.1\", auth: {enabled: true}}", () => {
      const argv = words("slicer new sandbox --net=isolated --count=0 --graceful-shutdown=false --drop 192.168.1.0/24");
      const expected = A3CF.replace("- name: a3cf", "- name: sandbox")
        .replace('        range: "169.254.100.0/22"\n', "")
        .replace('    bind_address: "/run/slicer/a3cf.sock"\n', '    port: 8080\n    bind_address: "127.0.0.1"\n    auth:\n      enabled: true\n');
      expect(renderCli(argv)).to.equal(expected);
    });

    it("slicer new sandbox --net=isolated ⇒ network is just mode: \"isolated\"", () => {
      const out = renderCli(["sandbox", "--net=isolated"]);
      expect(out).to.contain('      network:\n        mode: "isolated"\n  image: ');
      expect((parseYaml(out) as { config: { host_groups: { network: unknown }[] } }).config.host_groups[0]?.network).to.deep.equal({ mode: "isolated" });
    });

    it("slicer new sandbox --net=isolated --drop 192.168.1.0/24 ⇒ drop list (+ allow 0.0.0.0/0)", () => {
      const out = renderCli(words("slicer new sandbox --net=isolated --drop 192.168.1.0/24"));
      // One doc page shows only the drop list, the per-tenant page adds allow 0.0.0.0/0; the two
      // are equivalent under most-specific-match-wins. We emit the a3cf form.
      expect(out).to.contain('        mode: "isolated"\n        drop: ["192.168.1.0/24"]\n        allow: ["0.0.0.0/0"]\n');
    });

    it("slicer new vm --count=3 --cidr=192.168.137.0/24 [--range=…] ⇒ bridge block with gateway .1/24 (+ range)", () => {
      expect(renderCli(words("slicer new vm --count=3 --cidr=192.168.137.0/24"))).to.equal(BASE_VM.replace("    count: 1\n", "    count: 3\n"));
      expect(renderCli(words("slicer new vm --count=3 --cidr=192.168.137.0/24 --range=192.168.137.20-192.168.137.80"))).to.equal(
        BASE_VM.replace("    count: 1\n", "    count: 3\n").replace("      gateway: 192.168.137.1/24\n", "      gateway: 192.168.137.1/24\n      range: 192.168.137.20-192.168.137.80\n"),
      );
      expect(renderCli(["lab", "--cidr", "198.18.4.0/24"])).to.contain("      gateway: 198.18.4.1/24\n");
    });

    it("slicer new sbox --count=0 --net=isolated --drop=0.0.0.0/0 --allow=…:3128 --allow=…:3129 --find-ssh-keys=false --ca --socket ./slicer.sock", () => {
      const out = renderCli(words("slicer new sbox --count=0 --net=isolated --drop=0.0.0.0/0 --allow=192.168.222.1:3128 --allow=192.168.222.1:3129 --find-ssh-keys=false --ca --socket ./slicer.sock"));
      const tree = parseYaml(out) as { config: { host_groups: Record<string, unknown>[]; api: unknown } };
      const g = tree.config.host_groups[0] as Record<string, unknown>;
      expect(g.ca).to.deep.equal({ generate: true });
      expect(g.count).to.equal(0);
      expect(g.network).to.deep.equal({ mode: "isolated", drop: ["0.0.0.0/0"], allow: ["192.168.222.1:3128", "192.168.222.1:3129"] });
      expect(out).to.contain('        drop: ["0.0.0.0/0"]\n        allow: ["192.168.222.1:3128", "192.168.222.1:3129"]\n');
      expect(tree.config.api).to.deep.equal({ bind_address: "./slicer.sock" });
    });

    it("slicer new lan --net=macvtap ⇒ a usage error (Paddock supports bridge and isolated)", () => {
      expect(() => renderCli(words("slicer new lan --net=macvtap --parent=eth1 --count=1"))).to.throw(UsageError);
      expect(() => renderCli(["lan", "--net=macvtap"])).to.throw(UsageError, /macvtap/);
    });
  });

  describe("flag table", () => {
    it("--vcpu/--cpu, --ram-gb/--ram, --storage-size, --persistent, --tap-prefix, --userdata-file", () => {
      const out = renderCli(["vm", "--cpu", "4", "--ram=8", "--storage-size", "10G", "--persistent=true", "--tap-prefix", "k3sa1", "--userdata-file", "./setup.sh"]);
      expect(out).to.contain("    vcpu: 4\n    ram_gb: 8\n    persistent: true\n    userdata_file: ./setup.sh\n");
      expect(out).to.contain("    storage_size: 10G\n");
      expect(out).to.contain("      tap_prefix: k3sa1\n");
      expect(renderCli(["vm", "--vcpu", "3", "--ram-gb", "2"])).to.contain("    vcpu: 3\n    ram_gb: 2\n");
    });

    it("--api-bind, --api-port, --api-auth=false", () => {
      expect(renderCli(["vm", "--api-bind", "0.0.0.0", "--api-port", "9090", "--api-auth=false"])).to.contain(
        '  api:\n    port: 9090\n    bind_address: "0.0.0.0"\n    auth:\n      enabled: false\n',
      );
      // A socket path given to --api-bind behaves like --socket.
      expect(renderCli(["vm", "--api-bind", "/run/x/api.sock"])).to.match(/ {2}api:\n {4}bind_address: "\/run\/x\/api.sock"\n$/);
      expect(renderCli(["vm", "--socket", "/s.sock", "--api-auth=true"])).to.match(/bind_address: "\/s.sock"\n {4}auth:\n {6}enabled: true\n$/);
    });

    it("--graceful-shutdown=true (the default) writes nothing; --no-graceful-shutdown works like =false", () => {
      expect(renderCli(["vm", "--graceful-shutdown=true"])).to.equal(BASE_VM);
      expect(renderCli(["vm", "--no-graceful-shutdown"])).to.contain("  hypervisor: firecracker\n  graceful_shutdown: false\n  api:\n");
    });

    it("rejects bad names, values and combinations with a UsageError", () => {
      const bad: string[][] = [
        [],
        ["Bad_Name"],
        ["vm", "--count", "-1"],
        ["vm", "--count", "x"],
        ["vm", "--net", "isolated", "--cidr", "10.0.0.0/24"],
        ["vm", "--drop", "10.0.0.0/8"],
        ["vm", "--net=isolated", "--isolated-range", "169.254.100.1/22"],
        ["vm", "--net=isolated", "--allow", "10.0.0.1:99999"],
        ["vm", "--socket", "/a.sock", "--api-port", "1"],
        ["vm", "--socket", "/a.sock", "--api-bind", "127.0.0.1"],
        ["vm", "--range", "10.0.0.9-10.0.0.2"],
        ["vm", "--storage-size", "lots"],
        ["vm", "--graceful-shutdown=maybe"],
        ["vm", "--unknown-flag"],
        ["vm", "extra"],
      ];
      for (const argv of bad) expect(() => renderCli(argv), argv.join(" ")).to.throw(UsageError);
    });

    it("quotes scalars YAML would misread", () => {
      const out = renderCli(["vm", "--userdata-file", "yes"]);
      expect(out).to.contain('    userdata_file: "yes"\n');
      expect((parseYaml(out) as { config: { host_groups: { userdata_file: unknown }[] } }).config.host_groups[0]?.userdata_file).to.equal("yes");
    });
  });

  describe("without /dev/kvm: hypervisor oci and Paddock's local image", () => {
    it("differs from the documented outputs only in image and hypervisor", () => {
      expect(renderCli(["vm"], false)).to.equal(ociVariant(BASE_VM));
      const argv = words("slicer new a3cf --net=isolated --isolated-range 169.254.100.0/22 --socket /run/slicer/a3cf.sock --count=0 --graceful-shutdown=false --drop 192.168.1.0/24");
      expect(renderCli(argv, false)).to.equal(ociVariant(A3CF));
      expect(renderCli(["vm", "--image", "my-image"], false)).to.contain('  image: "my-image"\n  hypervisor: oci\n');
    });

    it("the oci variants load with parseTenantConfig (shared/tenant-config.ts) without warnings", () => {
      const a3cf = loadTenant(renderCli(words("slicer new a3cf --net=isolated --isolated-range 169.254.100.0/22 --socket /run/slicer/a3cf.sock --count=0 --graceful-shutdown=false --drop 192.168.1.0/24"), false));
      expect(a3cf.hypervisor).to.equal("oci");
      expect(a3cf.image).to.equal("debian-12");
      expect(a3cf.gracefulShutdown).to.equal(false);
      expect(a3cf.api).to.deep.include({ kind: "unix", socketPath: "/run/slicer/a3cf.sock" });
      expect(a3cf.api.auth.enabled).to.equal(false);
      expect(a3cf.paddock.tenantId).to.equal("a3cf");
      expect(a3cf.hostGroups[0]).to.deep.include({ name: "a3cf", count: 0, vcpu: 2, ramBytes: 4 * 2 ** 30, storageSizeBytes: 25 * 2 ** 30 });
      expect(a3cf.hostGroups[0]?.network).to.deep.equal({ mode: "isolated", range: "169.254.100.0/22", drop: ["192.168.1.0/24"], allow: ["0.0.0.0/0"] });
      expect(a3cf.warnings).to.deep.equal([]);

      const vm = loadTenant(renderCli(["vm"], false));
      expect(vm.api).to.deep.include({ kind: "tcp", host: "127.0.0.1", port: 8080 });
      expect(vm.api.auth.enabled).to.equal(true);
      expect(vm.hostGroups[0]?.network).to.deep.include({ mode: "bridge", bridge: "brvm0", tapPrefix: "vmtap", gateway: "192.168.137.1/24" });
      expect(vm.warnings).to.deep.equal([]);

      const sbox = loadTenant(renderCli(words("slicer new sbox --count=0 --net=isolated --drop=0.0.0.0/0 --allow=192.168.222.1:3128 --allow=192.168.222.1:3129 --find-ssh-keys=false --ca --socket ./slicer.sock"), false));
      expect(sbox.api).to.deep.include({ kind: "unix", socketPath: "/etc/paddock/slicer.sock" });
      expect(sbox.hostGroups[0]?.network).to.deep.include({ mode: "isolated", drop: ["0.0.0.0/0"] });
    });
  });
  describe("--hypervisor oci|gvisor (Paddock's runtime choice)", () => {
    const A3CF_ARGV = words("slicer new a3cf --net=isolated --isolated-range 169.254.100.0/22 --socket /run/slicer/a3cf.sock --count=0 --graceful-shutdown=false --drop 192.168.1.0/24");

    it("--hypervisor gvisor ⇒ the oci output with hypervisor gvisor, on a kvm host too; it loads as a gvisor tenant with platform auto", () => {
      for (const kvm of [true, false]) {
        const out = renderCli([...A3CF_ARGV, "--hypervisor", "gvisor"], kvm);
        expect(out).to.equal(ociVariant(A3CF).replace("  hypervisor: oci\n", "  hypervisor: gvisor\n"));
      }
      const t = loadTenant(renderCli([...A3CF_ARGV, "--hypervisor=gvisor"], false));
      expect({ hypervisor: t.hypervisor, image: t.image, platform: t.paddock.gvisor.platform, warnings: t.warnings }).to.deep.equal({ hypervisor: "gvisor", image: "debian-12", platform: "auto", warnings: [] });
    });

    it("--gvisor-platform ptrace|kvm|auto ⇒ paddock.gvisor.platform, read back by the daemon's parser", () => {
      for (const platform of ["ptrace", "kvm", "auto"] as const) {
        const out = renderCli([...A3CF_ARGV, "--hypervisor", "gvisor", "--gvisor-platform", platform], false);
        expect(out).to.match(new RegExp(`\n {4}bind_address: "/run/slicer/a3cf.sock"\npaddock:\n {2}gvisor:\n {4}platform: ${platform}\n$`));
        expect(loadTenant(out).paddock.gvisor.platform).to.equal(platform);
      }
    });

    it("--hypervisor oci on a kvm host ⇒ the oci output (explicit beats the host default)", () => {
      expect(renderCli([...A3CF_ARGV, "--hypervisor", "oci"], true)).to.equal(ociVariant(A3CF));
    });

    it("refuses an unknown --hypervisor or --gvisor-platform with ERR_CONFIG_UNSUPPORTED (exit 2), naming the accepted values", () => {
      const bad: Array<[string[], RegExp]> = [
        [["vm", "--hypervisor", "kvm"], /--hypervisor takes oci or gvisor, got "kvm"/],
        [["vm", "--hypervisor", "firecracker"], /no Firecracker driver/],
        [["vm", "--hypervisor", ""], /got ""/],
        [["vm", "--hypervisor", "GVISOR"], /got "GVISOR"/],
        [["vm", "--gvisor-platform", "ptrace"], /needs --hypervisor gvisor/],
        [["vm", "--hypervisor", "oci", "--gvisor-platform", "ptrace"], /needs --hypervisor gvisor/],
        [["vm", "--hypervisor", "gvisor", "--gvisor-platform", "systrap"], /auto, kvm, ptrace, got "systrap"/],
      ];
      for (const [argv, message] of bad) {
        let err: unknown;
        try {
          renderCli(argv, false);
        } catch (e) {
          err = e;
        }
        expect(isPaddockError(err, "ERR_CONFIG_UNSUPPORTED"), `${argv.join(" ")}: ${String(err)}`).to.equal(true);
        expect((err as Error).message, argv.join(" ")).to.match(message);
        expect(exitCodeFor(err)).to.equal(EXIT.USAGE);
      }
    });
  });
});
