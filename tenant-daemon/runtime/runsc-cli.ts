/**
 * The `runsc` command line of one tenant, and what differs from runc in how a sandbox is named,
 * found and configured (docs/gvisor-findings.md, measured on runsc 0.0~20221219):
 * - runsc does not persist its global flags: `start`, `restore` and `checkpoint` re-read
 *   `--network`, `--platform`, …, so every call carries the same ones ({@link RunscCli}).
 * - The state root is private to the tenant (`--root`); a container is a file pair
 *   `<root>/<sandboxId>_sandbox:<containerId>.state` (+ `.lock`), not a directory.
 * - runsc resolves a container id by prefix: with `a-1` and `a-10` both present, `a-1` is
 *   "ambiguous". Paddock's ids (`pdk-<tenant>-<hostname>`, hostnames of `[a-z0-9-]`) get the
 *   terminator `_` ({@link runscId}), so no id is a prefix of another.
 */
import { readdirOrEmpty } from "../../shared/read-dir.js";
import type { RunResult } from "../../shared/exec.js";
import { OciRuntimeCli } from "./oci-runtime-cli.js";
import type { RunscPlatform } from "./runsc-host.js";

/** The terminator appended to every Paddock id to make runsc's ids prefix-free. */
const ID_TERMINATOR = "_";
/** A runsc state file name: `<sandboxId>_sandbox:<containerId>.state`. */
const STATE_FILE = /^.+_sandbox:(.+)\.state$/;

/** The runsc container id of Paddock sandbox `id` (`<id>_`). */
export function runscId(id: string): string {
  return id + ID_TERMINATOR;
}

/** The Paddock id of runsc container `rid`, or undefined when `rid` is not one of Paddock's. */
export function paddockId(rid: string): string | undefined {
  return rid.endsWith(ID_TERMINATOR) && rid.length > 1 ? rid.slice(0, -1) : undefined;
}

/** Global flags of every runsc call of one tenant. */
export interface RunscGlobals {
  /** Private state root of the tenant (absolute; made 0700 by the driver). */
  root: string;
  platform: RunscPlatform;
}

/** runsc's `--network`: `none` (loopback only) or `sandbox` (gVisor's netstack over the VM's netns). */
export type RunscNetwork = "none" | "sandbox";

/**
 * The global flags of one sandbox: the private root, the platform, and its network mode. runsc
 * re-reads them on `start` (and `restore`, `checkpoint`), so a sandbox's calls carry the same
 * ones; the network mode follows from its config.json (a netns path ⇒ `sandbox`). No
 * `--oci-seccomp`: with it runsc ignores `errnoRet` and node in the guest aborts (§4).
 * `--host-uds=open`: the guest may connect to a host Unix socket bound into it (the daemon's
 * reverse agent channel, tenant-daemon/agent-client/agent-dial-pool.ts), and nothing more: it
 * cannot create host sockets (`create`), so a guest's `listen` never makes a file on the host.
 */
export function runscGlobalFlags(g: RunscGlobals, network: RunscNetwork = "none"): string[] {
  return [`--root=${g.root}`, `--platform=${g.platform}`, `--network=${network}`, "--host-uds=open"];
}

/**
 * {@link OciRuntimeCli} for runsc: every command gets the tenant's global flags first
 * (`--network=none` for commands that do not set up the network: state, exec, kill, pause,
 * resume, delete; {@link RunscCli.flags} for the others).
 */
export class RunscCli extends OciRuntimeCli {
  readonly globals: readonly string[];
  private readonly g: RunscGlobals;

  /**
   * @param binary - absolute path of runsc.
   * @param globals - the tenant's root and platform.
   * @param timeoutMs - timeout of each command, ms.
   */
  constructor(binary: string, globals: RunscGlobals, timeoutMs: number) {
    super("runsc", binary, timeoutMs);
    this.g = globals;
    this.globals = runscGlobalFlags(globals);
  }

  /** The global flags with network mode `network`. */
  flags(network: RunscNetwork): string[] {
    return runscGlobalFlags(this.g, network);
  }

  /** See {@link OciRuntimeCli.exec}; the global flags go before `args`. @throws PaddockError ERR_RUNTIME_FAILED */
  override async exec(args: string[], opts: { allowFailure?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return super.exec([...this.globals, ...args], opts);
  }
}

/**
 * runsc container ids in state root `root` (from its `*.state` files), sorted; [] when the
 * root does not exist. Read directly: no spawn, and no failure when another container is
 * deleted meanwhile.
 * @throws the readdir error other than ENOENT.
 */
export async function listRunscIds(root: string): Promise<string[]> {
  return (await readdirOrEmpty(root)).flatMap((e) => STATE_FILE.exec(e)?.[1] ?? []).sort();
}
