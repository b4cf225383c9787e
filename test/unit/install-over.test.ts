/**
 * scripts/lib/install-over.ts: a rebuilt toolbox replaces the live one's files in place, so a
 * reader holding the live directory (a VM's bind mount of it) never sees it empty.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { expect } from "chai";
import { installOver } from "../../scripts/lib/install-over.js";

describe("installOver", () => {
  let dir: string;
  beforeEach(async () => { dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-install-over-")); });
  afterEach(async () => { await fs.rm(dir, { recursive: true, force: true }); });

  it("renames each new file over the old one inside the same directory, keeping files the build lacks", async () => {
    const live = path.join(dir, "toolbox");
    const next = path.join(dir, "toolbox.next");
    await fs.mkdir(path.join(live, "node_modules/pty"), { recursive: true });
    await fs.writeFile(path.join(live, "agent.cjs"), "old agent");
    await fs.writeFile(path.join(live, "node_modules/pty/index.js"), "old pty");
    await fs.writeFile(path.join(live, "gone-in-new-build"), "old only");
    await fs.mkdir(path.join(live, "was-dir"));
    await fs.mkdir(path.join(next, "node_modules/pty/build"), { recursive: true });
    await fs.writeFile(path.join(next, "agent.cjs"), "new agent");
    await fs.writeFile(path.join(next, "node_modules/pty/index.js"), "new pty");
    await fs.writeFile(path.join(next, "node_modules/pty/build/pty.node"), "addon");
    await fs.writeFile(path.join(next, "was-dir"), "now a file");
    const liveIno = (await fs.stat(live)).ino;
    // A reader holding the live directory open, as a bind mount holds it.
    const held = await fs.opendir(live);
    try {
      await installOver(next, live);
      expect((await fs.stat(live)).ino, "the live directory itself is kept").to.equal(liveIno);
      expect(await fs.readFile(path.join(live, "agent.cjs"), "utf8")).to.equal("new agent");
      expect(await fs.readFile(path.join(live, "node_modules/pty/index.js"), "utf8")).to.equal("new pty");
      expect(await fs.readFile(path.join(live, "node_modules/pty/build/pty.node"), "utf8")).to.equal("addon");
      expect(await fs.readFile(path.join(live, "gone-in-new-build"), "utf8")).to.equal("old only");
      expect(await fs.readFile(path.join(live, "was-dir"), "utf8")).to.equal("now a file");
      const seen: string[] = [];
      for await (const e of held) seen.push(e.name);
      expect(seen.sort()).to.deep.equal(["agent.cjs", "gone-in-new-build", "node_modules", "was-dir"]);
    } finally {
      await held.close().catch(() => undefined);
    }
  });
});
