/**
 * The cold-fork routes of the Slicer REST API (Go SDK CommitVM, ListCommits, DeleteCommit,
 * ForkCommittedVM; https://github.com/slicervm/sdk client.go): commit a VM's disk, list and
 * delete commits, fork a commit into a new VM. Every answer is 200, as in Slicer. Thin: parse,
 * call VmService, answer. Paths and auth are in routes.ts.
 */
import express, { type Request } from "express";
import { parseCommitListQuery, parseCommitRequest } from "../vm/commit-request.js";
import type { VmService } from "../vm/vm-service.js";
import { asyncHandler, pathParam } from "./http-util.js";
import type { RouteHandlers } from "./route-mount.js";


/** The SDK sends no body when every field is empty: that is `{}`. */
const bodyOf = (req: Request): unknown => (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined ? {} : req.body);

/**
 * The handlers. Errors are PaddockErrors for the error middleware (http-util.ts): see
 * VmService.commit, listCommits, deleteCommit and fork.
 */
export function createCommitHandlers(vms: VmService): RouteHandlers["commit"] {
  // Lenient JSON as the Slicer API takes it: any content type, an empty body is {}.
  const json = express.json({ type: () => true, limit: "1mb", strict: false });
  return {
    commitVm: [json, asyncHandler(async (req, res) => {
      const h = pathParam(req, "hostname");
      vms.get(h);
      res.status(200).json(await vms.coldFork.commit(h, parseCommitRequest(bodyOf(req))));
    })],
    listCommits: (req, res) => {
      res.status(200).json(vms.coldFork.list(parseCommitListQuery(req.query as Record<string, unknown>)));
    },
    deleteCommit: asyncHandler(async (req, res) => {
      res.status(200).json(await vms.coldFork.remove(pathParam(req, "id")));
    }),
    forkCommit: [json, asyncHandler(async (req, res) => {
      res.status(200).json(await vms.coldFork.fork(pathParam(req, "id"), { wait: req.query.wait, timeout: req.query.timeout }, bodyOf(req)));
    })],
  };
}
