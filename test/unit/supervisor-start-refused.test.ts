/**
 * A refused supervisor start (supervisor/main.ts `runSupervisor`) leaves nothing it made
 * (supervisor/start-footprint.ts): a state or run dir it created is gone, one that existed is as
 * it was. Real supervisors on temp dirs and loopback ports; none gets a tenant.
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { silentLogger } from "../../shared/logger.js";
import { runSupervisor } from "../../supervisor/main.js";
import { RUN_DIR_OWNER_FILE } from "../../supervisor/run-dir-claim.js";

/** Every path below `dir` with its type, mode and size (sorted), or "missing". */
async function tree(dir: string): Promise<string[] | "missing"> {
  const st = await fs.stat(dir).catch(() => undefined);
  if (st === undefined) return "missing";
  const out = [`. ${st.mode.toString(8)}`];
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await fs.readdir(path.join(dir, rel))).sort()) {
      const r = path.join(rel, name);
      const s = await fs.lstat(path.join(dir, r));
      out.push(`${r} ${s.mode.toString(8)} ${s.isDirectory() ? "-" : s.size}`);
      if (s.isDirectory()) await walk(r);
    }
  };
  await walk("");
  return out;
}

/** runSupervisor's rejection (a started one is closed and fails the test). */
async function refusal(flags: { stateDir: string; runDir: string; gateway?: string; admin?: string }): Promise<unknown> {
  return runSupervisor({ flags: { gateway: "127.0.0.1:0", admin: "127.0.0.1:0", ...flags }, env: {}, logger: silentLogger, lockWaitMs: 0 }).then(
    async (s) => {
      await s.close({ stopDaemons: true });
      throw new Error("the start was not refused");
    },
    (e: unknown) => e,
  );
}

/** {@link refusal} of a start whose `which` address is a loopback port a plain TCP server holds meanwhile (closed after, even on failure). */
async function refusalOnHeldPort(which: "gateway" | "admin", flags: { stateDir: string; runDir: string }): Promise<unknown> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    return await refusal({ ...flags, [which]: `127.0.0.1:${(server.address() as net.AddressInfo).port}` });
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe("refused supervisor start", function () {
  this.timeout(20_000);
  let dir: string;
  let state: string;
  let run: string;

  beforeEach(async function () {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-refused-"));
    state = path.join(dir, "state");
    run = path.join(dir, "run");
  });
  afterEach(async function () {
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Make `run` belong to another supervisor state (one with a supervisor/ dir). */
  async function claimedRun(): Promise<void> {
    await fs.mkdir(path.join(dir, "other", "supervisor"), { recursive: true });
    await fs.mkdir(path.join(run, "tenants"), { recursive: true, mode: 0o711 });
    await fs.writeFile(path.join(run, RUN_DIR_OWNER_FILE), `${path.join(dir, "other")}\n`);
  }

  it("on a run dir of another state: removes the state dir it created, leaves the run dir", async function () {
    await claimedRun();
    const runBefore = await tree(run);
    const err = await refusal({ stateDir: path.join(state, "nested"), runDir: run });
    expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
    expect(await tree(state), "the state dir (and its parent) this start created").to.equal("missing");
    expect(await tree(run)).to.deep.equal(runBefore);
  });

  it("on a run dir of another state: leaves an existing empty state dir empty", async function () {
    await claimedRun();
    await fs.mkdir(state, { mode: 0o750 });
    const before = await tree(state);
    const err = await refusal({ stateDir: state, runDir: run });
    expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
    expect(await tree(state)).to.deep.equal(before);
  });

  it("on a gateway port in use: makes neither state nor run dir", async function () {
    const err = await refusalOnHeldPort("gateway", { stateDir: state, runDir: run });
    expect(isPaddockError(err, "ERR_SOCKET_IN_USE"), String(err)).to.equal(true);
    expect(await tree(state)).to.equal("missing");
    expect(await tree(run)).to.equal("missing");
  });

  it("on an admin port in use: leaves a used state and run dir as they were", async function () {
    const sup = await runSupervisor({ flags: { stateDir: state, runDir: run, gateway: "127.0.0.1:0", admin: "127.0.0.1:0" }, env: {}, logger: silentLogger });
    await sup.close({ stopDaemons: true });
    const [stateBefore, runBefore] = [await tree(state), await tree(run)];
    const err = await refusalOnHeldPort("admin", { stateDir: state, runDir: run });
    expect(isPaddockError(err, "ERR_SOCKET_IN_USE"), String(err)).to.equal(true);
    expect(await tree(state)).to.deep.equal(stateBefore);
    expect(await tree(run)).to.deep.equal(runBefore);
  });

  it("a second supervisor on the same config (same ports): told the state dir is in use, not its ports", async function () {
    const first = await runSupervisor({ flags: { stateDir: state, runDir: run, gateway: "127.0.0.1:0", admin: "127.0.0.1:0" }, env: {}, logger: silentLogger });
    try {
      const [gw, adm] = [first.gatewayAddress, first.adminAddress];
      const before = await tree(state);
      const err = await refusal({ stateDir: state, runDir: run, gateway: gw, admin: adm });
      expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
      expect(await tree(state)).to.deep.equal(before);
    } finally {
      await first.close({ stopDaemons: true });
    }
  });

  it("own state dir, a run dir of another state and a port in use: told about the run dir first", async function () {
    await claimedRun();
    const err = await refusalOnHeldPort("gateway", { stateDir: state, runDir: run });
    expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
    expect(await tree(state)).to.equal("missing");
  });

  it("refused after the claim (a corrupt registry): removes what it made, leaves what was there", async function () {
    await fs.mkdir(path.join(state, "supervisor"), { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(state, "supervisor", "registry.json"), "{not json");
    const before = await tree(state);
    const err = await refusal({ stateDir: state, runDir: run });
    expect(isPaddockError(err, "ERR_STATE_CORRUPT"), String(err)).to.equal(true);
    expect(await tree(state), "no admin token, tenants/ or lock left").to.deep.equal(before);
    expect(await tree(run)).to.equal("missing");
  });
});
