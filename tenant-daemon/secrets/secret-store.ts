/**
 * Host-side secret store (docs/slicer-api.md#secrets): one content file per secret plus a metadata
 * JSON alongside, under `<stateDir>/secrets/` (dir 0700, files 0600). Values are never returned by
 * the API; they leave the host only towards a guest agent.
 *
 * Layout: `<dir>/<name>.secret` (raw bytes) and `<dir>/<name>.json`
 * (`{"name","permissions","uid","gid","size","modified_at"}`).
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { readdirOrEmpty } from "../../shared/read-dir.js";
import { writeFileAtomic } from "../../shared/state-store.js";
import { rfc3339 } from "../../shared/time.js";

/**
 * A secret's metadata as listed by `GET /secrets`, with both timestamp keys: the SDKs read
 * `modified_at`, Slicer's reference names `mod_time`.
 */
export interface SecretInfo {
  name: string;
  size: number;
  /** Octal string, e.g. `0600`. */
  permissions: string;
  uid: number;
  gid: number;
  modified_at: string;
  mod_time: string;
}

/** A secret with its content (for delivery to agents). */
export interface SecretWithData {
  info: SecretInfo;
  data: Buffer;
}

/** `POST /secrets` body after validation. */
export interface SecretCreate {
  name: string;
  /** base64 content. */
  data: string;
  permissions?: string;
  uid?: number;
  gid?: number;
}

/** `PATCH /secrets/{name}` body: every field optional; `data: ""` and uid/gid 0 mean unchanged. */
export interface SecretUpdate {
  data?: string;
  permissions?: string;
  uid?: number;
  gid?: number;
}

interface StoredMeta {
  name: string;
  permissions: string;
  uid: number;
  gid: number;
  size: number;
  modified_at: string;
}

/**
 * Longest secret name, bytes (UTF-8). Each name becomes file names on the host and in the guest,
 * the longest being an atomic write's temp file `.<name>.secret.<pid>.<random>.tmp` (name + ~32
 * bytes), and a file name may have at most 255 bytes (NAME_MAX): longer names failed with a 500.
 */
export const MAX_SECRET_NAME_BYTES = 200;

/**
 * Secret names: non-empty, ≤ {@link MAX_SECRET_NAME_BYTES} bytes, no `/`, `\`, `..` or NUL
 * (anything that could leave the secrets dir), and no leading `.` (keeps guest temp files and
 * `.`/`..` apart).
 * @throws PaddockError ERR_SECRET_INVALID (400).
 */
export function validateSecretName(name: unknown): string {
  if (typeof name !== "string" || name === "") throw new PaddockError("ERR_SECRET_INVALID", "secret name is required");
  if (Buffer.byteLength(name) > MAX_SECRET_NAME_BYTES) throw new PaddockError("ERR_SECRET_INVALID", `secret name is ${Buffer.byteLength(name)} bytes; at most ${MAX_SECRET_NAME_BYTES}`);
  if (/[/\\\0]/.test(name) || name.includes("..") || name.startsWith(".") || hasControlChar(name)) {
    throw new PaddockError("ERR_SECRET_INVALID", `invalid secret name ${JSON.stringify(name)}: no '/', '\\', '..', control characters or leading '.'`);
  }
  return name;
}

function hasControlChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** Strict base64 (standard alphabet, padding optional); url-safe input is accepted too. */
export function decodeBase64Strict(text: string, what = "data"): Buffer {
  const t = text.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(t) || t.replace(/=+$/, "").length % 4 === 1) {
    throw new PaddockError("ERR_SECRET_INVALID", `${what} is not valid base64`);
  }
  return Buffer.from(t.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

function normalisePermissions(p: unknown): string {
  if (typeof p !== "string" || !/^(0o?)?[0-7]{3,4}$/i.test(p.trim())) {
    throw new PaddockError("ERR_SECRET_INVALID", `invalid permissions ${JSON.stringify(p)}: expected an octal string such as 0600`);
  }
  const n = parseInt(p.trim().replace(/^0o/i, ""), 8) & 0o777;
  return n.toString(8).padStart(4, "0");
}

function validateId(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 4294967294) {
    throw new PaddockError("ERR_SECRET_INVALID", `${what} must be an integer between 0 and 4294967294`);
  }
  return v;
}

/** Caps of one tenant's secrets (`paddock.max_secrets`, `paddock.max_secret_bytes`). */
export interface SecretLimits {
  /** Most secrets. */
  maxSecrets: number;
  /** Most bytes of content, all secrets together. */
  maxSecretBytes: number;
}

/** The tenant daemon's secret store. Mutations are serialised within the process. */
export class SecretStore {
  private queue: Promise<unknown> = Promise.resolve();

  /**
   * @param dir `<stateDir>/secrets` (created 0700 on first use).
   * @param limits caps checked by {@link create} and {@link update}; undefined ⇒ none.
   */
  constructor(readonly dir: string, private readonly limits?: SecretLimits) {}

  /**
   * Refuse a write that would take the store past its caps: `added` secrets more (0 or 1) and
   * content growing from `oldBytes` to `newBytes`. Runs inside {@link serial}, so the totals
   * cannot change under it.
   * @throws PaddockError ERR_SECRETS_TOO_MANY (409), ERR_SECRETS_TOO_LARGE (413).
   */
  private async checkLimits(added: number, oldBytes: number, newBytes: number): Promise<void> {
    const limits = this.limits;
    if (limits === undefined) return;
    const all = await this.list();
    if (added > 0 && all.length + added > limits.maxSecrets) {
      throw new PaddockError("ERR_SECRETS_TOO_MANY", `this tenant already has ${all.length} secrets, the most it may hold (paddock.max_secrets ${limits.maxSecrets})`);
    }
    const total = all.reduce((sum, s) => sum + s.size, 0) - oldBytes + newBytes;
    if (newBytes > oldBytes && total > limits.maxSecretBytes) {
      throw new PaddockError("ERR_SECRETS_TOO_LARGE", `secrets would hold ${total} bytes, more than this tenant may store (paddock.max_secret_bytes ${limits.maxSecretBytes})`);
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async ensureDir(): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    await fs.chmod(this.dir, 0o700);
  }

  private metaFile(name: string): string {
    return path.join(this.dir, `${name}.json`);
  }
  private dataFile(name: string): string {
    return path.join(this.dir, `${name}.secret`);
  }

  private async readMeta(name: string): Promise<StoredMeta | undefined> {
    try {
      return JSON.parse(await fs.readFile(this.metaFile(name), "utf8")) as StoredMeta;
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  }

  private static toInfo(m: StoredMeta): SecretInfo {
    return { name: m.name, size: m.size, permissions: m.permissions, uid: m.uid, gid: m.gid, modified_at: m.modified_at, mod_time: m.modified_at };
  }

  /** All secrets' metadata, sorted by name. */
  async list(): Promise<SecretInfo[]> {
    const names = await readdirOrEmpty(this.dir);
    const out: SecretInfo[] = [];
    for (const f of names.filter((n) => n.endsWith(".json") && !n.startsWith(".")).sort()) {
      const m = await this.readMeta(f.slice(0, -".json".length));
      if (m) out.push(SecretStore.toInfo(m));
    }
    return out;
  }

  /**
   * Create a secret (`POST /secrets`). Defaults: permissions 0600, owner root.
   * @throws PaddockError ERR_SECRET_INVALID (400), ERR_SECRET_EXISTS (409), ERR_SECRETS_TOO_MANY (409), ERR_SECRETS_TOO_LARGE (413).
   */
  async create(input: SecretCreate): Promise<SecretInfo> {
    const name = validateSecretName(input.name);
    if (typeof input.data !== "string") throw new PaddockError("ERR_SECRET_INVALID", "data (base64) is required");
    const data = decodeBase64Strict(input.data);
    const meta: StoredMeta = {
      name,
      permissions: input.permissions === undefined || input.permissions === "" ? "0600" : normalisePermissions(input.permissions),
      uid: input.uid === undefined ? 0 : validateId(input.uid, "uid"),
      gid: input.gid === undefined ? 0 : validateId(input.gid, "gid"),
      size: data.length,
      modified_at: rfc3339(),
    };
    return this.serial(async () => {
      await this.ensureDir();
      if (await this.readMeta(name)) throw new PaddockError("ERR_SECRET_EXISTS", `secret ${name} already exists`);
      await this.checkLimits(1, 0, data.length);
      await writeFileAtomic(this.dataFile(name), data, 0o600);
      await writeFileAtomic(this.metaFile(name), JSON.stringify(meta) + "\n", 0o600);
      return SecretStore.toInfo(meta);
    });
  }

  /**
   * Update a secret (`PATCH /secrets/{name}`): `data` absent or "" ⇒ content unchanged; uid/gid
   * absent or 0 ⇒ unchanged.
   * @throws PaddockError ERR_SECRET_INVALID (400), ERR_SECRET_NOT_FOUND (404), ERR_SECRETS_TOO_LARGE (413).
   */
  async update(nameRaw: string, input: SecretUpdate): Promise<SecretInfo> {
    const name = validateSecretName(nameRaw);
    const data = input.data === undefined || input.data === "" ? undefined : decodeBase64Strict(input.data);
    const permissions = input.permissions === undefined || input.permissions === "" ? undefined : normalisePermissions(input.permissions);
    const uid = input.uid === undefined || input.uid === 0 ? undefined : validateId(input.uid, "uid");
    const gid = input.gid === undefined || input.gid === 0 ? undefined : validateId(input.gid, "gid");
    return this.serial(async () => {
      const m = await this.readMeta(name);
      if (!m) throw new PaddockError("ERR_SECRET_NOT_FOUND", `secret ${name} not found`);
      if (data) await this.checkLimits(0, m.size, data.length);
      if (data) await writeFileAtomic(this.dataFile(name), data, 0o600);
      const next: StoredMeta = {
        ...m,
        permissions: permissions ?? m.permissions,
        uid: uid ?? m.uid,
        gid: gid ?? m.gid,
        size: data ? data.length : m.size,
        modified_at: rfc3339(),
      };
      await writeFileAtomic(this.metaFile(name), JSON.stringify(next) + "\n", 0o600);
      return SecretStore.toInfo(next);
    });
  }

  /**
   * Delete a secret.
   * @throws PaddockError ERR_SECRET_INVALID (400), ERR_SECRET_NOT_FOUND (404).
   */
  async delete(nameRaw: string): Promise<void> {
    const name = validateSecretName(nameRaw);
    return this.serial(async () => {
      if (!(await this.readMeta(name))) throw new PaddockError("ERR_SECRET_NOT_FOUND", `secret ${name} not found`);
      await fs.rm(this.metaFile(name), { force: true });
      await fs.rm(this.dataFile(name), { force: true });
    });
  }

  /**
   * Secrets with content, for delivery to a guest agent: all of them, or only `names` (unknown
   * names are skipped).
   */
  async readForDelivery(names?: readonly string[]): Promise<SecretWithData[]> {
    const wanted = names ? new Set(names) : undefined;
    const out: SecretWithData[] = [];
    for (const info of await this.list()) {
      if (wanted && !wanted.has(info.name)) continue;
      try {
        out.push({ info, data: await fs.readFile(this.dataFile(info.name)) });
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err; // deleted meanwhile
      }
    }
    return out;
  }
}
