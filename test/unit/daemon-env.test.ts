/**
 * The environment a tenant daemon process runs with (shared/daemon-env.ts): NODE_EXTRA_CA_CERTS
 * is taken out and its value carried as PADDOCK_EXTRA_CA_CERTS, checked on the pure overlay, on
 * the supervisor's spawn spec and purge env (supervisor/tenant-paths.ts), and in the environment
 * a REAL child sees through both ways the supervisor starts one: shared/exec.ts `run` (the
 * purge) and execa with `extendEnv` (supervisor/daemon-process.ts).
 */
import { expect } from "chai";
import { execa } from "execa";
import { DAEMON_EXTRA_CA_ENV, daemonProcessEnv } from "../../shared/daemon-env.js";
import { run } from "../../shared/exec.js";
import { TenantPaths } from "../../supervisor/tenant-paths.js";

const PRINT_ENV = "process.stdout.write(JSON.stringify({ node: process.env.NODE_EXTRA_CA_CERTS ?? null, paddock: process.env.PADDOCK_EXTRA_CA_CERTS ?? null, state: process.env.PADDOCK_STATE_DIR ?? null }))";

describe("daemon process environment (shared/daemon-env.ts)", function () {
  this.timeout(30_000);
  const saved = process.env.NODE_EXTRA_CA_CERTS;
  afterEach(() => {
    if (saved === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
    else process.env.NODE_EXTRA_CA_CERTS = saved;
  });

  it("removes NODE_EXTRA_CA_CERTS and carries its value; an empty or absent one carries nothing", () => {
    expect(DAEMON_EXTRA_CA_ENV).to.equal("PADDOCK_EXTRA_CA_CERTS");
    const env = daemonProcessEnv({ NODE_EXTRA_CA_CERTS: "/etc/ca.pem", PATH: "/bin" }, { PADDOCK_STATE_DIR: "/s" });
    expect(env).to.deep.equal({ PADDOCK_STATE_DIR: "/s", NODE_EXTRA_CA_CERTS: undefined, PADDOCK_EXTRA_CA_CERTS: "/etc/ca.pem" });
    expect(Object.keys(env)).to.include("NODE_EXTRA_CA_CERTS");
    expect(daemonProcessEnv({ NODE_EXTRA_CA_CERTS: "" })).to.deep.equal({ NODE_EXTRA_CA_CERTS: undefined, PADDOCK_EXTRA_CA_CERTS: undefined });
    expect(daemonProcessEnv({ PADDOCK_EXTRA_CA_CERTS: "/stale" }), "a stale one is not passed on").to.deep.equal({ NODE_EXTRA_CA_CERTS: undefined, PADDOCK_EXTRA_CA_CERTS: undefined });
  });

  it("the supervisor's daemon spawn spec and purge env use it", () => {
    const paths = new TenantPaths({ stateDir: "/s", runDir: "/r", imageDir: "/i", daemonEntry: "/d.js", logs: { daemonLogBytes: 1, daemonLogKeep: 1 } } as ConstructorParameters<typeof TenantPaths>[0]);
    expect(paths.daemonEnv({ NODE_EXTRA_CA_CERTS: "/etc/ca.pem" })).to.include({ PADDOCK_STATE_DIR: "/s", PADDOCK_RUN_DIR: "/r", PADDOCK_IMAGE_DIR: "/i", PADDOCK_EXTRA_CA_CERTS: "/etc/ca.pem", NODE_EXTRA_CA_CERTS: undefined });
    process.env.NODE_EXTRA_CA_CERTS = "/etc/from-process.pem";
    expect(paths.daemonSpec("t1").env).to.include({ PADDOCK_EXTRA_CA_CERTS: "/etc/from-process.pem", NODE_EXTRA_CA_CERTS: undefined });
  });

  it("a real child started with run() or execa (extending this environment) has no NODE_EXTRA_CA_CERTS and gets the value under the Paddock name", async () => {
    // A file that does not exist: node only warns about it, and the child does not read it anyway.
    process.env.NODE_EXTRA_CA_CERTS = "/nonexistent/pdk-ca.pem";
    const env = daemonProcessEnv(process.env, { PADDOCK_STATE_DIR: "/s" });
    const want = { node: null, paddock: "/nonexistent/pdk-ca.pem", state: "/s" };
    const viaRun = await run(process.execPath, ["-e", PRINT_ENV], { env });
    expect(JSON.parse(viaRun.stdout)).to.deep.equal(want);
    const viaExeca = await execa(process.execPath, ["-e", PRINT_ENV], { env, extendEnv: true });
    expect(JSON.parse(viaExeca.stdout)).to.deep.equal(want);
  });
});
