/**
 * Last postbuild step: `dist/build-info.json`, which names the build (shared/build-info.ts):
 * `version` from package.json and `build`, the first 12 hex digits of a SHA-256 over every
 * `.js`/`.cjs` file under dist/{shared,supervisor,tenant-daemon,toolbox} (the daemon bundle and
 * the agent bundle included), each as its dist-relative path, a NUL, its length, a NUL and its
 * bytes, in path order. Tests, scripts and the CLI are left out: no daemon runs them. V8 code
 * caches and native helpers are left out too (a cache is not the code; the helpers are
 * executed from disk afresh on each use).
 *
 *   node dist/scripts/build-info.js
 */
import { createHash } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BUILD_ID_DIRS, BUILD_INFO_FILE, type BuildInfo } from "../shared/build-info.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const dist = path.join(root, "dist");

/** Every `.js`/`.cjs` file under `dir`, dist-relative, sorted. */
async function codeFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(path.join(dist, dir), { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && /\.c?js$/.test(e.name))
    .map((e) => path.relative(dist, path.join(e.parentPath, e.name)))
    .sort();
}

const hash = createHash("sha256");
for (const dir of BUILD_ID_DIRS) {
  for (const rel of await codeFiles(dir)) {
    const bytes = await fs.readFile(path.join(dist, rel));
    hash.update(`${rel}\0${bytes.length}\0`).update(bytes);
  }
}
const pkg = JSON.parse(await fs.readFile(path.join(root, "package.json"), "utf8")) as { version: string };
const info: BuildInfo = { version: pkg.version, build: hash.digest("hex").slice(0, 12) };
await fs.writeFile(path.join(dist, BUILD_INFO_FILE), JSON.stringify(info) + "\n", { mode: 0o644 });
