/**
 * The tenant daemon's production entry point (the supervisor's default `daemon_entry`):
 *
 *   node dist/tenant-daemon/launch.js up|purge <config.yaml>     same as main.js
 *
 * It runs the one-file CommonJS bundle of the daemon (`daemon.bundle.cjs` next to it, built by
 * scripts/build-daemon-bundle.ts) with the V8 code cache made at build time
 * (`daemon.bundle.cjs.cache`), instead of the ESM module graph of main.js: node 20 has no code
 * cache for ES modules (`module.enableCompileCache` is node ≥ 22.1), and resolving, reading and
 * compiling ~200 module files was most of a daemon's start (docs/benchmarks.md, figure 6). A
 * bundle or cache that is missing, or a cache V8 rejects (another node version or V8 flags),
 * costs only time: the launcher then compiles the bundle, or imports main.js.
 *
 * The bundle and its cache are read-only build artefacts under dist/ (root-owned, never a path
 * a guest can write).
 */
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

/** The bundle's file name, next to this module. */
export const DAEMON_BUNDLE_FILE = "daemon.bundle.cjs";
/** Suffix of the bundle's V8 code cache file. */
export const CODE_CACHE_SUFFIX = ".cache";

/** What the bundle exports (tenant-daemon/main.ts). */
interface DaemonModule {
  main(argv: string[]): Promise<number>;
}

/**
 * Evaluate a CommonJS file through `vm.Script` with `cachedData` (the way node's own CJS loader
 * wraps a module), so V8 skips compiling what the cache holds.
 * @param file - absolute path of the `.cjs` file.
 * @param cachedData - V8 code cache of exactly this source, or undefined.
 * @returns the module's exports, the script (for `createCachedData`) and whether V8 rejected the cache.
 * @throws whatever the module's top level throws.
 */
export function runCommonJsFile(file: string, cachedData: Buffer | undefined): { exports: unknown; script: vm.Script; cacheRejected: boolean } {
  const source = readFileSync(file, "utf8");
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new vm.Script(wrapped, { filename: file, ...(cachedData ? { cachedData } : {}) });
  const fn = script.runInThisContext() as (e: unknown, r: NodeRequire, m: { exports: unknown }, f: string, d: string) => void;
  const mod = { exports: {} as unknown };
  fn(mod.exports, createRequire(file), mod, file, path.dirname(file));
  return { exports: mod.exports, script, cacheRejected: cachedData !== undefined && script.cachedDataRejected === true };
}

/** Load the bundled daemon (with its code cache when present), else the ESM main.js. */
async function loadDaemon(): Promise<DaemonModule> {
  const dir = path.dirname(fileURLToPath(import.meta.url));
  const bundle = path.join(dir, DAEMON_BUNDLE_FILE);
  if (!existsSync(bundle)) return (await import("./main.js")) as DaemonModule;
  const cacheFile = bundle + CODE_CACHE_SUFFIX;
  const cachedData = existsSync(cacheFile) ? readFileSync(cacheFile) : undefined;
  return runCommonJsFile(bundle, cachedData).exports as DaemonModule;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const daemon = await loadDaemon();
  process.exitCode = await daemon.main(process.argv.slice(2));
}
