import { expect } from "chai";
import { hoistLeadingTargetFlags, normalizeBoolFlags, parseFlags, parseIntFlag, parseKeyValues, parseDurationFlag, parseSizeFlag, sizeBytes, splitAtDoubleDash } from "../../cli/args.js";
import { parseSizeBytes } from "../../shared/yaml-reader.js";
import { PaddockError, type ErrorCode } from "../../shared/errors.js";
import { ApiError, ConnectError, EXIT, UsageError, exitCodeFor } from "../../cli/cli-errors.js";
import { buildPath } from "../../cli/api-client.js";
import { LineSplitter, exitCodeOfFrame, framePayload, isTerminalFrame } from "../../cli/exec-stream.js";
import { alreadyLine, renderTable, formatBytes, formatAge } from "../../cli/output.js";
import { execQuery, parseCpOperand, renderNodeTable } from "../../cli/vm-commands.js";
import { encodeFrame as shellFrame, encodeWindowSize } from "../../shared/slicer/shell-frames.js";
import { adminTokenPath, isSocketAddress, parseApiAddress, resolveAdminTarget, resolveTarget } from "../../cli/target.js";
import { runCli, HELP, DAEMON_HELP, UP_HELP } from "../../cli/paddock.js";
import { IMAGE_HELP } from "../../cli/image-commands.js";
import { describeStartError, parseUpArgs } from "../../supervisor/main.js";
import { fakeCliContext } from "../helpers/cli-context.js";

const noFiles = (): string | undefined => undefined;

const fakeContext = (env: NodeJS.ProcessEnv = {}) => fakeCliContext(env, noFiles);

describe("cli: argument parsing", () => {
  it("normalizes Go-style boolean flags (--flag=false ⇒ --no-flag), leaving strings and post-`--` args alone", () => {
    const spec = { a: { type: "boolean" }, s: { type: "string" } } as const;
    expect(normalizeBoolFlags(["--a=false", "--a=true", "--s=false", "--", "--a=false"], spec)).to.deep.equal(["--no-a", "--a", "--s=false", "--", "--a=false"]);
    expect(() => normalizeBoolFlags(["--a=maybe"], spec)).to.throw(UsageError, /true or false/);
    const { values } = parseFlags(["--a=false", "--s", "x"], spec);
    expect(values).to.deep.equal({ a: false, s: "x" });
  });

  it("turns parseArgs failures into UsageErrors (unknown flag, missing value)", () => {
    expect(() => parseFlags(["--nope"], { a: { type: "boolean" } })).to.throw(UsageError);
    expect(() => parseFlags(["--s"], { s: { type: "string" } })).to.throw(UsageError);
  });

  it("says which flag is unknown or lacks its value, in the CLI's words (not parseArgs's quoting advice)", async () => {
    expect(() => parseFlags(["--nope"], { a: { type: "boolean" } })).to.throw(UsageError, /^unknown flag --nope \(see --help; an argument starting with - goes after --\)$/);
    expect(() => parseFlags(["-x"], { a: { type: "boolean" } })).to.throw(UsageError, /^unknown flag -x /);
    expect(() => parseFlags(["--s"], { s: { type: "string" } })).to.throw(UsageError, /^--s needs a value$/);
    const c = fakeContext({ PADDOCK_URL: "http://127.0.0.1:9", PADDOCK_TOKEN: "t" });
    expect(await runCli(["vm", "logs", "sbox-1", "--lines"], c.ctx)).to.equal(EXIT.USAGE);
    expect(c.err.text()).to.equal("paddock: usage error: --lines needs a value\n");
    expect(() => parseFlags(["--lines", "-1"], { lines: { type: "string" } })).to.throw(UsageError, /^--lines is followed by a value starting with -; write it as --lines=VALUE$/);
  });

  it("an unknown flag of a command that takes no arguments is only said to be unknown (no advice about --)", async () => {
    expect(() => parseFlags(["--bogus"], { a: { type: "boolean" } }, { noArguments: true })).to.throw(UsageError, /^unknown flag --bogus \(see --help\)$/);
    const env = { PADDOCK_URL: "http://127.0.0.1:9", PADDOCK_TOKEN: "t", PADDOCK_ADMIN_URL: "http://127.0.0.1:9", PADDOCK_ADMIN_TOKEN: "t" };
    for (const argv of [["events", "--bogus"], ["vm", "list", "--bogus"], ["vm", "commits", "--bogus"], ["tenant", "list", "--bogus"], ["image", "list", "--bogus"]]) {
      const c = fakeContext(env);
      expect(await runCli(argv, c.ctx), argv.join(" ")).to.equal(EXIT.USAGE);
      expect(c.err.text(), argv.join(" ")).to.equal("paddock: usage error: unknown flag --bogus (see --help)\n");
    }
    // A command that takes arguments keeps the advice.
    const e = fakeContext(env);
    expect(await runCli(["vm", "get", "--bogus"], e.ctx)).to.equal(EXIT.USAGE);
    expect(e.err.text()).to.equal("paddock: usage error: unknown flag --bogus (see --help; an argument starting with - goes after --)\n");
  });

  it("paddock up with a bad command line is a usage error (exit 2) on one line, before anything starts", async () => {
    const cases: [string[], string][] = [
      [["up", "extra"], "unexpected argument \"extra\"; paddock up takes only flags (see --help)"],
      [["up", "--state-dir"], "--state-dir needs a value"],
      // Read like every other command's unknown flag (cli/args.ts parseArgsMessage).
      [["up", "--bogus"], "unknown flag --bogus (see --help)"],
      [["up", "--bogus=1"], "unknown flag --bogus (see --help)"],
      // A value starting with - is refused, not taken as the directory (`./--x` was created).
      [["up", "--state-dir", "--x"], "--state-dir is followed by a value starting with -; write it as --state-dir=VALUE"],
      [["up", "--run-dir", "-"], "--run-dir is followed by a value starting with -; write it as --run-dir=VALUE"],
      [["up", "-c", "-x.yaml"], "-c is followed by a value starting with -; write it as --config=VALUE"],
      [["up", "--stop-daemons-on-exit=maybe"], "--stop-daemons-on-exit takes true or false, got \"maybe\""],
    ];
    for (const [argv, message] of cases) {
      const c = fakeContext();
      expect(await runCli(argv, c.ctx), argv.join(" ")).to.equal(EXIT.USAGE);
      expect(c.err.text()).to.equal(`paddock: usage error: ${message}\n`);
    }
    expect(parseUpArgs(["--state-dir=--x", "--run-dir", "/r", "--stop-daemons-on-exit=false"])).to.deep.equal({ configFile: undefined, flags: { stateDir: "--x", runDir: "/r", stopDaemonsOnExit: false } });
    expect(parseUpArgs(["-c", "/etc/p.yaml", "--stop-daemons-on-exit"])).to.deep.equal({ configFile: "/etc/p.yaml", flags: { stopDaemonsOnExit: true } });
  });

  it("paddock --help lists every flag that paddock up --help and paddock image --help name", () => {
    const flags = (text: string): string[] => [...new Set(text.match(/--[a-z][a-z-]+/g) ?? [])];
    // A command's entry in the top-level help: its line and the indented lines after it.
    const top = (name: string): string => {
      const out: string[] = [];
      let inside = false;
      for (const l of HELP.split("\n")) {
        if (/^ {2}\S/.test(l)) inside = l.startsWith(`  ${name} `);
        else if (!/^ {3,}\S/.test(l)) inside = false;
        if (inside) out.push(l);
      }
      return out.join("\n");
    };
    for (const f of flags(UP_HELP.split("\n\n")[0] ?? "")) expect(top("up"), `up ${f}`).to.contain(f);
    for (const f of flags(IMAGE_HELP.split("\n").filter((l) => /^ {2}(build|list) /.test(l)).join("\n"))) expect(top("image"), `image ${f}`).to.contain(f);
  });

  it("paddock --help names the same causes of ERR_EXEC_STREAM_CUT as the CLI's message and the README, the VM's own end too", () => {
    const text = HELP.slice(HELP.indexOf("ERR_EXEC_STREAM_CUT")).replace(/\s+/g, " ");
    for (const cause of ["token revoked", "tenant suspended or deleted", "gateway or daemon stopped", "the VM itself ended", "a guest exit", "an OOM kill", "its pids limit under gVisor", "paddock events says why"]) {
      expect(text, cause).to.contain(cause);
    }
  });

  it("paddock daemon up|purge --help prints the daemon usage (exit 0) rather than reading a file named --help", async () => {
    for (const argv of [["daemon", "up", "--help"], ["daemon", "purge", "--help"], ["daemon", "up", "-h"], ["daemon", "--help"]]) {
      const c = fakeContext();
      expect(await runCli(argv, c.ctx), argv.join(" ")).to.equal(EXIT.OK);
      expect(c.out.text(), argv.join(" ")).to.equal(DAEMON_HELP);
      expect(c.err.text(), argv.join(" ")).to.equal("");
    }
  });

  it("paddock image list of a missing store warns on stderr and lists nothing (exit 0)", async () => {
    const c = fakeCliContext({});
    expect(await runCli(["image", "list", "--image-dir", "/nonexistent/pdk-images", "--json"], c.ctx)).to.equal(EXIT.OK);
    expect(c.out.text().trim()).to.equal("[]");
    expect(c.err.text()).to.equal("paddock: warning: there is no image store at /nonexistent/pdk-images (no such directory)\n");
  });

  it("paddock version: --help is its usage, any other argument a usage error", async () => {
    const ok = fakeCliContext({});
    expect(await runCli(["version"], ok.ctx)).to.equal(EXIT.OK);
    expect(ok.out.text()).to.match(/^paddock \S+\n$/);
    const help = fakeCliContext({});
    expect(await runCli(["version", "--help"], help.ctx)).to.equal(EXIT.OK);
    expect(help.out.text()).to.match(/^usage: paddock version\n/);
    const bad = fakeCliContext({});
    expect(await runCli(["version", "x"], bad.ctx)).to.equal(EXIT.USAGE);
    expect(bad.err.text()).to.include("version takes no arguments");
  });

  it("paddock up says a refused start as the other commands do: `error: MESSAGE (CODE)`, exit 2 for a bad config, 4 for a conflict (a locked state or run dir, a port in use), else 1", () => {
    expect(describeStartError(new PaddockError("ERR_STATE_LOCKED", "the supervisor state directory /s is already in use by another running process"))).to.deep.equal({ line: "error: the supervisor state directory /s is already in use by another running process (ERR_STATE_LOCKED)", exitCode: EXIT.CONFLICT });
    expect(describeStartError(new PaddockError("ERR_SOCKET_IN_USE", "127.0.0.1:8080 is already in use"))).to.deep.equal({ line: "error: 127.0.0.1:8080 is already in use (ERR_SOCKET_IN_USE)", exitCode: EXIT.CONFLICT });
    expect(describeStartError(new PaddockError("ERR_CONFIG_INVALID", "--gateway: expected host:port"))).to.deep.equal({ line: "error: --gateway: expected host:port (ERR_CONFIG_INVALID)", exitCode: 2 });
    expect(describeStartError(new PaddockError("ERR_BAD_REQUEST", "--state-dir needs a value"))).to.deep.equal({ line: "usage error: --state-dir needs a value", exitCode: 2 });
    // Unexpected errors are logged with their stack, not put on one line.
    expect(describeStartError(new PaddockError("ERR_STATE_CORRUPT", "x"))).to.equal(undefined);
    expect(describeStartError(new Error("boom"))).to.equal(undefined);
  });

  it("splits at the first `--`", () => {
    expect(splitAtDoubleDash(["h", "--uid", "0", "--", "sh", "-c", "--", "x"])).to.deep.equal([["h", "--uid", "0"], ["sh", "-c", "--", "x"]]);
    expect(splitAtDoubleDash(["h"])).to.deep.equal([["h"], undefined]);
  });

  it("sizeBytes follows shared/yaml-reader parseSizeBytes exactly", () => {
    for (const t of ["0", "1", "1024", "512M", "512m", "1G", "1Gi", "1GiB", "1gb", "1.5G", "2T", "7K", "10B", "", "x", "-1G", "1 G", " 3M ", "1P", "1e3", "99999999999999999999T"]) {
      expect(sizeBytes(t), JSON.stringify(t)).to.equal(parseSizeBytes(t));
    }
  });

  it("parses integers, sizes, durations and key=value lists strictly", () => {
    expect(parseIntFlag("3", "--n", { min: 0 })).to.equal(3);
    expect(parseIntFlag(undefined, "--n")).to.equal(undefined);
    expect(() => parseIntFlag("3.5", "--n")).to.throw(UsageError);
    expect(() => parseIntFlag("-1", "--n", { min: 0 })).to.throw(UsageError, /≥ 0/);
    expect(parseSizeFlag("1G", "--ram-bytes")).to.equal(2 ** 30);
    expect(parseSizeFlag("1073741824", "--ram-bytes")).to.equal(2 ** 30);
    expect(() => parseSizeFlag("big", "--ram-bytes")).to.throw(UsageError);
    expect(parseDurationFlag("2m", "--timeout")).to.equal(120_000);
    expect(parseDurationFlag("1h30m", "--timeout")).to.equal(5_400_000);
    expect(() => parseDurationFlag("2 minutes", "--timeout")).to.throw(UsageError);
    expect(parseKeyValues(["a=1", "b=x=y", "c="], "--label")).to.deep.equal({ a: "1", b: "x=y", c: "" });
    expect(() => parseKeyValues(["=1"], "--label")).to.throw(UsageError);
    expect(() => parseKeyValues(["novalue"], "--label")).to.throw(UsageError);
  });
});

describe("cli: target resolution (Unix socket or URL, token)", () => {
  it("classifies socket addresses like the Go and TS SDKs", () => {
    for (const s of ["/run/p/api.sock", "./slicer.sock", "../x", "~/s", "unix:///tmp/a", "api.sock", "unix://rel.sock"]) expect(isSocketAddress(s), s).to.equal(true);
    for (const s of ["http://127.0.0.1:8080", "127.0.0.1:8080", "https://gw.example:443", "localhost"]) expect(isSocketAddress(s), s).to.equal(false);
  });

  it("expands ~/ and strips unix://; URLs without a scheme get http://", () => {
    expect(parseApiAddress("~/x/api.sock", { HOME: "/home/u" })).to.deep.equal({ kind: "unix", socketPath: "/home/u/x/api.sock" });
    expect(parseApiAddress("unix:///run/a.sock", {})).to.deep.equal({ kind: "unix", socketPath: "/run/a.sock" });
    const a = parseApiAddress("127.0.0.1:9000", {});
    expect(a.kind === "http" && a.url.href).to.equal("http://127.0.0.1:9000/");
    expect(() => parseApiAddress("ftp://x", {})).to.throw(UsageError);
  });

  it("flags beat PADDOCK_* which beat SLICER_*; default is the gateway on 127.0.0.1:8080", () => {
    const env = { PADDOCK_URL: "/p.sock", PADDOCK_TOKEN: "ptok", SLICER_URL: "http://s:1", SLICER_TOKEN: "stok" };
    expect(resolveTarget({ url: "/f.sock", token: "ftok" }, env, noFiles)).to.deep.include({ kind: "unix", socketPath: "/f.sock", token: "ftok" });
    expect(resolveTarget({}, env, noFiles)).to.deep.include({ kind: "unix", socketPath: "/p.sock", token: "ptok" });
    const s = resolveTarget({}, { SLICER_URL: "http://s:1", SLICER_TOKEN: "stok" }, noFiles);
    expect(s.kind === "http" && s.url.origin).to.equal("http://s:1");
    expect(s.token).to.equal("stok");
    const d = resolveTarget({}, {}, noFiles);
    expect(d.kind === "http" && d.url.origin).to.equal("http://127.0.0.1:8080");
    expect(d.token).to.equal(undefined);
    // Empty variables count as unset.
    expect(resolveTarget({}, { PADDOCK_URL: "", SLICER_URL: "/s.sock", PADDOCK_TOKEN: "", SLICER_TOKEN: "stok" }, noFiles)).to.deep.include({ socketPath: "/s.sock", token: "stok" });
  });

  it("an empty token with nothing else to fall back on is refused for http(s) targets before anything is sent (ERR_AUTH_REQUIRED, exit 1)", () => {
    const refused = (fn: () => unknown, name: string): void => {
      let err: unknown;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err, name).to.be.instanceOf(PaddockError);
      expect((err as PaddockError).code).to.equal("ERR_AUTH_REQUIRED");
      expect((err as PaddockError).message).to.contain(`${name} is set but empty`);
      expect(exitCodeFor(err)).to.equal(EXIT.ERROR);
    };
    refused(() => resolveTarget({}, { PADDOCK_TOKEN: "" }, noFiles), "PADDOCK_TOKEN");
    refused(() => resolveTarget({}, { PADDOCK_TOKEN: "  \n" }, noFiles), "PADDOCK_TOKEN");
    refused(() => resolveTarget({ token: "" }, {}, noFiles), "--token");
    refused(() => resolveTarget({}, { SLICER_TOKEN: "", PADDOCK_URL: "https://gw.example:8443" }, noFiles), "SLICER_TOKEN");
    refused(() => resolveTarget({ tokenFile: "/empty" }, {}, (f) => (f === "/empty" ? "\n" : undefined)), "the token file /empty (from --token-file)");
    refused(() => resolveAdminTarget({}, { PADDOCK_ADMIN_TOKEN: "", PADDOCK_STATE_DIR: "/st" }, noFiles), "PADDOCK_ADMIN_TOKEN");
    // Nothing given at all is not an error, nor an empty token for a Unix socket (auth off by
    // default there: `PADDOCK_TOKEN= paddock …` means "no token").
    expect(resolveTarget({}, {}, noFiles).token).to.equal(undefined);
    expect(resolveTarget({}, { PADDOCK_URL: "/p.sock", PADDOCK_TOKEN: "" }, noFiles)).to.deep.include({ kind: "unix", token: undefined });
    expect(resolveAdminTarget({}, { PADDOCK_ADMIN_URL: "/adm.sock", PADDOCK_ADMIN_TOKEN: "" }, noFiles).token).to.equal(undefined);
  });

  it("reads SLICER_TOKEN_FILE (with ~/) after SLICER_TOKEN, and --token-file before env tokens", () => {
    const files: Record<string, string> = { "/home/u/.slicer/token": "filetok\n", "/t": " flagtok " };
    const read = (f: string) => files[f];
    expect(resolveTarget({}, { HOME: "/home/u", SLICER_TOKEN_FILE: "~/.slicer/token" }, read).token).to.equal("filetok");
    expect(resolveTarget({}, { SLICER_TOKEN: "env", SLICER_TOKEN_FILE: "~/.slicer/token", HOME: "/home/u" }, read).token).to.equal("env");
    expect(resolveTarget({ tokenFile: "/t" }, { PADDOCK_TOKEN: "env" }, read).token).to.equal("flagtok");
    expect(() => resolveTarget({}, { SLICER_TOKEN_FILE: "/missing" }, read)).to.throw(UsageError, /does not exist/);
  });

  it("admin target: flags, PADDOCK_ADMIN_*, then the admin-token file under PADDOCK_STATE_DIR", () => {
    const read = (f: string) => (f === "/st/supervisor/admin-token" ? "admtok\n" : undefined);
    expect(adminTokenPath({})).to.equal("/var/lib/paddock/supervisor/admin-token");
    const t = resolveAdminTarget({}, { PADDOCK_STATE_DIR: "/st" }, read);
    expect(t.kind === "http" && t.url.origin).to.equal("http://127.0.0.1:8081");
    expect(t.token).to.equal("admtok");
    expect(resolveAdminTarget({ adminToken: "x" }, { PADDOCK_ADMIN_TOKEN: "y", PADDOCK_STATE_DIR: "/st" }, read).token).to.equal("x");
    expect(resolveAdminTarget({}, { PADDOCK_ADMIN_TOKEN: "y", PADDOCK_ADMIN_URL: "/run/adm.sock" }, read)).to.deep.include({ kind: "unix", token: "y" });
    expect(resolveAdminTarget({}, {}, noFiles).token).to.equal(undefined);
  });
});

describe("cli: exit codes", () => {
  it("maps usage, 404, 403/409 and other failures to 2, 3, 4 and 1", () => {
    expect(exitCodeFor(new UsageError("x"))).to.equal(EXIT.USAGE);
    expect(exitCodeFor(new ApiError(404, "VM not found", "ERR_VM_NOT_FOUND"))).to.equal(3);
    expect(exitCodeFor(new ApiError(409, "VM paused", "ERR_VM_PAUSED"))).to.equal(4);
    expect(exitCodeFor(new ApiError(403, "protected", "ERR_VM_PROTECTED"))).to.equal(4);
    expect(exitCodeFor(new ApiError(400, "bad", undefined))).to.equal(1);
    expect(exitCodeFor(new ApiError(500, "boom", undefined))).to.equal(1);
    expect(exitCodeFor(new ConnectError("down"))).to.equal(1);
    expect(exitCodeFor(new Error("x"))).to.equal(1);
    expect(exitCodeFor(new PaddockError("ERR_BAD_REQUEST", "image name is invalid"))).to.equal(2);
    expect(exitCodeFor(new PaddockError("ERR_IMAGE_BUILD_FAILED", "debootstrap failed"))).to.equal(1);
  });

  it("runCli: usage errors exit 2 with a message; help documents the exit codes", async () => {
    for (const argv of [["nope"], ["vm", "frobnicate"], ["vm", "list", "--bogus"], ["vm", "exec", "h"], ["vm", "cp", "a", "b"], ["vm", "list", "--tag", "a", "--tag-prefix", "b"], ["tenant", "get"], ["daemon", "up"], ["vm", "launch", "--wait", "forever"]]) {
      const { ctx, err } = fakeContext({ PADDOCK_URL: "/nonexistent/p.sock" });
      expect(await runCli(argv, ctx), argv.join(" ")).to.equal(2);
      expect(err.text(), argv.join(" ")).to.match(/^paddock: usage error: /);
    }
    const { ctx, out } = fakeContext();
    expect(await runCli(["--help"], ctx)).to.equal(0);
    expect(out.text()).to.equal(HELP);
    expect(HELP).to.match(/3 {2}not found \(HTTP 404\)/).and.match(/4 {2}conflict or forbidden \(HTTP 403\/409\)/);
    // Exit 4 covers daemon up|purge conflicts too (DAEMON_HELP): the top-level help names them
    // and every code DAEMON_HELP lists, and each of those codes exits 4.
    const four = HELP.slice(HELP.indexOf("  4  "), HELP.indexOf("vm exec exits")).replace(/\s+/g, " ");
    expect(four).to.include("paddock up").and.include("daemon up|purge");
    const codes = DAEMON_HELP.replace(/\s+/g, " ").match(/a conflict exits 4 \(([^)]*)\)/)?.[1]?.match(/ERR_[A-Z_]+/g) ?? [];
    expect(codes).to.include.members(["ERR_STATE_LOCKED", "ERR_TENANT_ID_IN_USE"]);
    for (const code of codes) {
      expect(four, code).to.include(code);
      expect(exitCodeFor(new PaddockError(code as ErrorCode, "x")), code).to.equal(4);
    }
  });

  it("runCli: an unreachable socket is a runtime error (1) naming the target", async () => {
    const { ctx, err } = fakeContext({ PADDOCK_URL: "/nonexistent-dir-pdk/api.sock" });
    expect(await runCli(["vm", "list"], ctx)).to.equal(1);
    expect(err.text()).to.contain("cannot reach the API at /nonexistent-dir-pdk/api.sock");
  });

  it("runCli: an unreachable admin API names --admin-url / PADDOCK_ADMIN_URL, the tenant API --url / PADDOCK_URL", async () => {
    const admin = fakeContext({ PADDOCK_ADMIN_URL: "http://127.0.0.1:1", PADDOCK_ADMIN_TOKEN: "t" });
    expect(await runCli(["tenant", "list"], admin.ctx)).to.equal(1);
    expect(admin.err.text()).to.contain("or set --admin-url / PADDOCK_ADMIN_URL)");
    const tenant = fakeContext({ PADDOCK_URL: "http://127.0.0.1:1", PADDOCK_TOKEN: "t" });
    expect(await runCli(["vm", "list"], tenant.ctx)).to.equal(1);
    expect(tenant.err.text()).to.contain("or set --url / PADDOCK_URL)");
  });

  it("runCli: PADDOCK_TOKEN= is refused (1) saying the token is empty, before any connection is tried", async () => {
    // Port 1 on loopback: nothing listens there; without the check the error would be "cannot reach".
    const { ctx, err } = fakeContext({ PADDOCK_URL: "http://127.0.0.1:1", PADDOCK_TOKEN: "" });
    expect(await runCli(["vm", "list"], ctx)).to.equal(1);
    expect(err.text()).to.equal("paddock: error: the API token is empty: PADDOCK_TOKEN is set but empty; pass the tenant's token (paddock tenant token ID issues one), or unset it for a daemon without auth (ERR_AUTH_REQUIRED)\n");
  });

  it("runCli: vm launch --ttl below the daemon's 1s minimum is refused (2, ERR_TTL_INVALID naming the minimum) before any connection", async () => {
    for (const ttl of ["500ms", "0"]) {
      const { ctx, err } = fakeContext({ PADDOCK_URL: "/nonexistent-dir-pdk/api.sock" });
      expect(await runCli(["vm", "launch", "sbox", "--ttl", ttl], ctx), ttl).to.equal(2);
      expect(err.text(), ttl).to.contain(`--ttl must be at least 1s, got ${JSON.stringify(ttl)}`).and.contain("ERR_TTL_INVALID");
    }
  });

  it("runCli: target flags may come before the command (paddock --url X vm list), else the error says where they go", async () => {
    for (const argv of [["--url", "/nonexistent-dir-pdk/api.sock", "vm", "list"], ["--url=/nonexistent-dir-pdk/api.sock", "--token", "t", "vm", "list", "--json"], ["--url", "/nonexistent-dir-pdk/api.sock", "events"]]) {
      const { ctx, err } = fakeContext({ PADDOCK_URL: "/elsewhere-pdk/api.sock" });
      expect(await runCli(argv, ctx), argv.join(" ")).to.equal(1);
      expect(err.text(), argv.join(" ")).to.contain("cannot reach the API at /nonexistent-dir-pdk/api.sock");
    }
    const { ctx, err } = fakeContext({ PADDOCK_ADMIN_URL: "/elsewhere-pdk/adm.sock" });
    expect(await runCli(["--admin-url", "/nonexistent-dir-pdk/adm.sock", "tenant", "list"], ctx)).to.equal(1);
    expect(err.text()).to.contain("/nonexistent-dir-pdk/adm.sock");
    expect(hoistLeadingTargetFlags(["--url", "u", "vm", "exec", "h", "--", "--url", "x"])).to.deep.equal(["vm", "exec", "--url", "u", "h", "--", "--url", "x"]);
    expect(hoistLeadingTargetFlags(["vm", "list", "--url", "u"])).to.deep.equal(["vm", "list", "--url", "u"]);
    for (const [argv, msg] of [
      [["--admin-url", "a", "vm", "list"], /--admin-url applies to tenant commands/],
      [["--url", "u", "up"], /--url applies to vm and events commands .*not to "up"/],
      [["--json", "vm", "list"], /unknown flag --json before the command; flags go after it/],
      [["--url"], /--url needs a value/],
    ] as const) {
      const f = fakeContext();
      expect(await runCli([...argv], f.ctx), argv.join(" ")).to.equal(2);
      expect(f.err.text(), argv.join(" ")).to.match(msg);
    }
  });

  it("runCli new prints the oci config, with or without /dev/kvm (this release has no Firecracker driver)", async () => {
    for (const kvm of [false, true]) {
      const { ctx, out } = fakeContext();
      ctx.kvmPresent = () => kvm;
      expect(await runCli(["new", "sbox", "--net=isolated", "--count=0"], ctx)).to.equal(0);
      expect(out.text(), `kvm ${kvm}`).to.contain('  image: "debian-12"\n  hypervisor: oci\n');
    }
  });
});

describe("cli: exec stream", () => {
  it("splits NDJSON lines across chunk and UTF-8 boundaries, keeping an unterminated rest", () => {
    const s = new LineSplitter();
    const euro = Buffer.from("€");
    expect(s.push(Buffer.concat([Buffer.from('{"a":1}\n{"b":"'), euro.subarray(0, 1)]))).to.deep.equal(['{"a":1}']);
    expect(s.push(Buffer.concat([euro.subarray(1), Buffer.from('"}\n\n{"c"')]))).to.deep.equal(['{"b":"€"}']);
    expect(s.rest()).to.equal('{"c"');
  });

  it("decodes base64 and text payloads from stdout/stderr/data keys", () => {
    const b64 = Buffer.from([0, 255, 10]).toString("base64");
    expect(framePayload({ type: "stdout", encoding: "base64", stdout: b64, data: b64 })).to.deep.equal({ stream: "stdout", bytes: Buffer.from([0, 255, 10]) });
    expect(framePayload({ type: "stderr", data: "oops\n" })).to.deep.equal({ stream: "stderr", bytes: Buffer.from("oops\n") });
    expect(framePayload({ stdout: "legacy\n", stderr: "", exit_code: 0 })).to.deep.equal({ stream: "stdout", bytes: Buffer.from("legacy\n") });
    expect(framePayload({ type: "started", pid: 3 })).to.equal(undefined);
  });

  it("maps the terminal frame to an exit code (own code, start failure, signal)", () => {
    expect(isTerminalFrame({ type: "exit", exit_code: 0 })).to.equal(true);
    expect(isTerminalFrame({ type: "stdout", exit_code: 0 })).to.equal(false);
    expect(isTerminalFrame({ error: "exec: not found", exit_code: 127 })).to.equal(true);
    expect(exitCodeOfFrame({ type: "exit", exit_code: 7 })).to.equal(7);
    expect(exitCodeOfFrame({ error: "exec: not found", exit_code: 127 })).to.equal(127);
    expect(exitCodeOfFrame({ error: "failed" })).to.equal(1);
    expect(exitCodeOfFrame({ type: "exit", exit_code: 0, signal: "KILL" })).to.equal(137);
    expect(exitCodeOfFrame({ type: "exit", signal: "SIGTERM" })).to.equal(143);
  });

  it("builds the exec query: argv verbatim, repeated args/env, gid defaults to uid, base64 stdio", () => {
    expect(execQuery(["sh", "-c", 'echo "$X"'], { uid: 0, env: ["X=1", "Y=2"], cwd: "/tmp" })).to.deep.equal([
      ["cmd", "sh"], ["args", "-c"], ["args", 'echo "$X"'], ["env", "X=1"], ["env", "Y=2"],
      ["uid", 0], ["gid", 0], ["cwd", "/tmp"], ["shell", undefined], ["stdio", "base64"],
    ]);
    expect(buildPath("/vm/a/exec", execQuery(["ls"], { stdin: true }))).to.equal("/vm/a/exec?cmd=ls&stdin=true&stdio=base64");
  });
});

describe("cli: vm helpers and output", () => {
  it("parses cp operands: HOST:/path remote, everything else local", () => {
    expect(parseCpOperand("sbox-1:/tmp/x")).to.deep.equal({ kind: "remote", host: "sbox-1", path: "/tmp/x" });
    expect(parseCpOperand("sbox-1:~/x")).to.deep.equal({ kind: "remote", host: "sbox-1", path: "~/x" });
    expect(parseCpOperand("./a:b")).to.deep.equal({ kind: "local", path: "./a:b" });
    expect(parseCpOperand("/abs/file")).to.deep.equal({ kind: "local", path: "/abs/file" });
    expect(parseCpOperand("-")).to.deep.equal({ kind: "local", path: "-" });
    expect(() => parseCpOperand("sbox-1:")).to.throw(UsageError);
  });

  it("shell frames are type + u32 BE length + payload", () => {
    expect(shellFrame(1, Buffer.from("ls\n"))).to.deep.equal(Buffer.from([1, 0, 0, 0, 3, 0x6c, 0x73, 0x0a]));
    expect(shellFrame(4)).to.deep.equal(Buffer.from([4, 0, 0, 0, 0]));
    expect(encodeWindowSize(80, 24)).to.deep.equal(Buffer.from([0, 0, 0, 80, 0, 0, 0, 24]));
  });

  it("one line for a command that found its subject in the asked-for state (cli/output.ts alreadyLine)", () => {
    expect(alreadyLine("sbox-1", "paused")).to.equal("sbox-1 is already paused; nothing done\n");
    expect(alreadyLine("tenant t1", "suspended (billing)", "nothing paused")).to.equal("tenant t1 is already suspended (billing); nothing paused\n");
  });

  it("renders aligned tables without trailing spaces", () => {
    expect(renderTable(["A", "LONGER", "C"], [["xx", "1", ""], ["y", "22", "z"]])).to.equal("A    LONGER   C\nxx   1\ny    22       z\n");
    const now = Date.parse("2026-04-11T10:00:00Z");
    expect(renderNodeTable([{ hostname: "sbox-1", hostgroup: "sbox", ip: "169.254.100.2", status: "Running", cpus: 1, ram_bytes: 2 ** 30, persistent: true, created_at: "2026-04-11T09:58:00Z", tags: ["a=b", "c"] }], now)).to.equal(
      "HOSTNAME   GROUP   IP              STATUS    CPUS   RAM       PERSISTENT   AGE   TAGS\n" +
      "sbox-1     sbox    169.254.100.2   Running   1      1.0 GiB   yes          2m    a=b,c\n",
    );
    expect(formatBytes(512)).to.equal("512 B");
    expect(formatBytes(3 * 2 ** 20 + 2 ** 19)).to.equal("3.5 MiB");
    expect(formatAge(undefined, now)).to.equal("-");
    expect(formatAge("2026-04-09T10:00:00Z", now)).to.equal("2d");
  });
});
