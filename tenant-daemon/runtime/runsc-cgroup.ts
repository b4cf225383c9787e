/**
 * Live resource changes of a gVisor sandbox. runsc has no `update` subcommand, so the vCPU
 * quota and memory limit are written to the sandbox's host cgroup, with oci-spec.ts's rules
 * (quota = cpus × {@link CPU_PERIOD_US}; memory+swap = memory where swap is accounted). The
 * files are kernel interfaces under /sys/fs/cgroup, never a guest-writable tree.
 */
import { existsSync, promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { cgroupMountPoints } from "./oci-cgroups.js";
import { CPU_PERIOD_US } from "./oci-spec.js";

/** Write `value` to cgroup file `file`. @throws PaddockError ERR_RUNTIME_FAILED naming the file and the kernel's error. */
async function writeKnob(file: string, value: string): Promise<void> {
  try {
    await fs.writeFile(file, value);
  } catch (err) {
    throw new PaddockError("ERR_RUNTIME_FAILED", `cannot write ${value} to ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Set the vCPU quota and memory limit (bytes) of cgroup `cgroupPath` (absolute, relative to
 * each hierarchy root) in every hierarchy holding it: v1 `cpu.cfs_*` and
 * `memory.limit_in_bytes`/`memory.memsw.limit_in_bytes` (memsw raised first when growing,
 * lowered last when shrinking: the kernel keeps memsw ≥ memory), or v2 `cpu.max`, `memory.max`
 * and `memory.swap.max` 0. Lowering memory below what the sandbox uses fails in the kernel
 * (EBUSY) and is reported.
 * @throws PaddockError ERR_RUNTIME_FAILED (a bad path, no such cgroup, a refused write)
 */
export async function writeCgroupResources(cgroupPath: string, resources: { cpus: number; ramBytes: number }, swapAccounting: boolean): Promise<void> {
  if (!cgroupPath.startsWith("/") || cgroupPath === "/" || cgroupPath.split("/").includes("..")) {
    throw new PaddockError("ERR_RUNTIME_FAILED", `invalid cgroup path ${JSON.stringify(cgroupPath)}`);
  }
  const quota = Math.round(resources.cpus * CPU_PERIOD_US);
  const ram = String(resources.ramBytes);
  let found = false;
  for (const mount of await cgroupMountPoints()) {
    const dir = path.join(mount, cgroupPath);
    if (!existsSync(dir)) continue;
    if (existsSync(path.join(dir, "cpu.max"))) {
      found = true;
      await writeKnob(path.join(dir, "cpu.max"), `${quota} ${CPU_PERIOD_US}`);
    } else if (existsSync(path.join(dir, "cpu.cfs_quota_us"))) {
      found = true;
      await writeKnob(path.join(dir, "cpu.cfs_period_us"), String(CPU_PERIOD_US));
      await writeKnob(path.join(dir, "cpu.cfs_quota_us"), String(quota));
    }
    if (existsSync(path.join(dir, "memory.max"))) {
      found = true;
      await writeKnob(path.join(dir, "memory.max"), ram);
      if (swapAccounting && existsSync(path.join(dir, "memory.swap.max"))) await writeKnob(path.join(dir, "memory.swap.max"), "0");
    } else if (existsSync(path.join(dir, "memory.limit_in_bytes"))) {
      found = true;
      const memsw = path.join(dir, "memory.memsw.limit_in_bytes");
      const withSwap = swapAccounting && existsSync(memsw);
      const current = Number((await fs.readFile(path.join(dir, "memory.limit_in_bytes"), "utf8")).trim());
      const growing = !(resources.ramBytes < current);
      if (withSwap && growing) await writeKnob(memsw, ram);
      await writeKnob(path.join(dir, "memory.limit_in_bytes"), ram);
      if (withSwap && !growing) await writeKnob(memsw, ram);
    }
  }
  if (!found) throw new PaddockError("ERR_RUNTIME_FAILED", `cgroup ${cgroupPath} has no cpu or memory controller on this host`);
}
