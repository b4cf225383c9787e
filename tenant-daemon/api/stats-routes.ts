/**
 * `GET /nodes/stats` and `GET /node/{hostname}/stats`: NodeStat arrays (vm-stats.ts). The
 * per-VM route answers a one-element array, because the Go SDK decodes an array. Paths and
 * auth are in routes.ts.
 */
import { PaddockError } from "../../shared/errors.js";
import type { RouteHandlers } from "./route-mount.js";
import type { VmStatsCollector } from "./vm-stats.js";

/**
 * The handlers. Errors get the one error answer (http-util.ts): ERR_VM_INVALID_REQUEST (400) for a hostname
 * that is not `[A-Za-z0-9][A-Za-z0-9.-]*`, and what the collector throws (ERR_VM_NOT_FOUND 404).
 */
export function createStatsHandlers(collector: VmStatsCollector): RouteHandlers["stats"] {
  return {
    allNodes: async (_req, res) => {
      res.status(200).json(await collector.all());
    },
    oneNode: async (req, res) => {
      const h = String(req.params.hostname ?? "");
      if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(h)) throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid hostname ${JSON.stringify(h)}`);
      res.status(200).json([await collector.forVm(h)]);
    },
  };
}
