/**
 * Each VM's user namespace, and the network namespace it owns.
 *
 * A VM's root is an unprivileged host uid: the VM runs in a user namespace mapping its ids
 * 0..size-1 to the tenant's range (shared/uid-ranges.ts). Its network namespace must belong to
 * that same user namespace, or the guest could neither mount sysfs nor use its own network
 * capabilities (bind a port below 1024, raw sockets for ping), as user_namespaces(7) says of
 * namespace ownership. So the daemon makes the pair before the VM starts, with
 * `paddock-nsutil pin`, and the runtime joins both:
 *
 * ```
 * <runDir>/userns/<hostname>        the user namespace (nsfs bind mount)
 * /var/run/netns/<netns name>        the network namespace (nsfs bind mount, as `ip netns add`)
 * ```
 * The netns is removed by the network layer (`ip netns del`); the userns pin by {@link VmNamespaces.remove}.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import type { Logger } from "../../shared/logger.js";
import type { UidRange } from "../../shared/uid-ranges.js";
import { errnoCode } from "../../shared/errors.js";
import { pinUserAndNetns, unpinNamespace } from "./nsutil.js";

/** Where `ip netns` keeps named network namespaces (ip-netns(8)). */
const NETNS_DIR = "/var/run/netns";

/** The user-namespace pins of one tenant's VMs. */
export class VmNamespaces {
  private readonly dir: string;

  /** `runDir`: the tenant's run dir; `range`: the tenant's id range. */
  constructor(runDir: string, readonly range: UidRange, private readonly logger: Logger) {
    this.dir = path.join(runDir, "userns");
  }

  /** Host path of the VM's user-namespace pin. */
  usernsPath(hostname: string): string {
    return path.join(this.dir, hostname);
  }

  /**
   * Make the VM's user namespace and its network namespace `/var/run/netns/<netnsName>`, with
   * IPv6 off by default in the netns (see {@link pinUserAndNetns}: the VM's `eth0`, made later,
   * inherits it). A pin left by a crashed earlier attempt is removed first; the common case,
   * no pin, costs a stat instead of an `umount` spawn.
   * @throws PaddockError ERR_NETWORK_SETUP_FAILED (nothing left behind)
   */
  async create(hostname: string, netnsName: string): Promise<void> {
    const userns = this.usernsPath(hostname);
    if (await pathExists(userns)) await unpinNamespace(userns);
    await pinUserAndNetns(userns, path.join(NETNS_DIR, netnsName), this.range, { disableIpv6: true });
  }

  /** Remove the VM's user-namespace pin (idempotent). */
  async remove(hostname: string): Promise<void> {
    await unpinNamespace(this.usernsPath(hostname));
  }

  /** Remove the pins of VMs not in `keep` (crash leftovers). */
  async sweep(keep: ReadonlySet<string>): Promise<void> {
    for (const entry of await fs.readdir(this.dir).catch(() => [] as string[])) {
      if (keep.has(entry)) continue;
      this.logger.warn("removing orphan user-namespace pin", { hostname: entry });
      await unpinNamespace(path.join(this.dir, entry)).catch((err: unknown) => this.logger.error("orphan user-namespace pin removal failed", { hostname: entry, err }));
    }
  }
}

/**
 * Whether anything is at `file` (lstat; a symlink counts). A mount point cannot be unlinked
 * (EBUSY), so ENOENT also means nothing is mounted there.
 * @throws the lstat error other than ENOENT.
 */
async function pathExists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return false;
    throw err;
  }
}
