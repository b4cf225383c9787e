/**
 * The byte-level relay of an agent's chunked answer body (used by agent-stream.ts
 * `streamToAgent`): once Node's HTTP client has parsed the answer's status line and headers
 * (and the daemon has checked the VM's proof on them), the body's raw chunked bytes are
 * checked here and passed to the client's socket as slices of the agent's socket reads, so the
 * daemon's own chunked response carries the agent's framing unchanged, without the HTTP
 * client's parse and copy of each body piece and without re-framing each piece
 * (docs/performance.md "Relay, fifth look").
 *
 * The agent is the guest's: its bytes must never end the daemon's response early nor add a
 * second response on the client's keep-alive connection. So only framing checked here is
 * passed on, in its one strict form (RFC 9112 §7.1, https://www.rfc-editor.org/rfc/rfc9112#section-7.1,
 * as Node's HTTP server writes it): a chunk-size line of 1–{@link MAX_SIZE_DIGITS} hex digits
 * and CRLF (no extensions, no whitespace), the data, CRLF. The last chunk (size 0), its
 * trailers and everything after them are never passed on: the daemon ends its response itself
 * (`res.end()` writes its own `0\r\n\r\n`). Anything else is an error, and the caller cuts the
 * client's answer.
 */
import type { Socket } from "node:net";
import { PaddockError } from "../../shared/errors.js";

/** Most hex digits a chunk-size line may have (bounds the held part of a size line; 16^12 B = 256 TiB). */
export const MAX_SIZE_DIGITS = 12;
/** Most bytes of trailer section (after the last chunk's size line) read and dropped. */
export const MAX_TRAILER_BYTES = 4096;

const CR = 13;
const LF = 10;

const enum State {
  /** In a chunk-size line (hex digits). */
  Size,
  /** Size line's CR seen, LF expected. */
  SizeLf,
  /** In a chunk's data. */
  Data,
  /** After the data: CR expected. */
  DataCr,
  /** After the data's CR: LF expected. */
  DataLf,
  /** In the trailer section after the last chunk. */
  Trailer,
  /** The trailer section's empty line seen: the body is complete. */
  Done,
}

/** What one {@link BodyCheck.push} lets through. */
export interface ChunkedPush {
  /** Bytes to pass on, in order: slices of the pushed buffer (no copy), or (chunked) a held size line (≤ 14 bytes) once complete. */
  pieces: Buffer[];
  /** True once the body's end (chunked: last chunk and trailer section; length-delimited: the declared length) was read; later pushes are refused. */
  done: boolean;
}

/**
 * A check of an answer body's framing for {@link AnswerTap.passBody}: this file's
 * {@link ChunkedPassThrough}, or length-relay.ts `LengthPassThrough` (a `Content-Length` body).
 */
export interface BodyCheck {
  /**
   * Check the next bytes of the body as read; returns what may be passed on now and whether the
   * body ended (bytes after its end are never among the pieces).
   * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE on broken framing or a push after the end.
   */
  push(d: Buffer): ChunkedPush;
}

const hexValue = (c: number): number => {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
};

/** A visible ASCII byte, space or tab: what a trailer line may hold (RFC 9110 §5.5 field values, no obs-text). */
const isFieldByte = (c: number): boolean => c === 9 || (c >= 32 && c <= 126);

/**
 * Checks a chunked body read in pieces of any size, and says which of its bytes may be passed
 * on: every complete, checked chunk (its size line, data and CRLF) as it comes; never the last
 * chunk, its trailers or anything after them. Data bytes are passed on before their chunk is
 * complete (a cut answer is cut at the client too: the caller destroys the client's connection
 * on any error or early end); a size line only once its CRLF was read.
 *
 * Memory: holds at most a size line ({@link MAX_SIZE_DIGITS} + 1 bytes); counts the trailer
 * section up to {@link MAX_TRAILER_BYTES} without keeping it.
 */
export class ChunkedPassThrough implements BodyCheck {
  private state = State.Size;
  /** Size line bytes read in earlier pushes (not yet passed on). */
  private held: Buffer = Buffer.alloc(0);
  private digits = 0;
  private size = 0;
  /** Data bytes left in the current chunk. */
  private left = 0;
  private trailerBytes = 0;
  /** Bytes in the current trailer line so far (0 ⇒ at a line's start). */
  private trailerLine = 0;
  private trailerCr = false;

  /** True once the whole body was read. */
  get done(): boolean {
    return this.state === State.Done;
  }

  /**
   * Check the next bytes of the body.
   * @param d the next bytes as read (not copied; the returned slices share its memory).
   * @returns the bytes to pass on now, and whether the body ended in `d` (bytes after its end are ignored).
   * @throws PaddockError ERR_VM_AGENT_UNAVAILABLE on framing that is not the strict form
   *   (bad or too long size line, chunk extension, missing CRLF after data, malformed or
   *   oversized trailers) or a push after the end. After a throw the instance must not be used.
   */
  push(d: Buffer): ChunkedPush {
    if (this.state === State.Done) throw framingError("bytes after the end of the answer");
    const pieces: Buffer[] = [];
    /** Start of the bytes of `d` that will be passed on (-1: none more: in the trailer section). */
    let from = this.state === State.Trailer ? -1 : 0;
    /** Where the current size line began in `d` (-1: in an earlier push, its bytes in `held`). */
    let lineStart = -1;
    let i = 0;
    const n = d.length;
    while (i < n) {
      switch (this.state as State) {
        case State.Data: {
          const take = Math.min(this.left, n - i);
          i += take;
          this.left -= take;
          if (this.left === 0) this.state = State.DataCr;
          break;
        }
        case State.DataCr:
          if (d[i++] !== CR) throw framingError("a chunk's data is not followed by CRLF");
          this.state = State.DataLf;
          break;
        case State.DataLf:
          if (d[i++] !== LF) throw framingError("a chunk's data is not followed by CRLF");
          this.state = State.Size;
          this.digits = 0;
          this.size = 0;
          lineStart = i;
          break;
        case State.Size: {
          const c = d[i++] as number;
          const v = hexValue(c);
          if (v >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) throw framingError(`a chunk-size line longer than ${MAX_SIZE_DIGITS} digits`);
            this.size = this.size * 16 + v;
          } else if (c === CR && this.digits > 0) {
            this.state = State.SizeLf;
          } else {
            throw framingError("a malformed chunk-size line (only hex digits and CRLF are relayed)");
          }
          break;
        }
        case State.SizeLf:
          if (d[i++] !== LF) throw framingError("a chunk-size line not ended by CRLF");
          if (this.size === 0) {
            // The last chunk: pass on what came before its size line, never the line itself.
            if (lineStart > from) pieces.push(d.subarray(from, lineStart));
            from = -1;
            this.held = Buffer.alloc(0);
            this.state = State.Trailer;
          } else {
            if (lineStart < 0 && this.held.length > 0) pieces.push(this.held);
            this.held = Buffer.alloc(0);
            lineStart = -1;
            this.left = this.size;
            this.state = State.Data;
          }
          break;
        case State.Trailer:
          i = this.trailer(d, i);
          break;
        case State.Done:
          // Bytes after the end (e.g. a second answer): never passed on.
          return { pieces, done: true };
      }
    }
    if ((this.state as State) === State.Done) return { pieces, done: true };
    if (from < 0) return { pieces, done: false };
    if (this.state === State.Size || this.state === State.SizeLf) {
      // An unfinished size line: hold it (at most MAX_SIZE_DIGITS + 1 bytes) until its CRLF.
      if (lineStart >= 0) {
        if (lineStart > from) pieces.push(d.subarray(from, lineStart));
        this.held = Buffer.from(d.subarray(lineStart));
      } else {
        this.held = Buffer.concat([this.held, d]);
      }
      return { pieces, done: false };
    }
    if (n > from) pieces.push(from === 0 ? d : d.subarray(from));
    return { pieces, done: false };
  }

  /** Read trailer-section bytes of `d` from `i`; returns where it stopped (the end of `d`, or past the section's empty line). */
  private trailer(d: Buffer, i: number): number {
    const n = d.length;
    while (i < n) {
      const c = d[i++] as number;
      if (++this.trailerBytes > MAX_TRAILER_BYTES) throw framingError(`trailers longer than ${MAX_TRAILER_BYTES} bytes`);
      if (this.trailerCr) {
        if (c !== LF) throw framingError("a bare CR in the trailers");
        this.trailerCr = false;
        if (this.trailerLine === 0) {
          this.state = State.Done;
          return i;
        }
        this.trailerLine = 0;
      } else if (c === CR) {
        this.trailerCr = true;
      } else if (isFieldByte(c) && !(this.trailerLine === 0 && (c === 32 || c === 9 || c === 58))) {
        // A trailer field line (dropped): no line folding, no empty name.
        this.trailerLine++;
      } else {
        throw framingError("a malformed trailer line");
      }
    }
    return i;
  }
}

/**
 * Most bytes of answer heads (a 1xx and the final one) held while looking for their end;
 * past it everything goes to Node's parser, which refuses a head past its own limit (16 KiB).
 */
export const MAX_HEAD_BYTES = 64 * 1024;

/** What {@link AnswerTap.passBody} calls. */
export interface RawBodyHandlers {
  /** The body's end was read and passed on up to it (the caller ends its response). */
  onEnd: () => void;
  /** Broken framing, or the agent's connection closed before the body's end (the caller cuts its response). */
  onError: (err: Error) => void;
}

const enum Mode {
  /** Looking for the end of an answer head; Node's HTTP client parses each head. */
  Head,
  /** Everything goes to Node's HTTP client, as without a tap. */
  Parser,
  /** The body is checked and passed on here; Node's HTTP client sees no more bytes. */
  Raw,
}

/**
 * Stands between an agent connection and Node's HTTP client (`http.request`) on it, so that
 * the client parses only the answer's head: each read is searched for the end of a head (the
 * first CRLF CRLF; Node's parser requires CRLF line ends, so it ends the head there too), and
 * the client gets bytes up to it only. In the client's `response` event (which runs while the
 * head is fed) the caller picks {@link passBody} (the body is relayed raw, checked by a
 * {@link BodyCheck}: {@link ChunkedPassThrough}, or length-relay.ts `LengthPassThrough` for a
 * `Content-Length` answer) or {@link release} (the client gets the rest and the connection back
 * as it was, e.g. an answer to a HEAD request).
 *
 * Built on Node's own `data` listener of the client (`socketOnData` in Node's
 * lib/_http_client.js, https://github.com/nodejs/node/blob/v20.x/lib/_http_client.js), which
 * is called with only the head's bytes; {@link attach} gives undefined when it is not there (a
 * Node whose client reads otherwise), and the caller relays through the client as before.
 */
export class AnswerTap {
  private mode = Mode.Head;
  /**
   * An unfinished head held between reads: `headStore[0, headLen)`. The store grows by doubling
   * and each read is searched only with the 3 held bytes before it, so a head dripped a byte per
   * read costs time linear in its length: copying and searching all that was held on each read
   * was quadratic (65 536 one-byte reads into a tap: 888 ms of CPU before, 62 ms after, in one
   * process; through a real VM the reads' own cost dominates, ~0.9 s for a 60 kB head).
   */
  private headStore: Buffer = Buffer.alloc(0);
  private headLen = 0;
  private readonly onData = (d: Buffer): void => this.data(d);
  private body: BodyCheck | undefined;
  private out: Socket | undefined;
  private handlers: RawBodyHandlers | undefined;
  private waiting = false;
  private finished = false;
  /** True while a head is being fed to Node's client (its `response` event runs then). */
  private feeding = false;

  private constructor(
    private readonly socket: Socket,
    private readonly parse: (this: Socket, d: Buffer) => void,
  ) {}

  /**
   * Put a tap on `socket`, right after Node's HTTP client took it (its request's `socket` event).
   * @returns the tap, or undefined when the client's `data` listener is not found (nothing changed).
   */
  static attach(socket: Socket): AnswerTap | undefined {
    const parse = socket.listeners("data").find((f) => f.name === "socketOnData") as ((this: Socket, d: Buffer) => void) | undefined;
    if (parse === undefined) return undefined;
    const tap = new AnswerTap(socket, parse);
    socket.removeListener("data", parse);
    socket.on("data", tap.onData);
    return tap;
  }

  /** True while a head is being fed (i.e. inside the client's `response` event): {@link passBody} and {@link release} may be called, the last call wins. */
  get deciding(): boolean {
    return this.feeding;
  }

  /**
   * From now on check the answer's body with `check` (default: as chunked,
   * {@link ChunkedPassThrough}) and write what it lets through to `out` (the API client's
   * socket, whose response head was sent and whose body is framed the same way: chunked, or
   * the same `Content-Length`), with backpressure: the agent's socket is paused while `out` is
   * full. Calls `handlers.onEnd` once at the body's end, or `handlers.onError` once on broken
   * framing or when the agent's connection closes first; nothing is written to `out` after
   * either. Call only while {@link deciding}.
   */
  passBody(out: Socket, handlers: RawBodyHandlers, check: BodyCheck = new ChunkedPassThrough()): void {
    this.mode = Mode.Raw;
    this.body = check;
    this.out = out;
    this.handlers = handlers;
    this.socket.once("close", () => this.fail(new PaddockError("ERR_VM_AGENT_UNAVAILABLE", "the guest agent's connection closed before the end of its answer; the answer was cut")));
  }

  /** Give the rest of the answer and the connection back to Node's HTTP client. Call only while {@link deciding}. */
  release(): void {
    this.mode = Mode.Parser;
  }

  private data(d: Buffer): void {
    if (this.mode === Mode.Raw) {
      this.relay(d);
      return;
    }
    if (this.mode === Mode.Parser) {
      this.parse.call(this.socket, d);
      return;
    }
    const held = this.headLen;
    let buf = held === 0 ? d : this.appendHead(d);
    // The held bytes were searched already, up to a CRLF CRLF that may straddle this read.
    let from = Math.max(0, held - 3);
    /** True while `buf` is the store's first bytes (what was held, and this read). */
    let inStore = held > 0;
    this.headLen = 0;
    for (;;) {
      const end = buf.indexOf("\r\n\r\n", from);
      from = 0;
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) {
          this.headStore = Buffer.alloc(0);
          this.hand(buf);
          return;
        }
        this.holdHead(buf, inStore);
        return;
      }
      if (inStore) {
        // Slices of `buf` may be passed on (the raw body after the head): never written over.
        this.headStore = Buffer.alloc(0);
        inStore = false;
      }
      this.feeding = true;
      try {
        this.parse.call(this.socket, buf.subarray(0, end + 4));
      } finally {
        this.feeding = false;
      }
      buf = buf.subarray(end + 4);
      if (this.socket.destroyed) return;
      if ((this.mode as Mode) === Mode.Raw) {
        if (buf.length > 0) this.relay(buf);
        return;
      }
      if (!this.parsing()) {
        this.complete(buf);
        return;
      }
      if ((this.mode as Mode) === Mode.Parser) {
        this.hand(buf);
        return;
      }
    }
  }

  /**
   * True while Node's HTTP client still has its parser on the socket. It frees it
   * (`freeParser`, `socket.parser = null`) once an answer is complete, and its `data` listener
   * asserts a parser: called after that it throws, out of the socket's `data` event, and ends the
   * daemon (lib/_http_client.js `socketOnData`, https://github.com/nodejs/node/blob/v20.x/lib/_http_client.js).
   */
  private parsing(): boolean {
    return (this.socket as Socket & { parser?: unknown }).parser != null;
  }

  /**
   * The answer was complete within its head (no body: Content-Length 0, 204, 304, or a HEAD
   * request) and Node's client let go of the socket: the tap leaves it as Node's own listener
   * would have (no `data` listener), and bytes the agent sent after the answer (`rest`) are
   * never parsed nor passed on: the connection is destroyed, so nothing it holds answers a later
   * request (the answer itself is complete and relayed as usual).
   */
  private complete(rest: Buffer): void {
    this.mode = Mode.Parser;
    this.socket.removeListener("data", this.onData);
    if (rest.length > 0) this.socket.destroy();
  }

  /** `d` appended to the held head (growing its store by doubling); returns the held bytes. */
  private appendHead(d: Buffer): Buffer {
    const n = this.headLen + d.length;
    if (n > this.headStore.length) {
      const grown = Buffer.allocUnsafe(Math.max(n, 2 * this.headStore.length));
      this.headStore.copy(grown, 0, 0, this.headLen);
      this.headStore = grown;
    }
    d.copy(this.headStore, this.headLen);
    this.headLen = n;
    return this.headStore.subarray(0, n);
  }

  /** Hold `buf`, an unfinished head (at most {@link MAX_HEAD_BYTES}), until the next read; `inStore`: it is the store's first bytes already. */
  private holdHead(buf: Buffer, inStore: boolean): void {
    if (inStore) {
      this.headLen = buf.length;
      return;
    }
    this.headStore = Buffer.allocUnsafe(Math.max(1024, 2 * buf.length));
    buf.copy(this.headStore);
    this.headLen = buf.length;
  }

  /** Back to Node's client: its own listener again, fed what is held. */
  private hand(rest: Buffer): void {
    this.mode = Mode.Parser;
    this.socket.removeListener("data", this.onData);
    this.socket.on("data", this.parse);
    if (rest.length > 0) this.parse.call(this.socket, rest);
  }

  private relay(d: Buffer): void {
    const out = this.out as Socket;
    if (this.finished) return;
    let r: ChunkedPush;
    try {
      r = (this.body as BodyCheck).push(d);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    if (out.destroyed) return;
    let ok = true;
    if (r.pieces.length === 1) {
      ok = out.write(r.pieces[0] as Buffer);
    } else if (r.pieces.length > 1) {
      out.cork();
      for (const p of r.pieces) ok = out.write(p) && ok;
      out.uncork();
    }
    if (r.done) {
      this.finished = true;
      (this.handlers as RawBodyHandlers).onEnd();
      return;
    }
    if (!ok && !this.waiting) {
      this.waiting = true;
      this.socket.pause();
      out.once("drain", () => {
        this.waiting = false;
        if (!this.socket.destroyed) this.socket.resume();
      });
    }
  }

  private fail(err: Error): void {
    if (this.finished) return;
    this.finished = true;
    (this.handlers as RawBodyHandlers).onError(err);
  }
}

function framingError(what: string): PaddockError {
  return new PaddockError("ERR_VM_AGENT_UNAVAILABLE", `guest agent answered with broken chunked framing: ${what}; the answer was cut`);
}
