/**
 * Finding gVisor's `runsc` on this host: the supervisor checks it before it creates a tenant
 * whose config says `hypervisor: gvisor` (supervisor/tenant-provisioning.ts), with the same
 * search and the same install hint as the daemon's start-up check
 * (tenant-daemon/runtime/runsc-host.ts), so both refuse a missing runsc alike.
 */
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import path from "node:path";

/** The install command named by every "runsc missing" error (Debian's package, scripts/setup.sh). */
export const RUNSC_INSTALL_HINT = "install it with `apt-get install runsc`";

/** The directories searched: PATH, then the standard system dirs (a service manager may trim PATH). */
function searchDirs(envPath: string): string[] {
  return [...envPath.split(":"), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].filter((d) => d !== "");
}

/**
 * Absolute path of an executable regular file `runsc` on `envPath` (default: this process's
 * PATH) or in the system dirs, or undefined when there is none. Synchronous; never throws.
 */
export function findRunscBinary(envPath: string = process.env.PATH ?? ""): string | undefined {
  for (const dir of searchDirs(envPath)) {
    const candidate = path.join(dir, "runsc");
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
