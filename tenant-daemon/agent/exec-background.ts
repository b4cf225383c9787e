/**
 * Background exec (docs/slicer-api.md#background-exec): detached processes whose output and control
 * frames go into a per-process ring buffer. Entries survive client disconnects but not an agent
 * restart.
 */
import { randomHex } from "./lazy-crypto.js";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { PaddockError } from "../../shared/errors.js";
import { rfc3339 } from "../../shared/time.js";
import { badRequest, queryBool, queryInt, readJsonObject, sendJson, type AgentRequest } from "./http-util.js";
import { killGroup, onProcessDone, parseExecSpec, spawnExec, startFailureMessage, type ExecSpec, type ExitStatus } from "./exec-spec.js";
import type { UserDirectory } from "./users.js";

/** Default per-exec ring size: 1 MiB. */
export const DEFAULT_RING_BYTES = 1 << 20;
/** Agent-wide ring budget: 256 MiB. */
export const RING_BUDGET_BYTES = 256 << 20;
/** Accounting overhead per frame so that floods of tiny frames stay bounded too. */
const FRAME_OVERHEAD_BYTES = 64;

interface RingFrame {
  id: number;
  type: "started" | "stdout" | "stderr" | "exit";
  timestamp: string;
  payload?: Buffer;
  extra?: Record<string, string | number>;
}

/**
 * A byte-capped frame ring. Frames get ids 1, 2, 3…; the oldest frames are evicted when
 * payload + overhead exceeds `capBytes`.
 */
export class FrameRing {
  private frames: RingFrame[] = [];
  private usedBytes = 0;
  nextId = 1;
  bytesWritten = 0;
  bytesDropped = 0;
  framesDropped = 0;
  private listeners = new Set<(f: RingFrame) => void>();

  constructor(readonly capBytes: number) {}

  /** Append a frame; payloads larger than the ring keep only their last bytes. */
  push(type: RingFrame["type"], payload?: Buffer, extra?: Record<string, string | number>): void {
    let p = payload;
    if (p) {
      this.bytesWritten += p.length;
      const room = Math.max(1, this.capBytes - FRAME_OVERHEAD_BYTES);
      if (p.length > room) {
        this.bytesDropped += p.length - room;
        p = p.subarray(p.length - room);
      }
    }
    const frame: RingFrame = { id: this.nextId++, type, timestamp: rfc3339(), ...(p ? { payload: p } : {}), ...(extra ? { extra } : {}) };
    this.frames.push(frame);
    this.usedBytes += cost(frame);
    while (this.usedBytes > this.capBytes && this.frames.length > 1) {
      const old = this.frames.shift() as RingFrame;
      this.usedBytes -= cost(old);
      this.bytesDropped += old.payload?.length ?? 0;
      this.framesDropped++;
    }
    for (const l of this.listeners) l(frame);
  }

  /** Id of the oldest retained frame (= nextId when empty). */
  get firstId(): number {
    return this.frames[0]?.id ?? this.nextId;
  }

  /** Retained frames with id ≥ `fromId`. */
  from(fromId: number): RingFrame[] {
    const first = this.firstId;
    return this.frames.slice(Math.max(0, fromId - first));
  }

  subscribe(l: (f: RingFrame) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

function cost(f: RingFrame): number {
  return (f.payload?.length ?? 0) + FRAME_OVERHEAD_BYTES;
}

interface BgEntry {
  id: string;
  pid: number;
  spec: ExecSpec;
  startedAt: string;
  ring: FrameRing;
  child: ChildProcess;
  exit: (ExitStatus & { endedAt: string }) | undefined;
  exitWaiters: Set<() => void>;
  graceTimer: NodeJS.Timeout | undefined;
}

const SIGNALS: Record<string, NodeJS.Signals> = {
  TERM: "SIGTERM",
  KILL: "SIGKILL",
  INT: "SIGINT",
  HUP: "SIGHUP",
  QUIT: "SIGQUIT",
  USR1: "SIGUSR1",
  USR2: "SIGUSR2",
};

/** The agent's background exec registry (one per agent; owned by the composition root). */
export class BackgroundExecs {
  private entries = new Map<string, BgEntry>();
  private reaped = new Set<string>();
  private reservedBytes = 0;

  constructor(private readonly users: UserDirectory) {}

  /** Route `/exec` (list/launch) and `/exec/:id[/…]` requests. Returns false when the path is not ours. */
  async handle(ctx: AgentRequest): Promise<boolean> {
    const { method, path } = ctx;
    if (path === "/exec" && method === "GET") {
      sendJson(ctx.res, 200, [...this.entries.values()].map((e) => this.info(e)));
      return true;
    }
    const m = /^\/exec\/([^/]+)(\/logs|\/kill|\/wait-exit)?$/.exec(path);
    if (!m) return false;
    const id = decodeURIComponent(m[1] as string);
    const sub = m[2] ?? "";
    const allowed: Record<string, string[]> = { "": ["GET", "DELETE"], "/logs": ["GET"], "/kill": ["POST"], "/wait-exit": ["GET"] };
    if (!(allowed[sub] ?? []).includes(method)) {
      throw new PaddockError("ERR_METHOD_NOT_ALLOWED", `method ${method} not allowed on /exec/{id}${sub}`);
    }
    const entry = this.lookup(id);
    if (sub === "" && method === "GET") sendJson(ctx.res, 200, this.info(entry));
    else if (sub === "" && method === "DELETE") this.reap(ctx, entry);
    else if (sub === "/logs") this.logs(ctx, entry);
    else if (sub === "/kill") await this.kill(ctx, entry);
    else this.waitExit(ctx, entry);
    return true;
  }

  private lookup(id: string): BgEntry {
    const e = this.entries.get(id);
    if (e) return e;
    if (this.reaped.has(id)) throw new PaddockError("ERR_EXEC_REAPED", `exec ${id} was reaped`);
    throw new PaddockError("ERR_EXEC_NOT_FOUND", `exec ${id} not found`);
  }

  /** `POST /exec?background=true`: 201 `{exec_id,pid,started_at,ring_bytes}`. */
  async launch(ctx: AgentRequest): Promise<void> {
    const q = ctx.query;
    if (queryBool(q, "stdin")) throw badRequest("stdin=true is not supported with background=true", "ERR_QUERY_INVALID");
    if (queryBool(q, "buffered")) throw badRequest("buffered=true is not supported with background=true", "ERR_QUERY_INVALID");
    const requested = queryInt(q, "ring_bytes") ?? 0;
    if (requested < 0 || requested > RING_BUDGET_BYTES) {
      throw badRequest(`ring_bytes must be between 0 and ${RING_BUDGET_BYTES}`, "ERR_QUERY_INVALID");
    }
    const ringBytes = requested === 0 ? DEFAULT_RING_BYTES : requested;
    const spec = parseExecSpec(q, this.users, "-lc");
    if (this.reservedBytes + ringBytes > RING_BUDGET_BYTES) {
      throw new PaddockError("ERR_EXEC_BUDGET", `background exec ring budget exhausted (${RING_BUDGET_BYTES} bytes); reap finished execs`);
    }
    const child = spawnExec(spec, ["ignore", "pipe", "pipe"]);
    if (child.pid === undefined) {
      // libuv reports the start failure (ENOENT, EACCES) asynchronously as an "error" event.
      const [err] = (await once(child, "error").catch((e: unknown) => [e])) as unknown[];
      throw new PaddockError("ERR_EXEC_FAILED", startFailureMessage(spec, err), { status: 400 });
    }
    child.on("error", () => undefined);
    this.reservedBytes += ringBytes;
    const entry: BgEntry = {
      id: "ex_" + randomHex(8),
      pid: child.pid,
      spec,
      startedAt: rfc3339(),
      ring: new FrameRing(ringBytes),
      child,
      exit: undefined,
      exitWaiters: new Set(),
      graceTimer: undefined,
    };
    this.entries.set(entry.id, entry);
    entry.ring.push("started", undefined, { pid: entry.pid, started_at: entry.startedAt });
    child.stdout?.on("data", (c: Buffer) => entry.ring.push("stdout", c));
    child.stderr?.on("data", (c: Buffer) => entry.ring.push("stderr", c));
    onProcessDone(child, (s) => {
      entry.exit = { ...s, endedAt: rfc3339() };
      if (entry.graceTimer) clearTimeout(entry.graceTimer);
      entry.ring.push("exit", undefined, {
        pid: entry.pid,
        exit_code: s.exitCode,
        ended_at: entry.exit.endedAt,
        ...(s.signal ? { signal: s.signal } : {}),
      });
      for (const w of entry.exitWaiters) w();
      entry.exitWaiters.clear();
    });
    sendJson(ctx.res, 201, { exec_id: entry.id, pid: entry.pid, started_at: entry.startedAt, ring_bytes: ringBytes });
  }

  /** ExecInfo (the list and info answers). */
  private info(e: BgEntry): Record<string, unknown> {
    return {
      exec_id: e.id,
      pid: e.pid,
      command: e.spec.command,
      args: e.spec.args,
      cwd: e.spec.cwd,
      uid: e.spec.identity.uid,
      gid: e.spec.identity.gid,
      started_at: e.startedAt,
      running: e.exit === undefined,
      exit_code: e.exit ? e.exit.exitCode : null,
      signal: e.exit?.signal ?? "",
      ended_at: e.exit ? e.exit.endedAt : null,
      bytes_written: e.ring.bytesWritten,
      bytes_dropped: e.ring.bytesDropped,
      next_id: e.ring.nextId,
      ring_bytes: e.ring.capBytes,
    };
  }

  private wireFrame(e: BgEntry, f: RingFrame): string {
    const b64 = e.spec.stdio === "base64";
    const obj: Record<string, unknown> = { id: f.id, timestamp: f.timestamp, type: f.type, ...(b64 ? { encoding: "base64" } : {}), ...f.extra };
    if (f.payload) {
      const s = f.payload.toString(b64 ? "base64" : "utf8");
      obj.data = s;
      obj[f.type] = s;
    }
    if (obj.exit_code === undefined) obj.exit_code = 0;
    return JSON.stringify(obj) + "\n";
  }

  /** `GET /exec/:id/logs?follow=&from_id=` — NDJSON replay (+ live tail). */
  private logs(ctx: AgentRequest, e: BgEntry): void {
    const follow = queryBool(ctx.query, "follow");
    const fromIdRaw = queryInt(ctx.query, "from_id") ?? 1;
    if (fromIdRaw < 0) throw badRequest("from_id must be ≥ 0", "ERR_QUERY_INVALID");
    let cursor = Math.max(1, fromIdRaw);
    const { res } = ctx;
    res.writeHead(200, { "Content-Type": "application/x-ndjson", "Cache-Control": "no-cache" });
    res.on("error", () => undefined);
    const ring = e.ring;
    if (cursor < ring.firstId) {
      res.write(
        JSON.stringify({
          timestamp: rfc3339(),
          type: "gap",
          ...(e.spec.stdio === "base64" ? { encoding: "base64" } : {}),
          dropped_frames: ring.firstId - cursor,
          dropped_bytes: ring.bytesDropped,
          message: `frames ${cursor}..${ring.firstId - 1} were evicted from the ring buffer`,
          exit_code: 0,
        }) + "\n",
      );
      cursor = ring.firstId;
    }
    let sawExit = false;
    for (const f of ring.from(cursor)) {
      res.write(this.wireFrame(e, f));
      cursor = f.id + 1;
      if (f.type === "exit") sawExit = true;
    }
    if (!follow || sawExit) {
      res.end();
      return;
    }
    // Live tail: frames pushed while the client is congested are queued in order; the ring
    // itself bounds how far a slow client can fall behind only in the replay, so cap the queue.
    const unsubscribe = ring.subscribe((f) => {
      if (f.id < cursor || res.destroyed) return;
      res.write(this.wireFrame(e, f));
      cursor = f.id + 1;
      if (f.type === "exit") {
        unsubscribe();
        res.end();
      }
    });
    res.on("close", unsubscribe);
  }

  /** `POST /exec/:id/kill` body `{"signal":"TERM","grace_ms":5000}`. */
  private async kill(ctx: AgentRequest, e: BgEntry): Promise<void> {
    const body = await readJsonObject(ctx.req);
    const rawSig = typeof body.signal === "string" && body.signal !== "" ? body.signal.toUpperCase().replace(/^SIG/, "") : "TERM";
    const sig = SIGNALS[rawSig];
    if (!sig) throw badRequest(`unsupported signal ${JSON.stringify(body.signal)}: use TERM, KILL, INT, HUP, QUIT, USR1 or USR2`);
    let graceMs = 5000;
    if (body.grace_ms !== undefined && body.grace_ms !== null) {
      if (typeof body.grace_ms !== "number" || !Number.isInteger(body.grace_ms) || body.grace_ms < 0) throw badRequest("grace_ms must be a non-negative integer");
      if (body.grace_ms > 0) graceMs = body.grace_ms;
    }
    if (e.exit) {
      sendJson(ctx.res, 200, { exec_id: e.id, pid: e.pid, running: false, signal_sent: "" });
      return;
    }
    killGroup(e.pid, sig);
    if (sig === "SIGTERM" && !e.graceTimer) {
      e.graceTimer = setTimeout(() => {
        if (!e.exit) killGroup(e.pid, "SIGKILL");
      }, graceMs);
    }
    sendJson(ctx.res, 200, { exec_id: e.id, pid: e.pid, running: e.exit === undefined, signal_sent: rawSig });
  }

  /** `GET /exec/:id/wait-exit?timeout=<seconds>` (default 30, max 600). */
  private waitExit(ctx: AgentRequest, e: BgEntry): void {
    const t = queryInt(ctx.query, "timeout");
    if (t !== undefined && t < 0) throw badRequest("timeout must be a non-negative number of seconds", "ERR_QUERY_INVALID");
    const timeoutS = Math.min(t ?? 30, 600);
    const answer = (timedOut: boolean): void => {
      if (ctx.res.destroyed) return;
      sendJson(ctx.res, 200, {
        exec_id: e.id,
        running: e.exit === undefined,
        exit_code: e.exit ? e.exit.exitCode : null,
        signal: e.exit?.signal ?? "",
        ended_at: e.exit ? e.exit.endedAt : null,
        timed_out: timedOut,
      });
    };
    if (e.exit) return answer(false);
    const waiter = (): void => {
      clearTimeout(timer);
      answer(false);
    };
    const timer = setTimeout(() => {
      e.exitWaiters.delete(waiter);
      answer(true);
    }, timeoutS * 1000);
    e.exitWaiters.add(waiter);
    ctx.res.on("close", () => {
      clearTimeout(timer);
      e.exitWaiters.delete(waiter);
    });
  }

  /** `DELETE /exec/:id`: 409 while running (as the Go SDK documents), else frees the ring. */
  private reap(ctx: AgentRequest, e: BgEntry): void {
    if (!e.exit) throw new PaddockError("ERR_EXEC_RUNNING", `exec ${e.id} is still running; kill it first`);
    this.entries.delete(e.id);
    this.reaped.add(e.id);
    this.reservedBytes -= e.ring.capBytes;
    sendJson(ctx.res, 200, { exec_id: e.id, reaped: true });
  }

  /** Kill every running exec (agent shutdown). */
  shutdown(): void {
    for (const e of this.entries.values()) {
      if (e.graceTimer) clearTimeout(e.graceTimer);
      if (!e.exit) killGroup(e.pid, "SIGKILL");
    }
  }
}
