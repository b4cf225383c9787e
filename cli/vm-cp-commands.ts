/**
 * `paddock vm cp`: files and directories between this host and a VM through `/vm/{h}/cp`
 * (cp-v1: a file as raw bytes, a directory as an uncompressed tar). Every name and archive from
 * the VM is hostile input: names go through shared/path-names.ts, archives through
 * cli/safe-extract.ts, and nothing lands under its real name before it is complete.
 */
import { createReadStream, createWriteStream, promises as fs } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { PaddockError, errnoCode } from "../shared/errors.js";
import { assertSingleComponent } from "../shared/path-names.js";
import { parseFlags, parseIntFlag, expectPositionals } from "./args.js";
import { readBody, seg, type ApiClient } from "./api-client.js";
import { UsageError, EXIT } from "./cli-errors.js";
import { writeOut, type CliContext } from "./cli-context.js";
import { formatBytes, Progress } from "./output.js";
import { TARGET_FLAGS, clientFor, resolveHostname, withVm } from "./vm-common.js";

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
      // Directories go as an uncompressed tar (cp-v1-tar); `dir/.` copies the contents.
      // node-tar loads only for directory uploads (start-up time of every other command).
      const { createDirectoryTar } = await import("./cp-tar.js");
      body = createDirectoryTar(path.resolve(src));
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
    // The server's name is used (and so validated, before anything is written) only when DST is
    // a directory; when DST names the target itself, the name is not needed.
    const destStat = await fs.stat(dest).catch(() => undefined);
    const intoDir = destStat?.isDirectory() === true || dest.endsWith("/");
    const remoteName = intoDir ? cpDownloadName(res.headers["x-slicer-source-name-base64"], src) : undefined;
    const target = intoDir && remoteName !== undefined ? path.join(dest, remoteName) : dest;
    if (sourceType === "directory") {
      await cpDownloadTree(res.pipe(counter.stream), target);
      return;
    }
    // Files are written to a partial name next to the target and renamed when complete, so an
    // interrupted copy never leaves a truncated file under the real name.
    const parent = path.dirname(target);
    if (!(await fs.stat(parent).then((st) => st.isDirectory(), () => false))) throw new Error(`${parent}: no such directory`); // local I/O: exit 1
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

/** `paddock vm cp SRC DST` (exactly one side `HOST:/path`). @returns the exit code */
export async function vmCp(ctx: CliContext, argv: string[]): Promise<number> {
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
