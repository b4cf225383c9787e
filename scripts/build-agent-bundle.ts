/**
 * Postbuild step: the guest toolbox and the host's namespace helper.
 *
 * 1. Bundle the compiled guest agent (dist/tenant-daemon/agent/main.js and what it imports) into
 *    one CommonJS file, `dist/toolbox/agent.cjs`. The agent starts in every VM on every create,
 *    and loading one CJS file skips the ESM loader's per-module work (about 70 ms less CPU per
 *    agent start than the ESM module graph).
 * 2. Copy node-pty's runtime files (package.json, lib/, the built native addon) to
 *    `dist/toolbox/node_modules/node-pty`: it stays external to the bundle (a native addon) and is
 *    loaded lazily by the agent's shell.
 * 3. Compile `tenant-daemon/agent/native/paddock-inotify.c` (statically linked, so it does not
 *    depend on the guest's libc) to `dist/toolbox/paddock-inotify`: the agent's inotify helper
 *    for filesystem watches (tenant-daemon/agent/inotify.ts).
 * 4. Compile `tenant-daemon/runtime/native/paddock-nsutil.c` to `dist/bin/paddock-nsutil`
 *    (user-namespace pins and idmapped mounts; see the file's header), and
 *    `tenant-daemon/vm/native/paddock-spawnd.c` to `dist/bin/paddock-spawnd` (the daemon's
 *    command runner, tenant-daemon/vm/spawn-server.ts).
 *
 * `dist/toolbox/` is all a VM sees of the host besides node and tini: it is bound read-only at
 * `/.paddock/app` (tenant-daemon/runtime/oci-spec.ts), never the project tree.
 *
 *   node dist/scripts/build-agent-bundle.js
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { run } from "../shared/exec.js";
import { GUEST_AGENT_ENTRY, GUEST_NODE_PATH } from "../tenant-daemon/runtime/oci-spec.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const agentDir = path.join(root, "dist/tenant-daemon/agent");
const toolboxDir = path.join(root, "dist/toolbox");
const binDir = path.join(root, "dist/bin");

await fs.rm(toolboxDir, { recursive: true, force: true });
await fs.mkdir(toolboxDir, { recursive: true, mode: 0o755 });
await build({
  entryPoints: [path.join(agentDir, "main.js")],
  outfile: path.join(toolboxDir, "agent.cjs"),
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  external: ["node-pty"],
  logLevel: "warning",
});

// The guest command `slicer-agent secrets sync` (tenant-daemon/agent/secrets-local.ts): the
// agent bundle run with arguments, under the toolbox paths of tenant-daemon/runtime/oci-spec.ts.
await fs.writeFile(path.join(toolboxDir, "slicer-agent"), `#!/bin/sh\nexec ${GUEST_NODE_PATH} ${GUEST_AGENT_ENTRY} "$@"\n`, { mode: 0o755 });

const ptySrc = path.join(root, "node_modules/node-pty");
const ptyDst = path.join(toolboxDir, "node_modules/node-pty");
await fs.mkdir(path.join(ptyDst, "build"), { recursive: true });
await fs.copyFile(path.join(ptySrc, "package.json"), path.join(ptyDst, "package.json"));
await fs.cp(path.join(ptySrc, "lib"), path.join(ptyDst, "lib"), { recursive: true, filter: (src) => !src.endsWith(".map") && !src.includes(".test.") });
await fs.cp(path.join(ptySrc, "build/Release"), path.join(ptyDst, "build/Release"), { recursive: true, filter: (src) => !src.includes("/obj.target") && !src.endsWith(".d") });

await run("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o", path.join(toolboxDir, "paddock-inotify"), path.join(root, "tenant-daemon/agent/native/paddock-inotify.c")], {
  timeoutMs: 120_000,
  errorCode: "ERR_INTERNAL",
});

await fs.mkdir(binDir, { recursive: true, mode: 0o755 });
await run("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-o", path.join(binDir, "paddock-nsutil"), path.join(root, "tenant-daemon/runtime/native/paddock-nsutil.c")], {
  timeoutMs: 120_000,
  errorCode: "ERR_INTERNAL",
});
await run("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-o", path.join(binDir, "paddock-spawnd"), path.join(root, "tenant-daemon/vm/native/paddock-spawnd.c")], {
  timeoutMs: 120_000,
  errorCode: "ERR_INTERNAL",
});
