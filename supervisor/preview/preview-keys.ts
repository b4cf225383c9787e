/**
 * The per-tenant preview keys: 32 random bytes per tenant in
 * `<state>/supervisor/preview-keys/<tenant>.key` (directory 0700, file 0600, written with
 * `wx` so two mints never race to two keys), created at the tenant's first mint, cached in
 * memory, and removed with the tenant (so a tenant recreated under the same id never accepts
 * the old tenant's tokens). Only the supervisor reads them; no daemon and no VM ever sees one.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, promises as fs, readFileSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { errnoCode } from "../../shared/errors.js";
import { TENANT_ID_PATTERN } from "../../shared/tenant-config.js";

const KEY_BYTES = 32;

/** The preview keys of all tenants. */
export class PreviewKeys {
  readonly dir: string;
  private readonly cache = new Map<string, Buffer>();

  /** `stateDir`: the supervisor's state dir (`<state>`); keys live in `<state>/supervisor/preview-keys/`. */
  constructor(stateDir: string) {
    this.dir = path.join(stateDir, "supervisor", "preview-keys");
  }

  private file(tenantId: string): string {
    // Tenant ids are checked by every caller; this keeps a bad one from ever naming a path.
    if (!TENANT_ID_PATTERN.test(tenantId)) throw new Error(`invalid tenant id ${JSON.stringify(tenantId)}`);
    return path.join(this.dir, `${tenantId}.key`);
  }

  /**
   * The key of a tenant that has minted a token, or undefined (no token of it can verify).
   * Read once from disk, then cached.
   */
  keyOf(tenantId: string): Buffer | undefined {
    const hit = this.cache.get(tenantId);
    if (hit !== undefined) return hit;
    if (!TENANT_ID_PATTERN.test(tenantId)) return undefined;
    try {
      const key = readFileSync(this.file(tenantId));
      if (key.length !== KEY_BYTES) return undefined;
      this.cache.set(tenantId, key);
      return key;
    } catch {
      return undefined;
    }
  }

  /** The tenant's key, created (0600) when it has none yet. @throws the filesystem error. */
  async ensure(tenantId: string): Promise<Buffer> {
    const known = this.keyOf(tenantId);
    if (known !== undefined) return known;
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const f = this.file(tenantId);
    try {
      const fh = await fs.open(f, "wx", 0o600);
      try {
        await fh.writeFile(randomBytes(KEY_BYTES));
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      if (errnoCode(err) !== "EEXIST") throw err;
    }
    const key = this.keyOf(tenantId);
    if (key === undefined) throw new Error(`preview key ${f} is unreadable or not ${KEY_BYTES} bytes`);
    return key;
  }

  /** Forget and remove a tenant's key (its tokens stop verifying at once). */
  remove(tenantId: string): void {
    this.cache.delete(tenantId);
    if (TENANT_ID_PATTERN.test(tenantId)) rmSync(this.file(tenantId), { force: true });
  }

  /**
   * Remove the keys of tenants not in `live` (a deletion while the supervisor was down, or
   * just now): called at start and after every registry change.
   */
  sweep(live: ReadonlySet<string>): void {
    for (const id of this.cache.keys()) if (!live.has(id)) this.remove(id);
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return;
    }
    for (const n of names) {
      const id = n.endsWith(".key") ? n.slice(0, -4) : "";
      if (TENANT_ID_PATTERN.test(id) && !live.has(id)) this.remove(id);
    }
  }

  /** Make the key directory (0700) if missing. */
  prepare(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }
}
