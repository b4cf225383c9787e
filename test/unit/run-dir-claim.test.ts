/** supervisor/run-dir-claim.ts: a run dir records the supervisor state it belongs to. */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { isPaddockError } from "../../shared/errors.js";
import { claimRunDir, RUN_DIR_OWNER_FILE } from "../../supervisor/run-dir-claim.js";

describe("claimRunDir", function () {
  let dir: string;
  let run: string;
  const state = (name: string): string => path.join(dir, name);

  beforeEach(async function () {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-rdc-"));
    run = path.join(dir, "run");
    await fs.mkdir(run);
    for (const s of ["a", "b"]) await fs.mkdir(path.join(state(s), "supervisor"), { recursive: true });
  });
  afterEach(async function () {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("claims a fresh run dir and accepts the same state again (by real path)", async function () {
    await claimRunDir(run, state("a"));
    expect(await fs.readFile(path.join(run, RUN_DIR_OWNER_FILE), "utf8")).to.equal(`${await fs.realpath(state("a"))}\n`);
    await fs.symlink(state("a"), state("link"));
    await claimRunDir(run, state("link"));
  });

  it("refuses another supervisor state, naming both and the flag", async function () {
    await claimRunDir(run, state("a"));
    const err = await claimRunDir(run, state("b")).then(() => undefined, (e: unknown) => e);
    expect(isPaddockError(err, "ERR_STATE_LOCKED"), String(err)).to.equal(true);
    expect((err as Error).message).to.include(await fs.realpath(state("a"))).and.to.include("--run-dir");
    expect((await fs.readFile(path.join(run, RUN_DIR_OWNER_FILE), "utf8")).trim()).to.equal(await fs.realpath(state("a")));
  });

  it("takes over a run dir whose recorded state holds no supervisor state any more", async function () {
    await claimRunDir(run, state("a"));
    await fs.rm(path.join(state("a"), "supervisor"), { recursive: true });
    await claimRunDir(run, state("b"));
    expect((await fs.readFile(path.join(run, RUN_DIR_OWNER_FILE), "utf8")).trim()).to.equal(await fs.realpath(state("b")));
  });
});
