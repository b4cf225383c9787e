/**
 * Postbuild step: the guest toolbox and the host's namespace helper.
 *
 * 1. Bundle the compiled guest agent (dist/tenant-daemon/agent/main.js and what it imports) into
 *    one CommonJS file, `dist/toolbox/agent.bundle.cjs`. The agent starts in every VM on every
 *    create, and loading one CJS file skips the ESM loader's per-module work (about 70 ms less
 *    CPU per agent start than the ESM module graph). Its entry file `dist/toolbox/agent.cjs` is
 *    the loader (tenant-daemon/agent/loader.ts), which runs the bundle with the code cache of 2.
 *    Both are ASCII-only for the reason scripts/build-daemon-bundle.ts gives.
 * 2. The bundle's V8 code cache, `agent.bundle.cjs.cache`: in a child node run as the guest runs
 *    it (no node flags, no NODE_OPTIONS: V8 rejects a cache made under other flags), start the
 *    agent from the bundle on a Unix socket in a temporary dir, ask its health once (so the
 *    functions of its start and of a health answer are compiled too), and write V8's code cache
 *    of everything compiled by then (https://nodejs.org/docs/latest-v20.x/api/vm.html#scriptcreatecacheddata).
 * 3. Copy node-pty's runtime files (package.json, lib/, the built native addon) to
 *    `dist/toolbox/node_modules/node-pty`: it stays external to the bundle (a native addon) and is
 *    loaded lazily by the agent's shell.
 * 4. Compile `tenant-daemon/agent/native/paddock-inotify.c` (statically linked, so it does not
 *    depend on the guest's libc) to `dist/toolbox/paddock-inotify`: the agent's inotify helper
 *    for filesystem watches (tenant-daemon/agent/inotify.ts).
 * 5. Compile `tenant-daemon/runtime/native/paddock-nsutil.c` to `dist/bin/paddock-nsutil`
 *    (user-namespace pins and idmapped mounts; see the file's header), and
 *    `tenant-daemon/vm/native/paddock-spawnd.c` to `dist/bin/paddock-spawnd` (the daemon's
 *    command runner, tenant-daemon/vm/spawn-server.ts).
 *
 * `dist/toolbox/` is all a VM sees of the host besides node and tini: it is bound read-only at
 * `/.paddock/app` (tenant-daemon/runtime/oci-spec.ts), never the project tree. Running VMs see
 * that directory itself, so a rebuild never empties or half-writes it: the toolbox is built in
 * `dist/toolbox.next/` and each file then renamed over its old self (rename(2) replaces a name
 * in one step; a VM's open file keeps its old inode), files the new build lacks left in place
 * for the VMs that started with them. The helpers of `dist/bin/` are compiled to a temporary
 * name and renamed the same way: a daemon runs them from disk at each use.
 *
 *   node dist/scripts/build-agent-bundle.js
 */
import { promises as fs } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { CODE_CACHE_SUFFIX, runCommonJsFile } from "../shared/cjs-code-cache.js";
import { run } from "../shared/exec.js";
import { CJS_BUNDLE_OPTIONS, assertRunnableBundle } from "./lib/cjs-bundle.js";
import { installOver } from "./lib/install-over.js";
import { sleep } from "../shared/time.js";
import { AGENT_BUNDLE_FILE } from "../tenant-daemon/agent/loader.js";
import { GUEST_AGENT_ENTRY, GUEST_NODE_PATH } from "../tenant-daemon/runtime/oci-spec.js";

const self = fileURLToPath(import.meta.url);
const root = path.resolve(path.dirname(self), "../..");
const agentDir = path.join(root, "dist/tenant-daemon/agent");
const liveToolboxDir = path.join(root, "dist/toolbox");
/** Where the toolbox is built before its files replace the live ones. */
const toolboxDir = path.join(root, "dist/toolbox.next");
const binDir = path.join(root, "dist/bin");
const bundle = path.join(toolboxDir, AGENT_BUNDLE_FILE);

if (process.argv[2] === "--write-cache") {
  await writeAgentCodeCache();
  // The agent started in this process still listens: end it.
  process.exit(0);
}

await fs.rm(toolboxDir, { recursive: true, force: true });
await fs.mkdir(toolboxDir, { recursive: true, mode: 0o755 });
await build({
  ...CJS_BUNDLE_OPTIONS,
  entryPoints: [path.join(agentDir, "main.js")],
  outfile: bundle,
  external: ["node-pty"],
  // As the daemon's bundle: smaller source to read, hash and keep (no comments); names kept so
  // stack traces and error classes stay readable. node-pty is required from beside the bundle
  // (tenant-daemon/agent/shell.ts), through the bundle's own `import.meta.url`.
  minify: true,
  keepNames: true,
  legalComments: "none",
});
await build({ ...CJS_BUNDLE_OPTIONS, entryPoints: [path.join(agentDir, "loader.js")], outfile: path.join(toolboxDir, "agent.cjs") });
for (const file of [bundle, path.join(toolboxDir, "agent.cjs")]) await assertRunnableBundle(file, { noDynamicImport: true });
// No NODE_OPTIONS (the guest's node has none), and none of the agent's VM-only settings: the
// agent in the child must only ever touch its scratch dir (an empty value counts as unset).
const childEnv = { NODE_OPTIONS: "", PADDOCK_AGENT_ETC: "", PADDOCK_AGENT_FD: "", PADDOCK_AGENT_DIAL: "", PADDOCK_AGENT_WORK_DIR: "" };
await run(process.execPath, [self, "--write-cache"], { env: childEnv, timeoutMs: 120_000, errorCode: "ERR_INTERNAL" });

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

await installOver(toolboxDir, liveToolboxDir);
await fs.rm(toolboxDir, { recursive: true, force: true });

await fs.mkdir(binDir, { recursive: true, mode: 0o755 });
for (const [name, source] of [["paddock-nsutil", "tenant-daemon/runtime/native/paddock-nsutil.c"], ["paddock-spawnd", "tenant-daemon/vm/native/paddock-spawnd.c"]] as const) {
  const tmp = path.join(binDir, `.${name}.tmp-${process.pid}`);
  await run("cc", ["-O2", "-Wall", "-Wextra", "-Werror", "-o", tmp, path.join(root, source)], { timeoutMs: 120_000, errorCode: "ERR_INTERNAL" });
  await fs.rename(tmp, path.join(binDir, name));
}


/**
 * (The `--write-cache` child.) Start the agent from {@link bundle} in this process on a Unix
 * socket in a temporary dir (no userdata, nothing written outside that dir), wait for one health
 * answer, and write V8's code cache of the bundle beside it (mode 0644).
 * @throws Error when the agent does not answer within 30 s.
 */
async function writeAgentCodeCache(): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-agent-cache-"));
  try {
    await fs.writeFile(path.join(dir, "boot.json"), JSON.stringify({ hostname: "code-cache", userdata: null, default_user: null, secrets_dir: path.join(dir, "secrets"), agent_version: "build", agent_proof: "" }));
    Object.assign(process.env, { PADDOCK_AGENT_DIR: dir, PADDOCK_AGENT_USERDATA_GUARD: path.join(dir, "userdata-ran") });
    const { script } = runCommonJsFile(bundle, undefined);
    const deadline = Date.now() + 30_000;
    while (!(await healthOk(path.join(dir, "agent.sock")))) {
      if (Date.now() > deadline) throw new Error(`the agent of ${bundle} did not answer its health within 30 s`);
      await sleep(20);
    }
    await fs.writeFile(bundle + CODE_CACHE_SUFFIX, script.createCachedData(), { mode: 0o644 });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Whether `GET /v1/health` on the agent socket answers 200. */
function healthOk(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: "/v1/health", timeout: 5_000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200));
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
  });
}
