/**
 * The resolver of proxy-mode VMs (egress-proxy-wiring.ts): UDP and TCP DNS on each proxy-mode
 * link's host-side gateway, reached from inside the VM at the fixed proxy address, port 53
 * (nft-ruleset.ts DNATs it here). Packets are parsed and built by `dns-packet`
 * (https://github.com/mafintosh/dns-packet); nothing here parses DNS by hand.
 *
 * Policy: an `A` question is answered, with the fixed proxy address, only when the asking VM's
 * proxy client has an allow rule for that name (the proxy store's `hostAllowed`); any other
 * name is NXDOMAIN. An allowed name's other types get an empty NOERROR answer (a guest then
 * falls back to its `A` record); anything that is not one standard query with one question is
 * REFUSED, an unknown sender too. The resolver never recurses and never asks anyone: the proxy
 * address is the only address a proxy-mode VM can reach, the proxy resolves the real name on the
 * host when the guest connects through it, and so a guest cannot use DNS to learn or tunnel
 * anything past its rules.
 *
 * Bounds: a UDP answer fits the question's 512-byte limit (one question, one answer); TCP
 * connections carry at most {@link MAX_TCP_QUERIES} queries, are closed after
 * {@link TCP_IDLE_MS} idle, and at most {@link MAX_TCP_CONNECTIONS} are open per listener.
 */
import dgram from "node:dgram";
import net from "node:net";
import * as dnsPacket from "dns-packet";
import type { Logger } from "../../shared/logger.js";

/** TTL of an answer, seconds: short, so a revoked rule stops resolving soon. */
export const ANSWER_TTL_SECONDS = 5;
/** Queries per TCP connection before the resolver closes it. */
export const MAX_TCP_QUERIES = 64;
/** An idle TCP connection is closed after this long. */
export const TCP_IDLE_MS = 10_000;
/** Open TCP connections per listener address. */
export const MAX_TCP_CONNECTIONS = 64;

const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;
const OPCODE_QUERY = 0;

/** What the resolver asks of the rest of the daemon. */
export interface EgressDnsPolicy {
  /** The proxy client of the VM at `remoteAddress` (bare IPv4), or undefined for an unknown sender. */
  identify(remoteAddress: string): string | undefined;
  /** Whether `client` has an allow rule for `host` (lowercase, no trailing dot). */
  hostAllowed(client: string, host: string): boolean;
}

/** One answer decision, pure (unit-testable without sockets). */
export type DnsDecision = { kind: "answer"; address: string | undefined } | { kind: "nxdomain" } | { kind: "refused" };

/**
 * Decide a query: `answer` with `address` (the proxy address for an allowed `A` question;
 * undefined ⇒ NOERROR without records, for an allowed name's other types), `nxdomain` or `refused`.
 */
export function decideDnsQuery(query: dnsPacket.DecodedPacket, client: string | undefined, policy: Pick<EgressDnsPolicy, "hostAllowed">, proxyAddress: string): DnsDecision {
  const opcode = ((query.flags ?? 0) >> 11) & 0xf;
  const q = query.questions?.[0];
  if (query.type !== "query" || opcode !== OPCODE_QUERY || query.questions?.length !== 1 || q === undefined || client === undefined) return { kind: "refused" };
  if (q.class !== undefined && q.class !== "IN") return { kind: "refused" };
  const name = q.name.toLowerCase().replace(/\.$/, "");
  if (name === "" || !policy.hostAllowed(client, name)) return { kind: "nxdomain" };
  return { kind: "answer", address: q.type === "A" ? proxyAddress : undefined };
}

/** Build the response to `query` for `decision` (recursion not available; authoritative). */
export function buildDnsResponse(query: dnsPacket.DecodedPacket, decision: DnsDecision): Buffer {
  const rcode = decision.kind === "nxdomain" ? RCODE_NXDOMAIN : decision.kind === "refused" ? RCODE_REFUSED : 0;
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  const q = query.questions?.[0];
  const answers: dnsPacket.Answer[] = decision.kind === "answer" && decision.address !== undefined && q !== undefined
    ? [{ type: "A", name: q.name, class: "IN", ttl: ANSWER_TTL_SECONDS, data: decision.address }]
    : [];
  return dnsPacket.encode({
    type: "response",
    id: query.id ?? 0,
    // The opcode is echoed (RFC 1035 §4.1.1); AA set, RA not: this server never recurses.
    flags: ((query.flags ?? 0) & 0x7800) | dnsPacket.AUTHORITATIVE_ANSWER | rd | rcode,
    questions: decision.kind === "refused" ? [] : (query.questions ?? []).slice(0, 1),
    answers,
  });
}

/** The answer to the bytes of one query from `remoteAddress`, or undefined when they do not parse (dropped). */
function answerQuery(bytes: Buffer, remoteAddress: string, policy: EgressDnsPolicy, proxyAddress: string): Buffer | undefined {
  let query: dnsPacket.DecodedPacket;
  try {
    query = dnsPacket.decode(bytes);
  } catch {
    return undefined;
  }
  const address = remoteAddress.startsWith("::ffff:") ? remoteAddress.slice(7) : remoteAddress;
  return buildDnsResponse(query, decideDnsQuery(query, policy.identify(address), policy, proxyAddress));
}

/** The UDP and TCP listeners on one address. */
interface DnsListener {
  udp: dgram.Socket;
  tcp: net.Server;
  /** Open TCP connections, destroyed on unlisten. */
  sockets: Set<net.Socket>;
}

/** The resolver's listeners, one pair (UDP + TCP) per host-side address. */
export class EgressDns {
  private readonly listeners = new Map<string, DnsListener>();

  /**
   * @param policy - who asks, and what their client may resolve.
   * @param proxyAddress - the fixed in-VM proxy address every allowed `A` question gets.
   */
  constructor(
    private readonly policy: EgressDnsPolicy,
    private readonly proxyAddress: string,
    private readonly log: Logger,
  ) {}

  /**
   * Listen on `host:port` (UDP and TCP). Idempotent per host.
   * @throws Error from bind (e.g. EADDRINUSE, EADDRNOTAVAIL); nothing is left listening then.
   */
  async listen(host: string, port: number): Promise<void> {
    if (this.listeners.has(host)) return;
    const udp = dgram.createSocket({ type: "udp4" });
    udp.on("message", (msg, rinfo) => {
      const out = answerQuery(msg, rinfo.address, this.policy, this.proxyAddress);
      if (out !== undefined) udp.send(out, rinfo.port, rinfo.address);
    });
    udp.on("error", (err) => this.log.warn("egress resolver UDP socket error", { host, err }));
    const sockets = new Set<net.Socket>();
    const tcp = net.createServer((socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      this.serveTcp(socket);
    });
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind({ address: host, port, exclusive: true }, () => {
          udp.off("error", reject);
          resolve();
        });
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen({ host, port, exclusive: true }, () => {
          tcp.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      await closeListener({ udp, tcp, sockets });
      throw err;
    }
    this.listeners.set(host, { udp, tcp, sockets });
  }

  /** Stop listening on `host` (no-op when not listening); open TCP connections are closed. */
  async unlisten(host: string): Promise<void> {
    const l = this.listeners.get(host);
    if (l === undefined) return;
    this.listeners.delete(host);
    await closeListener(l);
  }

  /** Stop every listener. */
  async close(): Promise<void> {
    await Promise.all([...this.listeners.keys()].map((h) => this.unlisten(h)));
  }

  /** Addresses listened on (tests, introspection). */
  addresses(): string[] {
    return [...this.listeners.keys()].sort();
  }

  /** RFC 1035 §4.2.2 framing: a 2-byte length before each message, several per connection. */
  private serveTcp(socket: net.Socket): void {
    let buf = Buffer.alloc(0);
    let served = 0;
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const out = answerQuery(msg, socket.remoteAddress ?? "", this.policy, this.proxyAddress);
        if (out === undefined || ++served > MAX_TCP_QUERIES) {
          socket.destroy();
          return;
        }
        const head = Buffer.alloc(2);
        head.writeUInt16BE(out.length, 0);
        socket.write(Buffer.concat([head, out]));
      }
    });
  }
}

async function closeListener(l: DnsListener): Promise<void> {
  await Promise.all([
    new Promise<void>((resolve) => {
      try {
        l.udp.close(() => resolve());
      } catch {
        resolve(); // never bound
      }
    }),
    new Promise<void>((resolve) => {
      if (!l.tcp.listening) {
        resolve();
        return;
      }
      l.tcp.close(() => resolve());
      for (const s of l.sockets) s.destroy();
    }),
  ]);
}
