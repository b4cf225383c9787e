/**
 * The cold-fork routes of the Slicer REST API (Go SDK CommitVM, ListCommits, DeleteCommit,
 * ForkCommittedVM; https://github.com/slicervm/sdk client.go): commit a VM's disk, list and
 * delete commits, fork a commit into a new VM. Every answer is 200, as in Slicer. Thin: parse,
 * call VmService, answer. Paths and auth are in routes.ts.
 */
import { parseCommitListQuery, parseCommitRequest } from "../vm/commit-request.js";
import type { VmService } from "../vm/vm-service.js";
import { pathParam, type ApiRequest } from "./http-util.js";
import { jsonBody } from "./json-body.js";
import type { RouteHandlers } from "./route-mount.js";


/** The SDK sends no body when every field is empty: that is `{}`. */
const bodyOf = (req: ApiRequest): unknown => (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined ? {} : req.body);

/**
 * The handlers. Errors are PaddockErrors for the one error answer (http-util.ts): see
 * VmService.commit, listCommits, deleteCommit and fork.
 */
export function createCommitHandlers(vms: VmService): RouteHandlers["commit"] {
  // Lenient JSON as the Slicer API takes it (json-body.ts): any content type, an empty body is {}.
  return {
    commitVm: jsonBody(async (req, res) => {
      const h = pathParam(req, "hostname");
      vms.get(h);
      res.status(200).json(await vms.coldFork.commit(h, parseCommitRequest(bodyOf(req))));
    }),
    listCommits: (req, res) => {
      res.status(200).json(vms.coldFork.list(parseCommitListQuery(req.query as Record<string, unknown>)));
    },
    deleteCommit: async (req, res) => {
      res.status(200).json(await vms.coldFork.remove(pathParam(req, "id")));
    },
    forkCommit: jsonBody(async (req, res) => {
      res.status(200).json(await vms.coldFork.fork(pathParam(req, "id"), { wait: req.query.wait, timeout: req.query.timeout }, bodyOf(req)));
    }),
  };
}
