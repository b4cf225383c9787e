/**
 * The audit log (the admin API's `GET /admin/v1/audit`): admin actions and tenants' VM
 * creates/deletes, one JSON object per line in `<state>/supervisor/audit.log` (mode 0600,
 * append-only).
 *
 * Size-capped: before an append would take the file past `maxBytes` it is rotated, logrotate
 * style (`audit.log.<keep-1>` → `audit.log.<keep>`, …, `audit.log` → `audit.log.1`), so at
 * most `(keep + 1) × maxBytes` bytes are kept. Reads are paged from the newest entry backwards
 * in fixed-size chunks, so a read holds one page of entries and one chunk, whatever the size of
 * the files. A page's cursor names a file by inode and birth time (an inode number alone may be
 * reused by a later file) and a byte offset in it, so it survives the renames of a rotation.
 */
import { promises as fs } from "node:fs";
import { errnoCode } from "../shared/errors.js";

/** One audit entry. */
export interface AuditEntry {
  time: string;
  /** `admin` or `tenant:<id>`. */
  actor: string;
  /** e.g. `tenant.create`, `token.revoke`, `vm.create`. */
  action: string;
  tenant?: string;
  requestId?: string;
  /** HTTP status of the action's answer. */
  status?: number;
  details?: Record<string, unknown>;
}

/** Rotation of the audit log (supervisor config `logs.audit_log_bytes`, `logs.audit_log_keep`). */
export interface AuditRotation {
  /** Size at which the file is rotated, bytes. */
  maxBytes: number;
  /** Rotated files kept (`audit.log.1` … `audit.log.<keep>`). */
  keep: number;
}

/** Default rotation: 10 MiB, 5 rotated files. */
export const DEFAULT_AUDIT_ROTATION: AuditRotation = Object.freeze({ maxBytes: 10 * 1024 * 1024, keep: 5 });

/** A query of {@link AuditLog.read}. */
export interface AuditQuery {
  /** Only entries of this tenant. */
  tenant?: string;
  /** Only entries whose action starts with this. */
  action?: string;
  /** Most entries in the page. */
  limit: number;
  /** Continue below this cursor (the `nextCursor` of the previous page); undefined ⇒ from the newest entry. */
  cursor?: string;
}

/** One page of the audit log. */
export interface AuditPage {
  /** Oldest first (the newest `limit` matching entries below the cursor). */
  entries: AuditEntry[];
  /** Cursor of the next (older) page; undefined when there is nothing older. */
  nextCursor: string | undefined;
  /** Bytes read from the files for this page (bounded by the entries kept plus one chunk). */
  bytesRead: number;
}

/** Bytes read per step when scanning backwards. */
const CHUNK_BYTES = 64 * 1024;
/** Longer lines are skipped (nothing the supervisor writes comes near it). */
const MAX_LINE_BYTES = 1024 * 1024;

/** Appends and reads audit entries; writes are serialised in this process. */
export class AuditLog {
  private chain: Promise<void> = Promise.resolve();
  /** Size of the current file as this process knows it (read once, then counted). */
  private size: number | undefined;

  constructor(readonly file: string, private readonly rotation: AuditRotation = DEFAULT_AUDIT_ROTATION) {}

  /** Append an entry (never throws; a failing audit write is reported through `onError`). */
  record(entry: Omit<AuditEntry, "time">, onError?: (err: unknown) => void): Promise<void> {
    const line = JSON.stringify({ time: new Date().toISOString(), ...entry }) + "\n";
    this.chain = this.chain.then(() => this.append(line)).catch((err: unknown) => {
      this.size = undefined;
      onError?.(err);
    });
    return this.chain;
  }

  private async append(line: string): Promise<void> {
    const bytes = Buffer.byteLength(line);
    this.size ??= await fs.stat(this.file).then((s) => s.size, () => 0);
    if (this.size > 0 && this.size + bytes > this.rotation.maxBytes) await this.rotate();
    await fs.appendFile(this.file, line, { mode: 0o600 });
    this.size += bytes;
  }

  /** `file.<keep-1>` → `file.<keep>` … `file` → `file.1` (missing ones skipped). */
  private async rotate(): Promise<void> {
    for (let i = this.rotation.keep; i >= 1; i--) {
      const from = i === 1 ? this.file : `${this.file}.${i - 1}`;
      await fs.rename(from, `${this.file}.${i}`).catch((err: unknown) => {
        if (errnoCode(err) !== "ENOENT") throw err;
      });
    }
    this.size = 0;
  }

  /** The files newest first, as `{ path, ino, size }` (missing ones left out). */
  private async files(): Promise<{ path: string; id: string; size: number }[]> {
    const out: { path: string; id: string; size: number }[] = [];
    for (let i = 0; i <= this.rotation.keep; i++) {
      const p = i === 0 ? this.file : `${this.file}.${i}`;
      try {
        const st = await fs.stat(p);
        out.push({ path: p, id: `${st.ino}-${Math.floor(st.birthtimeMs)}`, size: st.size });
      } catch (err) {
        if (errnoCode(err) !== "ENOENT") throw err;
      }
    }
    return out;
  }

  /**
   * One page of entries, newest first from `query.cursor` backwards across the rotated files,
   * returned oldest first. A cursor whose file has been rotated away gives an empty page.
   */
  async read(query: AuditQuery): Promise<AuditPage> {
    await this.chain;
    const files = await this.files();
    let index = 0;
    let offset = files[0]?.size ?? 0;
    if (query.cursor !== undefined) {
      const m = /^(\d+-\d+):(\d+)$/.exec(query.cursor);
      index = m === null ? -1 : files.findIndex((f) => f.id === m[1]);
      if (m === null || index < 0) return { entries: [], nextCursor: undefined, bytesRead: 0 };
      offset = Math.min(Number(m[2]), (files[index] as { size: number }).size);
    }
    const newestFirst: AuditEntry[] = [];
    let bytesRead = 0;
    for (; index < files.length; index++, offset = files[index]?.size ?? 0) {
      const f = files[index] as { path: string; id: string; size: number };
      let handle: fs.FileHandle;
      try {
        handle = await fs.open(f.path, "r");
      } catch (err) {
        if (errnoCode(err) === "ENOENT") continue;
        throw err;
      }
      try {
        // Scan backwards; `carry` is the head of the line cut by the chunk boundary.
        let carry = Buffer.alloc(0);
        let pos = offset;
        while (pos > 0) {
          const start = Math.max(0, pos - CHUNK_BYTES);
          const chunk = Buffer.alloc(pos - start);
          if (chunk.length > 0) await handle.read(chunk, 0, chunk.length, start);
          bytesRead += chunk.length;
          const buf = Buffer.concat([chunk, carry]);
          // Lines fully inside buf: everything after the first newline (or all of it at the file's start).
          let end = buf.length;
          for (;;) {
            // The newline ending the line before this one (a negative offset would count from the end).
            const nl = end >= 2 ? buf.lastIndexOf(0x0a, end - 2) : -1;
            if (nl < 0 && start > 0) break;
            const lineStart = nl + 1;
            const line = buf.subarray(lineStart, end).toString("utf8").trim();
            end = lineStart;
            const entry = line === "" ? undefined : parseEntry(line);
            if (entry !== undefined && matches(entry, query)) {
              newestFirst.push(entry);
              if (newestFirst.length >= query.limit) {
                const cursorOffset = start + lineStart;
                const more = cursorOffset > 0 || index + 1 < files.length;
                return { entries: newestFirst.reverse(), nextCursor: more ? `${f.id}:${cursorOffset}` : undefined, bytesRead };
              }
            }
            if (nl < 0) break;
          }
          carry = buf.subarray(0, end);
          if (carry.length > MAX_LINE_BYTES) carry = Buffer.alloc(0);
          pos = start;
        }
      } finally {
        await handle.close();
      }
    }
    return { entries: newestFirst.reverse(), nextCursor: undefined, bytesRead };
  }
}

function parseEntry(line: string): AuditEntry | undefined {
  try {
    const e = JSON.parse(line) as AuditEntry;
    return typeof e === "object" && e !== null && typeof e.action === "string" ? e : undefined;
  } catch {
    return undefined;
  }
}

function matches(e: AuditEntry, q: AuditQuery): boolean {
  if (q.tenant !== undefined && e.tenant !== q.tenant) return false;
  if (q.action !== undefined && !e.action.startsWith(q.action)) return false;
  return true;
}
