/**
 * What the build scripts' one-file CommonJS bundles share (scripts/build-daemon-bundle.ts: the
 * tenant daemon; scripts/build-agent-bundle.ts: the guest agent and its loader). Each is run
 * through `vm.Script` with a V8 code cache (shared/cjs-code-cache.ts), which is why a bundle must
 * be ASCII-only (V8 keeps a one-byte source) and hold no dynamic `import()` (a script run from a
 * cache made in another process has no loader for it on node 20).
 */
import { promises as fs } from "node:fs";
import type { BuildOptions } from "esbuild";

/**
 * esbuild options of every such bundle: node 20, CommonJS, and `import.meta.url` of every bundled
 * module defined as the bundle's own file URL (so a module that locates its neighbours, or
 * requires node-pty beside the bundle, still finds them).
 */
export const CJS_BUNDLE_OPTIONS = {
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  define: { "import.meta.url": "__pdkModuleUrl" },
  banner: { js: "var __pdkModuleUrl = require(\"node:url\").pathToFileURL(__filename).href;" },
  logLevel: "warning",
} satisfies BuildOptions;

/**
 * Check a built bundle for what running it from a code cache cannot take.
 * @param file - the bundle's path.
 * @param opts.noDynamicImport - also refuse a dynamic `import(` (bundles loaded through
 *   shared/cjs-code-cache.ts's `runCommonJsFile` from a cache made in another process).
 * @throws Error naming the file and the offset of the first non-ASCII byte or `import(`.
 */
export async function assertRunnableBundle(file: string, opts: { noDynamicImport?: boolean } = {}): Promise<void> {
  const bytes = await fs.readFile(file);
  const nonAscii = bytes.findIndex((byte) => byte > 0x7f);
  if (nonAscii !== -1) throw new Error(`${file} has a non-ASCII character at offset ${nonAscii}: escape it in the source (e.g. \\u00b5 in a regular expression)`);
  if (opts.noDynamicImport === true) {
    const dynamicImport = /(?<![\w$.])import\(/.exec(bytes.toString("latin1"));
    if (dynamicImport !== null) throw new Error(`${file} has a dynamic import() at offset ${dynamicImport.index}, which fails when run through vm.Script: require lazily instead`);
  }
}
