/**
 * The daemon's agent-backed endpoints (spec §2.4–§2.12): `/vm/{h}/{health,exec…,cp,fs/*}`
 * are forwarded as streams to the VM's guest agent (`/v1/…` on its Unix socket), and
 * `/secrets…` are served from the host-side {@link SecretStore}. Bodies are never buffered
 * (exec stdin, cp uploads, NDJSON and tar downloads stream both ways); a client that goes
 * away aborts the upstream request, which makes the agent kill a foreground exec.
 *
 * The router reads its own bodies: it must work whether or not a JSON parser is mounted.
 */
import http from "node:http";
import express, { type Request, type Response, type NextFunction, type Router } from "express";
import { PaddockError, errorResponse, errnoCode } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { SecretStore } from "../secrets/secret-store.js";
import { AGENT_PROOF_HEADER, answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";

/** What the router needs from the composition root. */
export interface AgentRouterDeps {
  /**
   * The agent of a running VM.
   * @throws PaddockError ERR_VM_NOT_FOUND (404), ERR_VM_PAUSED (409), ERR_VM_NOT_RUNNING (409).
   */
  resolveAgent(hostname: string): AgentEndpoint;
  secrets: SecretStore;
  logger: Logger;
}

/** Agent-backed VM routes and their methods (path below `/vm/{h}`). */
const VM_ROUTES: { pattern: RegExp; methods: string[] }[] = [
  { pattern: /^\/health$/, methods: ["GET", "HEAD"] },
  { pattern: /^\/exec$/, methods: ["GET", "POST"] },
  { pattern: /^\/exec\/[^/]+$/, methods: ["GET", "DELETE"] },
  { pattern: /^\/exec\/[^/]+\/logs$/, methods: ["GET"] },
  { pattern: /^\/exec\/[^/]+\/kill$/, methods: ["POST"] },
  { pattern: /^\/exec\/[^/]+\/wait-exit$/, methods: ["GET"] },
  { pattern: /^\/cp$/, methods: ["GET", "POST"] },
  { pattern: /^\/fs\/(readdir|stat|watch)$/, methods: ["GET"] },
  { pattern: /^\/fs\/mkdir$/, methods: ["POST"] },
  { pattern: /^\/fs\/remove$/, methods: ["DELETE"] },
];

/** Request headers that must not travel to the agent (hop-by-hop, credentials, identity). */
const DROP_REQUEST_HEADERS = new Set([
  "host", "connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer",
  "authorization", "proxy-authorization", "cookie", "x-forwarded-for", "x-real-ip", "forwarded",
]);
const DROP_RESPONSE_HEADERS = new Set(["connection", "keep-alive", "transfer-encoding", "date", AGENT_PROOF_HEADER]);

function sendError(res: Response, err: unknown, logger: Logger): void {
  if (!(err instanceof PaddockError) || !err.isClientError) logger.error("agent endpoint failed", { err });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, body } = errorResponse(err);
  res.status(status).json(body);
}

/**
 * Forward `req` to `endpoint`'s agent as `/v1<sub><query>`, streaming both ways.
 * Agent errors arrive already in the Slicer error shape and are passed through; an
 * unreachable agent, or an answer without the VM's proof (agent-endpoint.ts), becomes 503
 * `ERR_VM_AGENT_UNAVAILABLE`.
 */
function forward(req: Request, res: Response, endpoint: AgentEndpoint, sub: string, logger: Logger): void {
  const { socketPath, hostname } = endpoint;
  const qIndex = req.originalUrl.indexOf("?");
  const search = qIndex === -1 ? "" : req.originalUrl.slice(qIndex);
  const headers: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !DROP_REQUEST_HEADERS.has(k)) headers[k] = v;
  headers.host = "agent";
  const upstream = http.request({ socketPath, method: req.method, path: `/v1${sub}${search}`, headers });
  let responded = false;

  upstream.on("response", (ur) => {
    responded = true;
    if (!answerIsFromAgent(endpoint, ur.headers)) {
      upstream.destroy();
      sendError(res, new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`), logger);
      return;
    }
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(ur.headers)) if (v !== undefined && !DROP_RESPONSE_HEADERS.has(k)) out[k] = v;
    res.writeHead(ur.statusCode ?? 502, out);
    res.flushHeaders();
    ur.on("error", () => res.destroy());
    ur.pipe(res);
  });
  upstream.on("error", (err) => {
    if (responded || res.headersSent) {
      res.destroy();
      return;
    }
    if (res.destroyed) return;
    const code = errnoCode(err);
    const unreachable = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
    sendError(
      res,
      new PaddockError("ERR_VM_AGENT_UNAVAILABLE", unreachable ? `guest agent of VM ${hostname} is not reachable` : `guest agent of VM ${hostname} failed: ${err.message}`, { cause: err }),
      logger,
    );
  });
  // Propagate client aborts upstream (Node ≥ 15.5 no longer does it; STYLE.md "Known traps").
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  req.on("error", () => upstream.destroy());
  req.pipe(upstream);
}

async function readJsonBody(req: Request, maxBytes: number): Promise<Record<string, unknown>> {
  // A body parser mounted earlier may already have consumed the stream.
  const pre = (req as { body?: unknown }).body;
  if (req.readableEnded && pre !== undefined) {
    if (typeof pre === "object" && pre !== null && !Array.isArray(pre) && !Buffer.isBuffer(pre)) return pre as Record<string, unknown>;
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    total += c.length;
    if (total > maxBytes) throw new PaddockError("ERR_BODY_TOO_LARGE", `request body larger than ${maxBytes} bytes`);
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if (text === "") return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new PaddockError("ERR_BODY_INVALID_JSON", "request body is not valid JSON", { cause: err });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new PaddockError("ERR_BODY_INVALID_JSON", "request body must be a JSON object");
  return v as Record<string, unknown>;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new PaddockError("ERR_SECRET_INVALID", `${key} must be a string`);
  return v;
}

function optionalInt(body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) throw new PaddockError("ERR_SECRET_INVALID", `${key} must be an integer`);
  return v;
}

const SECRET_BODY_MAX_BYTES = 16 << 20;

/**
 * Build the router the lead mounts at the daemon root (before the 404 handler).
 * Unknown paths fall through (`next()`); wrong methods on known paths answer 405.
 */
export function createAgentRouter(deps: AgentRouterDeps): Router {
  const router = express.Router();
  const log = deps.logger.child({ component: "agent-router" });

  router.use((req: Request, res: Response, next: NextFunction) => {
    const m = /^\/vm\/([^/]+)(\/.*)$/.exec(req.path);
    if (!m) return next();
    const sub = m[2] as string;
    if (sub === "/shell" || sub === "/forward") {
      // A WebSocket upgrade never reaches Express (agent-ws.ts); a plain request is a client error.
      sendError(res, new PaddockError(req.method === "GET" ? "ERR_BAD_REQUEST" : "ERR_METHOD_NOT_ALLOWED", `/vm/{hostname}${sub} is a WebSocket endpoint: send GET with Upgrade: websocket`), log);
      return;
    }
    const route = VM_ROUTES.find((r) => r.pattern.test(sub));
    if (!route) return next();
    if (!route.methods.includes(req.method)) {
      sendError(res, new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on /vm/{hostname}${sub}`), log);
      return;
    }
    let hostname: string;
    try {
      hostname = decodeURIComponent(m[1] as string);
      forward(req, res, deps.resolveAgent(hostname), sub, log);
    } catch (err) {
      req.resume();
      sendError(res, err, log);
    }
  });

  router.get("/secrets", (_req, res) => {
    deps.secrets.list().then(
      (list) => res.status(200).json(list),
      (err: unknown) => sendError(res, err, log),
    );
  });

  router.post("/secrets", (req, res) => {
    (async () => {
      const body = await readJsonBody(req, SECRET_BODY_MAX_BYTES);
      const data = optionalString(body, "data");
      if (data === undefined) throw new PaddockError("ERR_SECRET_INVALID", "data (base64) is required");
      await deps.secrets.create({
        name: optionalString(body, "name") ?? "",
        data,
        ...(optionalString(body, "permissions") !== undefined ? { permissions: optionalString(body, "permissions") } : {}),
        ...(optionalInt(body, "uid") !== undefined ? { uid: optionalInt(body, "uid") } : {}),
        ...(optionalInt(body, "gid") !== undefined ? { gid: optionalInt(body, "gid") } : {}),
      });
      res.status(201).end();
    })().catch((err: unknown) => sendError(res, err, log));
  });

  router.patch("/secrets/:name", (req, res) => {
    (async () => {
      const body = await readJsonBody(req, SECRET_BODY_MAX_BYTES);
      await deps.secrets.update(String(req.params.name), {
        data: optionalString(body, "data"),
        permissions: optionalString(body, "permissions"),
        uid: optionalInt(body, "uid"),
        gid: optionalInt(body, "gid"),
      });
      res.status(200).end();
    })().catch((err: unknown) => sendError(res, err, log));
  });

  router.delete("/secrets/:name", (req, res) => {
    deps.secrets.delete(String(req.params.name)).then(
      () => res.status(200).end(),
      (err: unknown) => sendError(res, err, log),
    );
  });

  router.all("/secrets", (req, res) => sendError(res, new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on /secrets`), log));
  router.all("/secrets/:name", (req, res) =>
    sendError(res, new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${req.method} not allowed on /secrets/{name}`), log),
  );
  return router;
}
