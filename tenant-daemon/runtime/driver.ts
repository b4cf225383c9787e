/**
 * The runtime driver interface (docs/ARCHITECTURE.md): one sandbox ("VM") per id, driven through
 * create → start → (pause/resume) → stop/kill → destroy. The OCI driver (runc/crun) is the
 * embedded default where there is no KVM; a Firecracker driver implements the same
 * interface later.
 */

/** Everything a driver needs to create one VM. Paths are absolute host paths. */
export interface VmRuntimeSpec {
  /** Runtime-wide unique id, deterministic from tenant and VM (`pdk-<tenant>-<hostname>`). */
  id: string;
  /** Guest hostname = VM name. */
  hostname: string;
  /** vCPUs: CFS quota of `cpus` × period. */
  cpus: number;
  /** Memory limit, bytes. */
  ramBytes: number;
  /** pids.max for the VM's cgroup. */
  pidsLimit: number;
  /** Root filesystem (an overlay mount prepared by the storage layer). */
  rootfsDir: string;
  /** Directory for the OCI bundle (config.json). */
  bundleDir: string;
  /**
   * Host directory bound read-only at {@link GUEST_AGENT_DIR}: what the agent reads at boot
   * (boot.json), written and owned by the host, readable by the guest's root only.
   */
  bootDir: string;
  /**
   * Host path of the agent's channel: the driver binds a listening Unix socket here and hands
   * the listener to the guest's init as fd {@link GUEST_AGENT_FD}; the agent accepts on it. The
   * path lies in a host-only directory the guest never sees, so no guest can move or replace
   * it, and only processes of this VM hold the listener.
   */
  agentSocketPath: string;
  /**
   * Set when the driver's {@link RuntimeDriver.agentChannel} is `dial`: a host directory the
   * daemon made and only it writes, holding the listener it bound (`agent.sock`, connectable by
   * the VM's root uid only; tenant-daemon/agent-client/agent-dial-pool.ts). The driver binds it
   * read-only at {@link GUEST_AGENT_DIAL_DIR} (gVisor: with `--host-uds=open`) and starts the
   * agent with `PADDOCK_AGENT_DIAL=<GUEST_AGENT_DIAL_DIR>/agent.sock` instead of an inherited
   * listener; {@link agentSocketPath} is then unused.
   */
  agentDialDir?: string;
  /** Network namespace to join (`/var/run/netns/<name>`); undefined ⇒ a fresh one with loopback only. */
  netnsPath: string | undefined;
  /**
   * The VM's user namespace: a pinned namespace file to join (made with the netns by
   * tenant-daemon/runtime/vm-namespaces.ts, which owns that netns) and its id mapping (guest id
   * 0 = host id `uidStart`, `size` ids, the same for uids and gids). Undefined ⇒ a new user
   * namespace with this mapping is created by the runtime.
   */
  userns: { path: string | undefined; uidStart: number; size: number };
  /** File that receives the guest's console (init, agent and userdata output). Appended to. */
  consoleLogPath: string;
  /**
   * Most bytes of console log kept on disk: the file rotates to `<consoleLogPath>.1` at half of
   * this (see `logcap` in tenant-daemon/runtime/native/paddock-nsutil.c). Undefined ⇒
   * {@link DEFAULT_CONSOLE_LOG_BYTES}.
   */
  consoleLogBytes?: number;
  /** cgroup path relative to the hierarchy root, e.g. `/paddock/<tenant>/<hostname>`. */
  cgroupPath: string;
  /**
   * The guest's init command; undefined ⇒ tini running the guest agent
   * (`DEFAULT_GUEST_ARGS` in oci-spec.ts). Tests and debugging use other commands.
   */
  args?: readonly string[];
  /**
   * Seccomp: `default` (or undefined) ⇒ the VM profile of tenant-daemon/runtime/seccomp.ts;
   * `unconfined` ⇒ none (`paddock.seccomp.<group>: unconfined` in the tenant config).
   */
  seccomp?: "default" | "unconfined";
}

/** Where the (read-only) boot directory appears inside the guest. */
export const GUEST_AGENT_DIR = "/run/paddock-agent";
/** The file descriptor on which the guest's init (and so the agent) inherits the agent listener. */
export const GUEST_AGENT_FD = 3;
/** Where the reverse channel's directory ({@link VmRuntimeSpec.agentDialDir}) appears inside the guest. */
export const GUEST_AGENT_DIAL_DIR = "/run/paddock-dial";
/** File name of the reverse channel's listener in {@link VmRuntimeSpec.agentDialDir}. */
export const AGENT_DIAL_SOCKET_NAME = "agent.sock";
/** Where Paddock's read-only toolbox (node, tini, the agent bundle) appears inside the guest. */
export const GUEST_TOOLBOX_DIR = "/.paddock";

/** Observed state of a sandbox. `absent` = the runtime knows no such id. */
export type RuntimeStatus = "created" | "running" | "paused" | "stopped" | "absent";

/** What the runtime reports for one sandbox id. */
export interface RuntimeState {
  status: RuntimeStatus;
  /** Host pid of the sandbox's init when known. */
  pid: number | undefined;
}

/** One runtime driver. Every method is idempotent where it can be (destroy of an absent id is a no-op). */
export interface RuntimeDriver {
  /** `runc`, `crun`, … */
  readonly name: string;
  /**
   * How its VMs reach the daemon's agent client: `inherited-fd` (the default when undefined) ⇒
   * the driver binds {@link VmRuntimeSpec.agentSocketPath} and hands the listener to the guest;
   * `dial` ⇒ runtimes without fd passing (gVisor 20221219): the daemon binds a listener in
   * {@link VmRuntimeSpec.agentDialDir} and the agent dials out to it
   * (tenant-daemon/agent/reverse-transport.ts).
   */
  readonly agentChannel?: "inherited-fd" | "dial";
  /** Write the bundle and create the sandbox (not yet started). @throws PaddockError ERR_RUNTIME_FAILED */
  create(spec: VmRuntimeSpec): Promise<void>;
  /**
   * Create and start in one step (a leftover of the same id is removed first); the fast path
   * of a VM boot. @returns the state right after start (`running` with its pid, or `stopped`).
   * @throws PaddockError ERR_RUNTIME_FAILED (nothing is left behind)
   */
  run(spec: VmRuntimeSpec): Promise<RuntimeState>;
  /** Start a created sandbox. @throws PaddockError ERR_RUNTIME_FAILED */
  start(id: string): Promise<void>;
  /**
   * SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves when the sandbox has stopped.
   * @returns `forced`: true when the sandbox did not stop in time and was SIGKILLed (also for a
   *   sandbox only created, never started), false when it stopped on SIGTERM or was not running.
   */
  stop(id: string, timeoutMs: number): Promise<{ forced: boolean }>;
  /** Send a signal (e.g. `SIGKILL`) to the sandbox's init. */
  kill(id: string, signal: string): Promise<void>;
  /** Freeze every process of the sandbox. */
  pause(id: string): Promise<void>;
  /** Thaw a paused sandbox. */
  resume(id: string): Promise<void>;
  /**
   * Change a live sandbox's vCPU quota and memory limit (the same rules as at create: quota
   * `cpus × period`, memory+swap = memory where swap is accounted).
   * @throws PaddockError ERR_RUNTIME_FAILED
   */
  update(id: string, resources: { cpus: number; ramBytes: number }): Promise<void>;
  state(id: string): Promise<RuntimeState>;
  /** Force-remove the sandbox and its runtime state; no-op when absent. */
  destroy(id: string): Promise<void>;
  /** Ids of every sandbox the runtime knows that start with `prefix`. */
  list(prefix: string): Promise<string[]>;
  /**
   * Remove the cgroup directory `cgroupParent` (e.g. `/paddock/<tenant>`, the parent of the
   * VMs' cgroup paths) in every hierarchy when it is empty; a busy one is left alone. Runtimes
   * remove only the leaf they made, so call this when the tenant has no sandbox left (purge,
   * shutdown without persistent VMs). Not done in destroy(): racing a concurrent create of a
   * sibling would fail that create.
   */
  pruneCgroups?(cgroupParent: string): Promise<void>;
  /**
   * Suspend to disk; undefined ⇒ the runtime cannot (runc). Writes the running sandbox's
   * memory and processes into `imageDir` (absolute, host-only, must not exist; its parent
   * must), then removes the sandbox: its processes are gone and its memory is given back.
   * `channel` (the reverse agent channel's pool, whose connections are host-backed sockets in
   * the guest) is closed first and the sandbox's end of every connection awaited.
   * @returns the image's size, bytes.
   * @throws PaddockError ERR_RUNTIME_FAILED (when the checkpoint itself failed the sandbox is
   *   gone too: treat it as a crash; see {@link RuntimeState} from {@link state})
   */
  suspend?(id: string, imageDir: string, channel?: { openCount(): number; close(): Promise<void> }): Promise<{ imageBytes: number }>;
  /**
   * Bring back sandbox `id` suspended into `imageDir` by {@link suspend}, from the bundle it
   * was made from (`bundle.bundleDir`'s config.json, kept while suspended; the rootfs mounted at
   * the same path, unchanged since), with its processes and memory as they were. The guest's
   * console goes to `bundle.consoleLogPath` (capped as at create). The image is kept; the
   * caller removes it.
   * @returns the state right after the restore (`running` with its pid).
   * @throws PaddockError ERR_RUNTIME_FAILED (nothing of the restored sandbox is left behind)
   */
  restore?(id: string, imageDir: string, bundle: { bundleDir: string; consoleLogPath: string; consoleLogBytes?: number }): Promise<RuntimeState>;
}

/** Default cap of a VM's console log on disk (`paddock.console_log_bytes`), bytes. */
export const DEFAULT_CONSOLE_LOG_BYTES = 4 * 1024 * 1024;
