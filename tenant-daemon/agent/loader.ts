/**
 * The guest agent's entry file, `agent.cjs` in the toolbox (`/.paddock/app/agent.cjs` in a VM:
 * tenant-daemon/runtime/oci-spec.ts GUEST_AGENT_ENTRY; also what `slicer-agent` runs). It runs
 * the agent's bundle beside it, {@link AGENT_BUNDLE_FILE} (tenant-daemon/agent/main.ts and what
 * it imports), with the V8 code cache scripts/build-agent-bundle.ts made at build time
 * (`agent.bundle.cjs.cache`), so the agent's start in every VM skips compiling its code
 * (shared/cjs-code-cache.ts; docs/performance.md "Creates, third look").
 *
 * The bundle and the cache are read-only build artefacts in `dist/toolbox`, bound read-only into
 * every VM: the guest cannot change them. A cache V8 rejects (another node or other flags) or a
 * missing one only costs time: the bundle is then compiled as without a cache.
 * Arguments and `process.argv` reach the bundle unchanged (`process.argv[1]` stays this file,
 * beside the bundle, which is where main.ts and inotify.ts look for their neighbours).
 */
import { realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readCodeCache, runCommonJsFile } from "../../shared/cjs-code-cache.js";

/** The agent's bundle, beside this loader in the toolbox. */
export const AGENT_BUNDLE_FILE = "agent.bundle.cjs";

/**
 * Whether the script node was started with (`argv1`, as typed) is this module (`self`, its real
 * path as node loaded it): compared after resolving symlinks, as node does for the main module.
 */
export function isEntryPoint(argv1: string, self: string): boolean {
  try {
    return realpathSync(path.resolve(argv1)) === realpathSync(self);
  } catch {
    return false;
  }
}

const bundle = path.join(path.dirname(fileURLToPath(import.meta.url)), AGENT_BUNDLE_FILE);
// Run only as the entry point (the build script imports this module for the file name). Node
// gives this module its real path but `process.argv[1]` as typed: a guest whose `/.paddock` is a
// symlink must still get its agent, so both are compared as real paths.
if (process.argv[1] !== undefined && isEntryPoint(process.argv[1], fileURLToPath(import.meta.url))) {
  const cache = readCodeCache(bundle);
  // Said on stderr (the VM's console log) after the agent's own start lines: only time is lost.
  if (runCommonJsFile(bundle, cache).cacheRejected) process.stderr.write(`paddock-agent: V8 rejected the code cache of ${bundle}; the agent was compiled without it\n`);
}
