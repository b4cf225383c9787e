/**
 * The daemon's own routes: `GET /healthz` (public), `GET /info` and `GET /metrics`
 * (the Slicer REST API's daemon endpoints). Paths and auth are in routes.ts.
 */
import { goArch, type VmService } from "../vm/vm-service.js";
import { PADDOCK_VERSION } from "../../shared/version.js";
import type { DaemonMetrics, EgressVm } from "./metrics.js";
import type { RouteHandlers } from "./route-mount.js";

/** What the daemon routes read. */
export interface DaemonRouteDeps {
  vms: VmService;
  metrics: DaemonMetrics;
  /** The VMs whose host-side links the egress families read (none when absent). */
  egressVms?: () => EgressVm[];
  /** Connections the API server holds open now (0 when absent). */
  openConnections?: () => Promise<number>;
}

/**
 * The handlers: `healthz` answers `OK` (text/plain); `info` `{version, git_commit, platform,
 * arch}` (git_commit from `PADDOCK_GIT_COMMIT`, arch in Go's names); `metrics` the Prometheus
 * text of metrics.ts with VM counts by status, the warm pool, VM egress and the daemon's open
 * files and connections.
 */
export function createDaemonHandlers(deps: DaemonRouteDeps): RouteHandlers["daemon"] {
  const { vms } = deps;
  return {
    healthz: (_req, res) => {
      res.type("text/plain").send("OK");
    },
    info: (_req, res) => {
      res.json({ version: PADDOCK_VERSION, git_commit: process.env.PADDOCK_GIT_COMMIT ?? "", platform: process.platform === "darwin" ? "darwin" : "linux", arch: goArch() });
    },
    metrics: async (_req, res) => {
      const text = await deps.metrics.render({
        vms: () => vms.countsByStatus(),
        warm: () => vms.warmCounts(),
        egressVms: deps.egressVms ?? (() => []),
        openConnections: deps.openConnections ?? (() => Promise.resolve(0)),
      });
      res.type(deps.metrics.contentType).send(text);
    },
  };
}
