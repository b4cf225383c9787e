/**
 * Where a tenant's files live on the host, and how its daemon is spawned: pure functions of
 * the supervisor config (no I/O). The layout is the one docs/ARCHITECTURE.md shows:
 * `<state>/tenants/<id>/` (config.yaml, logs/daemon.log, the daemon's own state) and
 * `<run>/tenants/<id>/` (api.sock, the VMs' run dirs).
 */
import path from "node:path";
import { daemonProcessEnv } from "../shared/daemon-env.js";
import type { DaemonSpec } from "./daemon-process.js";
import type { SupervisorConfig } from "./supervisor-config.js";

/** The config fields the paths depend on. */
export type TenantPathsConfig = Pick<SupervisorConfig, "stateDir" | "runDir" | "imageDir" | "daemonEntry" | "logs">;

/** Paths of a tenant's files and the spawn spec of its daemon. */
export class TenantPaths {
  private readonly config: TenantPathsConfig;

  constructor(config: TenantPathsConfig) {
    this.config = config;
  }

  /** `<state>/tenants` and `<run>/tenants`: the two directories holding one dir per tenant. */
  tenantsRoots(): [string, string] {
    return [path.join(this.config.stateDir, "tenants"), path.join(this.config.runDir, "tenants")];
  }

  /** `<state>/tenants/<id>`: the tenant's config, logs and daemon state. */
  stateDir(id: string): string {
    return path.join(this.config.stateDir, "tenants", id);
  }

  /** `<run>/tenants/<id>`: the tenant's socket and the VMs' run dirs. */
  runDir(id: string): string {
    return path.join(this.config.runDir, "tenants", id);
  }

  /** `<state>/tenants/<id>/config.yaml`: the rendered daemon config. */
  configPath(id: string): string {
    return path.join(this.stateDir(id), "config.yaml");
  }

  /** `<run>/tenants/<id>/api.sock`: the daemon's Slicer API socket (the gateway's upstream). */
  socketPath(id: string): string {
    return path.join(this.runDir(id), "api.sock");
  }

  /** `<state>/tenants/<id>/logs/daemon.log`: the daemon's stdout and stderr. */
  logFile(id: string): string {
    return path.join(this.stateDir(id), "logs", "daemon.log");
  }

  /**
   * The extension of the supervisor's environment every daemon (and its `purge`) runs with:
   * state, run and image dirs, `NODE_EXTRA_CA_CERTS` removed (`undefined`) and its value as
   * PADDOCK_EXTRA_CA_CERTS (shared/daemon-env.ts `daemonProcessEnv`). `parent`: the supervisor's
   * environment (default `process.env`, read, never changed).
   */
  daemonEnv(parent: NodeJS.ProcessEnv = process.env): Record<string, string | undefined> {
    return daemonProcessEnv(parent, { PADDOCK_STATE_DIR: this.config.stateDir, PADDOCK_RUN_DIR: this.config.runDir, PADDOCK_IMAGE_DIR: this.config.imageDir });
  }

  /** How to spawn the tenant's daemon (supervisor/daemon-process.ts). */
  daemonSpec(id: string): DaemonSpec {
    return { tenantId: id, entry: this.config.daemonEntry, configPath: this.configPath(id), socketPath: this.socketPath(id), logFile: this.logFile(id), env: this.daemonEnv(),
      logRotation: { rotateBytes: this.config.logs.daemonLogBytes, keep: this.config.logs.daemonLogKeep } };
  }
}
