/**
 * The random payload of the copy and relay benchmarks: a file of fresh random bytes, written
 * 1 MiB at a time, and its sha256 to check each copy byte-exact.
 */
import crypto from "node:crypto";
import { promises as fs } from "node:fs";

/**
 * Write `bytes` random bytes to `file` (created or truncated).
 * @returns the file's sha256, hex.
 * @throws the file system's errors (the file is closed either way).
 */
export async function writeRandomFile(file: string, bytes: number): Promise<string> {
  const hash = crypto.createHash("sha256");
  const h = await fs.open(file, "w");
  try {
    for (let left = bytes; left > 0; left -= 2 ** 20) {
      const buf = crypto.randomBytes(Math.min(2 ** 20, left));
      hash.update(buf);
      await h.write(buf);
    }
  } finally {
    await h.close();
  }
  return hash.digest("hex");
}
