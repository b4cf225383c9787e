/**
 * Replacing a directory's files under readers that hold the directory itself (a read-only bind
 * mount of it in running VMs: scripts/build-agent-bundle.ts), without ever showing them a
 * missing or half-written file.
 */
import { promises as fs } from "node:fs";
import path from "node:path";

/**
 * Move every file under `from` to the same relative path under `to`, each by one rename(2)
 * over the old file (directories made as needed, mode 0755), so a reader of `to` sees each file
 * whole, old or new, never missing. Files of `to` that `from` lacks stay.
 * @throws Error from the file system (`from` and `to` must be on one file system).
 */
export async function installOver(from: string, to: string): Promise<void> {
  await fs.mkdir(to, { recursive: true, mode: 0o755 });
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) {
      // A file where the new build has a directory: only an old build's layout; replace it.
      const old = await fs.lstat(dst).catch(() => undefined);
      if (old !== undefined && !old.isDirectory()) await fs.rm(dst, { force: true });
      await installOver(src, dst);
    } else {
      // A directory where the new build has a file: likewise.
      if ((await fs.lstat(dst).catch(() => undefined))?.isDirectory()) await fs.rm(dst, { recursive: true, force: true });
      await fs.rename(src, dst);
    }
  }
}
