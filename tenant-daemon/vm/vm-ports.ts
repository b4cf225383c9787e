/**
 * The ports the VM lifecycle (tenant-daemon/vm/vm-service.ts) is built on besides the runtime
 * driver and the network: per-VM storage and the guest agent. tenant-daemon/main.ts plugs in
 * the adapters (tenant-daemon/storage/vm-storage.ts, tenant-daemon/vm/agent-port.ts).
 */
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";

/** Per-VM storage as the VM service needs it (implemented over tenant-daemon/storage). */
export interface VmStorage {
  /** Create the VM's disk if it does not exist yet (an existing one is kept). */
  prepare(hostname: string, sizeBytes: number): Promise<void>;
  /** Mount disk + overlay; returns the rootfs directory. Idempotent. */
  mount(hostname: string): Promise<string>;
  /** Unmount overlay and disk; idempotent. */
  unmount(hostname: string): Promise<void>;
  /** Remove the disk file; idempotent. */
  remove(hostname: string): Promise<void>;
  /** Unmount and remove what belongs to no VM in `keep`. */
  sweep(keep: ReadonlySet<string>): Promise<void>;
  /** Keep pre-formatted spare disks of these sizes (background; optional). */
  warmPool?(sizesBytes: readonly number[]): void;
  /** Delete every spare disk and stop refilling (daemon stop). */
  drainPool?(): Promise<void>;
  /**
   * Admit a file of at most `maxBytes` about to be written on the state file system (a suspend
   * image, vm-suspend.ts) in the disk ledger until {@link releaseFile} (optional).
   * @throws PaddockError ERR_STORAGE_OVERCOMMIT (507)
   */
  reserveFile?(path: string, maxBytes: number): Promise<void>;
  /** Stop counting a file admitted with {@link reserveFile}; idempotent. */
  releaseFile?(path: string): void;
  /** Bytes used and total of the VM's disk (for stats); undefined when not mounted. */
  usage?(hostname: string): Promise<{ usedBytes: number; totalBytes: number } | undefined>;
}

/**
 * Health answer of the guest agent (`GET /v1/health`, tenant-daemon/agent/agent-app.ts), as far
 * as the lifecycle needs it: the agent's uptime in ns (> 0 once it serves), and whether the VM's
 * userdata has run.
 */
export interface AgentHealthLite {
  agent_uptime: number;
  userdata_ran: boolean;
}

/** What the agent reads at boot (tenant-daemon/agent/boot.ts), as the VM service fills it in. */
export interface AgentBootInput {
  hostname: string;
  userdata: string | undefined;
  /** The guest's /etc/resolv.conf, written by the agent; undefined ⇒ the image's. */
  resolvConf: string | undefined;
  /** Per-boot proof the agent echoes on every answer. */
  proof: string;
  /** Proxy mode (`egress_proxy` host group): the agent gets the proxy environment and CA. */
  egressProxy: boolean;
}

/** The guest agent as the VM service needs it (implemented over tenant-daemon/agent-client). */
export interface AgentPort {
  /** @throws when the agent does not answer within `timeoutMs`, or without its proof. */
  health(endpoint: AgentEndpoint, timeoutMs: number): Promise<AgentHealthLite>;
  /** Write boot.json into the VM's host-only boot dir, owned by `owner` (the VM's root on the host), mode 0600. */
  writeBoot(bootDir: string, boot: AgentBootInput, owner: { uid: number; gid: number }): Promise<void>;
  /**
   * Push the VM's granted secrets (all, or the named ones) to its agent, which makes its
   * secrets dir hold exactly those. @throws when the agent does not answer within `timeoutMs`.
   */
  syncSecrets(endpoint: AgentEndpoint, names: string[] | undefined, timeoutMs: number): Promise<void>;
}
