/**
 * The host-group and VM lifecycle routes of the Slicer REST API: list host groups and nodes,
 * create and delete VMs, describe, tags, shutdown/relaunch/pause/resume, suspend/restore
 * (gVisor; 501 on the OCI driver) and the console log. Handlers are thin: parse, call VmService,
 * shape the response. Paths and auth are in routes.ts.
 */
import { promises as fs, createReadStream } from "node:fs";
import { PaddockError } from "../../shared/errors.js";
import { ALREADY_HEADER, IDLE_CLAIMED_HEADER } from "../../shared/slicer/vm-power.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { parseCreateVmRequest, parseTagFilter, parseTagPatch, parseWaitQuery } from "../vm/vm-request.js";
import type { VmService } from "../vm/vm-service.js";
import { pathParam, type ApiRequest, type Handler } from "./http-util.js";
import { jsonBody } from "./json-body.js";
import type { RouteHandlers } from "./route-mount.js";

/** What the VM routes read. */
export interface VmRouteDeps {
  config: TenantConfig;
  vms: VmService;
  /** Optional describe-VM `network` object provider (`GET /vm/{hostname}`). */
  describeNetwork?: (hostname: string) => unknown;
}

const param = pathParam;

function queryString(req: ApiRequest, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new PaddockError("ERR_QUERY_INVALID", `${name} may be given once`);
  return v;
}

const bodyObject = (req: ApiRequest): unknown => (req.body === undefined || (typeof req.body === "object" && req.body !== null && Object.keys(req.body as object).length === 0 && !req.headers["content-length"] && !req.headers["transfer-encoding"]) ? {} : req.body);

/**
 * The handlers. Errors are PaddockErrors for the one error answer (http-util.ts):
 * ERR_VM_NOT_FOUND and ERR_HOSTGROUP_NOT_FOUND (404) from VmService, ERR_VM_INVALID_REQUEST,
 * ERR_QUERY_INVALID, ERR_BODY_INVALID_JSON (400), ERR_PATH_NOT_FOUND (404, no console log),
 * ERR_VM_UNSUPPORTED (501), and what VmService's methods throw.
 */
export function createVmHandlers(deps: VmRouteDeps): RouteHandlers["vm"] {
  const { vms } = deps;
  // Lenient JSON as the Slicer API takes it (json-body.ts): any content type, an empty body is
  // {}. Only on the routes that read a body; the agent and secrets routes read theirs themselves.
  const listNodes: Handler = (req, res) => {
    res.json(vms.list(parseTagFilter(req.query.tag, req.query.tag_prefix)));
  };
  return {
    listHostGroups: (_req, res) => {
      res.json(vms.hostGroups().map((g) => ({ name: g.name, count: g.count, ram_bytes: g.ramBytes, cpus: g.vcpu, arch: process.arch === "x64" ? "x86_64" : process.arch, gpu_count: g.gpuCount })));
    },
    listGroupNodes: (req, res) => {
      res.json(vms.list(parseTagFilter(req.query.tag, req.query.tag_prefix), param(req, "group")));
    },
    createNode: jsonBody(async (req, res) => {
      const group = vms.hostGroup(param(req, "group"));
      const wait = parseWaitQuery(queryString(req, "wait"), queryString(req, "timeout"));
      const created = await vms.create(group.name, parseCreateVmRequest(bodyObject(req), group), wait);
      res.status(201).json(created);
    }),
    deleteNode: async (req, res) => {
      vms.hostGroup(param(req, "group"));
      const { diskRemoved } = await vms.remove(param(req, "hostname"), { hostGroup: param(req, "group") });
      res.status(200).json({ message: "VM deleted successfully", disk_removed: String(diskRemoved), error: "" });
    },
    listNodes,
    describeVm: (req, res) => {
      const h = param(req, "hostname");
      const node = vms.node(h);
      const r = vms.get(h);
      res.json({
        ...node, ip: node.ip, storage: "image", image: deps.config.image, ...vms.coldFork.lineage(h),
        network: deps.describeNetwork?.(h) ?? { mode: vms.hostGroup(r.hostGroup).network.mode },
      });
    },
    getTags: (req, res) => {
      const h = param(req, "hostname");
      res.json({ hostname: h, tags: vms.get(h).tags });
    },
    patchTags: jsonBody(async (req, res) => {
      const h = param(req, "hostname");
      vms.get(h);
      const tags = await vms.patchTags(h, parseTagPatch(bodyObject(req)));
      res.json({ hostname: h, tags });
    }),
    shutdown: jsonBody(async (req, res) => {
      const h = param(req, "hostname");
      vms.get(h);
      const body = bodyObject(req) as { action?: unknown };
      const raw = queryString(req, "action") ?? (typeof body === "object" && body !== null ? body.action : undefined);
      if (raw !== undefined && raw !== "" && raw !== "shutdown" && raw !== "reboot") throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid action ${JSON.stringify(raw)}: expected shutdown or reboot`);
      // Go sends action=reboot by default; on the OCI driver, as on Firecracker, the default
      // stop leaves the VM stopped. An explicit reboot query from Go is indistinguishable from
      // its default, so reboot also stops unless asked for with `restart=true`.
      const action = raw === "reboot" && req.query.restart === "true" ? "reboot" : "shutdown";
      await vms.transitions.shutdown(h, action);
      res.status(200).type("text/plain").send("OK");
    }),
    relaunch: async (req, res) => {
      res.status(200).json(await vms.transitions.relaunch(param(req, "hostname")));
    },
    // A no-op (the VM was in that state already) answers the same `OK` (the Slicer wire format)
    // with a header saying so: `Paddock-Already: paused|running|suspended` (docs/slicer-api.md);
    // a pause or suspend that took the VM over from the idle rule adds `Paddock-Idle-Claimed`.
    pause: async (req, res) => {
      const r = await vms.transitions.pause(param(req, "hostname"));
      if (r.alreadyPaused) res.setHeader(ALREADY_HEADER, "paused");
      if (r.idleClaimed) res.setHeader(IDLE_CLAIMED_HEADER, "pause");
      res.status(200).type("text/plain").send("OK");
    },
    resume: async (req, res) => {
      if (await vms.transitions.resume(param(req, "hostname"))) res.setHeader(ALREADY_HEADER, "running");
      res.status(200).type("text/plain").send("OK");
    },
    suspend: async (req, res) => {
      const r = await vms.transitions.suspend(param(req, "hostname"));
      if (r.alreadySuspended) res.setHeader(ALREADY_HEADER, "suspended");
      if (r.idleClaimed) res.setHeader(IDLE_CLAIMED_HEADER, "suspend");
      res.status(200).type("text/plain").send("OK");
    },
    restore: async (req, res) => {
      const h = param(req, "hostname");
      vms.get(h);
      // A restored guest has booted already: only the agent can be waited for (no userdata).
      const waitRaw = queryString(req, "wait");
      if (waitRaw === "userdata") throw new PaddockError("ERR_QUERY_INVALID", "invalid wait \"userdata\" for restore: expected agent (a restored VM does not run userdata again)");
      const wait = parseWaitQuery(waitRaw, queryString(req, "timeout"));
      await vms.transitions.restore(h, { wait: wait.wait === "agent" ? "agent" : undefined, timeoutMs: wait.timeoutMs });
      res.status(200).type("text/plain").send("OK");
    },
    logs: async (req, res) => {
      const h = param(req, "hostname");
      vms.get(h);
      const linesRaw = queryString(req, "lines");
      if (linesRaw !== undefined && !/^\d+$/.test(linesRaw)) throw new PaddockError("ERR_QUERY_INVALID", "lines must be a non-negative integer");
      const lines = linesRaw === undefined ? 20 : Number(linesRaw);
      // The console log is kept as `<log>.1` (older) and `<log>` (newest), see the logcap reader
      // of tenant-daemon/runtime/oci-driver.ts; read both, oldest first.
      const log = vms.consoleLogPath(h);
      const content = await tailFile([`${log}.1`, log], lines);
      if (content === undefined) throw new PaddockError("ERR_PATH_NOT_FOUND", `no console log for ${h}`);
      res.json({ hostname: h, lines, content });
    },
  };
}

/**
 * Last `lines` lines (0 ⇒ all) of the concatenation of `files`, oldest file first (missing
 * ones skipped), reading at most the last 4 MiB of it.
 * @returns undefined when none of the files exists.
 */
export async function tailFile(files: string | readonly string[], lines: number): Promise<string | undefined> {
  const list = typeof files === "string" ? [files] : files;
  const sizes: { file: string; size: number }[] = [];
  for (const file of list) {
    try {
      sizes.push({ file, size: (await fs.stat(file)).size });
    } catch {
      // missing: skipped
    }
  }
  if (sizes.length === 0) return undefined;
  // Take the newest 4 MiB: walk from the last file back, then read forwards.
  let budget = 4 * 1024 * 1024;
  const parts: { file: string; start: number; size: number }[] = [];
  for (let i = sizes.length - 1; i >= 0 && budget > 0; i--) {
    const { file, size } = sizes[i] as { file: string; size: number };
    const start = Math.max(0, size - budget);
    budget -= size - start;
    if (size > start) parts.unshift({ file, start, size });
  }
  const chunks: Buffer[] = [];
  for (const { file, start, size } of parts) {
    try {
      for await (const c of createReadStream(file, { start, end: size - 1 })) chunks.push(c as Buffer);
    } catch {
      // rotated away between stat and read: what was read stays
    }
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (lines === 0) return text;
  const all = text.split("\n");
  if (all[all.length - 1] === "") all.pop();
  return all.slice(-lines).join("\n") + (all.length > 0 ? "\n" : "");
}
