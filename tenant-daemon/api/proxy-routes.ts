/**
 * Slicer's egress proxy admin API, `/proxy/v1/*` (https://github.com/slicervm/sdk proxy.go),
 * served from the tenant's {@link ProxyStore}: clients (201 create with the token shown once,
 * 200 list, 200 rules of one, 204 delete), secrets (201, 200 list without values, 204 delete),
 * allows (201 add, 204 delete by host, 204 revoke by tuple). Paths and auth are in routes.ts;
 * errors are `{"error","code"}` (the SDK reads the body as opaque text).
 */
import { PaddockError } from "../../shared/errors.js";
import { readJsonObjectBounded } from "../../shared/http/read-body.js";
import type { Logger } from "../../shared/logger.js";
import type { ProxyStore } from "../proxy/proxy-store.js";
import { sendError, type ApiRequest, type ApiResponse } from "./http-util.js";
import type { RouteHandlers } from "./route-mount.js";

/** Largest `/proxy/v1` request body, bytes. */
const PROXY_BODY_MAX_BYTES = 256 * 1024;

/**
 * The fields each body may hold: those of the Go SDK's request types (proxy.go:
 * `CreateProxyClient`'s map, CreateProxySecretRequest, AddProxyAllowRequest,
 * RemoveProxyAllowByTupleRequest). Anything else is refused, never ignored (a `port` meant as
 * `ports` would otherwise widen a rule to 80 and 443).
 */
export const PROXY_BODY_FIELDS = {
  client: ["name", "token"],
  secret: ["name", "host", "type", "value", "source_file", "force"],
  allow: ["client", "host", "secret", "methods", "paths", "ports", "ttl_seconds", "passthrough"],
  revoke: ["client", "host", "secret", "methods", "paths", "ports", "passthrough"],
} as const;

/** @throws PaddockError ERR_PROXY_INVALID (400) naming the unknown fields and the known ones. */
function onlyKnown(b: Record<string, unknown>, known: readonly string[]): Record<string, unknown> {
  const unknown = Object.keys(b).filter((k) => !known.includes(k));
  if (unknown.length > 0) throw new PaddockError("ERR_PROXY_INVALID", `unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => JSON.stringify(k)).join(", ")} (known: ${known.join(", ")})`);
  return b;
}

/** The handlers of routes.ts group `proxy`. */
export function createProxyHandlers(store: ProxyStore, logger: Logger): RouteHandlers["proxy"] {
  const log = logger.child({ component: "proxy-api" });
  const run = (res: ApiResponse, fn: () => Promise<void>): void => {
    fn().catch((err: unknown) => sendError(res, err, log));
  };
  const body = (req: ApiRequest): Promise<Record<string, unknown>> => readJsonObjectBounded(req, PROXY_BODY_MAX_BYTES);
  return {
    listClients: (_req, res) => run(res, async () => {
      res.status(200).json(store.listClients());
    }),
    createClient: (req, res) => run(res, async () => {
      const b = onlyKnown(await body(req), PROXY_BODY_FIELDS.client);
      res.status(201).json(await store.createClient(b.name, b.token));
    }),
    clientRules: (req, res) => run(res, async () => {
      res.status(200).json(store.listRules(String(req.params.name)));
    }),
    deleteClient: (req, res) => run(res, async () => {
      await store.deleteClient(String(req.params.name));
      res.status(204).end();
    }),
    listSecrets: (_req, res) => run(res, async () => {
      res.status(200).json(store.listSecrets());
    }),
    createSecret: (req, res) => run(res, async () => {
      await store.createSecret(onlyKnown(await body(req), PROXY_BODY_FIELDS.secret));
      res.status(201).end();
    }),
    deleteSecret: (req, res) => run(res, async () => {
      await store.deleteSecret(String(req.params.name));
      res.status(204).end();
    }),
    addAllow: (req, res) => run(res, async () => {
      await store.addAllow(onlyKnown(await body(req), PROXY_BODY_FIELDS.allow));
      res.status(201).end();
    }),
    deleteAllows: (req, res) => run(res, async () => {
      await store.removeAllowsByHost(String(req.params.client), String(req.params.host));
      res.status(204).end();
    }),
    revokeAllow: (req, res) => run(res, async () => {
      await store.revokeByTuple(onlyKnown(await body(req), PROXY_BODY_FIELDS.revoke));
      res.status(204).end();
    }),
  };
}
