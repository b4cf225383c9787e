/**
 * The tenant daemon's HTTP API: the host-group and VM half of the Slicer REST API (spec §2.1–
 * §2.4), on a Unix socket or TCP with bearer auth (spec §1.1–§1.2). Routes are thin: parse,
 * call the VM service, shape the response.
 */
import { promises as fs, createReadStream } from "node:fs";
import http from "node:http";
import path from "node:path";
import net from "node:net";
import type { Duplex } from "node:stream";
import crypto from "node:crypto";
import express, { type Request, type Response, type Router } from "express";
import { PaddockError } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { TenantConfig } from "../../shared/tenant-config.js";
import { parseCreateVmRequest, parseTagFilter, parseTagPatch, parseWaitQuery } from "../vm/vm-request.js";
import { goArch, type VmService } from "../vm/vm-service.js";
import { asyncHandler, encodedQueryShim, errorMiddleware, notFoundHandler, type KnownRoute } from "./http-util.js";
import type { DaemonMetrics } from "./metrics.js";
import { BODY_IDLE_TIMEOUT_MS, boundRequestBodyIdle } from "../../shared/body-idle-timeout.js";
import { clientErrorReply, httpJsonAnswer, requestTargetProblem } from "../../shared/http-input.js";

/** Paddock's version as reported by `/info`. */
export const PADDOCK_VERSION = "0.1.0";

/** What the API server is built from. */
export interface ApiServerDeps {
  config: TenantConfig;
  vms: VmService;
  metrics: DaemonMetrics;
  logger: Logger;
  /** Bearer token when auth is enabled (TCP). */
  authToken: string | undefined;
  /** Extra routers mounted before the 404 handler (the agent-backed VM endpoints, secrets). */
  extraRouters?: Router[];
  /** Optional describe-VM `network` object provider (spec §2.2 `GET /vm/{h}`). */
  describeNetwork?: (hostname: string) => unknown;
}

const H = "([^/]+)";
/** Every route the daemon serves, for 404-vs-405 (spec §1.3). */
export const KNOWN_ROUTES: KnownRoute[] = [
  { pattern: /^\/healthz$/, methods: ["GET", "HEAD"] },
  { pattern: /^\/info$/, methods: ["GET"] },
  { pattern: /^\/metrics$/, methods: ["GET"] },
  { pattern: /^\/hostgroup$/, methods: ["GET"] },
  { pattern: new RegExp(`^/hostgroup/${H}/nodes$`), methods: ["GET", "POST"] },
  { pattern: new RegExp(`^/hostgroup/${H}/nodes/${H}$`), methods: ["DELETE"] },
  { pattern: /^\/(nodes|devices)$/, methods: ["GET"] },
  { pattern: new RegExp(`^/vm/${H}$`), methods: ["GET"] },
  { pattern: new RegExp(`^/vm/${H}/tags$`), methods: ["GET", "PATCH"] },
  { pattern: new RegExp(`^/vm/${H}/(shutdown|relaunch|pause|resume|suspend|restore)$`), methods: ["POST"] },
  { pattern: new RegExp(`^/vm/${H}/logs$`), methods: ["GET"] },
  { pattern: new RegExp(`^/vm/${H}/health$`), methods: ["GET", "HEAD"] },
  { pattern: new RegExp(`^/vm/${H}/exec$`), methods: ["GET", "POST"] },
  { pattern: new RegExp(`^/vm/${H}/cp$`), methods: ["GET", "POST"] },
  { pattern: /^\/secrets$/, methods: ["GET", "POST"] },
  { pattern: new RegExp(`^/secrets/${H}$`), methods: ["PATCH", "DELETE"] },
];

function param(req: Request, name: string): string {
  const v = req.params[name];
  if (typeof v !== "string" || v.length === 0) throw new PaddockError("ERR_BAD_REQUEST", `missing ${name}`);
  return v;
}

function queryString(req: Request, name: string): string | undefined {
  const v = req.query[name];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new PaddockError("ERR_QUERY_INVALID", `${name} may be given once`);
  return v;
}

/** Build the Express app (no listener). */
export function createApiApp(deps: ApiServerDeps): express.Express {
  const { vms, logger } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.set("strict routing", true);
  app.set("case sensitive routing", true);
  app.set("etag", false);
  app.set("query parser", "extended");

  // Before anything decodes the path (the shim, the router's params, the agent router).
  app.use((req, _res, next) => {
    const bad = requestTargetProblem(req.url);
    next(bad === undefined ? undefined : new PaddockError("ERR_URL_MALFORMED", bad));
  });
  app.use(encodedQueryShim);
  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on("finish", () => deps.metrics.request(req.method, res.statusCode, Number(process.hrtime.bigint() - started) / 1e9));
    next();
  });
  if (deps.authToken !== undefined) {
    const expected = crypto.createHash("sha256").update(deps.authToken).digest();
    app.use((req, res, next) => {
      if (req.path === "/healthz") return next();
      const header = req.headers.authorization ?? "";
      const m = /^Bearer (.*)$/i.exec(header);
      const given = crypto.createHash("sha256").update(m?.[1] ?? "").digest();
      if (!m || !crypto.timingSafeEqual(given, expected)) {
        res.status(401).json({ error: "unauthorized", code: "ERR_AUTH_REQUIRED" });
        return;
      }
      next();
    });
  }

  // Lenient JSON (spec §1.4): any content type, empty body ⇒ {}. Only on our own routes; the
  // agent-backed routes stream their bodies.
  const json = express.json({ type: () => true, limit: "1mb", strict: false });
  const bodyObject = (req: Request): unknown => (req.body === undefined || (typeof req.body === "object" && req.body !== null && Object.keys(req.body as object).length === 0 && !req.headers["content-length"] && !req.headers["transfer-encoding"]) ? {} : req.body);

  app.get("/healthz", (_req, res) => {
    res.type("text/plain").send("OK");
  });
  app.get("/info", (_req, res) => {
    res.json({ version: PADDOCK_VERSION, git_commit: process.env.PADDOCK_GIT_COMMIT ?? "", platform: process.platform === "darwin" ? "darwin" : "linux", arch: goArch() });
  });
  app.get("/metrics", (_req, res) => {
    res.type("text/plain; version=0.0.4").send(deps.metrics.render(vms.countsByStatus(), vms.warmCounts()));
  });
  app.get("/hostgroup", (_req, res) => {
    res.json(vms.hostGroups().map((g) => ({ name: g.name, count: g.count, ram_bytes: g.ramBytes, cpus: g.vcpu, arch: process.arch === "x64" ? "x86_64" : process.arch, gpu_count: g.gpuCount })));
  });
  app.get("/hostgroup/:g/nodes", (req, res) => {
    res.json(vms.list(parseTagFilter(req.query.tag, req.query.tag_prefix), param(req, "g")));
  });
  app.post("/hostgroup/:g/nodes", json, asyncHandler(async (req, res) => {
    const group = vms.hostGroup(param(req, "g"));
    const wait = parseWaitQuery(queryString(req, "wait"), queryString(req, "timeout"));
    const created = await vms.create(group.name, parseCreateVmRequest(bodyObject(req), group), wait);
    res.status(201).json(created);
  }));
  app.delete("/hostgroup/:g/nodes/:h", asyncHandler(async (req, res) => {
    vms.hostGroup(param(req, "g"));
    const { diskRemoved } = await vms.remove(param(req, "h"), { hostGroup: param(req, "g") });
    res.status(200).json({ message: "VM deleted successfully", disk_removed: String(diskRemoved), error: "" });
  }));
  const listAll = (req: Request, res: Response): void => {
    res.json(vms.list(parseTagFilter(req.query.tag, req.query.tag_prefix)));
  };
  app.get("/nodes", listAll);
  app.get("/devices", listAll);
  app.get("/vm/:h", (req, res) => {
    const h = param(req, "h");
    const node = vms.node(h);
    const r = vms.get(h);
    res.json({
      ...node, ip: node.ip, storage: "image", image: deps.config.image, commit_id: "", parent_commit_id: "",
      network: deps.describeNetwork?.(h) ?? { mode: vms.hostGroup(r.hostGroup).network.mode },
    });
  });
  app.get("/vm/:h/tags", (req, res) => {
    const h = param(req, "h");
    res.json({ hostname: h, tags: vms.get(h).tags });
  });
  app.patch("/vm/:h/tags", json, asyncHandler(async (req, res) => {
    const h = param(req, "h");
    vms.get(h);
    const tags = await vms.patchTags(h, parseTagPatch(bodyObject(req)));
    res.json({ hostname: h, tags });
  }));
  app.post("/vm/:h/shutdown", json, asyncHandler(async (req, res) => {
    const h = param(req, "h");
    vms.get(h);
    const body = bodyObject(req) as { action?: unknown };
    const raw = queryString(req, "action") ?? (typeof body === "object" && body !== null ? body.action : undefined);
    if (raw !== undefined && raw !== "" && raw !== "shutdown" && raw !== "reboot") throw new PaddockError("ERR_VM_INVALID_REQUEST", `invalid action ${JSON.stringify(raw)}: expected shutdown or reboot`);
    // Go sends action=reboot by default; on the OCI driver, as on Firecracker, the default stop
    // leaves the VM stopped (spec §2.3 "the default always leaves the VM stopped"). An explicit
    // reboot query from Go is indistinguishable from its default, so reboot also stops unless
    // asked for with `restart=true`.
    const action = raw === "reboot" && req.query.restart === "true" ? "reboot" : "shutdown";
    await vms.shutdown(h, action);
    res.status(200).type("text/plain").send("OK");
  }));
  app.post("/vm/:h/relaunch", asyncHandler(async (req, res) => {
    res.status(200).json(await vms.relaunch(param(req, "h")));
  }));
  app.post("/vm/:h/pause", asyncHandler(async (req, res) => {
    await vms.pause(param(req, "h"));
    res.status(200).type("text/plain").send("OK");
  }));
  app.post("/vm/:h/resume", asyncHandler(async (req, res) => {
    await vms.resume(param(req, "h"));
    res.status(200).type("text/plain").send("OK");
  }));
  for (const verb of ["suspend", "restore"]) {
    app.post(`/vm/:h/${verb}`, (req, res) => {
      vms.get(param(req, "h"));
      res.status(501).json({ error: `${verb} needs a microVM snapshot; the OCI driver does not support it`, code: "ERR_VM_UNSUPPORTED" });
    });
  }
  app.get("/vm/:h/logs", asyncHandler(async (req, res) => {
    const h = param(req, "h");
    vms.get(h);
    const linesRaw = queryString(req, "lines");
    if (linesRaw !== undefined && !/^\d+$/.test(linesRaw)) throw new PaddockError("ERR_QUERY_INVALID", "lines must be a non-negative integer");
    const lines = linesRaw === undefined ? 20 : Number(linesRaw);
    // The console log is kept as `<log>.1` (older) and `<log>` (newest), see the logcap reader
    // of tenant-daemon/runtime/oci-bundle.ts; read both, oldest first.
    const log = vms.consoleLogPath(h);
    const content = await tailFile([`${log}.1`, log], lines);
    if (content === undefined) throw new PaddockError("ERR_PATH_NOT_FOUND", `no console log for ${h}`);
    res.json({ hostname: h, lines, content });
  }));

  for (const r of deps.extraRouters ?? []) app.use(r);
  app.use(notFoundHandler(KNOWN_ROUTES));
  app.use(errorMiddleware(logger));
  return app;
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

/**
 * Refuse early when the API's listen address is taken: a Unix socket another process answers
 * on, or a TCP port already bound. {@link listenApi} checks again when it binds (the address
 * may be taken in between); this check lets a daemon refuse before it changes anything.
 * @throws PaddockError ERR_SOCKET_IN_USE
 */
export async function assertListenFree(config: TenantConfig): Promise<void> {
  if (config.api.kind === "unix") {
    if (await socketAnswers(config.api.socketPath)) throw new PaddockError("ERR_SOCKET_IN_USE", `another daemon is already listening on ${config.api.socketPath}`);
    return;
  }
  const { host, port } = config.api;
  if (port === 0) return;
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (err: NodeJS.ErrnoException) => reject(err.code === "EADDRINUSE" ? new PaddockError("ERR_SOCKET_IN_USE", `${host}:${port} is already in use`, { cause: err }) : err));
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

/**
 * Listen on the configured socket or TCP address (spec §1.1). A stale socket file is
 * replaced; a socket a live process answers on is refused. Socket mode 0660.
 * `opts.bodyIdleMs`: idle bound on a request body still being received before the response
 * starts (default BODY_IDLE_TIMEOUT_MS = 60 s; 0 disables; shared/body-idle-timeout.ts).
 * @throws PaddockError ERR_SOCKET_IN_USE
 */
export async function listenApi(app: express.Express, config: TenantConfig, opts: { bodyIdleMs?: number } = {}): Promise<http.Server> {
  const server = http.createServer(app);
  // Long-lived responses (exec streams, waits up to 600 s) must not be cut (spec §1.1); a
  // request body that stops arriving before the response starts is (408, issue 7 promise 5).
  boundRequestBodyIdle(server, { idleMs: opts.bodyIdleMs ?? BODY_IDLE_TIMEOUT_MS });
  server.requestTimeout = 0;
  server.timeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  // Malformed requests never reach Express: the same JSON error shape, with a code.
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    if (socket.writable) socket.end(clientErrorReply(err));
    else socket.destroy();
  });
  if (config.api.kind === "unix") {
    const socketPath = config.api.socketPath;
    // Again at bind time: the socket may have been taken since the daemon's early check.
    await assertListenFree(config);
    await fs.rm(socketPath, { force: true });
    await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    await fs.chmod(socketPath, 0o660);
  } else {
    const { host, port } = config.api;
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) => reject(err.code === "EADDRINUSE" ? new PaddockError("ERR_SOCKET_IN_USE", `${host}:${port} is already in use`, { cause: err }) : err));
      server.listen(port, host, () => resolve());
    });
  }
  return server;
}

/**
 * Route the server's HTTP upgrade requests (WebSocket `/vm/{h}/shell`, `/vm/{h}/forward`,
 * spec §2.10–§2.11) to `handler`; Express never sees them. The handler authenticates itself.
 */
export function attachUpgradeHandler(server: http.Server, handler: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void): void {
  server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    const bad = requestTargetProblem(req.url);
    if (bad === undefined) return handler(req, socket, head);
    socket.on("error", () => undefined);
    socket.end(httpJsonAnswer(400, JSON.stringify({ error: bad, code: "ERR_URL_MALFORMED" })));
  });
}

function socketAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
