/**
 * The proxy-mode resolver (tenant-daemon/network/egress-dns.ts) on real UDP and TCP sockets on
 * loopback: allowed names answer with the proxy address, others are NXDOMAIN, unknown senders
 * REFUSED, and nothing is ever looked up elsewhere. The VM end to end is
 * test/privileged/egress-proxy-vm.test.ts.
 */
import dgram from "node:dgram";
import net from "node:net";
import { expect } from "chai";
import * as dnsPacket from "dns-packet";
import { silentLogger } from "../../shared/logger.js";
import { EgressDns } from "../../tenant-daemon/network/egress-dns.js";

const PROXY = "169.254.169.250";

/** The response code dns-packet decodes (missing from @types/dns-packet). */
function rcode(p: dnsPacket.DecodedPacket | undefined): string {
  return (p as unknown as { rcode: string } | undefined)?.rcode ?? "";
}

function query(name: string, type: dnsPacket.RecordType = "A", id = 7): Buffer {
  return dnsPacket.encode({ type: "query", id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: "IN" }] });
}

async function udpAsk(port: number, msg: Buffer): Promise<dnsPacket.DecodedPacket> {
  const sock = dgram.createSocket("udp4");
  try {
    return await new Promise((resolve, reject) => {
      sock.once("message", (m) => resolve(dnsPacket.decode(m)));
      sock.once("error", reject);
      sock.send(msg, port, "127.0.0.1");
    });
  } finally {
    sock.close();
  }
}

async function tcpAsk(port: number, msgs: Buffer[]): Promise<dnsPacket.DecodedPacket[]> {
  const sock = net.connect({ host: "127.0.0.1", port });
  const out: dnsPacket.DecodedPacket[] = [];
  let buf = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    sock.on("error", reject);
    sock.on("connect", () => {
      for (const m of msgs) {
        const head = Buffer.alloc(2);
        head.writeUInt16BE(m.length, 0);
        sock.write(Buffer.concat([head, m]));
      }
    });
    sock.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (out.length === msgs.length) {
        sock.end();
        resolve();
      }
    });
  });
  return out;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe("egress resolver (proxy mode DNS)", function () {
  this.timeout(20_000);
  let dns: EgressDns;
  let port: number;
  let sender: string | undefined = "build-1";
  const asked: string[] = [];

  before(async () => {
    dns = new EgressDns({
      identify: (a) => (a === "127.0.0.1" ? sender : undefined),
      hostAllowed: (client, host) => {
        asked.push(`${client}:${host}`);
        return client === "build-1" && (host === "api.example.test" || host.endsWith(".allowed.test"));
      },
    }, PROXY, silentLogger);
    port = await freePort();
    await dns.listen("127.0.0.1", port);
  });
  after(async () => {
    await dns.close();
  });

  it("UDP: an allowed name's A is the proxy address; the name is matched case-insensitively without its trailing dot", async () => {
    const a = await udpAsk(port, query("API.Example.Test."));
    expect(rcode(a)).to.equal("NOERROR");
    expect(a.id).to.equal(7);
    expect(a.answers?.map((r) => (r as { data: string }).data)).to.deep.equal([PROXY]);
    expect(asked).to.include("build-1:api.example.test");
    const w = await udpAsk(port, query("x.allowed.test"));
    expect(w.answers?.map((r) => (r as { data: string }).data)).to.deep.equal([PROXY]);
  });

  it("UDP: a name without a rule is NXDOMAIN, an allowed name's AAAA is empty, an unknown sender is REFUSED; recursion is never offered", async () => {
    const n = await udpAsk(port, query("denied.example.test"));
    expect(rcode(n)).to.equal("NXDOMAIN");
    expect(n.answers).to.deep.equal([]);
    expect(n.flag_ra).to.equal(false);
    const six = await udpAsk(port, query("api.example.test", "AAAA"));
    expect(rcode(six)).to.equal("NOERROR");
    expect(six.answers).to.deep.equal([]);
    sender = undefined;
    try {
      expect(rcode(await udpAsk(port, query("api.example.test")))).to.equal("REFUSED");
    } finally {
      sender = "build-1";
    }
  });

  it("TCP: several length-prefixed queries on one connection", async () => {
    const [a, b] = await tcpAsk(port, [query("api.example.test", "A", 1), query("nope.test", "A", 2)]);
    expect(a?.id).to.equal(1);
    expect(a?.answers?.map((r) => (r as { data: string }).data)).to.deep.equal([PROXY]);
    expect(rcode(b)).to.equal("NXDOMAIN");
  });

  it("garbage is dropped without an answer and the resolver keeps serving", async () => {
    const sock = dgram.createSocket("udp4");
    sock.send(Buffer.from([1, 2, 3]), port, "127.0.0.1");
    await new Promise((r) => setTimeout(r, 50));
    sock.close();
    expect(rcode(await udpAsk(port, query("api.example.test")))).to.equal("NOERROR");
  });
});
