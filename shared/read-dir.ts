/**
 * Directory listing where a missing directory is an empty one: the stores, claims and state
 * roots Paddock lists are made lazily, so "not there yet" and "holds nothing" mean the same.
 */
import { promises as fs } from "node:fs";
import { errnoCode } from "./errors.js";

/**
 * The entry names of directory `dir` (readdir(3) order, `.` and `..` excluded), or `[]` when
 * `dir` does not exist (ENOENT). Symlinks are followed as readdir does: call it only on
 * host-owned paths, never inside a tree a guest can write.
 * @throws Node's errno error for anything else (EACCES, ENOTDIR, EIO, …).
 */
export async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return [];
    throw err;
  }
}
