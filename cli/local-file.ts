/**
 * Reading a local file the user named (`--userdata-file F`, `--token-file F`,
 * `PADDOCK_TOKEN_FILE`, `SLICER_TOKEN_FILE`, the admin-token file): a failure says which file,
 * where its name came from and why, with the stable code `ERR_FILE_UNREADABLE` (exit 1),
 * instead of node's bare `ENOENT: no such file or directory, open '…'`. The CLI reads such a
 * file before it sends anything.
 */
import { promises as fs } from "node:fs";
import { PaddockError, errnoCode } from "../shared/errors.js";

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
 * @param origin - where the name came from, e.g. `--userdata-file`.
 * @param err - what the read threw.
 * @returns PaddockError `ERR_FILE_UNREADABLE` (exit 1 in the CLI), with the errno in
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

/**
 * Read a local file named by the user, as UTF-8 text.
 * @param origin - the flag or variable that named it, for the message.
 * @throws PaddockError `ERR_FILE_UNREADABLE` (see {@link fileReadError}).
 */
export async function readLocalFile(file: string, origin: string): Promise<string> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (err) {
    throw fileReadError(file, origin, err);
  }
}
