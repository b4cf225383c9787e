/**
 * `GET /nodes/stats` and `GET /node/{h}/stats` (spec §2.4): NodeStat arrays; the per-VM route
 * answers a one-element array (spec §5 #6, the Go SDK decodes an array). Other methods ⇒ 405.
 */
import express, { type Router } from "express";
import { PaddockError } from "../../shared/errors.js";
import { asyncHandler } from "./http-util.js";
import type { VmStatsCollector } from "./vm-stats.js";

/** Build the stats router (mounted by the composition root among the daemon's extra routers). */
export function createStatsRouter(collector: VmStatsCollector): Router {
  const router = express.Router({ strict: true, caseSensitive: true });
  router.get("/nodes/stats", asyncHandler(async (_req, res) => {
    res.status(200).json(await collector.all());
  }));
  router.get("/node/:h/stats", asyncHandler(async (req, res) => {
    const h = String(req.params.h ?? "");
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(h)) throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid hostname ${JSON.stringify(h)}`);
    res.status(200).json([await collector.forVm(h)]);
  }));
  const notAllowed = asyncHandler((req, res) => {
    res.setHeader("Allow", "GET");
    throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on ${req.path}`);
  });
  router.all("/nodes/stats", notAllowed);
  router.all("/node/:h/stats", notAllowed);
  return router;
}
