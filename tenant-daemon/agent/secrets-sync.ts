/**
 * Secrets sync, agent side (docs/slicer-api.md#secrets): the daemon pushes the VM's granted secrets
 * with `POST /v1/secrets/sync` (at boot, on every change, on resume) and the agent writes each to
 * `<secrets_dir>/<name>` with the stored mode/uid/gid, removing files of secrets no longer
 * granted. The guest's `slicer-agent secrets sync` re-applies the last pushed set
 * (secrets-local.ts).
 *
 * Body: `{"secrets":[{"name":"s","data":"<base64>","permissions":"0600","uid":0,"gid":0}]}`.
 */
import { randomHex } from "./lazy-crypto.js";
import { chmod, chown, mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { badRequest, parseOctalMode, readJsonObject, sendJson, type AgentRequest } from "./http-util.js";

/** One secret as pushed by the daemon. */
export interface SyncedSecret {
  name: string;
  /** base64 content. */
  data: string;
  permissions: string;
  uid: number;
  gid: number;
}

/**
 * Same name rules as the daemon's store (tenant-daemon/secrets/secret-store.ts): no `/`, `\`, `..`,
 * NUL, leading dot.
 */
export function isValidSecretName(name: string): boolean {
  return name !== "" && name.length <= 253 && !/[/\\\0]/.test(name) && !name.includes("..") && !name.startsWith(".");
}

/**
 * Write `secrets` into `dir` (created 0755, owned by root) and remove stale files.
 * @throws PaddockError 400 on invalid entries (nothing is written then).
 */
export async function applySecrets(dir: string, secrets: SyncedSecret[]): Promise<string[]> {
  const parsed = secrets.map((s) => {
    if (!isValidSecretName(s.name)) throw badRequest(`invalid secret name ${JSON.stringify(s.name)}`, "ERR_SECRET_INVALID");
    if (!Number.isInteger(s.uid) || !Number.isInteger(s.gid) || s.uid < 0 || s.gid < 0) throw badRequest(`invalid owner for secret ${s.name}`, "ERR_SECRET_INVALID");
    return { ...s, mode: parseOctalMode(s.permissions || "0600") & 0o777, bytes: Buffer.from(s.data, "base64") };
  });
  await mkdir(dir, { recursive: true, mode: 0o755 });
  for (const s of parsed) {
    const tmp = path.join(dir, `.tmp-${randomHex(6)}`);
    await writeFile(tmp, s.bytes, { mode: 0o600, flag: "wx" });
    await chown(tmp, s.uid, s.gid);
    await chmod(tmp, s.mode);
    await rename(tmp, path.join(dir, s.name));
  }
  const keep = new Set(parsed.map((s) => s.name));
  for (const n of await readdir(dir)) if (!keep.has(n)) await rm(path.join(dir, n), { force: true, recursive: true });
  return [...keep].sort();
}

/**
 * The agent's secrets dir: the host's pushes (`POST /v1/secrets/sync` on the host channel) and
 * the guest's re-apply of the last pushed set (`POST /v1/secrets/sync` on the guest-local
 * socket, secrets-local.ts). Syncs run one at a time in arrival order, so two cannot interleave
 * their writes and stale-file removal.
 */
export class SecretsSyncer {
  private queue: Promise<unknown> = Promise.resolve();
  /** The set the host pushed last (validated); undefined until the first push. */
  private last: SyncedSecret[] | undefined;

  /** @param dir where secrets are written (boot.json `secrets_dir`). */
  constructor(private readonly dir: string) {}

  private serial(fn: () => Promise<string[]>): Promise<string[]> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** `POST /v1/secrets/sync` from the host: apply the pushed set and keep it for {@link reapply}. */
  async handleHostSync(ctx: AgentRequest): Promise<void> {
    const body = await readJsonObject(ctx.req, 64 << 20);
    if (!Array.isArray(body.secrets)) throw badRequest("secrets must be an array", "ERR_SECRET_INVALID");
    const list: SyncedSecret[] = body.secrets.map((raw: unknown) => {
      const o = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
      return {
        name: typeof o.name === "string" ? o.name : "",
        data: typeof o.data === "string" ? o.data : "",
        permissions: typeof o.permissions === "string" ? o.permissions : "0600",
        uid: typeof o.uid === "number" ? o.uid : 0,
        gid: typeof o.gid === "number" ? o.gid : 0,
      };
    });
    const names = await this.serial(async () => {
      const applied = await applySecrets(this.dir, list);
      this.last = list;
      return applied;
    });
    sendJson(ctx.res, 200, { synced: names });
  }

  /**
   * Write the set the host pushed last again: files changed or removed in the guest come back,
   * files of secrets not in it go. @returns the names written.
   * @throws PaddockError ERR_SECRET_NOT_FOUND (404) before the host's first push.
   */
  reapply(): Promise<string[]> {
    return this.serial(async () => {
      if (this.last === undefined) throw new PaddockError("ERR_SECRET_NOT_FOUND", "the host has not delivered secrets to this VM yet");
      return applySecrets(this.dir, this.last);
    });
  }
}
