/**
 * Postbuild step: the tenant daemon as one CommonJS file with a V8 code cache, run by its
 * production entry point tenant-daemon/launch.ts (see there for why).
 *
 * 1. Bundle dist/tenant-daemon/main.js and every package it imports into
 *    `dist/tenant-daemon/daemon.bundle.cjs` (esbuild, minified). `import.meta.url` of every
 *    bundled module becomes the bundle's own URL: the daemon finds the project root, the seccomp
 *    profile and dist/bin from it by walking up (shared/proc.ts findProjectRoot), which works
 *    from any file under dist/. The bundle must be ASCII: V8 holds the source of a running
 *    script for as long as it runs, one byte a character when every character fits in Latin-1,
 *    two otherwise, so one `µ` doubled the daemon's largest heap object (1 → 2 MiB). esbuild
 *    escapes non-ASCII in strings and identifiers, not in regular expression literals; the
 *    build refuses a bundle that is not ASCII.
 * 2. In a child node run with the daemon's flags (shared/daemon-node-flags.ts: V8 rejects a
 *    cache made under other flags), evaluate the bundle's top level — every module's
 *    initialisation, not the daemon's start, since main() only runs from an entry point — and
 *    write V8's code cache of everything compiled so far to `daemon.bundle.cjs.cache`.
 *
 *   node dist/scripts/build-daemon-bundle.js
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { run } from "../shared/exec.js";
import { CJS_BUNDLE_OPTIONS, assertRunnableBundle } from "./lib/cjs-bundle.js";
import { DAEMON_NODE_FLAGS } from "../shared/daemon-node-flags.js";
import { CODE_CACHE_SUFFIX, DAEMON_BUNDLE_FILE, runCommonJsFile } from "../tenant-daemon/launch.js";

const self = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(self), "../..");
const bundle = path.join(root, "dist/tenant-daemon", DAEMON_BUNDLE_FILE);

if (process.argv[2] === "--write-cache") {
  const { script, exports } = runCommonJsFile(bundle, undefined);
  if (typeof (exports as { main?: unknown }).main !== "function") throw new Error(`${bundle} exports no main()`);
  await fs.writeFile(bundle + CODE_CACHE_SUFFIX, script.createCachedData(), { mode: 0o644 });
} else {
  await fs.rm(bundle + CODE_CACHE_SUFFIX, { force: true });
  await build({
    ...CJS_BUNDLE_OPTIONS,
    entryPoints: [path.join(root, "dist/tenant-daemon/main.js")],
    outfile: bundle,
    minify: true,
    // Keep names: stack traces in the daemon's log stay readable, and error classes keep theirs.
    keepNames: true,
    // The packages' license comments go to `daemon.bundle.cjs.LEGAL.txt` next to it, not into
    // the source V8 keeps in memory (one of them is not ASCII).
    legalComments: "external",
  });
  await assertRunnableBundle(bundle);
  await run(process.execPath, [...DAEMON_NODE_FLAGS, self, "--write-cache"], { timeoutMs: 120_000, errorCode: "ERR_INTERNAL" });
}
