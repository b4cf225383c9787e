/**
 * `paddock vm launch|list|get|logs|shutdown|pause|resume|relaunch|delete`: the VM lifecycle and
 * read-only views, one small function per command, each one or two API requests.
 */
import { parseFlags, parseIntFlag, parseSizeFlag, parseDurationFlag, expectPositionals } from "./args.js";
import { readBody, seg, type ApiClient, type QueryParams } from "./api-client.js";
import { ApiError, UsageError, EXIT } from "./cli-errors.js";
import { parseVmTtlMs } from "../shared/time.js";
import { alreadyState, idleClaimed } from "../shared/slicer/vm-power.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { alreadyLine, idleClaimedLine, formatAge, formatBytes, renderJson, renderKeyValues, renderTable, Progress } from "./output.js";
import { TARGET_FLAGS, clientFor, runningInstead, withVm, type VmNode } from "./vm-common.js";
import { readLocalFile } from "./local-file.js";

/** GROUP omitted ⇒ like the Go SDK: exactly one host group ⇒ that one, else an error. */
async function resolveGroup(client: ApiClient, group: string | undefined): Promise<string> {
  if (group !== undefined) return group;
  const groups = await client.json<{ name: string }[]>("GET", "/hostgroup");
  const names = Array.isArray(groups) ? groups.map((g) => g.name) : [];
  if (names.length === 1) return names[0] as string;
  if (names.length === 0) throw new UsageError("the daemon has no host groups; name one: paddock vm launch GROUP");
  throw new UsageError(`the daemon has ${names.length} host groups (${names.join(", ")}); name one: paddock vm launch GROUP`);
}

function nodeRows(nodes: readonly VmNode[], nowMs: number): string[][] {
  return nodes.map((n) => [
    n.hostname,
    n.hostgroup ?? "",
    n.ip ?? "",
    n.status ?? "",
    n.cpus === undefined ? "" : String(n.cpus),
    n.ram_bytes === undefined ? "" : formatBytes(n.ram_bytes),
    n.persistent ? "yes" : "no",
    formatAge(n.created_at, nowMs),
    (n.tags ?? []).join(","),
  ]);
}

/** The `vm list` table (pure). */
export function renderNodeTable(nodes: readonly VmNode[], nowMs: number): string {
  return renderTable(["HOSTNAME", "GROUP", "IP", "STATUS", "CPUS", "RAM", "PERSISTENT", "AGE", "TAGS"], nodeRows(nodes, nowMs));
}

/** `paddock vm launch [GROUP] …` (alias `create`): `POST /hostgroup/{g}/nodes` (with `--ttl`, a deadline), optionally waiting for the agent or userdata. @returns the exit code */
export async function vmLaunch(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS,
    json: { type: "boolean" },
    tag: { type: "string", multiple: true },
    persistent: { type: "boolean" },
    cpus: { type: "string" },
    "ram-bytes": { type: "string" },
    "userdata-file": { type: "string" },
    userdata: { type: "string" },
    secret: { type: "string", multiple: true },
    ttl: { type: "string" },
    wait: { type: "string" },
    timeout: { type: "string" },
  });
  expectPositionals(positionals, 0, 1, "paddock vm launch [GROUP] [flags]");
  if (values.wait !== undefined && values.wait !== "agent" && values.wait !== "userdata") throw new UsageError(`--wait takes agent or userdata, got ${JSON.stringify(values.wait)}`);
  if (values.timeout !== undefined && values.wait === undefined) throw new UsageError("--timeout only applies with --wait");
  parseDurationFlag(values.timeout, "--timeout");
  // The daemon checks the ttl against the group's max_ttl; a bad duration, or one below the
  // minimum the daemon takes (shared/time.ts MIN_VM_TTL_MS), fails here first with its code.
  if (values.ttl !== undefined) parseVmTtlMs(values.ttl, "--ttl");
  if (values.userdata !== undefined && values["userdata-file"] !== undefined) throw new UsageError("use either --userdata or --userdata-file");
  const body: Record<string, unknown> = {};
  const cpus = parseIntFlag(values.cpus, "--cpus", { min: 1 });
  const ramBytes = parseSizeFlag(values["ram-bytes"], "--ram-bytes");
  if (cpus !== undefined) body.cpus = cpus;
  if (ramBytes !== undefined) body.ram_bytes = ramBytes;
  if (values.persistent !== undefined) body.persistent = values.persistent;
  if (values.tag?.length) body.tags = values.tag;
  if (values.secret?.length) body.secrets = values.secret;
  if (values.ttl !== undefined) body.ttl = values.ttl;
  if (values["userdata-file"] !== undefined) body.userdata = await readLocalFile(values["userdata-file"], "--userdata-file");
  else if (values.userdata !== undefined) body.userdata = values.userdata;

  const client = clientFor(ctx, values);
  const group = await resolveGroup(client, positionals[0]);
  const query: QueryParams = values.wait === undefined ? [] : [["wait", values.wait], ["timeout", values.timeout]];
  const progress = new Progress(ctx.stderr);
  progress.every(200, () => `launching a VM in ${group}${values.wait ? ` (waiting for ${values.wait})` : ""} … ${progress.elapsed()}`);
  let node: VmNode;
  try {
    node = await client.json<VmNode>("POST", `/hostgroup/${seg(group)}/nodes`, { query, json: body });
  } finally {
    progress.done();
  }
  if (values.json) await writeOut(ctx.stdout, renderJson(node));
  else await writeOut(ctx.stdout, renderTable(["HOSTNAME", "GROUP", "IP", "PERSISTENT"], [[node.hostname, node.hostgroup ?? group, node.ip ?? "", node.persistent ? "yes" : "no"]]));
  // wait=userdata answers once the script ran, whatever its exit code (docs/slicer-api.md): ask
  // the VM's health for it, so a failed script is not a silent success.
  if (values.wait === "userdata") {
    const health = await client.json<{ userdata_exit_code?: unknown }>("GET", `/vm/${seg(node.hostname)}/health`).catch(() => undefined);
    const code = health?.userdata_exit_code;
    if (typeof code === "number" && code !== 0) {
      await writeOut(ctx.stderr, `paddock: VM ${node.hostname} is up, but its userdata exited ${code}; its output: paddock vm logs ${node.hostname}\n`);
      return EXIT.ERROR;
    }
  }
  return EXIT.OK;
}

/** `paddock vm list`: the VMs of the daemon or of one group, filtered by tag. @returns the exit code */
export async function vmList(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS,
    json: { type: "boolean" },
    group: { type: "string" },
    tag: { type: "string" },
    "tag-prefix": { type: "string" },
  }, { noArguments: true });
  expectPositionals(positionals, 0, 0, "paddock vm list [--group G] [--tag T | --tag-prefix P] [--json]");
  if (values.tag !== undefined && values["tag-prefix"] !== undefined) throw new UsageError("use either --tag or --tag-prefix, not both");
  const client = clientFor(ctx, values);
  const urlPath = values.group === undefined ? "/nodes" : `/hostgroup/${seg(values.group)}/nodes`;
  const nodes = await client.json<VmNode[]>("GET", urlPath, { query: [["tag", values.tag], ["tag_prefix", values["tag-prefix"]]] });
  const list = Array.isArray(nodes) ? nodes : [];
  await writeOut(ctx.stdout, values.json ? renderJson(list) : renderNodeTable(list, Date.now()));
  return EXIT.OK;
}

/** `paddock vm get HOST`: one VM as key/value lines or JSON. @returns the exit code */
export async function vmGet(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm get HOST [--json]");
  const client = clientFor(ctx, values);
  const node = await withVm(client, positionals[0] as string, (h) => client.json<VmNode>("GET", `/vm/${seg(h)}`));
  if (values.json) {
    await writeOut(ctx.stdout, renderJson(node));
    return EXIT.OK;
  }
  const net = node.network as { mode?: string; effective?: { allow?: string[]; drop?: string[] } } | undefined;
  const pairs: [string, string][] = [
    ["hostname", node.hostname],
    ["group", node.hostgroup ?? ""],
    ["status", node.status ?? ""],
    ["ip", node.ip ?? ""],
    ["cpus", node.cpus === undefined ? "" : String(node.cpus)],
    ["ram", node.ram_bytes === undefined ? "" : `${formatBytes(node.ram_bytes)} (${node.ram_bytes} bytes)`],
    ["persistent", node.persistent ? "yes" : "no"],
    ["created", node.created_at ?? ""],
    ["tags", (node.tags ?? []).join(", ")],
  ];
  if (typeof node.image === "string") pairs.push(["image", node.image]);
  if (net?.mode) pairs.push(["network", net.mode]);
  if (net?.effective?.allow?.length) pairs.push(["allow", net.effective.allow.join(", ")]);
  if (net?.effective?.drop?.length) pairs.push(["drop", net.effective.drop.join(", ")]);
  await writeOut(ctx.stdout, renderKeyValues(pairs));
  return EXIT.OK;
}

/** `paddock vm logs HOST [--lines N]`: the VM's console log. @returns the exit code */
export async function vmLogs(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, lines: { type: "string" }, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm logs HOST [--lines N]");
  const lines = parseIntFlag(values.lines, "--lines", { min: 0 });
  const client = clientFor(ctx, values);
  const body = await withVm(client, positionals[0] as string, (h) => client.json<{ content?: string }>("GET", `/vm/${seg(h)}/logs`, { query: [["lines", lines]] }));
  if (values.json) await writeOut(ctx.stdout, renderJson(body));
  else {
    const content = typeof body?.content === "string" ? body.content : "";
    await writeOut(ctx.stdout, content === "" || content.endsWith("\n") ? content : content + "\n");
  }
  return EXIT.OK;
}

/**
 * What became of a VM after `POST /vm/{h}/shutdown`, from `GET /vm/{h}` (the shutdown answer is
 * a bare `OK` on the wire, docs/slicer-api.md "Shutdown and reboot"): 404 ⇒ `deleted` (an
 * ephemeral VM is removed with its disk on shutdown; the answer comes after the removal),
 * `Stopped` ⇒ `stopped`, `Running` ⇒ `rebooted` (a reboot in place), any other status named.
 * @returns the past-tense phrase printed after the hostname.
 * @throws ApiError for an answer other than 2xx or 404; ConnectError.
 */
export async function shutdownOutcome(client: ApiClient, hostname: string): Promise<string> {
  let node: VmNode;
  try {
    node = await client.json<VmNode>("GET", `/vm/${seg(hostname)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return "deleted (ephemeral: removed with its disk)";
    throw err;
  }
  const status = typeof node?.status === "string" ? node.status : "";
  if (status === "Stopped") return "stopped";
  if (status === "Running") return "rebooted";
  return `shut down (status now ${status === "" ? "unknown" : status})`;
}

/**
 * `paddock vm shutdown|pause|resume HOST`: POST /vm/{h}/<verb> with no body and a text answer.
 * A shutdown then says what became of the VM ({@link shutdownOutcome}); a pause of a paused VM
 * or a resume of a running one says so (the daemon's `Paddock-Already` header,
 * shared/slicer/vm-power.ts); a pause of a VM the idle rule had paused says it is the user's
 * now, so requests no longer wake it (`Paddock-Idle-Claimed`, {@link idleClaimedLine}). A pause or resume refused with `ERR_VM_NOT_RUNNING` is printed as
 * the daemon wrote it (exit 4): for a suspended or stopped VM its message already names the way
 * back, the route and the CLI command (tenant-daemon/vm/vm-power.ts `vmNotRunningError`), so
 * the CLI adds nothing of its own.
 * @returns the exit code
 */
export async function simpleVerb(ctx: CliContext, argv: string[], verb: "shutdown" | "pause" | "resume"): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, action: { type: "string" } });
  if (values.action !== undefined && verb !== "shutdown") throw new UsageError("--action only applies to vm shutdown");
  expectPositionals(positionals, 1, 1, `paddock vm ${verb} HOST${verb === "shutdown" ? " [--action shutdown|reboot]" : ""}`);
  const action = values.action;
  if (action !== undefined && action !== "shutdown" && action !== "reboot") throw new UsageError(`--action takes shutdown or reboot, got ${JSON.stringify(action)}`);
  const client = clientFor(ctx, values);
  const { done, already, claimed } = await withVm(client, positionals[0] as string, async (h) => {
    const res = await client.send("POST", `/vm/${seg(h)}/${verb}`, { query: [["action", action]] });
    await readBody(res, 64 * 1024);
    return { done: h, already: alreadyState(res.headers), claimed: idleClaimed(res.headers) };
  });
  if (verb === "pause" && claimed === "pause") {
    await writeOut(ctx.stdout, idleClaimedLine(done, claimed));
    return EXIT.OK;
  }
  if (already !== undefined) {
    await writeOut(ctx.stdout, alreadyLine(done, already));
    return EXIT.OK;
  }
  const past = verb === "shutdown" ? await shutdownOutcome(client, done) : { pause: "paused", resume: "resumed" }[verb];
  await writeOut(ctx.stdout, `${done} ${past}\n`);
  return EXIT.OK;
}

/**
 * `paddock vm relaunch HOST [--json]`: boot a stopped persistent VM again. A running VM is a
 * no-op (`HOST is already running; nothing done`, exit 0; `--json` prints the VM), as restore,
 * pause and resume say theirs: the daemon answers it 409 ERR_VM_ALREADY_RUNNING, so the CLI asks
 * `GET /vm/{h}` then; a paused or suspended VM (the same code, whose message says how to bring
 * it back: tenant-daemon/vm/vm-power.ts) stays an error.
 * @returns the exit code
 */
export async function vmRelaunch(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm relaunch HOST [--json]");
  const client = clientFor(ctx, values);
  const { node, already } = await withVm(client, positionals[0] as string, async (h) => {
    try {
      return { node: await client.json<VmNode>("POST", `/vm/${seg(h)}/relaunch`), already: false };
    } catch (err) {
      return { node: await runningInstead(client, h, err), already: true };
    }
  });
  const line = already ? alreadyLine(node.hostname, "running") : `${node.hostname} relaunched (${node.ip ?? "no ip"})\n`;
  await writeOut(ctx.stdout, values.json ? renderJson(node) : line);
  return EXIT.OK;
}

/** `paddock vm delete HOST [--group G]`: delete the VM (its group looked up when not given). @returns the exit code */
export async function vmDelete(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, group: { type: "string" }, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm delete HOST [--group G]");
  const client = clientFor(ctx, values);
  const result = await withVm(client, positionals[0] as string, async (h) => {
    const group = (values.group as string | undefined) ?? (await client.json<VmNode>("GET", `/vm/${seg(h)}`)).hostgroup;
    if (!group) throw new UsageError(`cannot tell the host group of ${h}; pass --group`);
    const body = await client.json<{ message?: string; disk_removed?: string; error?: string }>("DELETE", `/hostgroup/${seg(group)}/nodes/${seg(h)}`);
    return { hostname: h, ...(body ?? {}) };
  });
  if (result.error) throw new ApiError(500, result.error, undefined);
  await writeOut(ctx.stdout, values.json ? renderJson(result) : `${result.hostname} deleted (disk removed: ${result.disk_removed ?? "?"})\n`);
  return EXIT.OK;
}
