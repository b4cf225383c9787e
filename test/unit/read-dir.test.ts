/**
 * shared/read-dir.ts `readdirOrEmpty`: a directory's names, `[]` for a missing one, and every
 * other readdir error thrown (a file where a directory was expected is not "empty").
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { readdirOrEmpty } from "../../shared/read-dir.js";

describe("readdirOrEmpty (shared/read-dir.ts)", () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-readdir-"));
    await fs.writeFile(path.join(dir, "a"), "");
    await fs.mkdir(path.join(dir, "b"));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it("lists a directory's entries", async () => {
    expect((await readdirOrEmpty(dir)).sort()).to.deep.equal(["a", "b"]);
  });

  it("answers [] for a missing directory", async () => {
    expect(await readdirOrEmpty(path.join(dir, "missing"))).to.deep.equal([]);
  });

  it("throws ENOTDIR for a file (only ENOENT is empty)", async () => {
    const err = await readdirOrEmpty(path.join(dir, "a")).then(() => undefined, (e: unknown) => e);
    expect(err).to.have.property("code", "ENOTDIR");
  });
});
