/**
 * Filesystem endpoints (docs/slicer-api.md#filesystem): readdir, stat, mkdir, remove. Symlinks are
 * reported, never followed. Operations run as root and chown what they create to the request's
 * identity.
 */
import type { Stats } from "node:fs";
import { constants as fsConstants } from "node:fs";
import { lstat, mkdir, open, readdir, rm, rmdir, unlink } from "node:fs/promises";
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";
import { rfc3339 } from "../../shared/time.js";
import { fsError } from "./cp.js";
import { badRequest, formatOctalMode, parseOctalMode, queryBool, readJsonObject, sendJson, type AgentRequest } from "./http-util.js";
import { resolveGuestPath, type UserDirectory } from "./users.js";

/** FSInfo, one filesystem entry. */
export interface FsInfo {
  name: string;
  type: "file" | "directory" | "symlink";
  size: number;
  /** RFC3339 (a string: the Go SDK decodes `time.Time`, never Unix seconds). */
  mtime: string;
  mode: string;
}

/** Build an FSInfo from lstat output; other file types report as `file`. */
export function toFsInfo(name: string, st: Stats): FsInfo {
  const type = st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "directory" : "file";
  return { name, type, size: st.size, mtime: rfc3339(st.mtime), mode: formatOctalMode(st.mode) };
}

/** The `/fs/*` routes (agent side). */
export class FsHandler {
  constructor(private readonly users: UserDirectory) {}

  /** Dispatch; false when the path is not an fs route. */
  async handle(ctx: AgentRequest): Promise<boolean> {
    const routes: Record<string, [string, (c: AgentRequest) => Promise<void>]> = {
      "/fs/readdir": ["GET", (c) => this.readdir(c)],
      "/fs/stat": ["GET", (c) => this.stat(c)],
      "/fs/mkdir": ["POST", (c) => this.mkdir(c)],
      "/fs/remove": ["DELETE", (c) => this.remove(c)],
    };
    const r = routes[ctx.path];
    if (!r) return false;
    if (ctx.method !== r[0]) throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${ctx.method} not allowed on ${ctx.path}`);
    await r[1](ctx);
    return true;
  }

  private target(ctx: AgentRequest, raw: string | null): string {
    const who = this.users.resolve(ctx.query);
    const p = resolveGuestPath(raw, who.home);
    return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
  }

  private async readdir(ctx: AgentRequest): Promise<void> {
    const dir = this.target(ctx, ctx.query.get("path"));
    const st = await lstat(dir).catch((e: unknown) => {
      throw fsError(e, dir);
    });
    if (!st.isDirectory()) throw badRequest(`not a directory: ${dir}`, "ERR_PATH_INVALID");
    const names = (await readdir(dir)).sort();
    const out: FsInfo[] = [];
    for (const n of names) {
      const s = await lstat(path.join(dir, n)).catch(() => undefined);
      if (s) out.push(toFsInfo(n, s));
    }
    sendJson(ctx.res, 200, out);
  }

  private async stat(ctx: AgentRequest): Promise<void> {
    const p = this.target(ctx, ctx.query.get("path"));
    const st = await lstat(p).catch((e: unknown) => {
      throw fsError(e, p);
    });
    sendJson(ctx.res, 200, toFsInfo(p === "/" ? "/" : path.basename(p), st));
  }

  private async mkdir(ctx: AgentRequest): Promise<void> {
    const body = await readJsonObject(ctx.req);
    if (typeof body.path !== "string") throw badRequest("path is required", "ERR_PATH_INVALID");
    const p = this.target(ctx, body.path);
    // A field of the wrong type is refused, never read as its default: `"mode": 448` taken as
    // 0755 would make the directory more open than asked.
    if (body.recursive !== undefined && body.recursive !== null && typeof body.recursive !== "boolean") throw badRequest(`recursive must be true or false, got ${JSON.stringify(body.recursive)}`);
    if (body.mode !== undefined && body.mode !== null && typeof body.mode !== "string") throw badRequest(`mode must be an octal string such as "0755", got ${JSON.stringify(body.mode)}`);
    const recursive = body.recursive === true;
    const mode = typeof body.mode === "string" && body.mode !== "" ? parseOctalMode(body.mode, "mode") : 0o755;
    const who = this.users.resolve(ctx.query);
    const existing = await lstat(p).catch(() => undefined);
    if (existing) {
      if (existing.isDirectory() && recursive) {
        sendJson(ctx.res, 200, toFsInfo(path.basename(p), existing));
        return;
      }
      throw badRequest(`already exists: ${p}`, "ERR_PATH_INVALID");
    }
    // Create missing components one by one so that each new directory is chowned.
    const missing: string[] = [];
    for (let cur = p; ; cur = path.dirname(cur)) {
      const st = await lstat(cur).catch(() => undefined);
      if (st) {
        if (!st.isDirectory()) throw badRequest(`not a directory: ${cur}`, "ERR_PATH_INVALID");
        break;
      }
      missing.unshift(cur);
      if (!recursive && missing.length > 1) throw new PaddockError("ERR_PATH_NOT_FOUND", `parent directory does not exist: ${path.dirname(p)}`);
    }
    try {
      for (const d of missing) {
        await mkdir(d, { mode: d === p ? mode : 0o755 });
        // Owner and mode through a descriptor of the directory itself (O_NOFOLLOW): a user who
        // swaps it for a symlink meanwhile gets an error, not root's chown of the link's target.
        // The mode is set after the chown (which clears setuid/setgid) and exactly as asked:
        // mkdir(2) applied the agent's umask and may drop the special bits.
        const h = await open(d, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
        try {
          await h.chown(who.uid, who.gid);
          if (d === p) await h.chmod(mode);
        } finally {
          await h.close();
        }
      }
    } catch (e) {
      throw fsError(e, p);
    }
    sendJson(ctx.res, 200, toFsInfo(path.basename(p), await lstat(p)));
  }

  private async remove(ctx: AgentRequest): Promise<void> {
    const p = this.target(ctx, ctx.query.get("path"));
    if (p === "/") throw badRequest("refusing to remove /", "ERR_PATH_INVALID");
    const recursive = queryBool(ctx.query, "recursive");
    try {
      const st = await lstat(p);
      if (st.isDirectory()) {
        if (recursive) await rm(p, { recursive: true, force: false });
        else await rmdir(p);
      } else {
        await unlink(p);
      }
    } catch (e) {
      throw fsError(e, p);
    }
    sendJson(ctx.res, 200, {});
  }
}
