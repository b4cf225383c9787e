/**
 * The daemon's own routes: `GET /healthz` (public), `GET /info` and `GET /metrics`
 * (the Slicer REST API's daemon endpoints). Paths and auth are in routes.ts.
 */
import { goArch, type VmService } from "../vm/vm-service.js";
import { PADDOCK_VERSION } from "../../shared/version.js";
import type { DaemonMetrics } from "./metrics.js";
import type { RouteHandlers } from "./route-mount.js";

/** What the daemon routes read. */
export interface DaemonRouteDeps {
  vms: VmService;
  metrics: DaemonMetrics;
}

/**
 * The handlers: `healthz` answers `OK` (text/plain); `info` `{version, git_commit, platform,
 * arch}` (git_commit from `PADDOCK_GIT_COMMIT`, arch in Go's names); `metrics` the Prometheus
 * text of metrics.ts with VM counts by status and the warm pool.
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
    metrics: (_req, res) => {
      res.type("text/plain; version=0.0.4").send(deps.metrics.render(vms.countsByStatus(), vms.warmCounts()));
    },
  };
}
