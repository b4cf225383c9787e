/**
 * The guest command `slicer-agent upload check|finalise|abort`: the guest half of the Go SDK's
 * chunked copy (`CpToVMChunked`, https://github.com/slicervm/sdk/blob/main/client_cp_chunked.go).
 *
 * The SDK uploads each chunk with the ordinary `POST /vm/{h}/cp?mode=binary&permissions=0600`
 * into a staging directory beside the destination (upload-manifest.ts), then the manifest, then
 * runs this command as guest root through buffered exec:
 *
 * - `upload check` prints `chunked-copy-v2` (the SDK's capability probe). With
 *   `--manifest M [--uid N --gid N]` it also prints one JSON line
 *   `{"chunks":n,"valid":[…],"missing":[…],"invalid":[…]}`: which chunks are already staged
 *   with the size and SHA-256 the manifest gives, so a client can resume a broken upload.
 * - `upload finalise --manifest M --uid N --gid N` checks every chunk against the manifest while
 *   assembling them into a root-only temp file, then renames it onto the destination (`binary`)
 *   or extracts it there (`tar`) with the owner and mode asked, and removes the staging.
 * - `upload abort --manifest M --uid N --gid N` removes the staging directory.
 *
 * Everything happens inside the guest, as the guest's root, on the guest's own files: the host
 * only relays the cp and exec requests it already relays.
 *
 * The staging directory is owned by the user the copy is for (cp creates it with `uid`/`gid`), so
 * that user can change it while root works on it. Root therefore reads the manifest and opens the
 * chunks, and removes the staging, with that user's effective uid, gid and groups: a symlink or
 * a swapped directory can only lead root to what that user could read or remove anyway. Root
 * itself writes only a fresh temp file (O_EXCL) in the destination's directory and the
 * destination, which must be the sibling of the staging directory that the SDK names it after,
 * both through a descriptor of that directory (`/proc/self/fd/N/…`); when the staging is not
 * root's, that directory must be reached without a symlink and a symlink at the destination is
 * replaced, not followed into another directory.
 */
import { lazyCrypto, randomHex } from "./lazy-crypto.js";
import { closeSync, constants as fsConstants, createReadStream, fchmodSync, fchownSync, fstatSync, fsyncSync, lstatSync, openSync, readSync, readdirSync, readlinkSync, realpathSync, renameSync, rmdirSync, rmSync, statSync, statfsSync, writeSync, type Stats } from "node:fs";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { parseOctalMode } from "./http-util.js";
import { fsError, mkdirOwned } from "./cp.js";
import { bodyChunks } from "./body-chunks.js";
import { extractTar, removeCreatedDirs } from "./tar.js";
import { CHUNKED_COPY_TOKEN, MAX_MANIFEST_BYTES, chunkFileName, parseCopyManifest, stagingPaths, validSourceName, type CopyChunk, type CopyManifest, type StagingPaths } from "./upload-manifest.js";
import { resolveGuestPath, type Identity, type UserDirectory } from "./users.js";
import { WRITE_BEHIND_BATCH_BYTES } from "./write-behind.js";

const USAGE = "usage: slicer-agent upload check [--manifest PATH [--uid N] [--gid N]]\n" +
  "       slicer-agent upload finalise --manifest PATH --uid N --gid N\n" +
  "       slicer-agent upload abort --manifest PATH [--uid N] [--gid N]\n";

const READ_BLOCK_BYTES = 1 << 20;

/** Output sinks (process stdout/stderr in the guest; buffers in tests). */
export interface UploadIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

interface UploadArgs {
  sub: "check" | "finalise" | "abort";
  manifest: string | undefined;
  /** As given (4294967295 = the default user); undefined when absent. */
  uid: string | undefined;
  gid: string | undefined;
}

/** What {@link inspectChunk} found for one chunk. */
type ChunkState = "valid" | "missing" | "invalid";

class UsageError extends Error {}

function parseArgs(args: readonly string[]): UploadArgs {
  const sub = args[1];
  if (args[0] !== "upload" || (sub !== "check" && sub !== "finalise" && sub !== "abort")) throw new UsageError("unknown subcommand");
  const out: UploadArgs = { sub, manifest: undefined, uid: undefined, gid: undefined };
  for (let i = 2; i < args.length; i += 2) {
    const flag = args[i];
    const value = args[i + 1];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    if (flag === "--manifest") out.manifest = value;
    else if (flag === "--uid") out.uid = value;
    else if (flag === "--gid") out.gid = value;
    else throw new UsageError(`unknown option ${flag}`);
  }
  if (sub !== "check" && out.manifest === undefined) throw new UsageError("--manifest is required");
  if (sub === "finalise" && (out.uid === undefined || out.gid === undefined)) throw new UsageError("--uid and --gid are required");
  if (sub === "check" && out.manifest === undefined && (out.uid !== undefined || out.gid !== undefined)) throw new UsageError("--uid/--gid need --manifest");
  return out;
}

/**
 * Run `slicer-agent upload …` (`args` = argv after the script, starting with `upload`).
 * @returns the exit code: 0 done, 1 refused or failed (message on stderr, with its error code), 2 usage.
 */
export async function runUploadCommand(args: readonly string[], users: UserDirectory, io: UploadIo): Promise<number> {
  let parsed: UploadArgs;
  try {
    parsed = parseArgs(args);
  } catch (err) {
    io.err(`slicer-agent upload: ${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
    return 2;
  }
  try {
    if (parsed.sub === "check") {
      io.out(`${CHUNKED_COPY_TOKEN}\n`);
      if (parsed.manifest !== undefined) io.out(`${JSON.stringify(checkStaging(parsed, users))}\n`);
    } else if (parsed.sub === "finalise") {
      io.out(`${await finalise(parsed, users, io)}\n`);
    } else {
      io.out(`${abort(parsed, users)}\n`);
    }
    return 0;
  } catch (err) {
    const code = err instanceof PaddockError ? ` (${err.code})` : "";
    io.err(`slicer-agent upload ${parsed.sub}: ${err instanceof Error ? err.message : String(err)}${code}\n`);
    return 1;
  }
}

/** The identity the copy is for, and its staging paths resolved against that user's home. */
function session(a: UploadArgs, users: UserDirectory): { who: Identity; paths: StagingPaths } {
  const q = new URLSearchParams();
  if (a.uid !== undefined) q.set("uid", a.uid);
  if (a.gid !== undefined) q.set("gid", a.gid);
  const who = users.resolve(q);
  return { who, paths: stagingPaths(resolveGuestPath(a.manifest ?? null, who.home, "--manifest")) };
}

/**
 * lstat the staging directory (never following a symlink) and return its owner, who must be
 * root or the copy's user. `undefined` when it does not exist.
 * @throws PaddockError ERR_PATH_INVALID for a symlink, a non-directory or a stranger's directory.
 */
function stagingOwner(paths: StagingPaths, who: Identity): { uid: number; gid: number } | undefined {
  let st: Stats;
  try {
    st = lstatSync(paths.sessionDir);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return undefined;
    throw fsError(err, paths.sessionDir);
  }
  if (!st.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `staging ${paths.sessionDir} is not a directory${st.isSymbolicLink() ? " (a symlink)" : ""}; refusing it`);
  if (st.uid !== 0 && st.uid !== who.uid) throw new PaddockError("ERR_PATH_INVALID", `staging ${paths.sessionDir} belongs to uid ${st.uid}, not to uid ${who.uid} the copy is for; refusing it`);
  return { uid: st.uid, gid: st.gid };
}

/**
 * Run `fn` (synchronous only, so nothing else runs meanwhile) with `owner` as effective uid, gid
 * and only group; a no-op when `owner` is root or this process is not root.
 */
function asOwner<T>(owner: { uid: number; gid: number }, fn: () => T): T {
  if (owner.uid === 0 || process.geteuid?.() !== 0 || !process.seteuid || !process.setegid || !process.setgroups || !process.getgroups || !process.getegid) return fn();
  const groups = process.getgroups();
  const egid = process.getegid();
  process.setgroups([owner.gid]);
  process.setegid(owner.gid);
  process.seteuid(owner.uid);
  try {
    return fn();
  } finally {
    process.seteuid(0);
    process.setegid(egid);
    process.setgroups(groups);
  }
}

/** Open a regular file without following a symlink in its last component. */
function openRegular(file: string): { fd: number; size: number } {
  const fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    throw new PaddockError("ERR_PATH_INVALID", `${file} is not a regular file`);
  }
  return { fd, size: st.size };
}

/**
 * Read and parse the manifest as the staging's owner; the chunks directory must be a real one.
 * @throws PaddockError ERR_PATH_NOT_FOUND, ERR_PATH_INVALID, ERR_CP_MANIFEST_INVALID.
 */
function readManifest(paths: StagingPaths, owner: { uid: number; gid: number }): CopyManifest {
  return asOwner(owner, () => {
    let f: { fd: number; size: number };
    try {
      f = openRegular(paths.manifest);
    } catch (err) {
      throw fsError(err, paths.manifest);
    }
    try {
      if (f.size > MAX_MANIFEST_BYTES) throw new PaddockError("ERR_CP_MANIFEST_INVALID", `manifest is ${f.size} bytes, over ${MAX_MANIFEST_BYTES}`);
      const buf = Buffer.alloc(f.size);
      let got = 0;
      while (got < f.size) {
        const n = readSync(f.fd, buf, got, f.size - got, got);
        if (n === 0) break;
        got += n;
      }
      return parseCopyManifest(buf.subarray(0, got).toString("utf8"));
    } finally {
      closeSync(f.fd);
    }
  });
}

/**
 * Open chunk `c` as the staging's owner (`undefined`: not staged). A symlink, a non-file or a
 * symlinked `chunks` directory is refused.
 */
function openChunk(paths: StagingPaths, owner: { uid: number; gid: number }, c: CopyChunk): { fd: number; size: number } | undefined {
  return asOwner(owner, () => {
    const dir = lstatSync(paths.chunksDir, { throwIfNoEntry: false });
    if (dir === undefined) return undefined;
    if (!dir.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `${paths.chunksDir} is not a directory${dir.isSymbolicLink() ? " (a symlink)" : ""}; refusing it`);
    try {
      return openRegular(path.posix.join(paths.chunksDir, chunkFileName(c.index)));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      if (errnoCode(err) === "ELOOP") throw new PaddockError("ERR_CP_CHUNK_INVALID", `chunk ${c.index} is a symlink; refusing it`, { cause: err });
      throw err;
    }
  });
}

/**
 * Stream an open chunk through SHA-256 (and to `outFd` when given) and compare with the manifest.
 * Closes `fd`. Reads one byte past the declared size to notice a longer file.
 */
function inspectChunk(fd: number, c: CopyChunk, outFd?: number): "valid" | "invalid" {
  const hash = lazyCrypto().createHash("sha256");
  const buf = Buffer.alloc(Math.min(READ_BLOCK_BYTES, c.size + 1));
  let total = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, c.size + 1 - total), total);
      if (n === 0) break;
      total += n;
      if (total > c.size) return "invalid";
      hash.update(buf.subarray(0, n));
      if (outFd !== undefined) {
        for (let off = 0; off < n;) off += writeSync(outFd, buf, off, n - off);
      }
    }
  } finally {
    closeSync(fd);
  }
  return total === c.size && hash.digest("hex") === c.sha256 ? "valid" : "invalid";
}

/** `upload check --manifest M`: which chunks are staged intact. */
function checkStaging(a: UploadArgs, users: UserDirectory): { chunks: number; valid: number[]; missing: number[]; invalid: number[] } {
  const { who, paths } = session(a, users);
  const owner = stagingOwner(paths, who);
  if (owner === undefined) throw new PaddockError("ERR_PATH_NOT_FOUND", `no staging directory ${paths.sessionDir}`);
  const manifest = readManifest(paths, owner);
  const result = { chunks: manifest.chunks.length, valid: [] as number[], missing: [] as number[], invalid: [] as number[] };
  for (const c of manifest.chunks) {
    let state: ChunkState;
    try {
      const f = openChunk(paths, owner, c);
      state = f === undefined ? "missing" : inspectChunk(f.fd, c);
    } catch (err) {
      if (!(err instanceof PaddockError && err.code === "ERR_CP_CHUNK_INVALID")) throw err;
      state = "invalid";
    }
    result[state].push(c.index);
  }
  return result;
}

/** Where the assembled stream goes, by the manifest's placement rules (as `POST /v1/cp`, cp.ts). */
interface Placement {
  kind: "file" | "extract";
  /** The file to write, or the directory to extract into. */
  target: string;
}

/**
 * Where `dest` puts the stream. `strict` (the staging's owner is not root, so it may control the
 * destination's directory): a symlink at `dest` is not followed into another directory.
 */
function placement(m: CopyManifest, dest: string, strict: boolean): Placement {
  const trailing = dest.endsWith("/") && dest !== "/";
  const bare = trailing ? dest.slice(0, -1) : dest;
  const st = (strict ? lstatSync : statSync)(bare, { throwIfNoEntry: false });
  if (m.mode === "binary") {
    if (m.version === 2) {
      if (trailing && !st?.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `destination ${dest} must be an existing directory`);
      if (st?.isDirectory()) return { kind: "file", target: path.posix.join(bare, m.sourceName) };
    }
    if (st?.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `destination ${bare} is a directory`);
    return { kind: "file", target: bare };
  }
  if (m.version === 2 && !m.copyContents) {
    if (st && !st.isDirectory()) throw new PaddockError("ERR_PATH_INVALID", `destination ${bare} is a file`);
    if (st?.isDirectory()) return { kind: "extract", target: path.posix.join(bare, m.sourceName) };
  }
  return { kind: "extract", target: bare };
}

/**
 * Open directory `dir` and return names pinned to it (`/proc/self/fd/N/<name>`), so a later swap
 * of one of its components cannot redirect them. `strict`: `dir` must also be reached without
 * symlinks (its components may belong to the staging's unprivileged owner).
 * @throws PaddockError ERR_PATH_INVALID when `strict` and a symlink leads to `dir`.
 */
function pinDirectory(dir: string, strict: boolean): { at: (name: string) => string; close: () => void } {
  const fd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  let real: string;
  try {
    real = readlinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    closeSync(fd);
    if (strict) throw err;
    return { at: (name) => path.posix.join(dir, name), close: () => undefined }; // no /proc: plain paths
  }
  if (strict && real !== dir) {
    closeSync(fd);
    throw new PaddockError("ERR_PATH_INVALID", `${dir} is reached through a symlink (to ${real}) and the staging belongs to an unprivileged user; refusing it`);
  }
  return { at: (name) => `/proc/self/fd/${fd}/${name}`, close: () => closeSync(fd) };
}

/**
 * `upload finalise`: verify, assemble, place, remove the staging.
 * @returns a one-line summary.
 * @throws PaddockError ERR_PATH_*, ERR_CP_MANIFEST_INVALID, ERR_CP_CHUNK_INVALID (chunks missing,
 *   of the wrong size or hash; nothing is written then and the staging stays for a resume),
 *   ERR_VM_DISK_FULL.
 */
async function finalise(a: UploadArgs, users: UserDirectory, io: UploadIo): Promise<string> {
  const { who, paths } = session(a, users);
  const owner = stagingOwner(paths, who);
  if (owner === undefined) throw new PaddockError("ERR_PATH_NOT_FOUND", `no staging directory ${paths.sessionDir}`);
  const m = readManifest(paths, owner);
  if (String(m.uid) !== a.uid || String(m.gid) !== a.gid) {
    throw new PaddockError("ERR_CP_MANIFEST_INVALID", `manifest owner ${m.uid}:${m.gid} is not the --uid/--gid ${a.uid ?? ""}:${a.gid ?? ""} asked`);
  }
  if (m.sourceName !== "" && !validSourceName(m.sourceName)) throw new PaddockError("ERR_CP_MANIFEST_INVALID", `invalid source_name ${JSON.stringify(m.sourceName)}`);
  const dest = resolveGuestPath(m.destination, who.home, "destination");
  const parent = path.posix.dirname(paths.sessionDir);
  if (path.posix.dirname(dest.length > 1 ? dest.replace(/\/$/, "") : dest) !== parent) {
    throw new PaddockError("ERR_CP_MANIFEST_INVALID", `destination ${dest} is not beside its staging directory ${paths.sessionDir}`);
  }
  const strict = owner.uid !== 0;
  const place = placement(m, dest, strict);
  const fileMode = m.permissions !== "" ? parseOctalMode(m.permissions) & 0o777 : undefined;
  const space = statfsSync(parent);
  const needBytes = m.size + (m.mode === "tar" ? m.unpackedSize : 0);
  if (space.bavail * space.bsize < needBytes) throw new PaddockError("ERR_VM_DISK_FULL", `${needBytes} bytes needed under ${parent}, ${space.bavail * space.bsize} free`);

  // 1. Assemble into a root-only temp file beside the destination, checking every chunk.
  const dir = pinDirectory(place.kind === "file" ? path.posix.dirname(place.target) : parent, strict);
  const tmp = dir.at(`.paddock-upload-${randomHex(8)}`);
  let out: number;
  try {
    out = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  } catch (err) {
    dir.close();
    throw fsError(err, place.target);
  }
  let outOpen = true;
  try {
    const bad: string[] = [];
    for (const c of m.chunks) {
      const f = openChunk(paths, owner, c);
      if (f === undefined) bad.push(`${c.index} missing`);
      else if (inspectChunk(f.fd, c, bad.length === 0 ? out : undefined) === "invalid") bad.push(`${c.index} corrupt (size or SHA-256 differs)`);
    }
    if (bad.length > 0) throw new PaddockError("ERR_CP_CHUNK_INVALID", `chunks not staged intact: ${bad.join(", ")}`);
    fsyncSync(out);
    // 2. Place it.
    if (place.kind === "file") {
      const target = dir.at(path.posix.basename(place.target));
      const existing = lstatSync(target, { throwIfNoEntry: false });
      fchownSync(out, who.uid, who.gid);
      fchmodSync(out, fileMode ?? (existing?.isFile() ? existing.mode & 0o777 : 0o644));
      closeSync(out);
      outOpen = false;
      renameSync(tmp, target); // replaces a symlink at the target rather than following it
    } else {
      closeSync(out);
      outOpen = false;
      const created = await mkdirOwned(place.target, who.uid, who.gid);
      try {
        // The extractor refuses entries through symlinks; the directory itself is checked here.
        if (strict && realpathSync(place.target) !== place.target) throw new PaddockError("ERR_PATH_INVALID", `${place.target} is reached through a symlink and the staging belongs to an unprivileged user; refusing it`);
        await extractTar(bodyChunks(createReadStream(tmp, { highWaterMark: WRITE_BEHIND_BATCH_BYTES })), place.target, { uid: who.uid, gid: who.gid, excluded: () => false, ...(fileMode !== undefined ? { fileMode } : {}) });
      } catch (err) {
        await removeCreatedDirs(created); // only if still empty (tar.ts)
        throw err;
      }
      rmSync(tmp, { force: true });
    }
  } catch (err) {
    if (outOpen) closeSync(out);
    rmSync(tmp, { force: true });
    throw fsError(err, place.target);
  } finally {
    dir.close();
  }
  // 3. The copy is in place; a staging that will not go is worth a warning, not a failure.
  try {
    removeStaging(paths, owner);
  } catch (err) {
    io.err(`slicer-agent upload finalise: removing ${paths.sessionDir}: ${err instanceof Error ? err.message : String(err)}\n`);
  }
  return `copied ${m.size} bytes in ${m.chunks.length} chunks to ${place.target}`;
}

/**
 * Empty the staging directory as its owner, then remove the directory itself as this process
 * (the owner may not be allowed to write its parent). rmdir(2) does not follow a symlink, so a
 * staging swapped for one meanwhile stays.
 */
function removeStaging(paths: StagingPaths, owner: { uid: number; gid: number }): void {
  asOwner(owner, () => {
    for (const name of readdirSync(paths.sessionDir)) rmSync(path.posix.join(paths.sessionDir, name), { recursive: true, force: true });
  });
  rmdirSync(paths.sessionDir);
}

/** `upload abort`: remove the staging directory (as its owner); absent is fine. */
function abort(a: UploadArgs, users: UserDirectory): string {
  const { who, paths } = session(a, users);
  const owner = stagingOwner(paths, who);
  if (owner === undefined) return `nothing staged at ${paths.sessionDir}`;
  removeStaging(paths, owner);
  return `removed ${paths.sessionDir}`;
}
