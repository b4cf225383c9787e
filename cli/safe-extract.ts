/**
 * Host-side extraction of a tar that a guest produced (`paddock vm cp HOST:/dir LOCAL`, mode
 * cp-v1-tar). Guest root is hostile and can replace its own agent, so every byte of the archive
 * is attacker-controlled; this module is the only place the CLI unpacks one.
 *
 * Two layers:
 *
 * 1. node-tar (https://github.com/isaacs/node-tar, `Unpack`) does the parsing and writing with its
 *    own protections on: `preservePaths: false` (absolute names are refused here before node-tar
 *    would strip them; `..` refused; no extraction through a symlink, its path-reservation and
 *    symlink-cache checks, fixed for CVE-2021-32803/32804/37701/37712 in 6.1.9), `strict: true`
 *    (every warning, e.g. a bad checksum, is an error), `preserveOwner: false`.
 * 2. {@link checkEntry}, our own filter, runs on every entry header before node-tar acts on it and
 *    refuses the WHOLE archive on the first entry that is not:
 *    - a regular file or a directory. Symlinks are refused, not created: Paddock's agent never
 *      sends one (tenant-daemon/agent/tar.ts `createTarStream` emits files and directories only),
 *      so one in the stream means a tampered agent, and a guest-chosen symlink left on the host is
 *      a trap for whatever later writes through it. Hardlinks, device nodes, FIFOs and unknown
 *      types are refused for the same reason.
 *    - named by a relative path of single components (`shared/path-names.ts`
 *      `assertSingleComponent`; a leading `./` and a directory's trailing `/` are allowed) that
 *      resolves under the destination.
 *    Modes are masked to `0o777` (setuid, setgid and sticky dropped) and then the process umask
 *    applies; owners in the archive are ignored, so everything belongs to the invoking user.
 *
 * Nothing here follows a link in the archive, and nothing is written once an entry was refused.
 */
import path from "node:path";
import { Transform, type Readable } from "node:stream";
import { Unpack, type ReadEntry } from "tar";
import { PaddockError } from "../shared/errors.js";
import { singleComponentProblem } from "../shared/path-names.js";

/** Entry types accepted from a guest (node-tar's names, see node-tar `src/types.ts`). */
const FILE_TYPES: ReadonlySet<string> = new Set(["File", "OldFile", "ContiguousFile"]);
const DIR_TYPE = "Directory";

/** What {@link extractGuestTar} wrote. */
export interface ExtractSummary {
  /** Regular files written. */
  files: number;
  /** Directory entries applied (created or already there). */
  directories: number;
}

function refused(message: string): PaddockError {
  return new PaddockError("ERR_CP_BAD_ARCHIVE", `refusing the archive from the VM: ${message}`);
}

/**
 * Check one entry header from a guest tar (pure: no I/O).
 *
 * @param destDir - absolute, resolved destination directory.
 * @param entry - the header as node-tar parsed it: `type` (node-tar type name), `path`, optional
 *   `linkpath` and `mode`.
 * @returns the entry's relative path as components (`[]` for the archive's root entry `./`), and
 *   the mode to apply (`0o777` mask applied).
 * @throws PaddockError `ERR_CP_BAD_ARCHIVE` when the entry is not a plain file or directory, has a
 *   link target, or its name is absolute, contains `..`, `.`, empty, `\`, NUL or control
 *   components, or does not resolve under `destDir`.
 */
export function checkEntry(destDir: string, entry: { type: string; path: string; linkpath?: string | undefined; mode?: number | undefined }): { parts: string[]; mode: number | undefined } {
  const shown = JSON.stringify(entry.path);
  const isDir = entry.type === DIR_TYPE;
  if (!isDir && !FILE_TYPES.has(entry.type)) throw refused(`entry ${shown} is a ${entry.type}; only regular files and directories are accepted`);
  if (entry.linkpath) throw refused(`entry ${shown} carries a link target`);
  if (entry.path.startsWith("/")) throw refused(`entry ${shown} is an absolute path`);
  let rel = entry.path;
  if (rel.startsWith("./")) rel = rel.slice(2);
  else if (rel === ".") rel = "";
  if (isDir && rel.endsWith("/")) rel = rel.slice(0, -1);
  const parts = rel === "" ? [] : rel.split("/");
  if (parts.length === 0 && !isDir) throw refused(`entry ${shown} names the destination itself`);
  for (const part of parts) {
    const problem = singleComponentProblem(part);
    if (problem !== undefined) throw refused(`entry ${shown}: component ${JSON.stringify(part)} is not a plain name (${problem})`);
  }
  const resolved = path.resolve(destDir, ...parts);
  if (resolved !== destDir && !resolved.startsWith(destDir + path.sep)) throw refused(`entry ${shown} resolves outside the destination`);
  return { parts, mode: entry.mode === undefined ? undefined : entry.mode & 0o777 };
}

/**
 * Extract the tar stream `source` (uncompressed, from a guest) into the existing directory
 * `destDir`, under the rules in the file comment. Resolves once every entry is on disk.
 *
 * On a refusal the rest of the stream is not read (`source` is destroyed) and no later entry is
 * written; entries before the refused one may already be in `destDir`, so callers that must
 * leave nothing behind extract into a fresh staging directory and remove it on error.
 *
 * @param source - the tar bytes.
 * @param destDir - destination directory; must exist and be the caller's own (not a tree a guest
 *   can write).
 * @returns counts of what was written.
 * @throws PaddockError `ERR_CP_BAD_ARCHIVE` for a refused entry (see {@link checkEntry}) or an
 *   archive node-tar cannot read or refuses (bad checksum, truncated, path through a symlink);
 *   stream and file-system errors of the source or destination as they come.
 */
export async function extractGuestTar(source: Readable, destDir: string): Promise<ExtractSummary> {
  const dest = path.resolve(destDir);
  const summary: ExtractSummary = { files: 0, directories: 0 };
  let failure: Error | undefined;
  let stopped = false;
  const unpack = new Unpack({
    cwd: dest,
    strict: true,
    preservePaths: false,
    preserveOwner: false,
    unlink: false,
    // Only plain tar: node-tar sniffs gzip by its magic bytes (refused in the gate below) and
    // zstd unless told not to; brotli is only tried for *.tbr file names.
    zstd: false,
    brotli: false,
    filter: (_p: string, entry: unknown) => {
      if (stopped) return false;
      const e = entry as ReadEntry;
      try {
        const { parts, mode } = checkEntry(dest, { type: e.type, path: e.path, linkpath: e.linkpath, mode: e.mode });
        if (parts.length === 0) return false; // the archive's `./`: the destination already exists
        if (mode !== undefined) e.mode = mode;
        if (e.type === DIR_TYPE) summary.directories++;
        else summary.files++;
        return true;
      } catch (err) {
        // Recorded now (node-tar may reach "close" before the next turn), and the streams are
        // stopped on the next turn: this runs inside node-tar's header parsing.
        failure ??= err as Error;
        stopped = true;
        setImmediate(() => stop(err as Error));
        return false;
      }
    },
  });
  let gateOpen = false;
  const gate = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (!gateOpen && chunk.length > 0) {
        gateOpen = true;
        if (chunk[0] === 0x1f) return cb(refused("the stream is compressed; a plain tar is expected"));
      }
      cb(null, chunk);
    },
  });
  // node-tar's Unpack is a minipass stream, not a Node one, so it is wired by hand (as node-tar's
  // own `extract` does): it emits "close" once every entry is on disk, also after an error.
  let ended = false;
  const endUnpack = (): void => {
    if (ended) return;
    ended = true;
    unpack.end();
  };
  function stop(err: Error): void {
    failure ??= err;
    stopped = true;
    source.unpipe(gate);
    gate.unpipe();
    source.destroy();
    gate.destroy();
    endUnpack();
  }
  await new Promise<void>((resolve) => {
    unpack.on("close", () => resolve());
    unpack.on("abort", (err: Error) => {
      failure ??= err;
      resolve();
    });
    unpack.on("error", (err: Error) => stop(err));
    source.once("error", (err: Error) => stop(err));
    gate.once("error", (err: Error) => stop(err));
    source.once("close", () => {
      if (!source.readableEnded) stop(new Error("the connection closed before the archive ended"));
    });
    gate.once("end", endUnpack);
    gate.pipe(unpack as unknown as NodeJS.WritableStream, { end: false });
    source.pipe(gate);
  });
  if (failure) {
    if (failure instanceof PaddockError) throw failure;
    const code = (failure as { code?: unknown }).code;
    // node-tar's own refusals and parse failures carry TAR_* codes (node-tar src/warn-method.ts);
    // a file-system error while writing keeps its errno code (ENOSPC, EACCES …) and is local I/O.
    if (typeof code === "string" && code.startsWith("TAR_")) throw refused(`${failure.message} (${code})`);
    throw failure;
  }
  return summary;
}
