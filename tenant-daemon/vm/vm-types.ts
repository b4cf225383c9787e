/**
 * VM records (the state file) and wire shapes of the tenant daemon: the JSON of the Slicer REST
 * API (https://docs.slicervm.com); the lifecycle is in README.md "How it behaves (the lifecycle)".
 */
import type { VmNetworkOverride } from "../network/network.js";

/**
 * What a secret delivery to one VM came to (vm-secrets-sync.ts; its last push, the one that read
 * the store last): `delivered`, or `err`, why not (the agent did not answer within 60 s or
 * refused the push; the VM was not running when its turn came: PaddockError ERR_VM_NOT_RUNNING).
 */
export type SecretsDelivery = { delivered: true } | { delivered: false; err: unknown };

/** What is persisted per VM in `<state>/state.json`. */
export interface VmRecord {
  hostname: string;
  hostGroup: string;
  /** N of `<hostgroup>-N`. */
  index: number;
  cpus: number;
  ramBytes: number;
  storageSizeBytes: number;
  /** Survives daemon restarts and guest exits (API `persistent: true`, and every config VM). */
  persistent: boolean;
  /** Created from `count: N`: DELETE ⇒ 403, relaunched on every daemon start. */
  protected: boolean;
  tags: string[];
  /** RFC3339. */
  createdAt: string;
  /** `a.b.c.d/prefix`, or "" when the VM has no network address. */
  ipCidr: string;
  userdata: string | undefined;
  /** Secret names this VM may read (the create body's `secrets`); undefined ⇒ all of the tenant's. */
  secrets: string[] | undefined;
  network: VmNetworkOverride | undefined;
  /** What the operator last asked for; a persistent VM that is `stopped` stays down on restart. */
  desired: "running" | "stopped";
  /**
   * A warm-pool VM: booted ahead with the host group's defaults and not yet handed out (not
   * listed, not counted against limits). Removed on daemon restart like an ephemeral VM.
   */
  pooled?: boolean;
  /**
   * The per-boot secret the VM's agent must echo on every answer (tenant-daemon/agent-client/
   * agent-endpoint.ts); new at every boot, kept here so a restarted daemon can check the agents
   * of the VMs it re-attaches.
   */
  agentProof?: string;
  /** The commit this VM was forked from (`POST /vm/commits/{id}/fork`); GET /vm/{h} `parent_commit_id`. */
  parentCommitId?: string;
  /**
   * Set while the VM is suspended to disk (tenant-daemon/vm/vm-suspend.ts): its image's size
   * (bytes) and when it was taken (RFC3339). A restarted daemon keeps such a VM suspended.
   */
  suspended?: { imageBytes: number; at: string };
  /**
   * Set while the VM is paused or suspended by its host group's idle rule (tenant-daemon/vm/
   * vm-idle.ts), not by a client: a request for it wakes it. Kept across daemon restarts.
   */
  idle?: { action: "pause" | "suspend"; at: string };
}

/** The daemon's state file. */
export interface DaemonState {
  schemaVersion: 1;
  tenantId: string;
  /**
   * Highest N handed out per host group (names are never handed out twice, even across restarts). Names
   * held only by warm-pool VMs are not counted: they were never handed out.
   */
  counters: Record<string, number>;
  vms: Record<string, VmRecord>;
}

/** Live status of a VM, in memory. `Stopped` is the only one a non-running VM can have. */
export type VmPhase = "creating" | "running" | "paused" | "suspended" | "stopping" | "stopped" | "deleting";

/** Slicer `status` strings. */
export type WireStatus = "Running" | "Paused" | "Suspended" | "Stopped";

/** A Node object as listed by `GET /nodes` and `GET /hostgroup/{g}/nodes`. */
export interface NodeWire {
  hostname: string;
  hostgroup: string;
  ip: string;
  ram_bytes: number;
  cpus: number;
  created_at: string;
  arch: string;
  tags: string[];
  status: WireStatus;
  persistent: boolean;
}

/** The create / relaunch response (`POST /hostgroup/{g}/nodes`, `POST /vm/{h}/relaunch`). */
export interface CreateResponseWire {
  hostname: string;
  hostgroup: string;
  ip: string;
  created_at: string;
  arch: string;
  persistent: boolean;
}
