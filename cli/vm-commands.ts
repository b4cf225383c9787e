/**
 * `paddock vm …`: the Slicer API's host group and VM endpoints (spec §2.2–§2.7, §2.10) from the
 * command line, following the `slicer vm` CLI where they overlap. One small function per command.
 */
import { createReadStream, createWriteStream, promises as fs } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type http from "node:http";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { assertSingleComponent } from "../shared/path-names.js";
import { parseFlags, parseIntFlag, parseSizeFlag, parseDurationFlag, expectPositionals, splitAtDoubleDash, type FlagSpec } from "./args.js";
import { ApiClient, readBody, seg, toApiError, type QueryParams } from "./api-client.js";
import { ApiError, UsageError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { LineSplitter, exitCodeOfFrame, framePayload, isTerminalFrame, type ExecFrame } from "./exec-stream.js";
import { formatAge, formatBytes, renderJson, renderKeyValues, renderTable, Progress } from "./output.js";
import { resolveTarget } from "./target.js";

/** Flags every vm command takes. */
const TARGET_FLAGS = {
  url: { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies FlagSpec;

/** A Node as returned by list/describe/create (spec §2.2). */
export interface VmNode {
  hostname: string;
  hostgroup?: string;
  ip?: string;
  ram_bytes?: number;
  cpus?: number;
  created_at?: string;
  arch?: string;
  tags?: string[];
  status?: string;
  persistent?: boolean;
  [key: string]: unknown;
}

/** Help text of `paddock vm`. */
export const VM_HELP = `usage: paddock vm COMMAND [flags]

  launch [GROUP] [--tag k=v]... [--persistent] [--cpus N] [--ram-bytes N|1G] [--userdata-file F]
         [--secret NAME]... [--wait agent|userdata] [--timeout 2m] [--json]
  list [--group G] [--tag T | --tag-prefix P] [--json]
  get HOST [--json]
  exec HOST [--uid N] [--gid N] [--cwd DIR] [--env K=V]... [--shell SH] [--stdin] -- CMD [ARGS...]
  cp SRC DST            one side is HOST:/path; files and directories; '-' is stdin/stdout
        [--uid N] [--gid N] [--permissions 0644]
  shell HOST [--uid N] [--cwd DIR] [--shell /bin/bash]
  logs HOST [--lines N]
  shutdown HOST [--action shutdown|reboot]
  relaunch HOST | delete HOST [--group G] | pause HOST | resume HOST

Target: --url/--token/--token-file, else PADDOCK_URL/PADDOCK_TOKEN, else SLICER_URL/SLICER_TOKEN
(SLICER_TOKEN_FILE); default http://127.0.0.1:8080. A URL that is a path (/…, ./…, ~/…, unix://…,
*.sock) is a Unix socket. HOST may also be a VM's name=<v> tag value.
`;

type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

function clientFor(ctx: CliContext, values: Values): ApiClient {
  return new ApiClient(resolveTarget(
    { url: values.url as string | undefined, token: values.token as string | undefined, tokenFile: values["token-file"] as string | undefined },
    ctx.env,
    ctx.readTokenFile,
  ));
}

/**
 * Run `fn` with the VM's real hostname. On a 404 the name is looked up as a friendly-name tag
 * (`GET /nodes?tag=name=<v>`, spec §3.2: the API never resolves names, the CLI retries).
 */
async function withVm<T>(client: ApiClient, host: string, fn: (hostname: string) => Promise<T>): Promise<T> {
  try {
    return await fn(host);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    const byName = await client.json<VmNode[]>("GET", "/nodes", { query: [["tag", `name=${host}`]] }).catch(() => [] as VmNode[]);
    if (!Array.isArray(byName) || byName.length !== 1 || byName[0]?.hostname === host) throw err;
    return fn((byName[0] as VmNode).hostname);
  }
}

/** The VM's real hostname (friendly names resolved as in {@link withVm}); for requests that cannot be retried. */
async function resolveHostname(client: ApiClient, host: string): Promise<string> {
  return withVm(client, host, async (h) => (await client.json<VmNode>("GET", `/vm/${seg(h)}`)).hostname ?? h);
}

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

// ---------------------------------------------------------------------------------------
// launch, list, get

async function vmLaunch(ctx: CliContext, argv: string[]): Promise<number> {
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
    wait: { type: "string" },
    timeout: { type: "string" },
  });
  expectPositionals(positionals, 0, 1, "paddock vm launch [GROUP] [flags]");
  if (values.wait !== undefined && values.wait !== "agent" && values.wait !== "userdata") throw new UsageError(`--wait takes agent or userdata, got ${JSON.stringify(values.wait)}`);
  if (values.timeout !== undefined && values.wait === undefined) throw new UsageError("--timeout only applies with --wait");
  parseDurationFlag(values.timeout, "--timeout");
  if (values.userdata !== undefined && values["userdata-file"] !== undefined) throw new UsageError("use either --userdata or --userdata-file");
  const body: Record<string, unknown> = {};
  const cpus = parseIntFlag(values.cpus, "--cpus", { min: 1 });
  const ramBytes = parseSizeFlag(values["ram-bytes"], "--ram-bytes");
  if (cpus !== undefined) body.cpus = cpus;
  if (ramBytes !== undefined) body.ram_bytes = ramBytes;
  if (values.persistent !== undefined) body.persistent = values.persistent;
  if (values.tag?.length) body.tags = values.tag;
  if (values.secret?.length) body.secrets = values.secret;
  if (values["userdata-file"] !== undefined) body.userdata = await fs.readFile(values["userdata-file"], "utf8");
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
  return EXIT.OK;
}

async function vmList(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS,
    json: { type: "boolean" },
    group: { type: "string" },
    tag: { type: "string" },
    "tag-prefix": { type: "string" },
  });
  expectPositionals(positionals, 0, 0, "paddock vm list [--group G] [--tag T | --tag-prefix P] [--json]");
  if (values.tag !== undefined && values["tag-prefix"] !== undefined) throw new UsageError("use either --tag or --tag-prefix, not both");
  const client = clientFor(ctx, values);
  const urlPath = values.group === undefined ? "/nodes" : `/hostgroup/${seg(values.group)}/nodes`;
  const nodes = await client.json<VmNode[]>("GET", urlPath, { query: [["tag", values.tag], ["tag_prefix", values["tag-prefix"]]] });
  const list = Array.isArray(nodes) ? nodes : [];
  await writeOut(ctx.stdout, values.json ? renderJson(list) : renderNodeTable(list, Date.now()));
  return EXIT.OK;
}

async function vmGet(ctx: CliContext, argv: string[]): Promise<number> {
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

// ---------------------------------------------------------------------------------------
// exec

/** Query of `POST /vm/{h}/exec` for a command (pure; spec §2.5). Always `stdio=base64`. */
export function execQuery(cmd: readonly string[], opts: { uid?: number; gid?: number; cwd?: string; env?: readonly string[]; shell?: string; stdin?: boolean }): QueryParams {
  const q: [string, string | number | boolean | undefined][] = [["cmd", cmd[0]]];
  for (const a of cmd.slice(1)) q.push(["args", a]);
  for (const e of opts.env ?? []) q.push(["env", e]);
  q.push(["uid", opts.uid], ["gid", opts.gid ?? opts.uid], ["cwd", opts.cwd], ["shell", opts.shell]);
  if (opts.stdin) q.push(["stdin", true]);
  q.push(["stdio", "base64"]);
  return q;
}

/**
 * Relay an exec NDJSON response: payloads to stdout/stderr with backpressure, then the
 * command's exit code (spec §2.5 frames).
 */
export async function relayExecStream(res: Readable, out: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const splitter = new LineSplitter();
  let terminal: ExecFrame | undefined;
  for await (const chunk of res) {
    for (const line of splitter.push(chunk as Buffer)) {
      let frame: ExecFrame;
      try {
        frame = JSON.parse(line) as ExecFrame;
      } catch {
        continue; // not a frame; the spec's clients skip such lines too
      }
      const payload = framePayload(frame);
      if (payload) {
        const stream = payload.stream === "stdout" ? out.stdout : out.stderr;
        if (!stream.write(payload.bytes)) await new Promise<void>((resolve) => stream.once("drain", () => resolve()));
      }
      if (isTerminalFrame(frame)) terminal = frame;
    }
  }
  if (terminal === undefined) {
    out.stderr.write("paddock: the exec stream ended without an exit frame (connection lost?)\n");
    return EXIT.ERROR;
  }
  if (terminal.error) out.stderr.write(`paddock: ${terminal.error}\n`);
  return exitCodeOfFrame(terminal);
}

async function vmExec(ctx: CliContext, argv: string[]): Promise<number> {
  const [before, after] = splitAtDoubleDash(argv);
  const { values, positionals } = parseFlags(before, {
    ...TARGET_FLAGS,
    uid: { type: "string" },
    gid: { type: "string" },
    cwd: { type: "string" },
    env: { type: "string", multiple: true },
    shell: { type: "string" },
    stdin: { type: "boolean" },
  });
  const usage = "paddock vm exec HOST [flags] -- CMD [ARGS...]";
  if (positionals.length < 1) throw new UsageError(`missing HOST; usage: ${usage}`);
  const cmd = [...positionals.slice(1), ...(after ?? [])];
  if (cmd.length === 0 || cmd[0] === "") throw new UsageError(`missing CMD; usage: ${usage}`);
  for (const e of values.env ?? []) if (!/^[^=]+=/.test(e)) throw new UsageError(`--env takes KEY=VALUE, got ${JSON.stringify(e)}`);
  const query = execQuery(cmd, {
    uid: parseIntFlag(values.uid, "--uid", { min: 0, max: 4294967295 }),
    gid: parseIntFlag(values.gid, "--gid", { min: 0, max: 4294967295 }),
    cwd: values.cwd,
    env: values.env,
    shell: values.shell,
    stdin: values.stdin,
  });
  const client = clientFor(ctx, values);
  // With --stdin the body cannot be replayed, so resolve a friendly name before sending.
  const host = values.stdin ? await resolveHostname(client, positionals[0] as string) : (positionals[0] as string);
  const res = await withVm(client, host, (h) => client.send("POST", `/vm/${seg(h)}/exec`, {
    query,
    ...(values.stdin ? { body: ctx.stdin, contentType: "application/octet-stream" } : {}),
  }));
  return relayExecStream(res, { stdout: ctx.stdout, stderr: ctx.stderr });
}

// ---------------------------------------------------------------------------------------
// cp

/** A cp operand: local path, or `HOST:/path` (pure). `-` is stdin/stdout. */
export function parseCpOperand(text: string): { kind: "local"; path: string } | { kind: "remote"; host: string; path: string } {
  const m = /^([a-z0-9][a-z0-9-]*):(.*)$/.exec(text);
  if (m && !text.startsWith("./") && !text.startsWith("/")) {
    if (m[2] === "") throw new UsageError(`${JSON.stringify(text)}: the remote path after ':' is empty`);
    return { kind: "remote", host: m[1] as string, path: m[2] as string };
  }
  return { kind: "local", path: text };
}

const PROGRESS_MIN_BYTES = 8 * 2 ** 20;

/** A pass-through that counts bytes and drives a progress line. */
function progressCounter(ctx: CliContext, label: string, totalBytes: number | undefined): { stream: Transform; finish: () => void } {
  const progress = new Progress(ctx.stderr);
  let done = 0;
  const started = Date.now();
  const show = totalBytes === undefined || totalBytes >= PROGRESS_MIN_BYTES;
  const render = (): string => {
    const rate = done / Math.max(0.001, (Date.now() - started) / 1000);
    const pct = totalBytes ? ` (${Math.floor((100 * done) / totalBytes)}%)` : "";
    return `${label}: ${formatBytes(done)}${totalBytes ? ` / ${formatBytes(totalBytes)}` : ""}${pct}, ${formatBytes(rate)}/s`;
  };
  if (show) progress.every(250, render);
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      done += chunk.length;
      cb(null, chunk);
    },
  });
  return { stream, finish: () => progress.done(show && done >= PROGRESS_MIN_BYTES ? render() : undefined) };
}

async function cpUpload(ctx: CliContext, client: ApiClient, src: string, host: string, dest: string, owner: [string, number | undefined][], permissions: string | undefined): Promise<void> {
  let body: Readable;
  let size: number | undefined;
  const query: [string, string | number | boolean | undefined][] = [["path", dest], ["copy_semantics", "cp-v1"]];
  if (src === "-") {
    body = ctx.stdin;
    query.push(["mode", "cp-v1-binary"], ["source_type", "file"], ["permissions", permissions ?? "0644"]);
  } else {
    const st = await fs.stat(src).catch((err: unknown) => {
      if (errnoCode(err) === "ENOENT") throw new Error(`${src}: no such file or directory`); // local I/O: exit 1
      throw err;
    });
    const name = path.basename(path.resolve(src));
    if (st.isDirectory()) {
      // Directories go as an uncompressed tar (cp-v1-tar); `dir/.` copies the contents (spec §2.7).
      const { createTarStream } = await import("../tenant-daemon/agent/tar.js");
      body = createTarStream(path.resolve(src), () => false);
      query.push(["mode", "cp-v1-tar"], ["source_type", "directory"], ["source_name", name]);
      if (src.endsWith("/.")) query.push(["copy_contents", true]);
      if (permissions !== undefined) query.push(["permissions", permissions]);
    } else if (st.isFile()) {
      body = createReadStream(src);
      size = st.size;
      query.push(["mode", "cp-v1-binary"], ["source_type", "file"], ["source_name", name], ["permissions", permissions ?? (st.mode & 0o777).toString(8).padStart(4, "0")]);
    } else {
      throw new UsageError(`${src}: only regular files and directories can be copied`);
    }
  }
  query.push(...owner);
  const hostname = await resolveHostname(client, host);
  const counter = progressCounter(ctx, `copying to ${host}:${dest}`, size);
  try {
    const res = await client.send("POST", `/vm/${seg(hostname)}/cp`, {
      query,
      body: body.pipe(counter.stream),
      contentType: query.some(([k, v]) => k === "mode" && v === "cp-v1-tar") ? "application/x-tar" : "application/octet-stream",
      ...(size === undefined ? {} : { contentLength: size }),
    });
    await readBody(res, 64 * 1024);
  } finally {
    counter.finish();
  }
}

/**
 * The file name a cp download is saved under inside a destination directory: the server's
 * `X-Slicer-Source-Name-Base64` (base64 of UTF-8) when the header is there, else the last
 * component of the remote path the user typed (`download` for `/`). Every byte of the header
 * can come from a hostile guest, so the name must be one plain path component
 * (shared/path-names.ts); an empty header is refused too (the agent omits it instead,
 * tenant-daemon/agent/cp.ts).
 * @returns the name, or `undefined` when the user's remote path ends in `/.` and the server sent
 *   no name: the contents go into the destination itself.
 * @throws PaddockError ERR_CP_BAD_NAME when the name is not valid UTF-8 or not a single component.
 */
export function cpDownloadName(nameHeader: string | string[] | undefined, remotePath: string): string | undefined {
  if (Array.isArray(nameHeader)) throw new PaddockError("ERR_CP_BAD_NAME", "refusing the file name the server sent: more than one X-Slicer-Source-Name-Base64 header");
  if (typeof nameHeader === "string") {
    let name: string;
    try {
      name = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(nameHeader, "base64url"));
    } catch {
      throw new PaddockError("ERR_CP_BAD_NAME", "refusing the file name the server sent: X-Slicer-Source-Name-Base64 is not base64 of UTF-8");
    }
    return assertSingleComponent(name, "the file name the server sent");
  }
  const last = path.posix.basename(remotePath.replace(/\/+$/, ""));
  if (last === ".") return undefined;
  return assertSingleComponent(last || "download", "the remote path's last component");
}

async function cpDownload(ctx: CliContext, client: ApiClient, host: string, src: string, dest: string): Promise<void> {
  const toStdout = dest === "-";
  const res = await withVm(client, host, (h) => client.send("GET", `/vm/${seg(h)}/cp`, {
    query: [["path", src], ["mode", toStdout ? "cp-v1-binary" : "cp-v1-recursive"], ["copy_semantics", "cp-v1"]],
    headers: { Accept: toStdout ? "application/octet-stream" : "application/octet-stream, application/x-tar" },
  }));
  const lengthHeader = Number(res.headers["content-length"]);
  const counter = progressCounter(ctx, `copying from ${host}:${src}`, Number.isFinite(lengthHeader) && lengthHeader > 0 ? lengthHeader : undefined);
  try {
    if (toStdout) {
      for await (const chunk of res.pipe(counter.stream)) await writeOut(ctx.stdout, chunk as Buffer);
      return;
    }
    const sourceType = String(res.headers["x-slicer-source-type"] ?? "file");
    // Validated before anything is written, also when DST names the target itself.
    const remoteName = cpDownloadName(res.headers["x-slicer-source-name-base64"], src);
    const destStat = await fs.stat(dest).catch(() => undefined);
    const target = (destStat?.isDirectory() || dest.endsWith("/")) && remoteName !== undefined ? path.join(dest, remoteName) : dest;
    if (sourceType === "directory") {
      await cpDownloadTree(res.pipe(counter.stream), target);
      return;
    }
    // Files are written to a partial name next to the target and renamed when complete, so an
    // interrupted copy never leaves a truncated file under the real name.
    const partial = path.join(path.dirname(target), `.${path.basename(target)}.paddock-${randomBytes(4).toString("hex")}`);
    const modeHeader = res.headers["x-slicer-file-mode"];
    const mode = typeof modeHeader === "string" && /^[0-7]{3,4}$/.test(modeHeader) ? parseInt(modeHeader, 8) & 0o777 : 0o644;
    try {
      await pipeline(res, counter.stream, createWriteStream(partial, { mode, flags: "wx" }));
      await fs.chmod(partial, mode);
      await fs.rename(partial, target);
    } catch (err) {
      await fs.rm(partial, { force: true });
      throw err;
    }
  } catch (err) {
    res.destroy();
    throw err;
  } finally {
    counter.finish();
  }
}

/**
 * Extract a directory download (a tar from the guest) to `target` with cli/safe-extract.ts.
 * A new target is filled as a hidden staging directory next to it and renamed into place only
 * when the whole archive was accepted, so a refused archive leaves nothing; an existing target
 * must be a real directory (not a symlink) and is extracted into.
 */
async function cpDownloadTree(tar: Readable, target: string): Promise<void> {
  const existing = await fs.lstat(target).catch(() => undefined);
  if (existing && !existing.isDirectory()) throw new Error(`${target} exists and is not a directory`);
  // node-tar loads only for directory downloads (start-up time of every other command).
  const { extractGuestTar } = await import("./safe-extract.js");
  if (existing) {
    await extractGuestTar(tar, target);
    return;
  }
  await fs.mkdir(path.dirname(target), { recursive: true });
  const staging = path.join(path.dirname(target), `.${path.basename(target)}.paddock-${randomBytes(4).toString("hex")}`);
  await fs.mkdir(staging);
  try {
    await extractGuestTar(tar, staging);
    await fs.rename(staging, target);
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    throw err;
  }
}

async function vmCp(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    ...TARGET_FLAGS,
    uid: { type: "string" },
    gid: { type: "string" },
    permissions: { type: "string" },
  });
  expectPositionals(positionals, 2, 2, "paddock vm cp SRC DST (one of them HOST:/path)");
  const src = parseCpOperand(positionals[0] as string);
  const dst = parseCpOperand(positionals[1] as string);
  if (values.permissions !== undefined && !/^[0-7]{3,4}$/.test(values.permissions)) throw new UsageError(`--permissions takes an octal mode such as 0644, got ${JSON.stringify(values.permissions)}`);
  const uid = parseIntFlag(values.uid, "--uid", { min: 0, max: 4294967295 });
  const gid = parseIntFlag(values.gid, "--gid", { min: 0, max: 4294967295 }) ?? uid;
  const owner: [string, number | undefined][] = [["uid", uid], ["gid", gid]];
  const client = clientFor(ctx, values);
  if (src.kind === "local" && dst.kind === "remote") await cpUpload(ctx, client, src.path, dst.host, dst.path, owner, values.permissions);
  else if (src.kind === "remote" && dst.kind === "local") await cpDownload(ctx, client, src.host, src.path, dst.path);
  else throw new UsageError("exactly one of SRC and DST must be HOST:/path");
  return EXIT.OK;
}

// ---------------------------------------------------------------------------------------
// logs and lifecycle

async function vmLogs(ctx: CliContext, argv: string[]): Promise<number> {
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

/** POST /vm/{h}/<verb> with no body and a text answer (shutdown, pause, resume). */
async function simpleVerb(ctx: CliContext, argv: string[], verb: "shutdown" | "pause" | "resume"): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, action: { type: "string" } });
  if (values.action !== undefined && verb !== "shutdown") throw new UsageError("--action only applies to vm shutdown");
  expectPositionals(positionals, 1, 1, `paddock vm ${verb} HOST${verb === "shutdown" ? " [--action shutdown|reboot]" : ""}`);
  const action = values.action;
  if (action !== undefined && action !== "shutdown" && action !== "reboot") throw new UsageError(`--action takes shutdown or reboot, got ${JSON.stringify(action)}`);
  const client = clientFor(ctx, values);
  const done = await withVm(client, positionals[0] as string, async (h) => {
    const res = await client.send("POST", `/vm/${seg(h)}/${verb}`, { query: [["action", action]] });
    await readBody(res, 64 * 1024);
    return h;
  });
  const past = { shutdown: action === "reboot" ? "rebooted" : "stopped", pause: "paused", resume: "resumed" }[verb];
  await writeOut(ctx.stdout, `${done} ${past}\n`);
  return EXIT.OK;
}

async function vmRelaunch(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, json: { type: "boolean" } });
  expectPositionals(positionals, 1, 1, "paddock vm relaunch HOST [--json]");
  const client = clientFor(ctx, values);
  const node = await withVm(client, positionals[0] as string, (h) => client.json<VmNode>("POST", `/vm/${seg(h)}/relaunch`));
  await writeOut(ctx.stdout, values.json ? renderJson(node) : `${node.hostname} relaunched (${node.ip ?? "no ip"})\n`);
  return EXIT.OK;
}

async function vmDelete(ctx: CliContext, argv: string[]): Promise<number> {
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

// ---------------------------------------------------------------------------------------
// shell (WebSocket, spec §2.10)

/** One shell WebSocket frame: type byte, u32 BE length, payload (pure). */
export function shellFrame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Interval of the Ctrl-D sent after a piped stdin ends, until the shell exits, ms. */
const EOF_REPEAT_MS = 300;

async function vmShell(ctx: CliContext, argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, { ...TARGET_FLAGS, uid: { type: "string" }, gid: { type: "string" }, cwd: { type: "string" }, shell: { type: "string" } });
  expectPositionals(positionals, 1, 1, "paddock vm shell HOST [--uid N] [--cwd DIR] [--shell /bin/bash]");
  const uid = parseIntFlag(values.uid, "--uid", { min: 0, max: 4294967295 });
  const client = clientFor(ctx, values);
  const t = client.target;
  // Resolve a friendly name first (the upgrade itself cannot be retried cheaply).
  const host = await resolveHostname(client, positionals[0] as string);
  const q = new URLSearchParams();
  if (uid !== undefined) q.set("uid", String(uid));
  const gid = parseIntFlag(values.gid, "--gid", { min: 0, max: 4294967295 }) ?? uid;
  if (gid !== undefined) q.set("gid", String(gid));
  if (values.cwd) q.set("cwd", values.cwd);
  if (values.shell) q.set("shell", values.shell);
  const pathAndQuery = `/vm/${seg(host)}/shell${q.size > 0 ? `?${q}` : ""}`;
  const url = t.kind === "unix" ? `ws+unix://${t.socketPath}:${pathAndQuery}` : `${t.url.protocol === "https:" ? "wss" : "ws"}://${t.url.host}${pathAndQuery}`;
  const { WebSocket } = await import("ws");
  const ws = new WebSocket(url, { headers: t.token ? { Authorization: `Bearer ${t.token}` } : {} });
  const stdin = ctx.stdin;
  const out = ctx.stdout;
  const sendSize = (): void => {
    const size = Buffer.alloc(8);
    size.writeUInt32BE(out.columns ?? 80, 0);
    size.writeUInt32BE((out as { rows?: number }).rows ?? 24, 4);
    if (ws.readyState === ws.OPEN) ws.send(shellFrame(0x02, size));
  };
  return new Promise<number>((resolve, reject) => {
    // Exactly one outcome: a refused upgrade (its HTTP error), a socket error, or a normal close.
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      cleanup();
      fn();
    };
    const onData = (d: Buffer): void => {
      if (ws.readyState === ws.OPEN) ws.send(shellFrame(0x01, d));
    };
    const heartbeat = setInterval(() => ws.readyState === ws.OPEN && ws.send(shellFrame(0x04)), 30_000);
    const cleanup = (): void => {
      clearInterval(heartbeat);
      clearInterval(eofTimer);
      stdin.off("data", onData);
      stdin.off("end", onEnd);
      out.off("resize", sendSize);
      if (stdin.isTTY) stdin.setRawMode?.(false);
      stdin.pause();
    };
    // End of a piped stdin: type EOF (Ctrl-D) so the shell exits after running everything
    // queued, and the server then sends SessionClose. A Shutdown frame here would end the
    // session at once, before the shell had read the piped lines (the PTY only echoed them).
    // Ctrl-D is repeated every EOF_REPEAT_MS until the session ends: one typed while the PTY
    // is still in canonical mode (the shell not yet at its prompt, or a command running)
    // reaches readline as a NUL byte, not as EOF. A terminal's end is the user's own Ctrl-D,
    // so this only matters for pipes.
    let eofTimer: NodeJS.Timeout | undefined;
    const sendEof = (): void => {
      if (ws.readyState === ws.OPEN) ws.send(shellFrame(0x01, Buffer.from("\u0004")));
    };
    const onEnd = (): void => {
      sendEof();
      eofTimer ??= setInterval(sendEof, EOF_REPEAT_MS);
    };
    ws.on("unexpected-response", (_req, res: http.IncomingMessage) => {
      settled = true;
      cleanup();
      // The VM exists (resolved above), so a 404 here means the daemon has no shell endpoint.
      toApiError(res).then((e) => reject(e.status === 404 && e.code === undefined ? new ApiError(404, `the API at ${t.display} does not serve /vm/{hostname}/shell (interactive shell, spec §2.10)`, undefined) : e), reject);
      ws.terminate();
    });
    ws.on("open", () => {
      if (stdin.isTTY) stdin.setRawMode?.(true);
      stdin.on("data", onData);
      stdin.on("end", onEnd);
      stdin.resume();
      out.on("resize", sendSize);
      sendSize();
    });
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length < 5) return;
      const type = data[0];
      const len = data.readUInt32BE(1);
      if (type === 0x01) out.write(data.subarray(5, 5 + len));
      else if (type === 0x03 || type === 0x05) ws.close();
    });
    ws.on("close", () => finish(() => resolve(EXIT.OK)));
    ws.on("error", (err) => finish(() => reject(err)));
  });
}

// ---------------------------------------------------------------------------------------

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
  switch (cmd) {
    case "launch": return vmLaunch(ctx, rest);
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
    default: throw new UsageError(`unknown vm command ${JSON.stringify(cmd)}; see paddock vm --help`);
  }
}
