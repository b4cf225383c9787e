/**
 * The error for a local file a user named that cannot be read: which file, where its name came
 * from and why, with the stable code `ERR_FILE_UNREADABLE` (exit 1), instead of node's bare
 * `ENOENT: no such file or directory, open '…'`. Used by the supervisor for `paddock up --config
 * FILE` (supervisor/supervisor-config.ts `loadSupervisorConfig`) and the CLI's reads of the files a
 * user names (cli/local-file.ts).
 */
import { PaddockError, errnoCode } from "./errors.js";

/** Plain words for the errno codes a read of a named file usually fails with (open(2), read(2)). */
const WHY: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "it is a directory",
  ENOTDIR: "a part of its path is not a directory",
  ELOOP: "too many levels of symbolic links",
  ENAMETOOLONG: "its name is too long",
  EMFILE: "too many open files",
  EIO: "an I/O error",
};

/**
 * The error for a failed read of `file`: `cannot read <file> (from <origin>): <why> (<errno>)`.
 * @param origin - where the name came from, e.g. `paddock up --config`.
 * @param err - what the read threw.
 * @returns PaddockError `ERR_FILE_UNREADABLE`, with `details.file`, the errno in
 *   `details.errno` and `err` as its cause.
 */
export function fileReadError(file: string, origin: string, err: unknown): PaddockError {
  const errno = errnoCode(err);
  const why = (errno !== undefined ? WHY[errno] : undefined) ?? (err instanceof Error ? err.message : String(err));
  return new PaddockError("ERR_FILE_UNREADABLE", `cannot read ${file} (from ${origin}): ${why}${errno !== undefined ? ` (${errno})` : ""}`, {
    cause: err,
    details: { file, ...(errno !== undefined ? { errno } : {}) },
  });
}
