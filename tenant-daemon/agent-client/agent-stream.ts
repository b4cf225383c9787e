/**
 * Streaming calls to a guest agent: an API request (exec, cp, fs, health) is sent to the
 * agent's channel (agent-endpoint.ts) and its answer streamed back, bodies never buffered (exec stdin, cp
 * uploads, NDJSON and tar downloads flow both ways). A client that goes away aborts the
 * agent request, which makes the agent kill a foreground exec.
 */
import http from "node:http";
import type { Socket } from "node:net";
import type { Duplex, Readable, Writable } from "node:stream";
import { BODY_IDLE_TIMEOUT_MS } from "../../shared/body-idle-timeout.js";
import { PaddockError, errnoCode } from "../../shared/errors.js";
import { AGENT_PROOF_HEADER, agentConnectOptions, answerIsFromAgent, type AgentEndpoint } from "./agent-endpoint.js";
import { AnswerTap } from "./chunked-relay.js";
import { largeReadConnectOptions } from "./large-read.js";
import { rawBodyCheck } from "./length-relay.js";

/** Request headers that must not travel to the agent (hop-by-hop, credentials, identity). */
const DROP_REQUEST_HEADERS = new Set([
  "host", "connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer",
  "authorization", "proxy-authorization", "cookie", "x-forwarded-for", "x-real-ip", "forwarded",
]);
const DROP_RESPONSE_HEADERS = new Set(["connection", "keep-alive", "transfer-encoding", "date", AGENT_PROOF_HEADER]);

/**
 * Send `req` (its method, headers less the dropped ones, and body) to `endpoint`'s agent as
 * `agentPath` (e.g. `/v1/exec?cmd=ls`) and stream the agent's answer to `res`: its status and
 * headers (less hop-by-hop ones and the proof header), then its body. Agent errors arrive
 * already in the Slicer error shape and are passed through as they are.
 *
 * `fail` is called, before anything was written to `res`, with PaddockError
 * ERR_VM_AGENT_UNAVAILABLE (503) when the agent is unreachable, fails, answers without the
 * VM's proof (agent-endpoint.ts), with a status outside 200–599 or headers `res` cannot carry,
 * or with a 101 (nothing asked to upgrade); it must answer `res`. A failure after the answer started
 * destroys `res` instead.
 *
 * An agent that, before it answered, takes no byte of the body for `opts.stallMs` (default
 * BODY_IDLE_TIMEOUT_MS, 60 000 ms, the bound on a client's body) while the client is held back
 * gets the same 503, and its request is destroyed: while `relayBody` holds the client back, the
 * client's socket is not read, so a client that went away is not seen, and its request, both
 * connections and its share of the relay budget were held for as long as the guest kept not
 * reading. Once the answer started (an exec's stdin) the wait is the session's and is not
 * bounded here.
 *
 * A chunked answer to a client whose response is chunked too (HTTP/1.1, a body), and a
 * `Content-Length` answer with a body to an HTTP/1.1 client (binary cp out; the daemon's
 * response declares the same length), are relayed byte for byte (chunked-relay.ts
 * `AnswerTap`, length-relay.ts `rawBodyCheck`): Node's HTTP client parses the answer's head
 * only, the body's framing is checked (chunks; or the length, never a byte past it) and its
 * bytes go to the client's socket as they were read, and the daemon ends the response itself
 * and drops the agent's connection. Broken framing or an agent connection that closes before
 * the body's end cuts the client's answer (its connection is destroyed), as any failure after
 * the answer started.
 *
 * A download (`GET /v1/cp`) on the inherited-listener channel gets a new agent connection that
 * reads 256 KiB at a time (large-read.ts) instead of one from Node's keep-alive pool: fewer,
 * larger reads and writes in the relay (docs/performance.md "cp out, to the floor").
 */
export function streamToAgent(
  endpoint: AgentEndpoint,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  agentPath: string,
  fail: (err: PaddockError) => void,
  opts: { stallMs?: number } = {},
): void {
  const { hostname } = endpoint;
  const headers: http.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !DROP_REQUEST_HEADERS.has(k)) headers[k] = v;
  headers.host = "agent";
  // A download (cp out) reads the agent's socket 256 KiB at a time on the inherited-listener
  // channel (large-read.ts); the reverse channel's connections are accepted, not made here.
  const download = endpoint.dial === undefined && req.method === "GET" && /^\/v1\/cp(?:\?|$)/.test(agentPath);
  const connect = download ? largeReadConnectOptions(endpoint.socketPath) : agentConnectOptions(endpoint);
  const upstream = http.request({ ...connect, method: req.method, path: agentPath, headers });
  let responded = false;
  /** The agent stalled on the body before answering: refused here, its request destroyed. */
  let stalled = false;
  /** The answer's body was relayed raw to its end and `res` ended: the agent's connection is dropped on purpose. */
  let rawEnded = false;
  let tap: AnswerTap | undefined;
  upstream.on("socket", (socket: Socket) => {
    tap = AnswerTap.attach(socket);
  });

  upstream.on("response", (ur) => {
    responded = true;
    // Every path below that does not pass the body on raw gives it back to the client's parser.
    const decide = tap?.deciding === true ? tap : undefined;
    decide?.release();
    if (!answerIsFromAgent(endpoint, ur.headers)) {
      upstream.destroy();
      fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `the answer on ${hostname}'s agent channel did not come from its agent (missing or wrong proof); refused`));
      return;
    }
    // The agent is the guest's (its root can replace it): the parser takes any three digits,
    // but `writeHead` throws on a status below 100, and a throw here would end the daemon.
    const status = ur.statusCode ?? 0;
    if (!isFinalStatus(status)) {
      upstream.destroy();
      fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} answered with status ${status}; refused`));
      return;
    }
    const out: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(ur.headers)) if (v !== undefined && !DROP_RESPONSE_HEADERS.has(k)) out[k] = v;
    try {
      res.writeHead(status, out);
    } catch (err) {
      upstream.destroy();
      for (const name of res.getHeaderNames()) res.removeHeader(name);
      fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} answered headers that cannot be relayed; refused`, { cause: err }));
      return;
    }
    res.flushHeaders();
    ur.on("error", () => {
      if (!res.writableFinished && !rawEnded) res.destroy();
    });
    const client = res.socket;
    const check = decide !== undefined && client !== null ? rawBodyCheck(req, res, ur, out) : undefined;
    if (decide !== undefined && client !== null && check !== undefined) {
      decide.passBody(client as Socket, {
        onEnd: () => {
          rawEnded = true;
          res.end();
          upstream.destroy();
        },
        onError: () => {
          upstream.destroy();
          res.destroy();
        },
      }, check);
      return;
    }
    // `pipe`: relayBody measured no cheaper on the answer (docs/performance.md "Relay, fourth look").
    ur.pipe(res);
  });
  // A 101 to a request that asked for no upgrade: with no listener Node drops the socket and
  // reports nothing, which would leave the API request hanging.
  upstream.on("upgrade", (_ur, socket: Duplex) => {
    socket.destroy();
    if (responded) return;
    responded = true;
    fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} switched protocols on a plain request; refused`));
  });
  upstream.on("error", (err) => {
    // After a complete answer (see the `finish` listener below, and `rawEnded`) the agent's
    // connection is dropped on purpose: the client's connection stays as it is.
    if (res.writableFinished || stalled || rawEnded) return;
    if (responded || res.headersSent) {
      res.destroy();
      return;
    }
    if (res.destroyed) return;
    if (err instanceof PaddockError) {
      fail(err);
      return;
    }
    const code = errnoCode(err);
    const unreachable = code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE";
    fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", unreachable ? `guest agent of VM ${hostname} is not reachable` : `guest agent of VM ${hostname} failed: ${err.message}`, { cause: err }));
  });
  // Propagate client aborts upstream: since Node 15.5 an aborted server request no longer
  // does it by itself.
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  // The answer is complete while the client is still sending its body (e.g. a command that
  // exited without reading all of its stdin): the agent will not read the rest, and its
  // connection would sit until its keep-alive timeout and then reset the client's. Drop the
  // agent's connection and read the rest of the body here and discard it, so the client's
  // upload ends and its connection stays usable.
  res.on("finish", () => {
    if (req.readableEnded) return;
    upstream.destroy();
    req.resume();
  });
  req.on("error", () => upstream.destroy());
  const stallMs = opts.stallMs ?? BODY_IDLE_TIMEOUT_MS;
  relayBody(req, upstream, RELAY_BODY_MARK_BYTES, relayBodyBudget, {
    stallMs,
    onStall: () => {
      if (responded || res.headersSent || res.destroyed) return;
      stalled = true;
      responded = true;
      upstream.destroy();
      fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent of VM ${hostname} took no byte of the request body for ${stallMs} ms; refused`));
    },
  });
}

/**
 * Bytes of a request body the relay lets wait toward the agent before it pauses the client
 * (see {@link relayBody}). The agent request's own mark is Node's 16 KiB, less than one socket
 * read of a chunked upload (~55 KiB): pausing at it paused and resumed the client's socket for
 * nearly every chunk (an `epoll_ctl` each way) and wrote one chunk per `writev`. With this mark
 * the client's socket keeps being read while the agent's is full, and what gathered meanwhile
 * leaves in one `writev` once it drains (docs/performance.md "cp in, third look").
 */
export const RELAY_BODY_MARK_BYTES = 1024 * 1024;

/**
 * Bytes all of a daemon's body relays together may let wait toward agents past their writers'
 * own marks (see {@link relayBody}): 32 uploads at the full {@link RELAY_BODY_MARK_BYTES} at
 * once; any more wait at Node's 16 KiB mark. Without it N uploads to an agent that stops
 * reading held N MiB in the daemon (256 MiB at the gateway's default 256 requests in flight).
 */
export const RELAY_BODY_TOTAL_BYTES = 32 * 1024 * 1024;

/** A pool of bytes relays may hold past their writers' marks (mutable, shared by reference). */
export interface RelayBudget {
  /** Bytes not taken yet. */
  freeBytes: number;
}

/** What {@link relayBody} does when `to` takes nothing for a while (default: nothing). */
export interface RelayStall {
  /** Called once when `from` is paused and `to` took no byte for this long, ms. */
  stallMs?: number;
  /** What to do then (the caller's; e.g. destroy `to` and answer the client). */
  onStall?: () => void;
}

/** The daemon's one budget of {@link RELAY_BODY_TOTAL_BYTES}, shared by every {@link relayBody}. */
export const relayBodyBudget: RelayBudget = { freeBytes: RELAY_BODY_TOTAL_BYTES };

/**
 * Write each chunk `from` emits to `to` and end `to` at `from`'s end; `from` is paused while
 * more than `markBytes` wait in `to` (`writableLength`) and resumed on its `drain`. What
 * `Readable.pipe` does for these two, without its per-chunk machinery (unpipe, error and close
 * bookkeeping; errors and aborts are handled by the caller), and with `to` corked from a chunk
 * until the event loop's check phase, so that everything read in one poll phase leaves in one
 * `writev`: an API request's body comes from the server's C++-consumed parser, which runs the
 * tick queue (Node's own per-tick cork) after every body piece, i.e. two `writev`s per socket
 * read of a chunked upload. The relay is the daemon's largest cost on a streamed exec or cp
 * (docs/performance.md "Relay, fourth look"). No chunk is copied; nothing is written after `to`
 * is destroyed.
 *
 * Memory: a relay waits past `to`'s own mark only while it holds `markBytes` of `budget`,
 * taken when `to` first reports full and given back on its `drain` (or its `finish`, `close`
 * or `error`: the caller handles `to`'s errors, this only counts); without them, `from` is paused at `to`'s own mark as `pipe` would. So `to` holds
 * at most `markBytes` plus one chunk, and all relays sharing `budget` hold at most its
 * `freeBytes` past their writers' marks: a tenant's many uploads to an agent that stops reading
 * cost the daemon a bounded total, not 1 MiB each.
 *
 * Stall: `from` paused means its socket is not read, so its peer closing is not seen either.
 * With `stall.onStall`, a pause during which `to` takes no byte (its `writableLength` does not
 * shrink) for `stall.stallMs` calls it once (streamToAgent refuses the agent's request then).
 */
export function relayBody(from: Readable, to: Writable, markBytes = RELAY_BODY_MARK_BYTES, budget: RelayBudget = relayBodyBudget, stall: RelayStall = {}): void {
  if (from.readableEnded) {
    // Already read to its end (e.g. by a body parser before the route): nothing left to relay.
    to.end();
    return;
  }
  let waiting = false;
  let corked = false;
  let taken = 0;
  let stallTimer: NodeJS.Timeout | undefined;
  const giveBack = (): void => {
    budget.freeBytes += taken;
    taken = 0;
    clearTimeout(stallTimer);
  };
  // `error` too: an agent request whose `createConnection` fails (the reverse channel's pool,
  // agent-endpoint.ts) emits `error` and never `close` (Node 20).
  for (const ev of ["close", "finish", "error"]) to.once(ev, giveBack);
  const resume = (): void => {
    waiting = false;
    clearTimeout(stallTimer);
    from.resume();
  };
  const uncork = (): void => {
    corked = false;
    if (!to.destroyed) to.uncork();
  };
  from.on("data", (chunk: Buffer) => {
    if (to.destroyed || to.writableEnded) return;
    if (!corked) {
      corked = true;
      to.cork();
      setImmediate(uncork);
    }
    if (to.write(chunk) || waiting) return;
    if (taken === 0 && budget.freeBytes >= markBytes) {
      taken = markBytes;
      budget.freeBytes -= markBytes;
      to.once("drain", giveBack);
    }
    if (taken === 0 || to.writableLength > markBytes) {
      waiting = true;
      from.pause();
      to.once("drain", resume);
      const { onStall, stallMs } = stall;
      if (onStall !== undefined && stallMs !== undefined && stallMs > 0) {
        // Paused, nothing more is written to `to`: its waiting bytes only shrink, as its peer takes them.
        let left = to.writableLength;
        const check = (): void => {
          if (!waiting || to.destroyed) return;
          if (to.writableLength < left) {
            left = to.writableLength;
            stallTimer = setTimeout(check, stallMs);
            stallTimer.unref();
            return;
          }
          onStall();
        };
        stallTimer = setTimeout(check, stallMs);
        stallTimer.unref();
      }
    }
  });
  from.once("end", () => {
    if (!to.destroyed && !to.writableEnded) to.end();
  });
}

/** True for a status an API answer can carry from the agent: 200–599 (a 1xx is never final here). */
export function isFinalStatus(status: number): boolean {
  return Number.isInteger(status) && status >= 200 && status <= 599;
}
