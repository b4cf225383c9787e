/**
 * test/helpers/cgroup.ts, pure: the cgroup readers the privileged tests use on v1 and v2, run
 * here against temp trees laid out like a pure v2 host (`/sys/fs/cgroup/cgroup.controllers`)
 * and like a hybrid v1 host, holding the exact bytes the kernel writes in those files (trailing
 * newline included; https://docs.kernel.org/admin-guide/cgroup-v2.html "Core Interface Files",
 * "CPU Interface Files", "Memory Interface Files", "PID Interface Files"). So the v2 path runs
 * on this hybrid host too.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { guestCgroupFiles, parseGuestCgroupFiles, parseV1CpuQuota, parseV1MemoryLimit, parseV2CpuMax, parseV2Limit, readCgroupLimits } from "../helpers/cgroup.js";

const VM = "/paddock/t1/sbox-1";
const MiB = 2 ** 20;

async function write(root: string, rel: string, content: string): Promise<void> {
  await fs.mkdir(path.dirname(path.join(root, rel)), { recursive: true });
  await fs.writeFile(path.join(root, rel), content);
}

describe("cgroup readers for tests (test/helpers/cgroup.ts)", () => {
  let root = "";
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-cgread-"));
  });
  afterEach(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it("parses v2 file contents: cpu.max with and without a quota, memory.max, pids.max", () => {
    expect(parseV2CpuMax("200000 100000\n")).to.deep.equal({ quotaUs: 200_000, periodUs: 100_000 });
    expect(parseV2CpuMax("max 100000\n")).to.deep.equal({ quotaUs: "max", periodUs: 100_000 });
    expect(parseV2Limit("100663296\n")).to.equal(96 * MiB);
    expect(parseV2Limit("max\n")).to.equal("max");
    expect(parseV2Limit("64\n")).to.equal(64);
    expect(() => parseV2CpuMax("200000\n")).to.throw(/\$MAX \$PERIOD/);
    expect(() => parseV2Limit("\n")).to.throw(/not an integer/);
  });

  it("parses v1 file contents: a quota of -1 and the page counter's maximum are no limit", () => {
    expect(parseV1CpuQuota("-1\n")).to.equal("max");
    expect(parseV1CpuQuota("100000\n")).to.equal(100_000);
    expect(parseV1MemoryLimit("9223372036854771712\n")).to.equal("max");
    expect(parseV1MemoryLimit("100663296\n")).to.equal(96 * MiB);
  });

  it("reads a VM cgroup through the unified hierarchy of a pure v2 host", async () => {
    await write(root, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    await write(root, `${VM}/cpu.max`, "200000 100000\n");
    await write(root, `${VM}/memory.max`, "100663296\n");
    await write(root, `${VM}/pids.max`, "64\n");
    await write(root, `${VM}/pids.current`, "3\n");
    expect(await readCgroupLimits(VM, root)).to.deep.equal({ version: 2, cpuQuotaUs: 200_000, cpuPeriodUs: 100_000, memoryBytes: 96 * MiB, pidsMax: 64, pidsCurrent: 3 });
    await write(root, `${VM}/cpu.max`, "max 100000\n");
    await write(root, `${VM}/memory.max`, "max\n");
    await write(root, `${VM}/pids.max`, "max\n");
    expect(await readCgroupLimits(VM, root)).to.include({ cpuQuotaUs: "max", memoryBytes: "max", pidsMax: "max" });
  });

  it("reads a VM cgroup through the v1 controller mounts of a hybrid host (cgroup2 only under unified/)", async () => {
    await write(root, "unified/cgroup.controllers", "\n");
    for (const [c, marker] of [["pids", "cgroup.procs"], ["memory", "memory.limit_in_bytes"], ["cpu", "cpu.cfs_quota_us"]] as const) await write(root, `${c}/${marker}`, "");
    await write(root, `cpu/${VM}/cpu.cfs_quota_us`, "100000\n");
    await write(root, `cpu/${VM}/cpu.cfs_period_us`, "100000\n");
    await write(root, `memory/${VM}/memory.limit_in_bytes`, "100663296\n");
    await write(root, `pids/${VM}/pids.max`, "20\n");
    await write(root, `pids/${VM}/pids.current`, "20\n");
    expect(await readCgroupLimits(VM, root)).to.deep.equal({ version: 1, cpuQuotaUs: 100_000, cpuPeriodUs: 100_000, memoryBytes: 96 * MiB, pidsMax: 20, pidsCurrent: 20 });
  });

  it("rejects when a file is missing, so a check built on it cannot pass by default", async () => {
    await write(root, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    await write(root, `${VM}/cpu.max`, "200000 100000\n");
    let err: unknown;
    await readCgroupLimits(VM, root).catch((e: unknown) => (err = e));
    expect((err as NodeJS.ErrnoException | undefined)?.code).to.equal("ENOENT");
    // A v2 root without the memory controller is refused by the layout detection.
    await write(root, "cgroup.controllers", "cpu pids\n");
    err = undefined;
    await readCgroupLimits(VM, root).catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/lacks the memory controller/);
  });

  it("reads the guest's view (its cgroup namespace root) in the file names of each version", () => {
    expect(guestCgroupFiles(2)).to.deep.equal(["/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max"]);
    expect(parseGuestCgroupFiles(2, "100000 100000\n100663296\n64\n")).to.deep.equal({ cpuQuotaUs: 100_000, cpuPeriodUs: 100_000, memoryBytes: 96 * MiB, pidsMax: 64 });
    expect(parseGuestCgroupFiles(1, "100000\n100000\n100663296\n64\n")).to.deep.equal({ cpuQuotaUs: 100_000, cpuPeriodUs: 100_000, memoryBytes: 96 * MiB, pidsMax: 64 });
  });
});
