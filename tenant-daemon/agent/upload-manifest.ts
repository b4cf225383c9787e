/**
 * The chunked-copy manifest and staging layout of the Go SDK's `CpToVMChunked`
 * (https://github.com/slicervm/sdk/blob/main/copy_chunked_types.go and client_cp_chunked.go):
 *
 *   <destination's parent>/.slicer-upload-<32 hex>/manifest.json
 *   <destination's parent>/.slicer-upload-<32 hex>/chunks/000000.chunk, 000001.chunk, …
 *
 * Pure parsing and validation, no filesystem: the guest command that acts on it is upload.ts.
 */
import path from "node:path";
import { PaddockError } from "../../shared/errors.js";

/** The manifest version the guest understands best; the probe prints `chunked-copy-v<N>`. */
export const CHUNKED_COPY_MANIFEST_V2 = 2;

/** The capability token `upload check` prints and the SDK looks for in its stdout. */
export const CHUNKED_COPY_TOKEN = `chunked-copy-v${CHUNKED_COPY_MANIFEST_V2}`;

/** Largest manifest read, in bytes (about 150 000 chunks). */
export const MAX_MANIFEST_BYTES = 16 << 20;

const SESSION_DIR_RE = /^\.slicer-upload-[0-9a-f]{32}$/;
const SHA256_RE = /^[0-9a-fA-F]{64}$/;

/** One checksummed part of the stream: bytes `[offset, offset + size)`, `sha256` lower/upper hex. */
export interface CopyChunk {
  index: number;
  size: number;
  sha256: string;
}

/**
 * A validated manifest (field names as on the wire). `mode` `binary` is one file, `tar` an
 * archive extracted at the destination. v2 adds cp-v1 placement (`copy_semantics: "cp-v1"`,
 * `source_name`, `source_type`, `copy_contents`), as `POST /vm/{h}/cp` with the cp-v1 modes.
 */
export interface CopyManifest {
  version: 1 | 2;
  mode: "binary" | "tar";
  destination: string;
  /** As the SDK sent them: 4294967295 means the guest's default user. */
  uid: number;
  gid: number;
  /** Octal string (`0755`) or "" for the default. */
  permissions: string;
  /** Bytes of the assembled stream. */
  size: number;
  /** Bytes the archive unpacks to (tar only; 0 when unknown). */
  unpackedSize: number;
  copySemantics: "" | "cp-v1";
  sourceName: string;
  sourceType: "" | "file" | "directory";
  copyContents: boolean;
  chunks: CopyChunk[];
}

/** The staging file name of a chunk: its index zero-padded to six digits, like Go's `%06d.chunk`. */
export function chunkFileName(index: number): string {
  return `${String(index).padStart(6, "0")}.chunk`;
}

function bad(message: string): PaddockError {
  return new PaddockError("ERR_CP_MANIFEST_INVALID", `invalid copy manifest: ${message}`);
}

function field<T>(o: Record<string, unknown>, name: string, kind: "string" | "number" | "boolean", fallback?: T): T {
  const v = o[name];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== kind) throw bad(`${name} must be a ${kind}`);
  return v as T;
}

function u32(o: Record<string, unknown>, name: string): number {
  const v = field<number>(o, name, "number");
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw bad(`${name} must be an unsigned 32-bit integer`);
  return v;
}

function byteCount(o: Record<string, unknown>, name: string, fallback?: number): number {
  const v = field<number>(o, name, "number", fallback);
  if (!Number.isSafeInteger(v) || v < 0) throw bad(`${name} must be a non-negative integer`);
  return v;
}

/** A cp-v1 source name: one path component (the SDK's `validCopySourceName`). */
export function validSourceName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\\") && !name.includes("\0");
}

/**
 * Parse and validate a manifest, with the rules of the SDK's `CopyManifest.Validate` plus type
 * checks; unknown fields are refused (a field the guest would ignore is a defect).
 * @throws PaddockError ERR_CP_MANIFEST_INVALID.
 */
export function parseCopyManifest(text: string): CopyManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new PaddockError("ERR_CP_MANIFEST_INVALID", "invalid copy manifest: not JSON", { cause: err });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("not an object");
  const o = raw as Record<string, unknown>;
  const known = new Set(["version", "mode", "destination", "uid", "gid", "permissions", "size", "unpacked_size", "copy_semantics", "source_name", "source_type", "copy_contents", "chunks"]);
  for (const k of Object.keys(o)) if (!known.has(k)) throw bad(`unknown field ${JSON.stringify(k)}`);
  const version = field<number>(o, "version", "number");
  if (version !== 1 && version !== CHUNKED_COPY_MANIFEST_V2) throw bad(`unsupported version ${version}`);
  const mode = field<string>(o, "mode", "string");
  if (mode !== "binary" && mode !== "tar") throw bad(`invalid mode ${JSON.stringify(mode)}`);
  const m: CopyManifest = {
    version,
    mode,
    destination: field<string>(o, "destination", "string"),
    uid: u32(o, "uid"),
    gid: u32(o, "gid"),
    permissions: field<string>(o, "permissions", "string", ""),
    size: byteCount(o, "size"),
    unpackedSize: byteCount(o, "unpacked_size", 0),
    copySemantics: field<string>(o, "copy_semantics", "string", "") as CopyManifest["copySemantics"],
    sourceName: field<string>(o, "source_name", "string", ""),
    sourceType: field<string>(o, "source_type", "string", "") as CopyManifest["sourceType"],
    copyContents: field<boolean>(o, "copy_contents", "boolean", false),
    chunks: [],
  };
  if (m.destination === "") throw bad("destination is required");
  if (m.permissions !== "" && !/^(0o)?[0-7]{1,4}$/i.test(m.permissions)) throw bad(`invalid permissions ${JSON.stringify(m.permissions)}`);
  if (m.mode === "binary" && m.unpackedSize !== 0) throw bad("unpacked_size is only for tar mode");
  if (m.version === CHUNKED_COPY_MANIFEST_V2) {
    if (m.copySemantics !== "cp-v1") throw bad(`invalid copy_semantics ${JSON.stringify(m.copySemantics)}`);
    if (m.sourceType !== "file" && m.sourceType !== "directory") throw bad(`invalid source_type ${JSON.stringify(m.sourceType)}`);
    if (!m.copyContents && !validSourceName(m.sourceName)) throw bad(`invalid source_name ${JSON.stringify(m.sourceName)}`);
    if (m.sourceType === "file" && (m.mode !== "binary" || m.copyContents)) throw bad("file copy semantics require binary mode without copy_contents");
    if (m.sourceType === "directory" && m.mode !== "tar") throw bad("directory copy semantics require tar mode");
  } else if (m.copySemantics !== "" || m.sourceName !== "" || m.sourceType !== "" || m.copyContents) {
    throw bad("cp-v1 fields need version 2");
  }
  const chunks = o.chunks;
  if (!Array.isArray(chunks)) throw bad("chunks must be an array");
  let total = 0;
  for (const [i, c] of chunks.entries()) {
    if (typeof c !== "object" || c === null || Array.isArray(c)) throw bad(`chunk ${i} is not an object`);
    const co = c as Record<string, unknown>;
    for (const k of Object.keys(co)) if (k !== "index" && k !== "size" && k !== "sha256") throw bad(`chunk ${i}: unknown field ${JSON.stringify(k)}`);
    const index = field<number>(co, "index", "number");
    if (index !== i) throw bad(`chunk index ${index} is out of sequence, expected ${i}`);
    const size = field<number>(co, "size", "number");
    if (!Number.isSafeInteger(size) || size <= 0) throw bad(`chunk ${i} has invalid size ${size}`);
    const sha256 = field<string>(co, "sha256", "string");
    if (!SHA256_RE.test(sha256)) throw bad(`chunk ${i} has invalid SHA-256 ${JSON.stringify(sha256)}`);
    if (total > m.size - size) throw bad("chunk sizes exceed declared stream size");
    total += size;
    m.chunks.push({ index, size, sha256: sha256.toLowerCase() });
  }
  if (total !== m.size) throw bad(`chunk sizes total ${total} bytes, expected ${m.size}`);
  return m;
}

/** Where a session's files are, from the `--manifest` path the SDK passes. */
export interface StagingPaths {
  /** `<parent>/.slicer-upload-<hex>` */
  sessionDir: string;
  manifest: string;
  chunksDir: string;
}

/**
 * Check that `manifestPath` (absolute, normalised) names `<dir>/.slicer-upload-<32 hex>/manifest.json`
 * and return the session's paths. Anything else is refused: the command never reads or removes
 * a directory that is not a staging directory by name.
 * @throws PaddockError ERR_PATH_INVALID.
 */
export function stagingPaths(manifestPath: string): StagingPaths {
  const sessionDir = path.posix.dirname(manifestPath);
  if (path.posix.basename(manifestPath) !== "manifest.json" || !SESSION_DIR_RE.test(path.posix.basename(sessionDir)) || path.posix.normalize(manifestPath) !== manifestPath) {
    throw new PaddockError("ERR_PATH_INVALID", `not a chunked-copy manifest path (want <dir>/.slicer-upload-<32 hex>/manifest.json): ${JSON.stringify(manifestPath)}`);
  }
  return { sessionDir, manifest: manifestPath, chunksDir: path.posix.join(sessionDir, "chunks") };
}
