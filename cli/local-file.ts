/**
 * Reading a local file the user named (`--userdata-file F`, `--token-file F`,
 * `PADDOCK_TOKEN_FILE`, `SLICER_TOKEN_FILE`, the admin-token file): a failure says which file,
 * where its name came from and why, with the stable code `ERR_FILE_UNREADABLE` (exit 1),
 * instead of node's bare `ENOENT: no such file or directory, open '…'`. The CLI reads such a
 * file before it sends anything.
 */
import { promises as fs } from "node:fs";
import { fileReadError } from "../shared/file-read-error.js";

// The error's wording is shared with the supervisor's read of `paddock up --config FILE`.
export { fileReadError } from "../shared/file-read-error.js";

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
