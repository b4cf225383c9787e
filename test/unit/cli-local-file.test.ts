/**
 * Local files named on the `paddock` command line (cli/local-file.ts): `--userdata-file`,
 * `--token-file` and the admin-token file that cannot be read are refused naming the file, where
 * its name came from and why (ERR_FILE_UNREADABLE, exit 1), before anything is sent to the
 * fake API on loopback.
 */
import { expect } from "chai";
import { promises as fs } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { runCli } from "../../cli/paddock.js";
import { readTokenFileSync, type CliContext } from "../../cli/cli-context.js";
import { fileReadError } from "../../cli/local-file.js";
import { resolveAdminTarget } from "../../cli/target.js";
import { EXIT, exitCodeFor } from "../../cli/cli-errors.js";
import { capture } from "../helpers/cli-context.js";

describe("paddock: local files named by flags (cli/local-file.ts)", () => {
  let dir = "";
  let server: http.Server | undefined;
  let url = "";
  const requests: string[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-localfile-"));
    server = http.createServer((req, res) => {
      requests.push(`${req.method ?? ""} ${req.url ?? ""}`);
      req.resume();
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "this fake API answers nothing", code: "ERR_INTERNAL" }));
    });
    await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    if (server !== undefined) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server!.close(() => resolve()));
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function run(argv: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
    const out = capture();
    const err = capture();
    const ctx: CliContext = { env, stdout: out.stream, stderr: err.stream, stdin: Readable.from([]), readTokenFile: readTokenFileSync, kvmPresent: () => false };
    const code = await runCli(argv, ctx);
    return { code, stdout: out.text(), stderr: err.text() };
  }

  it("vm launch --userdata-file of a missing file or a directory: which file, from where, why; exit 1; nothing sent", async () => {
    const missing = path.join(dir, "missing.sh");
    const r = await run(["vm", "launch", "sbox", "--userdata-file", missing], { PADDOCK_URL: url, PADDOCK_TOKEN: "t" });
    expect(r.code, r.stderr).to.equal(1);
    expect(r.stderr).to.equal(`paddock: error: cannot read ${missing} (from --userdata-file): no such file (ENOENT) (ERR_FILE_UNREADABLE)\n`);
    const d = await run(["vm", "launch", "sbox", "--userdata-file", dir], { PADDOCK_URL: url, PADDOCK_TOKEN: "t" });
    expect(d.code, d.stderr).to.equal(1);
    expect(d.stderr).to.equal(`paddock: error: cannot read ${dir} (from --userdata-file): it is a directory (EISDIR) (ERR_FILE_UNREADABLE)\n`);
    expect(requests, "nothing was sent").to.deep.equal([]);
  });

  it("a --token-file, PADDOCK_TOKEN_FILE or admin-token file that exists but cannot be read is named the same way", async () => {
    const t = await run(["vm", "list", "--token-file", dir], { PADDOCK_URL: url });
    expect(t.code, t.stderr).to.equal(1);
    expect(t.stderr).to.equal(`paddock: error: cannot read ${dir} (from --token-file): it is a directory (EISDIR) (ERR_FILE_UNREADABLE)\n`);
    const e = await run(["vm", "list"], { PADDOCK_URL: url, PADDOCK_TOKEN_FILE: dir });
    expect(e.stderr).to.contain(`cannot read ${dir} (from PADDOCK_TOKEN_FILE): it is a directory`);
    // The admin-token file is <state>/supervisor/admin-token: a directory there.
    await fs.mkdir(path.join(dir, "state", "supervisor", "admin-token"), { recursive: true });
    const a = await run(["tenant", "list"], { PADDOCK_ADMIN_URL: url, PADDOCK_STATE_DIR: path.join(dir, "state") });
    expect(a.code, a.stderr).to.equal(1);
    expect(a.stderr).to.contain(`cannot read ${path.join(dir, "state", "supervisor", "admin-token")} (from the admin-token file under PADDOCK_STATE_DIR): it is a directory (EISDIR)`);
    expect(requests, "nothing was sent").to.deep.equal([]);
  });

  it("a missing admin-token file under a PADDOCK_STATE_DIR that was set is refused before sending; at the default path it is no token (the API's 401)", async () => {
    const stateDir = path.join(dir, "no-such-state");
    const file = path.join(stateDir, "supervisor", "admin-token");
    const a = await run(["tenant", "list"], { PADDOCK_ADMIN_URL: url, PADDOCK_STATE_DIR: stateDir });
    expect(a.code, a.stderr).to.equal(1);
    expect(a.stderr).to.equal(`paddock: error: cannot read ${file} (from the admin-token file under PADDOCK_STATE_DIR): no such file (ENOENT) (ERR_FILE_UNREADABLE)\n`);
    expect(requests, "nothing was sent").to.deep.equal([]);
    // A token given first means the file is never read.
    const t = resolveAdminTarget({ adminToken: "adm" }, { PADDOCK_ADMIN_URL: url, PADDOCK_STATE_DIR: stateDir }, readTokenFileSync);
    expect(t.token).to.equal("adm");
    // The default path, not named by anyone: no token, as before (read returns undefined).
    expect(resolveAdminTarget({}, { PADDOCK_ADMIN_URL: url }, () => undefined).token).to.equal(undefined);
  });

  it("paddock daemon up|purge FILE of a missing or unreadable config: ERR_FILE_UNREADABLE (exit 1), not ERR_CONFIG_INVALID (exit 2)", async () => {
    const missing = path.join(dir, "nonexistent.yaml");
    for (const sub of ["purge", "up"]) {
      const r = await run(["daemon", sub, missing], {});
      expect(r.code, r.stderr).to.equal(1);
      expect(r.stderr).to.equal(`paddock: error: cannot read ${missing} (from paddock daemon ${sub} FILE): no such file (ENOENT) (ERR_FILE_UNREADABLE)\n`);
    }
    const d = await run(["daemon", "purge", dir], {});
    expect(d.code, d.stderr).to.equal(1);
    expect(d.stderr).to.contain("it is a directory (EISDIR) (ERR_FILE_UNREADABLE)");
  });

  it("paddock daemon --help says what up and purge do and when purge is refused", async () => {
    const r = await run(["daemon", "--help"], {});
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/^usage: paddock daemon up FILE \| paddock daemon purge FILE$/m).and.to.match(/^ {2}up FILE /m).and.to.match(/^ {2}purge FILE /m).and.to.contain("Refused");
    // The daemon runs in the CLI's process: the help says what NODE_EXTRA_CA_CERTS costs and how the supervisor avoids it.
    expect(r.stdout.replace(/\s+/g, " ")).to.contain("The daemon runs in this process: with NODE_EXTRA_CA_CERTS set").and.to.contain("PADDOCK_EXTRA_CA_CERTS=CAFILE NODE_EXTRA_CA_CERTS= paddock daemon up FILE");
  });

  it("fileReadError: stable code, exit 1, the errno kept; an error without errno keeps its message", () => {
    const e = fileReadError("/x", "--userdata-file", Object.assign(new Error("EACCES: permission denied, open '/x'"), { code: "EACCES" }));
    expect(e.code).to.equal("ERR_FILE_UNREADABLE");
    expect(e.message).to.equal("cannot read /x (from --userdata-file): permission denied (EACCES)");
    expect(e.details).to.deep.equal({ file: "/x", errno: "EACCES" });
    expect(exitCodeFor(e)).to.equal(EXIT.ERROR);
    expect(fileReadError("/y", "--token-file", new Error("odd")).message).to.equal("cannot read /y (from --token-file): odd");
  });
});
