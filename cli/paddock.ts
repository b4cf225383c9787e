#!/usr/bin/env node
/**
 * The `paddock` command line: one entry that dispatches to the supervisor
 * (`up`), a tenant daemon (`daemon up|purge`), the image store (`image`), the config generator
 * (`new`), the Slicer API (`vm`) and the admin API (`tenant`). Conventions follow the `slicer`
 * CLI where they overlap. Exit codes: see {@link HELP} and cli/cli-errors.ts.
 */
import { realpathSync } from "node:fs";
import { PADDOCK_VERSION } from "../shared/version.js";
import { isPaddockError } from "../shared/errors.js";
import { fileURLToPath } from "node:url";
import { EXIT, UsageError, describeError, exitCodeFor } from "./cli-errors.js";
import { processContext, writeOut, type CliContext } from "./cli-context.js";
import { hoistLeadingTargetFlags } from "./args.js";
import { readLocalFile } from "./local-file.js";

/** Top-level help, including the exit codes scripts can rely on. */
export const HELP = `paddock — multi-tenant sandbox VMs speaking the Slicer API

usage: paddock COMMAND [flags]

  up [--config FILE] [--state-dir D] [--run-dir D] [--gateway ADDR] [--admin ADDR]
     [--templates-dir D] [--stop-daemons-on-exit]
                                   run the supervisor (gateway 127.0.0.1:8080, admin 127.0.0.1:8081;
                                   paddock up --help)
  daemon up FILE                   run one tenant daemon from a Slicer-format YAML config
  daemon purge FILE                delete every VM, disk, link and nft table of that daemon's tenant,
                                   then its state and run dirs
  new NAME [flags]                 print the config \`slicer new\` writes (see paddock new --help)
  image build [NAME] [--packages a,b] [--minimal] [--force] [--mirror URL] [--image-dir D] [--json]
  image list [--image-dir D] [--json]
                                   the image store (paddock image --help)
  vm launch|list|get|exec|cp|shell|logs|shutdown|relaunch|delete|pause|resume|suspend|restore|
     commit|commits|fork|commit-delete …
                                   the Slicer API of a tenant daemon or the gateway (paddock vm --help)
  events [--since-id N]            the tenant's VM lifecycle events as NDJSON, following (Ctrl-C ends;
                                   paddock events --help)
  tenant create|list|get|update|delete|suspend|resume|restart|logs|token …
                                   the supervisor's admin API (paddock tenant --help)
  version

Targets: vm commands use --url/--token/--token-file, else PADDOCK_URL/PADDOCK_TOKEN (PADDOCK_TOKEN_FILE), else SLICER_URL/SLICER_TOKEN
(SLICER_TOKEN_FILE); tenant commands use --admin-url/--admin-token, else PADDOCK_ADMIN_URL/
PADDOCK_ADMIN_TOKEN, else the admin-token file under \${PADDOCK_STATE_DIR:-/var/lib/paddock}/supervisor
(missing under a PADDOCK_STATE_DIR that is set: refused, ERR_FILE_UNREADABLE).
Target flags go after the command or before it: paddock --url /run/x.sock vm list.

Output: tables for people; --json for scripts.

Exit codes:
  0  ok
  1  runtime or API error (unreachable daemon, HTTP 400/401/408/5xx, local I/O)
  2  usage error (unknown flag, missing argument, bad value)
  3  not found (HTTP 404)
  4  conflict or forbidden (HTTP 403/409); paddock up refused with ERR_STATE_LOCKED or ERR_SOCKET_IN_USE;
     daemon up|purge refused for a conflict (ERR_STATE_LOCKED, ERR_SOCKET_IN_USE, ERR_TENANT_ID_IN_USE,
     ERR_USERNS_RANGE_TAKEN: paddock daemon --help)
  vm exec exits with the remote command's own exit code (128+N when killed by signal N), or 1 with
  ERR_EXEC_STREAM_CUT when its stream is cut before the exit frame (token revoked, tenant suspended
  or deleted, gateway or daemon stopped, or the VM itself ended: a guest exit, an OOM kill, its pids
  limit under gVisor; paddock events says why). vm shell exits 0 when the shell ends, or 1 with
  ERR_SHELL_SESSION_CUT when its connection closes before that (the same causes).
`;


/** Help text of `paddock daemon`. */
export const DAEMON_HELP = `usage: paddock daemon up FILE | paddock daemon purge FILE

  up FILE      run one tenant daemon from a Slicer-format YAML config (paddock new NAME prints one):
               its API on the config's socket, its VMs, network range and nftables table; NDJSON
               log on stderr; SIGTERM stops it
  purge FILE   delete everything that config's tenant has on this host: every VM and disk, links,
               namespaces, the nftables table, the cgroup, then its state and run dirs. Refused
               while a daemon of that tenant id runs (stop it first: SIGTERM to its pid)

A file that cannot be read is ERR_FILE_UNREADABLE (exit 1); a config the daemon refuses exits 2;
a conflict exits 4 (the tenant's state dir, socket, id or uid range held by a daemon that runs, or
a state or run dir that is, is inside or holds one of another running daemon's:
ERR_STATE_LOCKED, ERR_SOCKET_IN_USE, ERR_TENANT_ID_IN_USE, ERR_USERNS_RANGE_TAKEN; a purge while its
daemon runs).

The daemon runs in this process: with NODE_EXTRA_CA_CERTS set, node parses that file at start
(tens of ms of CPU with a distribution's whole bundle). The daemon needs extra CAs only for its
egress proxy's upstream TLS, which reads PADDOCK_EXTRA_CA_CERTS on first use instead, as the
supervisor passes it: PADDOCK_EXTRA_CA_CERTS=CAFILE NODE_EXTRA_CA_CERTS= paddock daemon up FILE
`;

async function daemonCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const [sub, file, ...extra] = argv;
  // `daemon up --help` too: a FILE named --help would be read as a config otherwise.
  if (sub === "--help" || sub === "-h" || sub === "help" || argv.includes("--help") || argv.includes("-h")) {
    await writeOut(ctx.stdout, DAEMON_HELP);
    return EXIT.OK;
  }
  if ((sub !== "up" && sub !== "purge") || file === undefined || extra.length > 0) {
    throw new UsageError("paddock daemon up FILE | paddock daemon purge FILE");
  }
  // The config file is named on the command line like the CLI's other files: one that cannot be
  // read is ERR_FILE_UNREADABLE (exit 1, cli/local-file.ts), not a config problem (exit 2).
  await readLocalFile(file, `paddock daemon ${sub} FILE`);
  const daemon = await import("../tenant-daemon/main.js");
  return daemon.main([sub, file]);
}

/** `paddock up` flags, passed through to supervisor/main.ts `main` (which parses them). */
export const UP_HELP = `usage: paddock up [--config FILE] [--state-dir DIR] [--run-dir DIR] [--gateway ADDR] [--admin ADDR]
                  [--templates-dir DIR] [--stop-daemons-on-exit]

Run the supervisor until SIGTERM/SIGINT: gateway (tenants' Slicer API, default 127.0.0.1:8080),
admin API (default 127.0.0.1:8081, token in <state_dir>/supervisor/admin-token). Defaults: state
/var/lib/paddock, run /run/paddock (PADDOCK_STATE_DIR / PADDOCK_RUN_DIR); example config in
templates/supervisor.example.yaml.

A flag's value goes after a space or after \`=\`; one starting with - only after \`=\`
(--state-dir=-x). A bad command line exits 2 (usage error), as does a config or flag value the
supervisor refuses (ERR_CONFIG_INVALID); any other refused start prints
\`paddock: error: MESSAGE (CODE)\` and exits 4 for a conflict: ERR_STATE_LOCKED (another
supervisor runs on the state dir, or the run dir belongs to another state dir) or
ERR_SOCKET_IN_USE (the gateway or admin address is taken); else 1. A refused start removes what it made: a state or run dir
it created is gone, one that existed is left as it was.
`;

async function upCommand(ctx: CliContext, argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    await writeOut(ctx.stdout, UP_HELP);
    return EXIT.OK;
  }
  const supervisor = await import("../supervisor/main.js");
  // A bad command line is a usage error (exit 2) like every other command's, before anything starts.
  let args: ReturnType<typeof supervisor.parseUpArgs>;
  try {
    args = supervisor.parseUpArgs(argv);
  } catch (err) {
    if (isPaddockError(err) && err.code === "ERR_BAD_REQUEST") throw new UsageError(err.message);
    throw err;
  }
  return supervisor.main(args);
}

/**
 * Run one command line (argv without `node` and the script).
 * @returns the exit code (never throws: errors are printed on stderr and mapped to codes).
 */
export async function runCli(argv: readonly string[], ctx: CliContext): Promise<number> {
  try {
    // Target flags may come first (`paddock --url X vm list`): moved after the command.
    const [cmd, ...rest] = hoistLeadingTargetFlags(argv);
    switch (cmd) {
      case undefined:
        await writeOut(ctx.stderr, HELP);
        return EXIT.USAGE;
      case "help": case "--help": case "-h":
        await writeOut(ctx.stdout, HELP);
        return EXIT.OK;
      case "version": case "--version":
        if (rest.length > 0 && !(rest.length === 1 && (rest[0] === "--help" || rest[0] === "-h"))) {
          await writeOut(ctx.stderr, `paddock: usage error: version takes no arguments (got ${rest.join(" ")})\n`);
          return EXIT.USAGE;
        }
        await writeOut(ctx.stdout, rest.length > 0 ? "usage: paddock version\n\nPrints the version of this paddock.\n" : `paddock ${PADDOCK_VERSION}\n`);
        return EXIT.OK;
      case "up": return await upCommand(ctx, rest);
      case "daemon": return await daemonCommand(ctx, rest);
      // Commands load lazily: a `vm` call should not pay for the YAML parser or the image store.
      case "new": return await (await import("./new-command.js")).newCommand(ctx, rest);
      case "image": return await (await import("./image-commands.js")).imageCommand(ctx, rest);
      case "vm": return await (await import("./vm-commands.js")).vmCommand(ctx, rest);
      case "events": return await (await import("./events-command.js")).eventsCommand(ctx, rest);
      case "tenant": return await (await import("./tenant-commands.js")).tenantCommand(ctx, rest);
      default: throw new UsageError(`unknown command ${JSON.stringify(cmd)}; see paddock --help`);
    }
  } catch (err) {
    ctx.stderr.write(`paddock: ${describeError(err)}\n`);
    return exitCodeFor(err);
  }
}

/** True when this file is the program (also when started through the npm `bin` symlink). */
function isMain(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  // `paddock vm list | head` closes stdout early: that is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
  process.exitCode = await runCli(process.argv.slice(2), processContext());
}
