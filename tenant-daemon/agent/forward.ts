/**
 * Port forwarding (docs/slicer-api.md#port-forwarding), guest side: dial `host:port` or
 * `unix:/path` from inside the VM's network and mount namespaces and splice the upgraded stream to
 * it. The agent answers 101 as soon as the upstream is valid and dials afterwards (so a dial
 * failure shows as the stream closing after the upgrade); bytes written before the dial completes
 * are queued by the socket.
 */
import net from "node:net";
import type { Duplex } from "node:stream";
import { badRequest } from "./http-util.js";
import { acceptUpgrade } from "./upgrade-util.js";

/** A parsed forward target. */
export type ForwardTarget = { kind: "tcp"; host: string; port: number } | { kind: "unix"; path: string };

/**
 * Parse `X-Inlets-Upstream`: `host:port`, `[v6]:port`, or `unix:/abs/path`.
 * @throws PaddockError ERR_BAD_REQUEST (400) when missing or malformed.
 */
export function parseUpstream(raw: string | null | undefined): ForwardTarget {
  const v = (raw ?? "").trim();
  if (v === "") throw badRequest("X-Inlets-Upstream is required (host:port or unix:/path)");
  if (v.includes("\0")) throw badRequest("X-Inlets-Upstream contains a NUL byte");
  if (v.startsWith("unix:")) {
    const p = v.slice(5);
    if (!p.startsWith("/")) throw badRequest(`invalid upstream ${JSON.stringify(v)}: unix: needs an absolute path`);
    return { kind: "unix", path: p };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) throw badRequest(`invalid upstream ${JSON.stringify(v)}: expected host:port or unix:/path`);
  const host = (m[1] ?? m[2]) as string;
  if (m[1] !== undefined && net.isIPv6(host) === false) throw badRequest(`invalid IPv6 address in upstream ${JSON.stringify(v)}`);
  return { kind: "tcp", host, port };
}

/** Live forwards, for shutdown. */
export class Forwards {
  private readonly live = new Set<net.Socket>();

  /** `proofHeaders`: headers of every 101 answer (tenant-daemon/agent/boot.ts AGENT_PROOF_HEADER). */
  constructor(private readonly proofHeaders: Readonly<Record<string, string>> = {}) {}

  /** Answer 101 on `socket` and splice it to a fresh connection to `target`. */
  open(target: ForwardTarget, socket: Duplex, head: Buffer): void {
    acceptUpgrade(socket, this.proofHeaders);
    const upstream = target.kind === "unix" ? net.connect(target.path) : net.connect({ host: target.host, port: target.port });
    this.live.add(upstream);
    if (head.length > 0) upstream.write(head);
    const finish = (): void => {
      upstream.destroy();
      socket.destroy();
      this.live.delete(upstream);
    };
    upstream.on("error", finish);
    socket.on("error", finish);
    upstream.on("close", finish);
    socket.on("close", finish);
    // Either side ending ends the other (a WebSocket has no half-close).
    upstream.on("end", () => socket.end());
    socket.on("end", () => upstream.end());
    socket.pipe(upstream, { end: false });
    upstream.pipe(socket, { end: false });
  }

  /** Close every forwarded connection (agent shutdown). */
  shutdown(): void {
    for (const s of this.live) s.destroy();
  }
}
