/**
 * Running a one-file CommonJS bundle with a V8 code cache made at build time: the tenant
 * daemon's (tenant-daemon/launch.ts, scripts/build-daemon-bundle.ts) and the guest agent's
 * (tenant-daemon/agent/loader.ts, scripts/build-agent-bundle.ts). Node 20 has no code cache of
 * its own for user code (`module.enableCompileCache` is node >= 22.1), so the bundle is wrapped
 * and compiled through `vm.Script` with `cachedData`, the way node's CJS loader wraps a module
 * (https://nodejs.org/docs/latest-v20.x/api/vm.html#new-vmscriptcode-options).
 *
 * A dynamic `import()` in such a file rejects (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING): node 20's
 * `importModuleDynamically` option does not survive a code cache made in another process, so
 * the bundles load lazily with `require` (tenant-daemon/agent/shell.ts) and the build refuses a
 * bundle with an `import(` (scripts/build-agent-bundle.ts).
 *
 * A cache V8 rejects (another node build, other V8 flags, another source) only costs time: V8
 * then compiles the source as if there were none. The cache's bytes are only ever handed to V8,
 * which checks them against the source and its own version and flags before using them.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import vm from "node:vm";

/** Suffix of a bundle's V8 code cache file (`<bundle>.cache`, next to the bundle). */
export const CODE_CACHE_SUFFIX = ".cache";

/**
 * Evaluate a CommonJS file through `vm.Script` with `cachedData` (the way node's own CJS loader
 * wraps a module), so V8 skips compiling what the cache holds.
 * @param file - absolute path of the `.cjs` file.
 * @param cachedData - V8 code cache of exactly this source, or undefined.
 * @returns the module's exports, the script (for `createCachedData`) and whether V8 rejected the cache.
 * @throws whatever reading the file or the module's top level throws.
 */
export function runCommonJsFile(file: string, cachedData: Buffer | undefined): { exports: unknown; script: vm.Script; cacheRejected: boolean } {
  const { script, cacheRejected } = compileCommonJsFile(file, cachedData);
  const fn = script.runInThisContext() as (e: unknown, r: NodeRequire, m: { exports: unknown }, f: string, d: string) => void;
  const mod = { exports: {} as unknown };
  fn(mod.exports, createRequire(file), mod, file, path.dirname(file));
  return { exports: mod.exports, script, cacheRejected };
}

/**
 * Compile (not run) a CommonJS file wrapped as {@link runCommonJsFile} wraps it.
 * @param file - absolute path of the `.cjs` file.
 * @param cachedData - V8 code cache of exactly this source, or undefined.
 * @returns the script and whether V8 rejected `cachedData` (false without one).
 * @throws whatever reading the file throws, SyntaxError for a source that does not compile.
 */
export function compileCommonJsFile(file: string, cachedData: Buffer | undefined): { script: vm.Script; cacheRejected: boolean } {
  const source = readFileSync(file, "utf8");
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new vm.Script(wrapped, {
    filename: file,
    ...(cachedData ? { cachedData } : {}),
  });
  return { script, cacheRejected: cachedData !== undefined && script.cachedDataRejected === true };
}

/**
 * The code cache beside `file` (`file` + {@link CODE_CACHE_SUFFIX}), or undefined when there is
 * none or it cannot be read (the caller then compiles without one).
 * @param file - absolute path of the bundle.
 */
export function readCodeCache(file: string): Buffer | undefined {
  try {
    return readFileSync(file + CODE_CACHE_SUFFIX);
  } catch {
    return undefined;
  }
}
