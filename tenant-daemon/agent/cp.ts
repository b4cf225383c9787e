/**
 * File copy (docs/slicer-api.md#file-copy): `POST /v1/cp` host → guest and `GET /v1/cp` guest →
 * host, legacy (`binary`, `tar`) and cp-v1 (`cp-v1-binary`, `cp-v1-tar`, `cp-v1-recursive`) modes.
 * Bodies are streamed both ways; uploads go to a temp file that is renamed into place.
 */
import { randomHex } from "./lazy-crypto.js";
import { createReadStream } from "node:fs";
import { lchown, lstat, mkdir, open, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { badRequest, parseOctalMode, queryBool, formatOctalMode, type AgentRequest } from "./http-util.js";
import { bodyChunks } from "./body-chunks.js";
import { WRITE_BEHIND_BATCH_BYTES, WriteBehind } from "./write-behind.js";
import { compileExcludes, createTarStream, extractTar, removeCreatedDirs, type ExtractOptions } from "./tar.js";
import { resolveGuestPath, type UserDirectory } from "./users.js";

/**
 * Sizes of the file copy, bytes. Writing: while one batch is on the thread pool the agent keeps
 * reading the socket, and the next `writev` takes up to this much read meanwhile — socket and
 * disk never take turns (with Node's default 16 KiB stream mark every 64 KiB socket read
 * waited for its write). 1 MiB as the tar extractor's batches: 256 KiB made 4× the thread-pool
 * round trips (each a futex wake-up and an eventfd write) and cost the agent ~20 % more CPU per
 * upload (docs/performance.md "cp in, third look"). Reading: 1 MiB reads, 16× fewer thread-pool
 * round trips than the default 64 KiB.
 */
export const COPY_WRITE_BATCH_BYTES = WRITE_BEHIND_BATCH_BYTES;
export const COPY_READ_CHUNK_BYTES = 1024 * 1024;

const POST_MODES = new Set(["binary", "tar", "cp-v1-binary", "cp-v1-tar"]);
const GET_MODES = new Set(["binary", "tar", "cp-v1-binary", "cp-v1-tar", "cp-v1-recursive"]);

/** Map filesystem errors to client errors where the client is at fault. */
export function fsError(err: unknown, p: string): unknown {
  const code = errnoCode(err);
  if (code === "ENOENT") return new PaddockError("ERR_PATH_NOT_FOUND", `no such file or directory: ${p}`, { cause: err });
  if (code === "ENOTDIR") return new PaddockError("ERR_PATH_INVALID", `not a directory: ${p}`, { cause: err });
  if (code === "EISDIR") return new PaddockError("ERR_PATH_INVALID", `is a directory: ${p}`, { cause: err });
  if (code === "EEXIST") return new PaddockError("ERR_PATH_INVALID", `already exists: ${p}`, { cause: err });
  if (code === "ENOTEMPTY") return new PaddockError("ERR_PATH_INVALID", `directory not empty: ${p}`, { cause: err });
  if (code === "ENOSPC" || code === "EDQUOT") return new PaddockError("ERR_VM_DISK_FULL", `no space left on the VM's disk writing ${p}`, { cause: err });
  if (code === "ELOOP") return new PaddockError("ERR_PATH_INVALID", `refusing to follow a symlink: ${p}`, { cause: err });
  return err;
}

/** base64url without padding (the `X-Slicer-Source-Name-Base64` header). */
export function sourceNameHeader(name: string): string {
  return Buffer.from(name, "utf8").toString("base64url").replace(/=+$/, "");
}

/**
 * mkdir -p that chowns only the directories it creates (`uid`/`gid`, mode 0755).
 * @returns the directories it created, outermost first (for {@link removeCreatedDirs} when
 *   what was to go in them fails).
 * @throws PaddockError ERR_PATH_INVALID when a component exists and is not a directory; fs errors.
 */
export async function mkdirOwned(dir: string, uid: number, gid: number): Promise<string[]> {
  const missing: string[] = [];
  let cur = dir;
  for (;;) {
    const st = await lstat(cur).catch(() => undefined);
    if (st) {
      if (!st.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `${cur} exists and is not a directory`);
      break;
    }
    missing.unshift(cur);
    const parent = path.dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  const created: string[] = [];
  for (const d of missing) {
    const made = await mkdir(d, { mode: 0o755 }).then(
      () => true,
      (err: unknown) => {
        if (errnoCode(err) !== "EEXIST") throw err;
        return false;
      },
    );
    if (made) created.push(d);
    // lchown: a parent the copy's user may write lets that user swap `d` for a symlink.
    await lchown(d, uid, gid);
  }
  return created;
}

/**
 * The cp-v1 `source_name` query parameter, needed when the destination is an existing directory.
 * @throws PaddockError ERR_PATH_INVALID (400) when it is missing or not one path component.
 */
function plainName(name: string | null, mode: string, dest: string): string {
  if (name === null || name === "") {
    throw badRequest(`source_name is required with mode=${mode} when path ${dest} is a directory (the copy goes to ${dest}/<source_name>)`, "ERR_PATH_INVALID");
  }
  if (name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw badRequest(`invalid source_name ${JSON.stringify(name)}: must be one path component`, "ERR_PATH_INVALID");
  }
  return name;
}

/**
 * Write a request body to a new file at `p` (O_EXCL, mode 0600): the socket's chunks as they
 * came (body-chunks.ts), gathered into one `writev` per {@link COPY_WRITE_BATCH_BYTES} while the
 * next batch is read (write-behind.ts). Waits for every write before it returns or throws. Then
 * gives the file to `uid`:`gid` with `mode` through its descriptor: `p` is in a directory the
 * copy's user may write, who can swap the name for a symlink while the body streams, and a
 * `chown` by name would then give that user the symlink's target (e.g. /etc/shadow).
 * @throws the body's error (a client gone mid-upload) or the file's (e.g. ENOSPC).
 */
async function writeBody(body: Readable, p: string, uid: number, gid: number, mode: number): Promise<void> {
  const fh = await open(p, "wx", 0o600);
  try {
    const writer = new WriteBehind(fh, COPY_WRITE_BATCH_BYTES);
    try {
      for await (const chunk of bodyChunks(body)) await writer.add(chunk);
    } finally {
      await writer.finish();
    }
    await fh.chown(uid, gid);
    await fh.chmod(mode);
  } finally {
    await fh.close();
  }
}

/**
 * Create `dir` (mkdir -p, {@link mkdirOwned}) and extract the tar `source` into it
 * (tar.ts {@link extractTar}: atomic per entry). When the extraction fails, the directories
 * created here are removed again if still empty, so an archive refused before any entry was
 * written leaves nothing behind; entries written before the failure stay.
 * @throws as {@link mkdirOwned} and {@link extractTar}.
 */
export async function extractInto(source: AsyncIterable<Buffer>, dir: string, opts: ExtractOptions): Promise<void> {
  const created = await mkdirOwned(dir, opts.uid, opts.gid);
  try {
    await extractTar(source, dir, opts);
  } catch (err) {
    await removeCreatedDirs(created);
    throw err;
  }
}

/** The cp route (agent side). */
export class CopyHandler {
  constructor(private readonly users: UserDirectory) {}

  /** `POST /v1/cp` — host → guest. */
  async upload(ctx: AgentRequest): Promise<void> {
    const q = ctx.query;
    const mode = q.get("mode") || "binary";
    if (!POST_MODES.has(mode)) throw badRequest(`invalid mode: ${mode}`);
    const who = this.users.resolve(q);
    const rawPath = q.get("path");
    const dest = resolveGuestPath(rawPath, who.home);
    const perm = q.get("permissions");
    const fileMode = perm !== null && perm !== "" ? parseOctalMode(perm, "permissions", "ERR_QUERY_INVALID") & 0o777 : undefined;
    const excluded = compileExcludes(q.getAll("exclude"));
    try {
      if (mode === "binary" || mode === "cp-v1-binary") {
        let target = dest.endsWith("/") && dest !== "/" ? dest.slice(0, -1) : dest;
        if (mode === "cp-v1-binary") {
          const st = await stat(target).catch(() => undefined);
          if (dest.endsWith("/") && !st?.isDirectory()) throw badRequest(`destination ${dest} must be an existing directory`, "ERR_PATH_INVALID");
          if (st?.isDirectory()) target = path.join(target, plainName(q.get("source_name"), mode, target));
        }
        await this.writeFile(ctx, target, who.uid, who.gid, fileMode);
      } else {
        let dir = dest.endsWith("/") && dest !== "/" ? dest.slice(0, -1) : dest;
        if (mode === "cp-v1-tar" && !queryBool(q, "copy_contents")) {
          const st = await stat(dir).catch(() => undefined);
          if (st && !st.isDirectory()) throw badRequest(`destination ${dir} is a file`, "ERR_PATH_INVALID");
          if (st?.isDirectory()) dir = path.join(dir, plainName(q.get("source_name"), mode, dir));
        }
        await extractInto(bodyChunks(ctx.req), dir, { uid: who.uid, gid: who.gid, excluded, ...(fileMode !== undefined ? { fileMode } : {}) });
      }
    } catch (err) {
      throw fsError(err, dest);
    }
    ctx.res.writeHead(200, { "Content-Type": "application/json", "Content-Length": 2 });
    ctx.res.end("{}");
  }

  private async writeFile(ctx: AgentRequest, target: string, uid: number, gid: number, fileMode: number | undefined): Promise<void> {
    const existing = await lstat(target).catch(() => undefined);
    if (existing?.isDirectory()) throw badRequest(`destination ${target} is a directory`, "ERR_PATH_INVALID");
    const mode = fileMode ?? (existing?.isFile() ? existing.mode & 0o777 : 0o644);
    const created = await mkdirOwned(path.dirname(target), uid, gid);
    const tmp = path.join(path.dirname(target), `.paddock-upload-${randomHex(8)}`);
    try {
      // No fsync, as `cat > f` (docs/slicer-api.md#file-copy).
      await writeBody(ctx.req, tmp, uid, gid, mode);
      await rename(tmp, target); // replaces a symlink at `target` rather than following it
    } catch (err) {
      await rm(tmp, { force: true });
      await removeCreatedDirs(created);
      throw err;
    }
  }

  /** `GET /v1/cp` — guest → host. */
  async download(ctx: AgentRequest): Promise<void> {
    const q = ctx.query;
    const accept = ctx.req.headers.accept ?? "";
    const mode = q.get("mode") || (/application\/x-tar/.test(accept) ? "tar" : "binary");
    if (!GET_MODES.has(mode)) throw badRequest(`invalid mode: ${mode}`);
    const who = this.users.resolve(q);
    const rawPath = q.get("path");
    const src = resolveGuestPath(rawPath, who.home);
    const st = await stat(src).catch((err: unknown) => {
      throw fsError(err, src);
    });
    const v1 = mode.startsWith("cp-v1-");
    const nameless = src === "/" || (rawPath ?? "").endsWith("/.");
    const headers: Record<string, string | number> = {};
    const asTar = mode === "tar" || mode === "cp-v1-tar" || (mode === "cp-v1-recursive" && st.isDirectory());
    if (!asTar) {
      if (st.isDirectory()) throw badRequest("must specify a file not a directory", "ERR_PATH_INVALID");
      if (!st.isFile()) throw badRequest(`not a regular file: ${src}`, "ERR_PATH_INVALID");
    } else if (mode === "cp-v1-tar" && !st.isDirectory()) {
      throw badRequest(`not a directory: ${src}`, "ERR_PATH_INVALID");
    }
    if (v1) {
      headers["X-Slicer-Source-Type"] = st.isDirectory() ? "directory" : "file";
      if (!nameless) headers["X-Slicer-Source-Name-Base64"] = sourceNameHeader(path.basename(src.replace(/\/+$/, "")));
    }
    const { res } = ctx;
    res.on("error", () => undefined);
    if (asTar) {
      res.writeHead(200, { ...headers, "Content-Type": "application/x-tar" });
      const excluded = compileExcludes(q.getAll("exclude"));
      await pipeline(createTarStream(src, excluded), res).catch((err: unknown) => {
        res.destroy(err instanceof Error ? err : undefined);
      });
      return;
    }
    const stream = createReadStream(src, { highWaterMark: COPY_READ_CHUNK_BYTES });
    await new Promise<void>((resolve, reject) => {
      stream.once("open", () => resolve());
      stream.once("error", reject);
    }).catch((err: unknown) => {
      throw fsError(err, src);
    });
    res.writeHead(200, {
      ...headers,
      "Content-Type": "application/octet-stream",
      "Content-Length": st.size,
      "X-Slicer-File-Mode": formatOctalMode(st.mode),
    });
    await pipeline(stream, res).catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : undefined);
    });
  }
}
