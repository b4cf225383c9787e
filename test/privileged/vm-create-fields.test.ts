/**
 * Slicer create fields Paddock cannot honour are refused, not dropped: a real tenant daemon
 * with real runc VMs answers `disk_image`, `ssh_keys`, `import_user` and its alias
 * `github_user` (https://github.com/slicervm/sdk types.go SlicerCreateNodeRequest) with 501
 * ERR_FIELD_UNSUPPORTED naming the field, and creates nothing; the same fields empty (as a
 * client may send them) create the VM.
 */
import { expect } from "chai";
import { run } from "../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../helpers/daemon.js";

describe("create fields Paddock cannot honour are refused with their name (privileged, real daemon and runc)", function () {
  this.timeout(120_000);
  let d: TestDaemon;

  before(async () => {
    d = await TestDaemon.create({
      hostGroups: [{ name: "sbox", count: 0, vcpu: 1, ram_mb: 256, storage: "image", storage_size: "128M", network: { mode: "isolated", range: randomIsolatedRange() } }],
    });
    await d.start();
  });

  after(async () => {
    await d?.destroy();
    const left = (await run("runc", ["list", "-q"])).stdout.split("\n").filter((id) => id.startsWith(`pdk-${d.tenantId}-`));
    expect(left, "runc containers left").to.deep.equal([]);
  });

  it("each of disk_image, ssh_keys, import_user and github_user gets 501 ERR_FIELD_UNSUPPORTED naming it, and no VM", async () => {
    const cases: Array<[string, unknown]> = [
      ["disk_image", "ubuntu-22.04"],
      ["ssh_keys", ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0000000000000000000000000000000000000000000 a@b"]],
      ["import_user", "alexellis"],
      ["github_user", "alexellis"],
    ];
    for (const [field, value] of cases) {
      const r = await d.post("/hostgroup/sbox/nodes", { cpus: 1, [field]: value });
      expect(r.status, `${field}: ${r.text}`).to.equal(501);
      const body = r.json as { code: string; error: string };
      expect(body.code, field).to.equal("ERR_FIELD_UNSUPPORTED");
      expect(body.error.startsWith(`${field}:`), body.error).to.equal(true);
    }
    expect((await d.get("/nodes")).json).to.deep.equal([]);
  });

  it("the same fields empty create the VM (control)", async () => {
    const r = await d.post("/hostgroup/sbox/nodes?wait=agent&timeout=60s", { disk_image: "", ssh_keys: [], import_user: "", github_user: null });
    expect(r.status, r.text).to.equal(201);
    expect(((await d.get("/nodes")).json as unknown[]).length).to.equal(1);
  });
});
