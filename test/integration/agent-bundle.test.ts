/**
 * The guest agent's toolbox files (scripts/build-agent-bundle.ts): the loader `agent.cjs`
 * (tenant-daemon/agent/loader.ts), the bundle beside it and the bundle's V8 code cache, which
 * node run as the guest runs it (no flags) accepts (a rejected cache only costs start time, so
 * nothing else would notice); and an agent started from the loader answers its health without
 * having loaded `node:crypto` (tenant-daemon/agent/lazy-crypto.ts), as a host process.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { execa } from "execa";
import { CODE_CACHE_SUFFIX } from "../../shared/cjs-code-cache.js";
import { DAEMON_NODE_FLAGS } from "../../shared/daemon-node-flags.js";
import { AGENT_BUNDLE_FILE } from "../../tenant-daemon/agent/loader.js";
import { PROJECT_ROOT } from "../helpers/daemon.js";
import { AGENT_BUNDLE, call, startTestAgent } from "./agent-fixture.js";

const BUNDLE = path.join(path.dirname(AGENT_BUNDLE), AGENT_BUNDLE_FILE);
const CACHE_MODULE = path.join(PROJECT_ROOT, "dist/shared/cjs-code-cache.js");

/** A child that compiles (does not run) the bundle with its cache and prints whether V8 took it. */
const PROBE = `import { compileCommonJsFile, readCodeCache } from ${JSON.stringify(CACHE_MODULE)};
const r = compileCommonJsFile(${JSON.stringify(BUNDLE)}, readCodeCache(${JSON.stringify(BUNDLE)}));
process.stdout.write(JSON.stringify({ rejected: r.cacheRejected }));`;

describe("guest agent bundle (dist/toolbox)", function () {
  this.timeout(60_000);

  it("the build made the loader, the bundle and its code cache", () => {
    for (const f of [AGENT_BUNDLE, BUNDLE, BUNDLE + CODE_CACHE_SUFFIX]) expect(existsSync(f), f).to.equal(true);
  });

  it("node without flags (as in a VM) accepts the cache; with other V8 flags it is rejected (the control)", async () => {
    const plain = await execa(process.execPath, ["--input-type=module", "-e", PROBE], { env: { NODE_OPTIONS: "" } });
    expect(JSON.parse(plain.stdout)).to.deep.equal({ rejected: false });
    const other = await execa(process.execPath, [...DAEMON_NODE_FLAGS, "--input-type=module", "-e", PROBE], { env: { NODE_OPTIONS: "" } });
    expect(JSON.parse(other.stdout)).to.deep.equal({ rejected: true });
  });

  it("an agent started from the loader answers its health without loading node:crypto; a background exec loads it", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pdk-agent-probe-"));
    const out = path.join(dir, "modules.json");
    // Preloaded into the agent: on SIGUSR2, write the builtins node has loaded so far.
    const preload = path.join(dir, "probe.cjs");
    writeFileSync(preload, `process.on("SIGUSR2", () => require("node:fs").writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.moduleLoadList)));\n`);
    const saved = process.env.NODE_OPTIONS;
    process.env.NODE_OPTIONS = `--require ${preload}`;
    const agent = await startTestAgent({ bundle: true }).finally(() => {
      if (saved === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved;
    });
    const loaded = async (): Promise<string[]> => {
      rmSync(out, { force: true });
      agent.proc.kill("SIGUSR2");
      for (let i = 0; i < 200 && !existsSync(out); i++) await new Promise((r) => setTimeout(r, 10));
      return JSON.parse(readFileSync(out, "utf8")) as string[];
    };
    try {
      expect((await call(agent.socket, "GET", "/v1/health")).status).to.equal(200);
      const atStart = await loaded();
      expect(atStart).to.include("NativeModule http");
      expect(atStart).to.not.include("NativeModule crypto");
      const bg = await call(agent.socket, "POST", "/v1/exec?background=true&cmd=/bin/true&uid=0");
      expect(bg.status, bg.text).to.equal(201);
      expect(await loaded()).to.include("NativeModule crypto");
    } finally {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the loader started through a symlinked directory (a guest's /.paddock may be one) still runs the agent", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "pdk-agent-link-"));
    try {
      symlinkSync(path.dirname(AGENT_BUNDLE), path.join(dir, "app"));
      const agent = await startTestAgent({ bundle: path.join(dir, "app", path.basename(AGENT_BUNDLE)) });
      try {
        expect((await call(agent.socket, "GET", "/v1/health")).status).to.equal(200);
      } finally {
        await agent.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

