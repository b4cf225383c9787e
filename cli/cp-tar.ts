/**
 * The tar a directory upload sends (`paddock vm cp DIR HOST:/path`, mode cp-v1-tar): an
 * uncompressed archive of the directory's contents, entry names relative to it (`file.txt`,
 * `sub/`, `sub/x`), walked in sorted order. Only regular files and directories go in: symlinks,
 * devices, FIFOs and sockets are skipped, and a file with several hard links goes in as a
 * regular file each time (the agent's extractor, tenant-daemon/agent/tar.ts `extractTar`, takes
 * nothing else). Modes, mtimes and owners are recorded; the agent drops setuid, setgid and
 * sticky bits and owns everything as the requested uid/gid.
 *
 * The walk is here; node-tar (https://github.com/isaacs/node-tar, `WriteEntry`) writes each
 * entry's headers (POSIX ustar, pax records when a field does not fit) and streams its body,
 * one chunk at a time, so a large file never sits in memory. One `WriteEntry` per entry, with
 * its own link cache, is what keeps hard links as regular files.
 */
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { WriteEntry } from "tar";

/** Two zero blocks: the end-of-archive marker. */
const END_OF_ARCHIVE = Buffer.alloc(1024);

/**
 * Stream a tar of `rootDir`'s contents (see the module doc). Entries that vanish during the
 * walk are skipped.
 * @param rootDir - absolute path of a directory (a symlink to one is followed).
 * @returns a byte stream; it errors (and ends) when a directory cannot be listed or a file
 *   cannot be read or changes size while it is read.
 */
export function createDirectoryTar(rootDir: string): Readable {
  async function* entry(rel: string): AsyncGenerator<Buffer> {
    for await (const chunk of new WriteEntry(rel, { cwd: rootDir })) yield chunk;
  }
  async function* walk(abs: string, rel: string): AsyncGenerator<Buffer> {
    for (const name of (await readdir(abs)).sort()) {
      const childRel = rel === "" ? name : `${rel}/${name}`;
      const childAbs = path.join(abs, name);
      let st;
      try {
        st = await lstat(childAbs);
      } catch {
        continue; // vanished while walking
      }
      if (st.isDirectory()) {
        yield* entry(childRel);
        yield* walk(childAbs, childRel);
      } else if (st.isFile()) {
        yield* entry(childRel);
      }
    }
  }
  async function* all(): AsyncGenerator<Buffer> {
    yield* walk(rootDir, "");
    yield END_OF_ARCHIVE;
  }
  return Readable.from(all(), { objectMode: false });
}
