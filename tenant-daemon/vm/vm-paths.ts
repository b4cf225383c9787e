/**
 * Where each VM's pieces live on the host and what the runtime calls its sandbox. Every name is
 * derived from the tenant id and the VM's hostname alone, so a start-up sweep finds everything a
 * killed daemon left (tenant-daemon/vm/vm-reconcile.ts).
 */
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import type { PaddockSettings } from "../../shared/tenant-config.js";
import { AgentDialPools } from "../agent-client/agent-dial-pool.js";
import type { AgentEndpoint } from "../agent-client/agent-endpoint.js";
import { AGENT_DIAL_SOCKET_NAME } from "../runtime/driver.js";
import { tenantCgroupPath } from "../runtime/tenant-cgroup.js";
import type { VmRecord } from "./vm-types.js";

/** The per-VM paths and ids of one tenant, from its `paddock:` settings (tenant id, run and state dirs). */
export class VmPaths {
  private readonly paddock: PaddockSettings;
  private readonly agentChannel: "inherited-fd" | "dial";
  /** The reverse-channel listeners of the tenant's VMs that have one (runtimes with `agentChannel: dial`). */
  readonly dialPools = new AgentDialPools();

  /**
   * @param agentChannel - the runtime's `agentChannel` (tenant-daemon/runtime/driver.ts); with
   *   `dial` (gVisor) a VM's agent is reached only through its reverse channel's pool.
   */
  constructor(paddock: PaddockSettings, agentChannel: "inherited-fd" | "dial" = "inherited-fd") {
    this.paddock = paddock;
    this.agentChannel = agentChannel;
  }

  /** Prefix of every runtime id of the tenant: `pdk-<tenant>-`. */
  containerPrefix(): string {
    return `pdk-${this.paddock.tenantId}-`;
  }
  /** Runtime id of a VM: `pdk-<tenant>-<hostname>` (deterministic, so a sweep finds it). */
  containerId(hostname: string): string {
    return `${this.containerPrefix()}${hostname}`;
  }
  /** Host-only dir of the VM's agent channel (0700): the agent listener and the boot dir. Never mounted into the guest. */
  agentDir(hostname: string): string {
    return path.join(this.paddock.runDir, "vms", hostname);
  }
  /**
   * The host-made dirs a bind source below {@link agentDir} is reached through, outermost
   * first: `<run>/vms` and `<run>/vms/<hostname>` (for runtimes whose VM root must traverse them).
   */
  agentDirChain(hostname: string): string[] {
    return [path.dirname(this.agentDir(hostname)), this.agentDir(hostname)];
  }
  /** The boot dir (boot.json), bound read-only into the guest; owned by the VM's root. */
  bootDir(hostname: string): string {
    return path.join(this.agentDir(hostname), "boot");
  }
  /** The agent listener on the host (bound by the runtime, accepted on inside the VM). */
  agentSocket(hostname: string): string {
    return path.join(this.agentDir(hostname), "agent.sock");
  }
  /** Host-only dir of the reverse channel's listener, bound read-only into the guest (runtimes with `agentChannel: dial`). */
  agentDialDir(hostname: string): string {
    return path.join(this.agentDir(hostname), "agent-dial");
  }
  /** The reverse channel's listener, which the agent dials (agent-dial-pool.ts). */
  agentDialSocket(hostname: string): string {
    return path.join(this.agentDialDir(hostname), AGENT_DIAL_SOCKET_NAME);
  }
  /**
   * How to reach a VM's agent, and the proof its answers carry ("" before its first boot): its
   * reverse channel's pool when it has one, else the inherited listener's path. A `dial`
   * tenant's VM is never reached by path.
   * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE (503): a `dial` tenant's VM without an open pool.
   */
  endpoint(r: VmRecord): AgentEndpoint {
    const dial = this.dialPools.get(r.hostname);
    if (dial !== undefined) return { hostname: r.hostname, socketPath: dial.socketPath, proof: r.agentProof ?? "", dial };
    if (this.agentChannel === "dial") throw new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the agent channel of VM ${r.hostname} is not open`);
    return { hostname: r.hostname, socketPath: this.agentSocket(r.hostname), proof: r.agentProof ?? "" };
  }
  /** The VM's console log (init, agent and userdata output). */
  consoleLogPath(hostname: string): string {
    return path.join(this.paddock.stateDir, "logs", `${hostname}.log`);
  }
  /**
   * The VM's cgroup path, relative to each hierarchy root: `/paddock/<tenant>/<hostname>`, below
   * the tenant's budget cgroup (tenant-daemon/runtime/tenant-cgroup.ts); the runtime makes it at
   * boot and removes it at teardown.
   */
  cgroupPath(hostname: string): string {
    return `${tenantCgroupPath(this.paddock.tenantId)}/${hostname}`;
  }
  /** The VM's OCI bundle dir (config.json), made at boot. */
  bundleDir(hostname: string): string {
    return path.join(this.paddock.runDir, "bundles", hostname);
  }
  /** The dirs under the run dir holding one entry per VM (agent dirs, bundles), for the sweep. */
  perVmRunDirs(): string[] {
    return ["vms", "bundles"].map((dir) => path.join(this.paddock.runDir, dir));
  }
}
