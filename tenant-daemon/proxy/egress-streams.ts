/**
 * The egress proxy's stream helpers, without state: the refusal it answers, CONNECT targets,
 * dialling an upstream, reading the first TLS record of a tunnel, and the wrapper that lets
 * Node's TLS and HTTP parsers see bytes already read.
 */
import net from "node:net";
import { Duplex } from "node:stream";
import { normaliseHostName } from "../../shared/tenant-config-proxy.js";
import { canonicalIp } from "./proxy-rules.js";
import { MAX_RECORD_BYTES, parseClientHello } from "./tls-client-hello.js";

/** How long a client has to send its TLS ClientHello after the tunnel opens (and an upstream to accept), ms. */
export const HELLO_TIMEOUT_MS = 10_000;

/** A refusal the proxy answers: status, code and the reason counted. */
export class Refused extends Error {
  constructor(readonly status: number, readonly code: "ERR_EGRESS_DENIED" | "ERR_EGRESS_UPSTREAM_REFUSED" | "ERR_EGRESS_AUTH_REQUIRED" | "ERR_EGRESS_BUSY" | "ERR_BAD_REQUEST" | "ERR_EGRESS_UPSTREAM_UNRESOLVED" | "ERR_EGRESS_UPSTREAM_FAILED", readonly reason: string, message: string) {
    super(message);
  }
}

/** A CONNECT target `host:port` (IPv6 in brackets), normalised; undefined when malformed. */
export function parseAuthority(authority: string | undefined): { host: string; port: number } | undefined {
  if (authority === undefined) return undefined;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  const raw = (m[1] ?? m[2]) as string;
  if (net.isIP(raw) !== 0) return { host: canonicalIp(raw), port };
  if (m[1] !== undefined) return undefined;
  const name = normaliseHostName(raw);
  return name === undefined ? undefined : { host: name, port };
}

/** A TCP connection to `ip:port`, or a 502 when it cannot be made within {@link HELLO_TIMEOUT_MS}. */
export function dialUpstream(ip: string, port: number, host: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: ip, port });
    const fail = (why: string): void => {
      s.destroy();
      reject(new Refused(502, "ERR_EGRESS_UPSTREAM_FAILED", "upstream", `upstream ${host}:${port} ${why}`));
    };
    s.setTimeout(HELLO_TIMEOUT_MS, () => fail("did not answer"));
    s.once("error", (err: NodeJS.ErrnoException) => fail(`failed (${err.code ?? "error"})`));
    s.once("connect", () => {
      s.setTimeout(0);
      s.removeAllListeners("error");
      resolve(s);
    });
  });
}

/** The first bytes of the tunnel: a whole TLS record, or whatever came when it is not TLS. */
export function readFirstRecord(socket: Duplex, head: Buffer): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    let buf = head;
    const done = (v: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.pause();
      resolve(v);
    };
    const check = (): boolean => {
      const r = parseClientHello(buf);
      if (r.kind === "incomplete" && buf.length < 5 + MAX_RECORD_BYTES) return false;
      done(buf);
      return true;
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      check();
    };
    const onClose = (): void => done(undefined);
    const timer = setTimeout(() => done(buf.length > 0 ? buf : undefined), HELLO_TIMEOUT_MS);
    if (buf.length > 0 && check()) return;
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.resume();
  });
}

/**
 * A stream that yields `first`, then what `socket` sends, and writes to `socket`. Node's TLS
 * and HTTP parsers read a raw socket's handle directly and would miss bytes already read (the
 * ClientHello); over this plain Duplex they read through JavaScript and see them.
 */
export function prefixed(socket: Duplex, first: Buffer): Duplex {
  const d = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (socket.writable) socket.write(chunk, cb);
      else cb(new Error("tunnel closed"));
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  if (first.length > 0) d.push(first);
  socket.on("data", (c: Buffer) => {
    if (!d.push(c)) socket.pause();
  });
  socket.on("end", () => d.push(null));
  socket.on("close", () => d.destroy());
  return d;
}

export function safeUrl(u: string): URL | undefined {
  try {
    return new URL(u);
  } catch {
    return undefined;
  }
}
