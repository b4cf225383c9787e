/**
 * `paddock vm suspend|restore|commit|commits|fork|commit-delete`: suspend to disk and restore
 * (docs/slicer-api.md "Suspend and restore") and the cold-fork routes (docs/slicer-api.md "Cold
 * fork: commits and forks"; the Go SDK's CommitVM, ListCommits, ForkCommittedVM, DeleteCommit).
 * One small function per command, each one API request.
 */
import { parseFlags, parseIntFlag, parseKeyValues, parseSizeFlag, parseDurationFlag, expectPositionals } from "./args.js";
import { readBody, seg, type QueryParams } from "./api-client.js";
import { UsageError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { alreadyLine, idleClaimedLine, formatAge, renderJson, renderTable } from "./output.js";
import { TARGET_FLAGS, clientFor, runningInstead, withVm } from "./vm-common.js";
import { alreadyState, idleClaimed } from "../shared/slicer/vm-power.js";

/** A commit as `POST /vm/{h}/commit` and `GET /vm/commits` answer (unknown fields kept). */
export interface CommitWire {
  commit_id: string;
  hostname?: string;
  source_hostname?: string;
  source_host_group?: string;
  created_at?: string;
  mode?: string;
  status?: string;
  parent_status?: string;
  tags?: string[];
  labels?: Record<string, string>;
  cache_key?: string;
  [key: string]: unknown;
}

/**
 * `paddock vm suspend HOST`: `POST /vm/{h}/suspend` (gVisor tenants); a suspended VM is left as
 * it is and said to be (the daemon's `Paddock-Already` header, shared/slicer/vm-power.ts); one the
 * idle rule had suspended is said to be the user's now (`Paddock-Idle-Claimed`).
 * @returns the exit code
 */
export async function vmSuspend(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, TARGET_FLAGS);
  expectPositionals(positionals, 1, 1, "paddock vm suspend HOST");
  const client = clientFor(ctx, values);
  const { h, already, claimed } = await withVm(client, positionals[0] as string, async (name) => {
    const res = await client.send("POST", `/vm/${seg(name)}/suspend`);
    await readBody(res, 64 * 1024);
    return { h: name, already: alreadyState(res.headers), claimed: idleClaimed(res.headers) };
  });
  await writeOut(ctx.stdout, claimed === "suspend" ? idleClaimedLine(h, claimed) : already === "suspended" ? alreadyLine(h, already) : `${h} suspended\n`);
  return EXIT.OK;
}

/**
 * `paddock vm restore HOST [--wait agent] [--timeout D]`: `POST /vm/{h}/restore`. A running VM
 * is a no-op, said as pause, resume and suspend say theirs (`HOST is already running; nothing
 * done`, exit 0): the daemon answers it 409 ERR_VM_ALREADY_RUNNING (the Slicer wire format,
 * docs/slicer-api.md "Suspend and restore", carries no `Paddock-Already` for restore), so the
 * CLI asks `GET /vm/{h}` then; a paused VM (the same code: tenant-daemon/vm/vm-suspend.ts, whose
 * message says to resume it) and anything else stay errors.
 * @returns the exit code
 */
export async function vmRestore(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, wait: { type: "string" }, timeout: { type: "string" } });
  expectPositionals(positionals, 1, 1, "paddock vm restore HOST [--wait agent] [--timeout 2m]");
  if (values.wait !== undefined && values.wait !== "agent") throw new UsageError(`--wait takes agent, got ${JSON.stringify(values.wait)}`);
  if (values.timeout !== undefined && values.wait === undefined) throw new UsageError("--timeout only applies with --wait");
  parseDurationFlag(values.timeout, "--timeout");
  const client = clientFor(ctx, values);
  const query: QueryParams = [["wait", values.wait], ["timeout", values.timeout]];
  const { h, already } = await withVm(client, positionals[0] as string, async (name) => {
    try {
      await readBody(await client.send("POST", `/vm/${seg(name)}/restore`, { query }), 64 * 1024);
      return { h: name, already: false };
    } catch (err) {
      await runningInstead(client, name, err);
      return { h: name, already: true };
    }
  });
  await writeOut(ctx.stdout, already ? alreadyLine(h, "running") : `${h} restored\n`);
  return EXIT.OK;
}

/** `paddock vm commit HOST [--tag T]... [--label k=v]... [--cache-key K] [--json]`: copy the VM's disk into a commit. @returns the exit code */
export async function vmCommit(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS, json: { type: "boolean" }, tag: { type: "string", multiple: true }, label: { type: "string", multiple: true }, "cache-key": { type: "string" },
  });
  expectPositionals(positionals, 1, 1, "paddock vm commit HOST [--tag T]... [--label k=v]... [--cache-key K] [--json]");
  const body: Record<string, unknown> = {};
  if (values.tag?.length) body.tags = values.tag;
  if (values.label?.length) body.labels = parseKeyValues(values.label, "--label");
  if (values["cache-key"] !== undefined) body.cache_key = values["cache-key"];
  const client = clientFor(ctx, values);
  const c = await withVm(client, positionals[0] as string, (h) => client.json<CommitWire>("POST", `/vm/${seg(h)}/commit`, { json: body }));
  await writeOut(ctx.stdout, values.json ? renderJson(c) : `${c.commit_id}\n`);
  return EXIT.OK;
}

/** The `vm commits` table (pure). */
export function renderCommitTable(commits: readonly CommitWire[], nowMs: number): string {
  return renderTable(["COMMIT", "SOURCE", "GROUP", "AGE", "CACHE KEY", "TAGS"], commits.map((c) => [
    c.commit_id, c.source_hostname ?? "", c.source_host_group ?? "", formatAge(c.created_at, nowMs), c.cache_key ?? "", (c.tags ?? []).join(","),
  ]));
}

/** `paddock vm commits [--tag T]... [--source HOST] [--cache-key K] [--json]`: `GET /vm/commits`. @returns the exit code */
export async function vmCommits(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS, json: { type: "boolean" }, tag: { type: "string", multiple: true }, source: { type: "string" }, "cache-key": { type: "string" },
  }, { noArguments: true });
  expectPositionals(positionals, 0, 0, "paddock vm commits [--tag T]... [--source HOST] [--cache-key K] [--json]");
  const query: QueryParams = [...(values.tag ?? []).map((t) => ["tag", t] as const), ["source", values.source], ["cache_key", values["cache-key"]]];
  const client = clientFor(ctx, values);
  const list = await client.json<CommitWire[]>("GET", "/vm/commits", { query });
  const commits = Array.isArray(list) ? list : [];
  await writeOut(ctx.stdout, values.json ? renderJson(commits) : renderCommitTable(commits, Date.now()));
  return EXIT.OK;
}

/**
 * `paddock vm fork COMMIT [--tag T]... [--tag-mode append|replace] [--persistent=false] [--cpus N]
 * [--ram-bytes N] [--secret S]... [--wait agent|none] [--timeout D] [--json]`:
 * `POST /vm/commits/{id}/fork`. @returns the exit code
 */
export async function vmFork(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS, json: { type: "boolean" }, tag: { type: "string", multiple: true }, "tag-mode": { type: "string" }, persistent: { type: "boolean" },
    cpus: { type: "string" }, "ram-bytes": { type: "string" }, secret: { type: "string", multiple: true }, wait: { type: "string" }, timeout: { type: "string" },
  });
  expectPositionals(positionals, 1, 1, "paddock vm fork COMMIT [flags]");
  if (values.wait !== undefined && values.wait !== "agent" && values.wait !== "none") throw new UsageError(`--wait takes agent or none, got ${JSON.stringify(values.wait)}`);
  const tagMode = values["tag-mode"];
  if (tagMode !== undefined && tagMode !== "append" && tagMode !== "replace") throw new UsageError(`--tag-mode takes append or replace, got ${JSON.stringify(tagMode)}`);
  parseDurationFlag(values.timeout, "--timeout");
  const body: Record<string, unknown> = {};
  const cpus = parseIntFlag(values.cpus, "--cpus", { min: 1 });
  const ramBytes = parseSizeFlag(values["ram-bytes"], "--ram-bytes");
  if (cpus !== undefined) body.vcpu = cpus;
  if (ramBytes !== undefined) body.ram_bytes = ramBytes;
  if (values.persistent !== undefined) body.persistent = values.persistent;
  if (values.tag?.length) body.tags = values.tag;
  if (tagMode !== undefined) body.tag_mode = tagMode;
  if (values.secret?.length) body.secrets = values.secret;
  const client = clientFor(ctx, values);
  const forked = await client.json<{ hostname: string; commit_id?: string; persistent?: boolean; [k: string]: unknown }>(
    "POST", `/vm/commits/${seg(positionals[0] as string)}/fork`, { query: [["wait", values.wait], ["timeout", values.timeout]], json: body },
  );
  await writeOut(ctx.stdout, values.json ? renderJson(forked) : `${forked.hostname} forked from ${forked.commit_id ?? positionals[0] ?? ""}\n`);
  return EXIT.OK;
}

/** `paddock vm commit-delete COMMIT`: `DELETE /vm/commits/{id}`. @returns the exit code */
export async function vmCommitDelete(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm commit-delete COMMIT");
  const client = clientFor(ctx, values);
  const res = await client.json<{ commit_id: string; status?: string }>("DELETE", `/vm/commits/${seg(positionals[0] as string)}`);
  await writeOut(ctx.stdout, values.json ? renderJson(res) : `${res.commit_id} deleted\n`);
  return EXIT.OK;
}
