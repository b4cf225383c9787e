/**
 * The tenant daemon's production entry point (the supervisor's default `daemon_entry`):
 *
 *   node dist/tenant-daemon/launch.js up|purge <config.yaml>     same as main.js
 *
 * It runs the one-file CommonJS bundle of the daemon (`daemon.bundle.cjs` next to it, built by
 * scripts/build-daemon-bundle.ts) with the V8 code cache made at build time
 * (`daemon.bundle.cjs.cache`; shared/cjs-code-cache.ts), instead of the ESM module graph of main.js: node 20 has no code
 * cache for ES modules (`module.enableCompileCache` is node ≥ 22.1), and resolving, reading and
 * compiling ~200 module files was most of a daemon's start (docs/benchmarks.md, figure 6). A
 * bundle or cache that is missing, or a cache V8 rejects (another node version or V8 flags),
 * costs only time: the launcher then compiles the bundle, or imports main.js.
 *
 * The bundle and its cache are read-only build artefacts under dist/ (root-owned, never a path
 * a guest can write).
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CODE_CACHE_SUFFIX, readCodeCache, runCommonJsFile } from "../shared/cjs-code-cache.js";

/** The bundle's file name, next to this module. */
export const DAEMON_BUNDLE_FILE = "daemon.bundle.cjs";
// Re-exported for scripts/build-daemon-bundle.ts and its test.
export { CODE_CACHE_SUFFIX, runCommonJsFile };

/** What the bundle exports (tenant-daemon/main.ts). */
interface DaemonModule {
  main(argv: string[]): Promise<number>;
}

/** Load the bundled daemon (with its code cache when present), else the ESM main.js. */
async function loadDaemon(): Promise<DaemonModule> {
  const dir = path.dirname(fileURLToPath(import.meta.url));
  const bundle = path.join(dir, DAEMON_BUNDLE_FILE);
  if (!existsSync(bundle)) return (await import("./main.js")) as DaemonModule;
  return runCommonJsFile(bundle, readCodeCache(bundle)).exports as DaemonModule;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const daemon = await loadDaemon();
  process.exitCode = await daemon.main(process.argv.slice(2));
}
