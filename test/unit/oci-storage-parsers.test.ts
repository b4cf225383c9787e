import { expect } from "chai";
import { isPathUnder, parseLosetupJson, parseMountInfo } from "../../tenant-daemon/storage/vm-disk.js";

describe("storage parsers", () => {
  it("parses /proc/self/mountinfo lines, optional fields and octal escapes included", () => {
    const text = [
      "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
      "412 29 7:3 / /run/paddock/tenants/a3cf/bundles/sbox-1/disk rw,noatime shared:210 - ext4 /dev/loop3 rw",
      "413 29 0:88 / /run/paddock/tenants/a3cf/bundles/sbox-1/rootfs rw,relatime shared:211 - overlay overlay rw,lowerdir=/x,upperdir=/y,workdir=/z",
      "414 29 0:89 / /tmp/with\\040space rw - tmpfs tmpfs rw",
      "",
    ].join("\n");
    expect(parseMountInfo(text)).to.deep.equal([
      { mountPoint: "/sys/fs/cgroup", fsType: "tmpfs", source: "tmpfs" },
      { mountPoint: "/run/paddock/tenants/a3cf/bundles/sbox-1/disk", fsType: "ext4", source: "/dev/loop3" },
      { mountPoint: "/run/paddock/tenants/a3cf/bundles/sbox-1/rootfs", fsType: "overlay", source: "overlay" },
      { mountPoint: "/tmp/with space", fsType: "tmpfs", source: "tmpfs" },
    ]);
  });

  it("parses losetup -J, strips the (deleted) suffix, and reads empty output as no devices", () => {
    const text = JSON.stringify({
      loopdevices: [
        { name: "/dev/loop0", sizelimit: 0, offset: 0, autoclear: true, ro: false, "back-file": "/var/lib/paddock/tenants/a3cf/disks/sbox-1.img", dio: false, "log-sec": 512 },
        { name: "/dev/loop1", "back-file": "/var/lib/paddock/tenants/a3cf/disks/sbox-2.img (deleted)" },
      ],
    });
    expect(parseLosetupJson(text)).to.deep.equal([
      { name: "/dev/loop0", backFile: "/var/lib/paddock/tenants/a3cf/disks/sbox-1.img" },
      { name: "/dev/loop1", backFile: "/var/lib/paddock/tenants/a3cf/disks/sbox-2.img" },
    ]);
    expect(parseLosetupJson("")).to.deep.equal([]);
  });

  it("isPathUnder matches whole path components only", () => {
    expect(isPathUnder("/run/paddock/a/b", "/run/paddock")).to.equal(true);
    expect(isPathUnder("/run/paddock", "/run/paddock/")).to.equal(true);
    expect(isPathUnder("/run/paddock-other/x", "/run/paddock")).to.equal(false);
    expect(isPathUnder("/run/paddock/../etc", "/run/paddock")).to.equal(false);
  });
});
