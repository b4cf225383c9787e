/**
 * The tenant's secrets: `GET /secrets` (list), `POST /secrets` (create, 201), `PATCH
 * /secrets/{name}` and `DELETE /secrets/{name}` (200), served from the host-side
 * {@link SecretStore}. Paths and auth are in routes.ts.
 *
 * The handlers read their own bodies (shared/http/read-body.ts). After a successful write they call `onChanged` (the VM service pushes the change to running
 * VMs in the background, tenant-daemon/vm/vm-secrets-sync.ts) and answer without waiting for it.
 */
import { PaddockError } from "../../shared/errors.js";
import { readJsonObjectBounded } from "../../shared/http/read-body.js";
import type { Logger } from "../../shared/logger.js";
import type { SecretStore } from "../secrets/secret-store.js";
import { sendError } from "./http-util.js";
import type { RouteHandlers } from "./route-mount.js";

/** Largest secrets request body, bytes. */
const SECRET_BODY_MAX_BYTES = 16 << 20;

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

/**
 * The handlers. Bodies are JSON objects `{name, data (base64), permissions, uid, gid}` of at
 * most 16 MiB. Errors are answered directly (http-util.ts `sendError`, logged through `logger`
 * when not a client error): ERR_SECRET_INVALID, ERR_BODY_INVALID_JSON (400),
 * ERR_BODY_TOO_LARGE (413), and what SecretStore throws (ERR_SECRET_NOT_FOUND 404, …).
 * `onChanged(name)` runs after each successful create, update or delete, unawaited; a rejection
 * is logged.
 */
export function createSecretHandlers(secrets: SecretStore, logger: Logger, onChanged: (name: string) => Promise<void> = () => Promise.resolve()): RouteHandlers["secrets"] {
  const changed = (name: string): void => {
    onChanged(name).catch((err: unknown) => logger.error("secret push failed", { secret: name, err }));
  };
  return {
    list: (_req, res) => {
      secrets.list().then(
        (list) => res.status(200).json(list),
        (err: unknown) => sendError(res, err, logger),
      );
    },
    create: (req, res) => {
      (async () => {
        const body = await readJsonObjectBounded(req, SECRET_BODY_MAX_BYTES);
        const data = optionalString(body, "data");
        if (data === undefined) throw new PaddockError("ERR_SECRET_INVALID", "data (base64) is required");
        const info = await secrets.create({
          name: optionalString(body, "name") ?? "",
          data,
          ...(optionalString(body, "permissions") !== undefined ? { permissions: optionalString(body, "permissions") } : {}),
          ...(optionalInt(body, "uid") !== undefined ? { uid: optionalInt(body, "uid") } : {}),
          ...(optionalInt(body, "gid") !== undefined ? { gid: optionalInt(body, "gid") } : {}),
        });
        changed(info.name);
        res.status(201).end();
      })().catch((err: unknown) => sendError(res, err, logger));
    },
    update: (req, res) => {
      (async () => {
        const body = await readJsonObjectBounded(req, SECRET_BODY_MAX_BYTES);
        const info = await secrets.update(String(req.params.name), {
          data: optionalString(body, "data"),
          permissions: optionalString(body, "permissions"),
          uid: optionalInt(body, "uid"),
          gid: optionalInt(body, "gid"),
        });
        changed(info.name);
        res.status(200).end();
      })().catch((err: unknown) => sendError(res, err, logger));
    },
    delete: (req, res) => {
      const name = String(req.params.name);
      secrets.delete(name).then(
        () => {
          changed(name);
          res.status(200).end();
        },
        (err: unknown) => sendError(res, err, logger),
      );
    },
  };
}
