/**
 * `node:crypto`, loaded on first use. The agent needs it only for random names and ids (an
 * upload's temporary file, a background exec's id, a secrets write) and the chunked copy's
 * sha256, never to start or to answer a health check; loading it brings ~16 of node's internal
 * modules that are not in node's startup snapshot (`process.moduleLoadList`), a share of every
 * VM's start (docs/performance.md "Creates, third look").
 */
import type * as Crypto from "node:crypto";
import { createRequire } from "node:module";

// Builtins resolve the same from any base path; the bundle (scripts/build-agent-bundle.ts) has
// no `import.meta.url` of its own to pass.
const requireBuiltin = createRequire("/");
let loaded: typeof Crypto | undefined;

/** The `node:crypto` module, required on the first call. */
export function lazyCrypto(): typeof Crypto {
  loaded ??= requireBuiltin("node:crypto") as typeof Crypto;
  return loaded;
}

/**
 * `n` random bytes as lowercase hex (2n characters), for unguessable names and ids.
 * @param n - number of bytes, 1..1024.
 * @throws RangeError (node:crypto) when `n` is out of range.
 */
export function randomHex(n: number): string {
  return lazyCrypto().randomBytes(n).toString("hex");
}
