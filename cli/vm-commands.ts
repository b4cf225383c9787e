/**
 * `paddock vm …`: the Slicer API's host group and VM endpoints (nodes, exec, cp, logs, shell)
 * from the command line, following the `slicer vm` CLI where they overlap. One small function
 * per command, by family: lifecycle and views (vm-lifecycle-commands.ts), suspend/restore and
 * commits/forks (vm-commit-commands.ts), exec (vm-exec-command.ts), cp (vm-cp-commands.ts), shell
 * (vm-shell-command.ts); what they share is in vm-common.ts. This file holds the help text and the dispatch.
 */
import { splitAtDoubleDash } from "./args.js";
import { ApiError, UsageError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { vmCommit, vmCommitDelete, vmCommits, vmFork, vmRestore, vmSuspend } from "./vm-commit-commands.js";
import { vmCp } from "./vm-cp-commands.js";
import { vmExec } from "./vm-exec-command.js";
import { simpleVerb, vmDelete, vmGet, vmLaunch, vmList, vmLogs, vmRelaunch } from "./vm-lifecycle-commands.js";
import { vmShell } from "./vm-shell-command.js";

export type { VmNode } from "./vm-common.js";
export { cpDownloadName, parseCpOperand } from "./vm-cp-commands.js";
export { execQuery, relayExecStream } from "./vm-exec-command.js";
export { renderNodeTable } from "./vm-lifecycle-commands.js";

/** Help text of `paddock vm`. */
export const VM_HELP = `usage: paddock vm COMMAND [flags]

  launch [GROUP] [--tag k=v]... [--persistent] [--cpus N] [--ram-bytes N|1G] [--userdata-file F]
         [--secret NAME]... [--ttl 1h] [--wait agent|userdata] [--timeout 2m] [--json]
                        (also: create; --ttl: a Go duration of at least 1s; --wait userdata
                        exits 1 when the script exited non-zero: the VM stays up)
  list [--group G] [--tag T | --tag-prefix P] [--json]
  get HOST [--json]
  exec HOST [--uid N] [--gid N] [--cwd DIR] [--env K=V]... [--shell SH] [--stdin] -- CMD [ARGS...]
  cp SRC DST            one side is HOST:/path; files and directories; '-' is stdin/stdout
        [--uid N] [--gid N] [--permissions 0644]
  shell HOST [--uid N] [--cwd DIR] [--shell /bin/bash]
  logs HOST [--lines N]
  shutdown HOST [--action shutdown|reboot]   prints what became of it (GET /vm/HOST afterwards):
                        deleted (ephemeral VMs go with their disk) or stopped (persistent)
  relaunch HOST | delete HOST [--group G] | pause HOST | resume HOST
  suspend HOST | restore HOST [--wait agent] [--timeout 2m]      (gVisor tenants)
                        resume thaws a paused VM; a suspended one (on disk) comes back with restore
                        pause, resume, suspend or restore of a VM already so: a no-op, exit 0
  commit HOST [--tag T]... [--label k=v]... [--cache-key K] [--json]   prints the commit id
  commits [--tag T]... [--source HOST] [--cache-key K] [--json]
  fork COMMIT [--tag T]... [--tag-mode append|replace] [--persistent=false] [--cpus N]
       [--ram-bytes N] [--secret NAME]... [--wait agent|none] [--timeout 5m] [--json]
  commit-delete COMMIT

Events: paddock events [--since-id N] (NDJSON, follows until Ctrl-C).

Target: --url/--token/--token-file, else PADDOCK_URL/PADDOCK_TOKEN (PADDOCK_TOKEN_FILE), else SLICER_URL/SLICER_TOKEN
(SLICER_TOKEN_FILE); default http://127.0.0.1:8080. A URL that is a path (/…, ./…, ~/…, unix://…,
*.sock) is a Unix socket. For an http(s) URL, an empty token (PADDOCK_TOKEN=) with no other
source is refused before anything is sent (ERR_AUTH_REQUIRED, exit 1). HOST may also be a VM's name=<v> tag value.
`;

/** Dispatch `paddock vm <command> …`. */
export async function vmCommand(ctx: CliContext, argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    await writeOut(ctx.stderr, VM_HELP);
    return EXIT.USAGE;
  }
  const flagsPart = splitAtDoubleDash(rest)[0];
  if (cmd === "help" || cmd === "--help" || cmd === "-h" || flagsPart.includes("--help") || flagsPart.includes("-h")) {
    await writeOut(ctx.stdout, VM_HELP);
    return EXIT.OK;
  }
  try {
    return await vmDispatch(ctx, cmd, rest);
  } catch (err) {
    // A 401 says nothing of where the CLI took the token from (cli/target.ts); say where one goes.
    if (err instanceof ApiError && err.status === 401) {
      throw new ApiError(401, `${err.error}; pass a live tenant token with --token or --token-file, or set PADDOCK_TOKEN (\`paddock tenant get ID\` lists a tenant's tokens with their expiry; \`paddock tenant token ID\` issues a new one)`, err.code, { ...err.fields });
    }
    throw err;
  }
}

/** One `paddock vm` command (`cmd` not a help request). @returns the exit code */
async function vmDispatch(ctx: CliContext, cmd: string, rest: string[]): Promise<number> {
  switch (cmd) {
    case "launch": case "create": return vmLaunch(ctx, rest);
    case "list": case "ls": return vmList(ctx, rest);
    case "get": case "describe": return vmGet(ctx, rest);
    case "exec": return vmExec(ctx, rest);
    case "cp": return vmCp(ctx, rest);
    case "shell": return vmShell(ctx, rest);
    case "logs": return vmLogs(ctx, rest);
    case "shutdown": return simpleVerb(ctx, rest, "shutdown");
    case "pause": return simpleVerb(ctx, rest, "pause");
    case "resume": return simpleVerb(ctx, rest, "resume");
    case "relaunch": return vmRelaunch(ctx, rest);
    case "delete": case "rm": return vmDelete(ctx, rest);
    case "suspend": return vmSuspend(ctx, rest);
    case "restore": return vmRestore(ctx, rest);
    case "commit": return vmCommit(ctx, rest);
    case "commits": return vmCommits(ctx, rest);
    case "fork": return vmFork(ctx, rest);
    case "commit-delete": return vmCommitDelete(ctx, rest);
    default: throw new UsageError(`unknown vm command ${JSON.stringify(cmd)}; see paddock vm --help`);
  }
}
