/**
 * What the OCI driver needs from the host before it can run anything: which runtime binary
 * (runc or crun) to use, where Paddock's project root and guest toolbox are, and whether the
 * kernel accounts swap per cgroup. Pure decisions ({@link chooseOciRuntime}) are separate from
 * the probes that feed them, so the unit tests can check the rule without a host.
 */
import { constants as fsConstants, promises as fs, existsSync } from "node:fs";
import path from "node:path";
import { findProjectRoot } from "../../shared/proc.js";
import { PaddockError } from "../../shared/errors.js";
import type { OciToolbox } from "./oci-spec.js";

/** Which OCI runtime to use; `auto` = crun on a pure cgroup-v2 host with crun installed, else runc. */
export type OciRuntimePreference = "auto" | "runc" | "crun";
/** The OCI runtimes Paddock drives. */
export type OciRuntimeName = "runc" | "crun";

/** Host facts {@link chooseOciRuntime} decides on. */
export interface OciHostFacts {
  /** `/sys/fs/cgroup/cgroup.controllers` exists (unified hierarchy only). */
  cgroupV2: boolean;
  /** Absolute path of each runtime found on PATH. */
  binaries: { runc: string | undefined; crun: string | undefined };
}

/**
 * Pick the OCI runtime (pure). Rule: `auto` ⇒ crun when the host is pure cgroup v2 and crun
 * is installed, otherwise runc. crun is only used on cgroup v2: on hybrid/v1 hosts it is the
 * less-tested path and fails on this project's reference host.
 * @returns the runtime name and binary path
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE naming the Debian package to install.
 */
export function chooseOciRuntime(preference: OciRuntimePreference, facts: OciHostFacts): { name: OciRuntimeName; binary: string } {
  const { runc, crun } = facts.binaries;
  if (preference === "crun" || (preference === "auto" && facts.cgroupV2 && crun !== undefined)) {
    if (crun === undefined) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", "paddock.runtime is crun but crun is not on PATH; install it with `apt-get install crun`");
    if (!facts.cgroupV2) {
      throw new PaddockError(
        "ERR_RUNTIME_UNAVAILABLE",
        "paddock.runtime is crun but this host is not pure cgroup v2 (/sys/fs/cgroup/cgroup.controllers is missing); use runtime runc (apt-get install runc)",
      );
    }
    return { name: "crun", binary: crun };
  }
  if (runc === undefined) {
    throw new PaddockError(
      "ERR_RUNTIME_UNAVAILABLE",
      `no usable OCI runtime: runc is not on PATH; install it with \`apt-get install runc\`${facts.cgroupV2 ? " (or `apt-get install crun`)" : ""}`,
    );
  }
  return { name: "runc", binary: runc };
}

/** Absolute path of `name` on `PATH` (executable regular file), or undefined. */
export async function findOnPath(name: string, envPath = process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"): Promise<string | undefined> {
  for (const dir of envPath.split(":")) {
    if (dir === "") continue;
    const candidate = path.join(dir, name);
    try {
      const st = await fs.stat(candidate);
      if (!st.isFile()) continue;
      await fs.access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Detect the OCI runtime on this host (see {@link chooseOciRuntime}).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE
 */
export async function detectOciRuntime(preference: OciRuntimePreference): Promise<{ name: OciRuntimeName; binary: string }> {
  // PATH plus the standard system dirs: a daemon started by a supervisor or unit with a
  // trimmed PATH (no sbin) must still find /usr/sbin/runc.
  const searchPath = [process.env.PATH ?? "", "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].join(":");
  const facts: OciHostFacts = {
    cgroupV2: existsSync("/sys/fs/cgroup/cgroup.controllers"),
    binaries: { runc: await findOnPath("runc", searchPath), crun: await findOnPath("crun", searchPath) },
  };
  return chooseOciRuntime(preference, facts);
}


/**
 * The default toolbox: this process's node, `/usr/bin/tini-static`, and `dist/toolbox` (the
 * agent bundle and node-pty, made by `npm run build`).
 * @throws PaddockError ERR_RUNTIME_UNAVAILABLE when tini-static or the built toolbox is missing.
 */
export function defaultToolbox(): OciToolbox {
  const tiniPath = "/usr/bin/tini-static";
  if (!existsSync(tiniPath)) throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `${tiniPath} not found; install it with \`apt-get install tini\``);
  const appDir = path.join(findProjectRoot(), "dist", "toolbox");
  if (!existsSync(path.join(appDir, "agent.cjs"))) {
    throw new PaddockError("ERR_RUNTIME_UNAVAILABLE", `the guest toolbox ${appDir}/agent.cjs is missing; run \`npm run build\``);
  }
  return { nodePath: process.execPath, tiniPath, appDir };
}

/** True when the kernel accounts swap per cgroup (v1 `memory.memsw.*`, or cgroup v2). */
export function hostHasSwapAccounting(): boolean {
  return existsSync("/sys/fs/cgroup/cgroup.controllers") || existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
}
