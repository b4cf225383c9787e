/**
 * The runtime drivers' test lab: VMs made straight on a {@link RuntimeDriver} (runc or runsc),
 * without a daemon. It gives a temp dir (0711, so VM roots can traverse it), per-VM disks and
 * overlays from the real debian-12 image (tenant-daemon/storage/vm-storage.ts), a uid range of
 * its own, and a {@link RuntimeVmLab.cleanup} that removes every sandbox, disk, mount, netns,
 * user-namespace pin and cgroup it made, also after a failed test.
 */
import crypto from "node:crypto";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "../../shared/exec.js";
import { resolveImage } from "../../shared/image-store.js";
import type { RuntimeDriver, VmRuntimeSpec } from "../../tenant-daemon/runtime/driver.js";
import { unpinNamespace } from "../../tenant-daemon/runtime/nsutil.js";
import { cgroupMountPoints } from "../../tenant-daemon/runtime/oci-cgroups.js";
import { createVmStorage, type TenantVmStorage } from "../../tenant-daemon/storage/vm-storage.js";
import { TEST_IMAGE_DIR } from "./prerequisites.js";

/** tini then `sleep 1000`: a VM that stays up without the agent. */
export const SLEEP_ARGS: readonly string[] = ["/.paddock/bin/tini", "-s", "--", "/bin/sleep", "1000"];
/** 2^20 bytes. */
export const MiB = 1024 * 1024;

/** Options of {@link RuntimeVmLab.create}. */
export interface RuntimeLabOptions {
  /** First letter of the random tenant id (tells the labs apart in `runc list`). */
  tenantPrefix: string;
  /** Base of the lab's uid range: a random 65 536-id slot above it is used (daemons claim from 2e9). */
  uidBase: number;
  /** Memory of each VM unless a test overrides it. */
  ramBytes: number;
  /**
   * Make the boot dir's parents traversable (0711): runsc's gofer resolves bind sources as the
   * VM's root uid, while runc opens them as host root.
   */
  traversableBootParents?: boolean;
}

/** One lab: see the file's header. */
export class RuntimeVmLab {
  /** The random tenant id in every sandbox id (`pdk-<tenant>-<hostname>`). */
  readonly tenant: string;
  /** The per-lab cgroup parent of every VM. */
  readonly cgroupRoot: string;
  /** The lab's uid range. */
  readonly range: { uidStart: number; size: number };
  /** Netns names and user-namespace pin files a test made; removed by {@link cleanup}. */
  readonly netnsNames: string[] = [];
  readonly usernsPins: string[] = [];
  private readonly hostnames = new Set<string>();
  private driver: RuntimeDriver | undefined;

  private constructor(readonly dir: string, readonly storage: TenantVmStorage, private readonly opts: RuntimeLabOptions, tenant: string, range: { uidStart: number; size: number }) {
    this.tenant = tenant;
    this.cgroupRoot = `/paddock-test-${tenant}`;
    this.range = range;
  }

  /** Make the temp dir and the storage on the debian-12 image of TEST_IMAGE_DIR. */
  static async create(opts: RuntimeLabOptions): Promise<RuntimeVmLab> {
    const imageRootfs = await resolveImage(TEST_IMAGE_DIR, "debian-12");
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-rt-"));
    await fs.chmod(dir, 0o711);
    const range = { uidStart: opts.uidBase + crypto.randomInt(0, 1000) * 65_536, size: 65_536 };
    const storage = createVmStorage({ stateDir: path.join(dir, "state"), runDir: path.join(dir, "run"), imageRootfs, uidRange: range });
    return new RuntimeVmLab(dir, storage, opts, opts.tenantPrefix + crypto.randomBytes(3).toString("hex"), range);
  }

  /** The driver whose sandboxes {@link cleanup} destroys. */
  use<D extends RuntimeDriver>(driver: D): D {
    this.driver = driver;
    return driver;
  }

  /** The sandbox id of VM `hostname`. */
  id(hostname: string): string {
    return `pdk-${this.tenant}-${hostname}`;
  }

  /** Disk (128 MiB) + overlay + boot dir + spec for VM `hostname`; `over` replaces spec fields. */
  async prepareVm(hostname: string, over: Partial<VmRuntimeSpec> = {}): Promise<VmRuntimeSpec> {
    this.hostnames.add(hostname);
    await this.storage.prepare(hostname, 128 * MiB);
    const rootfsDir = await this.storage.mount(hostname);
    const bootDir = path.join(this.dir, "run", "vms", hostname, "boot");
    await fs.mkdir(bootDir, { recursive: true, mode: 0o700 });
    await fs.chown(bootDir, this.range.uidStart, this.range.uidStart);
    if (this.opts.traversableBootParents) for (const d of [path.dirname(bootDir), path.dirname(path.dirname(bootDir))]) await fs.chmod(d, 0o711);
    return {
      id: this.id(hostname),
      hostname,
      cpus: 1,
      ramBytes: this.opts.ramBytes,
      pidsLimit: 64,
      rootfsDir,
      bundleDir: this.storage.paths(hostname).bundleDir,
      bootDir,
      agentSocketPath: path.join(this.dir, "run", "vms", hostname, "agent.sock"),
      netnsPath: undefined,
      userns: { path: undefined, ...this.range },
      consoleLogPath: path.join(this.dir, "state", "logs", `${hostname}.log`),
      cgroupPath: `${this.cgroupRoot}/${hostname}`,
      args: [...SLEEP_ARGS],
      ...over,
    };
  }

  /** Destroy VM `hostname`'s sandbox, unmount and remove its disk. */
  async destroyVm(hostname: string): Promise<void> {
    await this.driver?.destroy(this.id(hostname));
    await this.storage.unmount(hostname);
    await this.storage.remove(hostname);
    this.hostnames.delete(hostname);
  }

  /** The directories of `cgroupPath` that still exist in any mounted hierarchy. */
  async cgroupLeftovers(cgroupPath: string): Promise<string[]> {
    return (await cgroupMountPoints()).map((m) => path.join(m, cgroupPath)).filter((p) => existsSync(p));
  }

  /** Remove everything the lab made; never throws. */
  async cleanup(): Promise<void> {
    for (const name of this.netnsNames) await run("ip", ["netns", "del", name], { allowFailure: true }).catch(() => undefined);
    for (const file of this.usernsPins) await unpinNamespace(file).catch(() => undefined);
    const driver = this.driver;
    if (driver !== undefined) {
      for (const id of await driver.list(`pdk-${this.tenant}-`).catch(() => [] as string[])) await driver.destroy(id).catch(() => undefined);
    }
    for (const h of [...this.hostnames]) await this.destroyVm(h).catch(() => undefined);
    await this.storage.sweep(new Set()).catch(() => undefined);
    await driver?.pruneCgroups?.(this.cgroupRoot).catch(() => undefined);
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}
