/**
 * A small streaming tar writer and extractor for cp (docs/slicer-api.md#file-copy). Regular
 * files and directories only; names relative to the copied directory (`file.txt`, `sub/`, `sub/x`);
 * mtimes and permission bits kept, setuid/setgid/sticky dropped; absolute or `..` entries
 * rejected; symlinks never followed while extracting. Nothing is held in memory beyond one
 * chunk, so a 1 GiB file streams through.
 *
 * Format: POSIX ustar headers (https://pubs.opengroup.org/onlinepubs/9699919799/utilities/pax.html),
 * with pax `x` records for names over 100 bytes or sizes ≥ 8 GiB; the reader also accepts
 * GNU `L` long names and base-256 numbers.
 */
import { constants as fsConstants, createReadStream } from "node:fs";
import { lstat, mkdir, open, readdir, rename, rm, rmdir, utimes, chown, chmod } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { WriteBehind } from "./write-behind.js";
import { randomHex } from "./lazy-crypto.js";

const BLOCK = 512;
/** File reads of the tar writer, bytes: 4× fewer thread-pool round trips than 256 KiB (as cp.ts binary reads). */
const TAR_READ_CHUNK_BYTES = 1024 * 1024;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** Compile cp `exclude` globs (`**`, `*`, `?`; patterns without `/` also match basenames). */
export function compileExcludes(patterns: readonly string[]): (relPath: string) => boolean {
  const compiled = patterns
    .map((p) => p.trim().replace(/^\.\//, "").replace(/\/+$/, ""))
    .filter((p) => p !== "")
    .map((p) => ({ re: globToRegExp(p), basename: !p.includes("/") }));
  if (compiled.length === 0) return () => false;
  return (relPath) => {
    const parts = relPath.replace(/\/+$/, "").split("/");
    for (let i = 0; i < parts.length; i++) {
      const prefix = parts.slice(0, i + 1).join("/");
      for (const c of compiled) {
        if (c.re.test(prefix) || (c.basename && c.re.test(parts[i] as string))) return true;
      }
    }
    return false;
  };
}

/** Glob → anchored RegExp: `**` any characters, `*` any but `/`, `?` one but `/`. */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === "*" && glob[i + 1] === "*") {
      if (glob[i + 2] === "/") {
        re += "(?:.*/)?";
        i += 2;
      } else {
        re += ".*";
        i += 1;
      }
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

// ---------------------------------------------------------------------------------------
// Writer

interface TarEntryInfo {
  name: string;
  type: "file" | "directory";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeS: number;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function paxRecord(key: string, value: string): Buffer {
  // "%d %s=%s\n" where %d counts the whole record including itself.
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + String(bodyLen).length;
  while (bodyLen + String(len).length !== len) len = bodyLen + String(len).length;
  return Buffer.from(`${len}${body}`);
}

function header(e: { name: string; mode: number; uid: number; gid: number; size: number; mtimeS: number; typeflag: string }): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(e.name, 0, 100, "utf8");
  h.write(octal(e.mode & 0o7777, 8), 100, "ascii");
  h.write(octal(Math.min(e.uid, 0o7777777), 8), 108, "ascii");
  h.write(octal(Math.min(e.gid, 0o7777777), 8), 116, "ascii");
  h.write(octal(e.size, 12), 124, "ascii");
  h.write(octal(Math.max(0, Math.floor(e.mtimeS)), 12), 136, "ascii");
  h.write("        ", 148, "ascii");
  h.write(e.typeflag, 156, "ascii");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "ascii");
  return h;
}

function padding(size: number): Buffer {
  const r = size % BLOCK;
  return r === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - r);
}

function entryHeaders(e: TarEntryInfo): Buffer[] {
  const name = e.type === "directory" ? e.name + "/" : e.name;
  const needPaxName = Buffer.byteLength(name) > 100;
  const needPaxSize = e.size >= 8 * 1024 ** 3;
  const out: Buffer[] = [];
  if (needPaxName || needPaxSize) {
    const recs = Buffer.concat([...(needPaxName ? [paxRecord("path", name)] : []), ...(needPaxSize ? [paxRecord("size", String(e.size))] : [])]);
    out.push(header({ name: "PaxHeader", mode: 0o644, uid: 0, gid: 0, size: recs.length, mtimeS: e.mtimeS, typeflag: "x" }), recs, padding(recs.length));
  }
  out.push(
    header({
      name: needPaxName ? Buffer.from(name).subarray(0, 100).toString("utf8") : name,
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      size: needPaxSize ? 0 : e.type === "file" ? e.size : 0,
      mtimeS: e.mtimeS,
      typeflag: e.type === "file" ? "0" : "5",
    }),
  );
  return out;
}

/**
 * Stream a tar of `rootDir`'s contents (entry names relative to it), skipping anything that
 * is not a regular file or directory and anything `excluded`. When `rootDir` is a regular
 * file, the archive holds that one file under its basename.
 */
export function createTarStream(rootPath: string, excluded: (rel: string) => boolean): Readable {
  async function* fileBody(abs: string, size: number): AsyncGenerator<Buffer> {
    let sent = 0;
    if (size > 0) {
      for await (const chunk of createReadStream(abs, { highWaterMark: TAR_READ_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
        const take = Math.min(chunk.length, size - sent);
        if (take > 0) yield take === chunk.length ? chunk : chunk.subarray(0, take);
        sent += take;
        if (sent >= size) break;
      }
    }
    // A file that shrank while being read is zero-filled to its declared size.
    while (sent < size) {
      const n = Math.min(64 * 1024, size - sent);
      yield Buffer.alloc(n);
      sent += n;
    }
    const pad = padding(size);
    if (pad.length) yield pad;
  }
  async function* walk(abs: string, rel: string): AsyncGenerator<Buffer> {
    const names = (await readdir(abs)).sort();
    for (const n of names) {
      const childRel = rel === "" ? n : `${rel}/${n}`;
      if (excluded(childRel)) continue;
      const childAbs = path.join(abs, n);
      let st;
      try {
        st = await lstat(childAbs);
      } catch {
        continue; // vanished while walking
      }
      const base = { name: childRel, mode: st.mode, uid: st.uid, gid: st.gid, mtimeS: st.mtimeMs / 1000 };
      if (st.isDirectory()) {
        yield* entryHeaders({ ...base, type: "directory", size: 0 });
        yield* walk(childAbs, childRel);
      } else if (st.isFile()) {
        yield* entryHeaders({ ...base, type: "file", size: st.size });
        yield* fileBody(childAbs, st.size);
      }
    }
  }
  async function* all(): AsyncGenerator<Buffer> {
    const st = await lstat(rootPath).catch(() => undefined);
    if (st?.isFile()) {
      const name = path.basename(rootPath);
      yield* entryHeaders({ name, type: "file", mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, mtimeS: st.mtimeMs / 1000 });
      yield* fileBody(rootPath, st.size);
    } else {
      yield* walk(rootPath, "");
    }
    yield ZERO_BLOCK;
    yield ZERO_BLOCK;
  }
  return Readable.from(all(), { objectMode: false });
}

// ---------------------------------------------------------------------------------------
// Extractor

/** Options for {@link extractTar}. */
export interface ExtractOptions {
  /** Owner applied to everything written. */
  uid: number;
  gid: number;
  /** Mode for extracted regular files instead of the archive's (cp's `permissions`). */
  fileMode?: number;
  excluded: (rel: string) => boolean;
}

function invalid(message: string): PaddockError {
  return new PaddockError("ERR_BAD_REQUEST", `invalid tar archive: ${message}`);
}

function parseNumber(buf: Buffer): number {
  if (buf.length > 0 && ((buf[0] as number) & 0x80) !== 0) {
    // GNU base-256: big-endian two's complement with the high bit set.
    let v = (buf[0] as number) & 0x7f;
    for (let i = 1; i < buf.length; i++) v = v * 256 + (buf[i] as number);
    return v;
  }
  const s = buf.toString("ascii").replace(/\0.*$/s, "").trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw invalid(`bad numeric field ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function cString(buf: Buffer): string {
  const i = buf.indexOf(0);
  return buf.subarray(0, i === -1 ? buf.length : i).toString("utf8");
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp === -1) break;
    const len = parseInt(data.subarray(off, sp).toString("ascii"), 10);
    if (!Number.isInteger(len) || len <= 0) break;
    const rec = data.subarray(sp + 1, off + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    off += len;
  }
  return out;
}

/** A buffered reader over an async byte source that hands out exact-size pieces. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  private readonly it: AsyncIterator<Buffer>;
  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }
  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    return true;
  }
  /** Exactly `n` bytes, or undefined at a clean end of input. */
  async exact(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) {
      if (!(await this.fill())) {
        if (this.buf.length === 0) return undefined;
        throw invalid("truncated archive");
      }
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Stream up to `n` bytes to `sink` chunk by chunk. */
  async stream(n: number, sink: (chunk: Buffer) => Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill())) throw invalid("truncated file data");
      const take = Math.min(left, this.buf.length);
      const piece = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      await sink(piece);
    }
  }
  /** Drain the rest of the input (so the client sees a complete upload). */
  async drain(): Promise<void> {
    this.buf = Buffer.alloc(0);
    while (await this.fill()) this.buf = Buffer.alloc(0);
  }
}

/** Validate and normalise an entry name: relative, no `..`, no NUL; "" for the root itself. */
export function safeEntryName(raw: string): string {
  if (raw.includes("\0")) throw invalid("entry name contains NUL");
  if (raw.startsWith("/")) throw invalid(`absolute entry name ${JSON.stringify(raw)}`);
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw invalid(`entry name escapes the destination: ${JSON.stringify(raw)}`);
  return parts.join("/");
}

/**
 * Create the directories of `rel` below `destDir` without ever following a symlink: each
 * existing component must be a real directory; missing ones are created and chowned.
 * @returns the directories it created, outermost first (absolute paths).
 */
async function ensureDirs(destDir: string, relParts: string[], uid: number, gid: number): Promise<string[]> {
  const created: string[] = [];
  let cur = destDir;
  for (const part of relParts) {
    cur = path.join(cur, part);
    const st = await lstat(cur).catch(() => undefined);
    if (!st) {
      await mkdir(cur, { mode: 0o755 });
      created.push(cur);
      await chown(cur, uid, gid);
    } else if (!st.isDirectory()) {
      throw invalid(`${cur} exists and is not a directory`);
    }
  }
  return created;
}

/**
 * Remove the directories in `created` (outermost first) innermost first, each only if still
 * empty: rmdir(2) neither follows a symlink nor removes a directory something was written to.
 * Errors are ignored (a directory that is not empty or already gone stays as it is).
 */
export async function removeCreatedDirs(created: readonly string[]): Promise<void> {
  for (const d of [...created].reverse()) await rmdir(d).catch(() => undefined);
}

/**
 * Write one file entry: its `size` bytes from `r` into a new temp file `tmpName` beside `abs`
 * (O_EXCL, O_NOFOLLOW, mode 0600), owner, mode and mtime set through the descriptor, then renamed
 * onto `abs` (replacing a symlink or file there rather than following it; a directory there
 * fails the rename with EISDIR). On any failure (ENOSPC, a truncated archive) the temp file is
 * removed, so a failed entry never appears at `abs`; whatever was at `abs` before stays.
 * @throws the read's error (PaddockError ERR_BAD_REQUEST), ERR_BAD_REQUEST when `abs` is a
 *   directory, or the file's (e.g. ENOSPC).
 */
async function writeEntry(r: ByteReader, abs: string, tmpName: string, size: number, owner: { uid: number; gid: number; mode: number; mtimeS: number }): Promise<void> {
  const tmp = path.join(path.dirname(abs), tmpName);
  const fh = await open(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  try {
    try {
      const writer = new WriteBehind(fh);
      try {
        await r.stream(size, (chunk) => writer.add(chunk));
      } finally {
        await writer.finish(); // every write waited for before the descriptor closes
      }
      await fh.chown(owner.uid, owner.gid);
      await fh.chmod(owner.mode);
      await fh.utimes(owner.mtimeS, owner.mtimeS);
    } finally {
      await fh.close();
    }
    await rename(tmp, abs).catch((err: unknown) => {
      throw errnoCode(err) === "EISDIR" ? invalid(`${abs} is a directory`) : err;
    });
  } catch (err) {
    // Whatever the copy's user may have put at the temp name meanwhile: the entry's error counts.
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/**
 * Extract an uncompressed tar from `source` into `destDir` (which must exist). Atomic per
 * entry, not per archive: each file is written to a temp name beside it and renamed into place
 * only when complete, so a failure (a malformed or unsafe entry, a full disk) leaves the entries
 * before it in place and nothing of the failing one, not even the parent directories only it
 * needed.
 * @throws PaddockError ERR_BAD_REQUEST (400) for malformed or unsafe archives; fs errors
 *   (e.g. ENOSPC) as they come.
 */
export async function extractTar(source: AsyncIterable<Buffer>, destDir: string, opts: ExtractOptions): Promise<void> {
  const r = new ByteReader(source);
  const dirTimes: { abs: string; mtimeS: number }[] = [];
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  for (;;) {
    const h = await r.exact(BLOCK);
    if (!h) break;
    if (h.equals(ZERO_BLOCK)) break; // end-of-archive marker
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    if (sum !== parseNumber(h.subarray(148, 156))) throw invalid("header checksum mismatch");
    const typeflag = String.fromCharCode(h[156] as number);
    let size = parseNumber(h.subarray(124, 136));
    if (pax.size !== undefined) size = Number(pax.size);
    const padded = size + ((BLOCK - (size % BLOCK)) % BLOCK);
    if (typeflag === "x" || typeflag === "L" || typeflag === "g") {
      if (size > 1 << 20) throw invalid("extended header too large");
      const data = (await r.exact(padded)) ?? Buffer.alloc(0);
      if (typeflag === "x") pax = parsePax(data.subarray(0, size));
      if (typeflag === "L") longName = cString(data.subarray(0, size));
      continue;
    }
    const ustarPrefix = h.subarray(257, 262).toString("ascii") === "ustar" ? cString(h.subarray(345, 500)) : "";
    const rawName = pax.path ?? longName ?? (ustarPrefix ? `${ustarPrefix}/${cString(h.subarray(0, 100))}` : cString(h.subarray(0, 100)));
    const mtimeS = pax.mtime !== undefined ? Number(pax.mtime) : parseNumber(h.subarray(136, 148));
    const mode = parseNumber(h.subarray(100, 108)) & 0o777; // drop setuid/setgid/sticky
    pax = {};
    longName = undefined;
    const name = safeEntryName(rawName);
    const isFile = typeflag === "0" || typeflag === "\0" || typeflag === "7";
    const isDir = typeflag === "5";
    if (name === "" || (!isFile && !isDir) || opts.excluded(name)) {
      await r.stream(padded, async () => undefined);
      continue;
    }
    const parts = name.split("/");
    const created = await ensureDirs(destDir, isDir ? parts : parts.slice(0, -1), opts.uid, opts.gid);
    const abs = path.join(destDir, name);
    if (isDir) {
      await chmod(abs, mode);
      await chown(abs, opts.uid, opts.gid);
      dirTimes.push({ abs, mtimeS });
      await r.stream(padded, async () => undefined);
      continue;
    }
    try {
      // No lstat first: the rename replaces a symlink or special file at `abs`, never follows
      // it, and fails on a directory (one syscall per entry, as the old write in place had).
      // A fresh random temp name per entry: a guest user who saw one cannot occupy the next.
      await writeEntry(r, abs, `.paddock-upload-${randomHex(8)}`, size, { uid: opts.uid, gid: opts.gid, mode: opts.fileMode ?? mode, mtimeS });
    } catch (err) {
      await removeCreatedDirs(created); // the parents this failed entry alone needed
      throw err;
    }
    await r.stream(padded - size, async () => undefined);
  }
  await r.drain();
  for (const d of dirTimes.reverse()) await utimes(d.abs, d.mtimeS, d.mtimeS).catch(() => undefined);
}
