/**
 * Filesystem watch (docs/slicer-api.md#filesystem-watch), guest side: an SSE stream of `watch`
 * events for `paths`.
 *
 * Events come from inotify(7) through the `paddock-inotify` helper (inotify.ts), one inotify
 * watch per directory; with `recursive=true` subdirectories are walked at start and
 * directories created later get a watch (and their existing entries are reported as creates).
 * A file path is watched through its parent directory so replacing the file is seen too.
 *
 * Event types, as Go's fsnotify (which Slicer's agent uses) reports them: IN_CREATE ⇒ `create`;
 * IN_DELETE ⇒ `remove`; IN_MOVED_FROM ⇒ `rename` of the old path and IN_MOVED_TO ⇒ `create`
 * of the new one (a move out of the watched tree is a `rename` alone, a move in a `create`);
 * IN_MODIFY ⇒ `write`; IN_ATTRIB ⇒ `chmod` when only the mode changed, else `write`.
 */
import type { Stats } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { parseGoDurationMs } from "../../shared/time.js";
import { badRequest, queryBool, queryInt, type AgentRequest } from "./http-util.js";
import { IN, Inotify, type InotifyEvent } from "./inotify.js";
import { globToRegExp } from "./tar.js";
import { resolveGuestPath, type UserDirectory } from "./users.js";

/** Event types. */
export type WatchEventType = "create" | "write" | "remove" | "rename" | "chmod";
const EVENT_TYPES: readonly WatchEventType[] = ["create", "write", "remove", "rename", "chmod"];

/** A validated watch request. */
export interface WatchSpec {
  paths: string[];
  patterns: RegExp[];
  events: Set<WatchEventType>;
  recursive: boolean;
  oneShot: boolean;
  debounceMs: number;
  /** 0 ⇒ none. */
  timeoutMs: number;
  /** 0 ⇒ unlimited. */
  maxEvents: number;
}

/** Idle heartbeat interval. */
export const WATCH_HEARTBEAT_MS = 15_000;
/** Most directories one watch may hold watchers on (inotify watches are a per-user kernel budget). */
const MAX_WATCHED_DIRS = 8192;

/**
 * Parse the watch query and `Last-Event-ID` (must be a uint64 when present; no replay).
 * `uid` only resolves `~` and defaults to root (unlike the other routes).
 * @throws PaddockError 400 on invalid input.
 */
export function parseWatchSpec(q: URLSearchParams, lastEventId: string | undefined, users: UserDirectory): WatchSpec {
  if (lastEventId !== undefined && lastEventId !== "") {
    if (!/^\d{1,20}$/.test(lastEventId) || BigInt(lastEventId) > 0xffffffffffffffffn) {
      throw badRequest(`invalid Last-Event-ID ${JSON.stringify(lastEventId)}: expected an unsigned 64-bit integer`, "ERR_QUERY_INVALID");
    }
  }
  const rawPaths = q.getAll("paths").filter((p) => p !== "");
  if (rawPaths.length === 0) throw badRequest("paths is required", "ERR_QUERY_INVALID");
  const uid = queryInt(q, "uid") ?? 0;
  const home = users.byUid(uid)?.home ?? (uid === 0 ? "/root" : "/");
  const paths = rawPaths.map((p) => {
    const r = resolveGuestPath(p, home);
    return r.length > 1 && r.endsWith("/") ? r.slice(0, -1) : r;
  });
  const events = new Set<WatchEventType>();
  for (const e of q.getAll("events")) {
    for (const part of e.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s !== "")) {
      if (part === "all") EVENT_TYPES.forEach((t) => events.add(t));
      else if ((EVENT_TYPES as readonly string[]).includes(part)) events.add(part as WatchEventType);
      else throw badRequest(`invalid event ${JSON.stringify(part)}: expected create, write, remove, rename, chmod or all`, "ERR_QUERY_INVALID");
    }
  }
  if (events.size === 0) EVENT_TYPES.forEach((t) => events.add(t));
  const debounce = q.get("debounce");
  const timeout = q.get("timeout");
  const maxEvents = queryInt(q, "max_events") ?? 0;
  if (maxEvents < 0) throw badRequest("max_events must be ≥ 0", "ERR_QUERY_INVALID");
  return {
    paths,
    patterns: q.getAll("patterns").filter((p) => p !== "").map((p) => globToRegExp(p)),
    events,
    recursive: queryBool(q, "recursive"),
    oneShot: queryBool(q, "one_shot"),
    debounceMs: debounce === null || debounce === "" ? 200 : parseGoDurationMs(debounce, "debounce"),
    timeoutMs: timeout === null || timeout === "" ? 0 : parseGoDurationMs(timeout, "timeout"),
    maxEvents,
  };
}

/** True when `p` passes the pattern filter (full path or basename). */
export function matchesPatterns(patterns: readonly RegExp[], p: string): boolean {
  if (patterns.length === 0) return true;
  const base = path.posix.basename(p);
  return patterns.some((re) => re.test(p) || re.test(base));
}

/** RFC3339Nano in UTC from a `Date.now()`-style ms value plus a sub-ms nanosecond remainder. */
function rfc3339Nano(): string {
  const ns = process.hrtime.bigint();
  const iso = new Date().toISOString(); // 2026-04-12T19:33:45.123Z
  const sub = (ns % 1_000_000n).toString().padStart(6, "0");
  return iso.replace(/Z$/, `${sub}Z`);
}

interface Known {
  isDir: boolean;
  mode: number;
  size: number;
  mtimeMs: number;
}

function known(st: Stats): Known {
  return { isDir: st.isDirectory(), mode: st.mode, size: st.size, mtimeMs: st.mtimeMs };
}

/** Handle `GET /v1/fs/watch`. */
export async function handleFsWatch(ctx: AgentRequest, users: UserDirectory): Promise<void> {
  const { req, res } = ctx;
  const lastId = req.headers["last-event-id"];
  const spec = parseWatchSpec(ctx.query, Array.isArray(lastId) ? lastId[0] : lastId, users);

  /** Watched directory → its watch descriptor, and back. */
  const watchers = new Map<string, number>();
  const dirOf = new Map<number, string>();
  const entries = new Map<string, Known>();
  /** Only these names are reported inside a watched dir that stands for a file path (`undefined` ⇒ all). */
  const fileFilters = new Map<string, Set<string>>();
  const roots: { path: string; isDir: boolean }[] = [];
  let closed = false;
  // Events and the helper's end arrive asynchronously, after everything below is defined.
  // Events are handled one at a time, in inotify's order: each awaits an lstat, and two in
  // flight could report a file's write before its create.
  let handling: Promise<void> = Promise.resolve();
  /** Why the helper ended, when it did (before the 200 that is an error answer, not a silence). */
  let helperEnded: string | undefined;
  const inotify = new Inotify((e) => {
    handling = handling.then(() => onEvent(e)).catch(() => undefined);
  }, (why) => {
    helperEnded = why;
    close();
  });
  let nextId = 1;
  let delivered = 0;
  const pending = new Map<string, { type: WatchEventType; path: string; timer: NodeJS.Timeout | undefined }>();
  let timeout: NodeJS.Timeout | undefined;
  let lastWriteMs = Date.now();
  /** Events seen while the watchers are still being set up, sent right after the headers. */
  const early: string[] = [];
  const send = (text: string): void => {
    if (closed || res.writableEnded) return;
    if (!res.headersSent) {
      early.push(text);
      return;
    }
    lastWriteMs = Date.now();
    res.write(text);
  };
  const heartbeat = setInterval(() => {
    if (Date.now() - lastWriteMs >= WATCH_HEARTBEAT_MS - 50) send(":\n\n");
  }, WATCH_HEARTBEAT_MS);

  const close = (): void => {
    if (closed) return;
    closed = true;
    inotify.close();
    watchers.clear();
    dirOf.clear();
    for (const p of pending.values()) if (p.timer) clearTimeout(p.timer);
    pending.clear();
    clearInterval(heartbeat);
    if (timeout) clearTimeout(timeout);
    if (res.headersSent && !res.writableEnded) res.end();
  };

  const underRoot = (p: string): boolean =>
    roots.some((r) => (r.isDir ? p === r.path || p.startsWith(r.path === "/" ? "/" : r.path + "/") : p === r.path));

  /**
   * Send one event. `size` is read when the event is sent (after the debounce); a removed or
   * renamed path is not looked up again (another file may have its name by then), so it
   * reports size 0 and the `isDir` the kernel gave.
   */
  const emit = async (type: WatchEventType, p: string, isDirHint: boolean): Promise<void> => {
    if (closed) return;
    let size = 0;
    let isDir = isDirHint;
    if (type !== "remove" && type !== "rename") {
      const st = await lstat(p).catch(() => undefined);
      if (st) {
        size = st.isDirectory() ? 0 : st.size;
        isDir = st.isDirectory();
      }
    }
    if (closed) return;
    const id = nextId++;
    const payload = { id, type, path: p, timestamp: rfc3339Nano(), size, isDir };
    send(`id: ${id}\nevent: watch\ndata: ${JSON.stringify(payload)}\n\n`);
    delivered++;
    if (spec.oneShot || (spec.maxEvents > 0 && delivered >= spec.maxEvents)) close();
  };

  /** The emits in flight, one after another (see `fire`). */
  let emitting: Promise<void> = Promise.resolve();
  const queue = (type: WatchEventType, p: string, isDir: boolean): void => {
    if (closed || !spec.events.has(type) || !matchesPatterns(spec.patterns, p) || !underRoot(p)) return;
    const key = `${type}\0${p}`;
    if (pending.has(key)) return; // coalesced into the pending one (debounce)
    const fire = (): void => {
      pending.delete(key);
      // In the order the events fire: two emits at once could each await their lstat and
      // send in the order those settle (a later create before an earlier one).
      emitting = emitting.then(() => emit(type, p, isDir)).catch(() => undefined);
    };
    if (spec.debounceMs <= 0) {
      pending.set(key, { type, path: p, timer: undefined });
      fire();
      return;
    }
    pending.set(key, { type, path: p, timer: setTimeout(fire, spec.debounceMs) });
  };

  /** Watch directory `dir` (and, when recursive, everything below). `report` ⇒ existing entries are creates. */
  const addDir = async (dir: string, depthLeft: boolean, report: boolean): Promise<void> => {
    if (closed || watchers.has(dir) || watchers.size >= MAX_WATCHED_DIRS) return;
    const wd = await inotify.add(dir);
    if (closed) return;
    // Gone, not a directory, not readable, or the user's inotify budget spent (ENOSPC).
    if (wd < 0) return;
    const other = dirOf.get(wd);
    if (other !== undefined) watchers.delete(other); // the same inode under a new name
    watchers.set(dir, wd);
    dirOf.set(wd, dir);
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const full = path.posix.join(dir, name);
      const filter = fileFilters.get(dir);
      if (filter && !filter.has(name)) continue;
      const st = await lstat(full).catch(() => undefined);
      if (!st) continue;
      const isNew = !entries.has(full);
      entries.set(full, known(st));
      if (report && isNew) queue("create", full, st.isDirectory());
      if (st.isDirectory() && depthLeft) await addDir(full, spec.recursive, report);
    }
  };

  /** Stop watching `dir` and every directory below it (moved or removed). */
  const unwatchTree = (dir: string): void => {
    for (const [d, wd] of watchers) {
      if (d === dir || d.startsWith(dir + "/")) {
        watchers.delete(d);
        dirOf.delete(wd);
        inotify.remove(wd);
      }
    }
    for (const k of entries.keys()) if (k.startsWith(dir + "/")) entries.delete(k);
  };

  const onEvent = async (e: InotifyEvent): Promise<void> => {
    if (closed) return;
    if (e.mask & IN.IGNORED) {
      const d = dirOf.get(e.wd);
      dirOf.delete(e.wd);
      if (d !== undefined && watchers.get(d) === e.wd) watchers.delete(d);
      return;
    }
    const dir = dirOf.get(e.wd);
    if (dir === undefined || e.name === "") return; // a stale watch, or the directory itself (its parent reports it)
    const filter = fileFilters.get(dir);
    if (filter && !filter.has(e.name)) return;
    const full = path.posix.join(dir, e.name);
    const isDirEvent = (e.mask & IN.ISDIR) !== 0;
    if (e.mask & (IN.DELETE | IN.MOVED_FROM)) {
      const before = entries.get(full);
      entries.delete(full);
      if (before?.isDir || isDirEvent) unwatchTree(full);
      queue(e.mask & IN.MOVED_FROM ? "rename" : "remove", full, isDirEvent);
      return;
    }
    const before = entries.get(full);
    const st = await lstat(full).catch(() => undefined);
    if (closed) return;
    if (e.mask & (IN.CREATE | IN.MOVED_TO)) {
      if (st) entries.set(full, known(st));
      queue("create", full, isDirEvent);
      if (st?.isDirectory() && spec.recursive && !filter) await addDir(full, true, true);
      return;
    }
    if (!st) return; // changed, then gone before we looked: its IN_DELETE follows
    const now = known(st);
    entries.set(full, now);
    if (e.mask & IN.ATTRIB && before && now.mode !== before.mode && now.size === before.size && now.mtimeMs === before.mtimeMs) queue("chmod", full, now.isDir);
    else if (e.mask & (IN.MODIFY | IN.ATTRIB) && !now.isDir) queue("write", full, false);
  };

  // Set up every watcher before answering, so events after the 200 are never missed.
  res.on("close", close);
  try {
    await setUp();
  } catch (err) {
    close();
    throw err;
  }
  if (closed) {
    // The helper ended during the set-up (inotify_init1 failed: no instance left for this
    // user, here or in a user namespace above, inotify(7); or it was killed): answer, or the
    // request would wait for as long as its client (close() ends only a started answer).
    if (helperEnded !== undefined && !res.headersSent && !res.destroyed) throw new PaddockError("ERR_WATCH_FAILED", `filesystem watch could not start: ${helperEnded}`);
    return;
  }
  res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no" });
  res.flushHeaders();
  res.on("error", () => undefined);
  for (const text of early.splice(0)) send(text);
  if (spec.timeoutMs > 0) timeout = setTimeout(close, spec.timeoutMs);

  /** Watch every requested path (before the 200, so no event after it is missed). */
  async function setUp(): Promise<void> {
    for (const p of spec.paths) {
      const st = await lstat(p).catch((err: unknown) => {
        throw errnoCode(err) === "ENOENT" ? new PaddockError("ERR_PATH_NOT_FOUND", `no such file or directory: ${p}`) : err;
      });
      if (st.isDirectory()) {
        roots.push({ path: p, isDir: true });
        await addDir(p, spec.recursive, false);
      } else {
        roots.push({ path: p, isDir: false });
        const parent = path.posix.dirname(p);
        const set = fileFilters.get(parent) ?? new Set<string>();
        set.add(path.posix.basename(p));
        fileFilters.set(parent, set);
        entries.set(p, known(st));
        await addDir(parent, false, false);
      }
    }
  }
}
