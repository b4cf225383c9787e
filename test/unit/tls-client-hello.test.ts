/**
 * The bounded ClientHello reader (tenant-daemon/proxy/tls-client-hello.ts): a real hello from
 * Node's TLS client (captured on a local socket), every truncation of it, corrupted lengths,
 * non-TLS input and random bytes, none of which may throw.
 */
import crypto from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { expect } from "chai";
import { parseClientHello } from "../../tenant-daemon/proxy/tls-client-hello.js";

/** The first bytes a TLS client sends to a server, captured on a real local socket. */
async function captureHello(servername: string | undefined): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const got = new Promise<Buffer>((resolve) => server.once("connection", (s) => {
    let buf = Buffer.alloc(0);
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        s.destroy();
        resolve(buf);
      }
    });
  }));
  const client = tls.connect({ host: "127.0.0.1", port, ...(servername !== undefined ? { servername } : {}), rejectUnauthorized: false });
  client.on("error", () => undefined);
  const hello = await got;
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return hello;
}

describe("TLS ClientHello SNI reader (unit)", () => {
  let hello: Buffer;
  before(async () => {
    hello = await captureHello("API.Example.com");
  });

  it("reads the server name of a real ClientHello, lower-cased; none when the client sent none", async () => {
    expect(parseClientHello(hello)).to.deep.equal({ kind: "hello", serverName: "api.example.com" });
    // Node sends no SNI when connecting to an IP without servername.
    expect(parseClientHello(await captureHello(undefined))).to.deep.equal({ kind: "hello", serverName: undefined });
  });

  it("asks for more bytes on every truncation of the record, and never throws", () => {
    for (let n = 0; n < hello.length; n++) {
      const r = parseClientHello(hello.subarray(0, n));
      expect(r.kind, `prefix ${n}`).to.equal("incomplete");
    }
  });

  it("refuses non-TLS input, other record types, bad record lengths and a hello longer than its record", () => {
    expect(parseClientHello(Buffer.from("GET / HTTP/1.1\r\n\r\n")).kind).to.equal("not_tls");
    const alert = Buffer.from(hello);
    alert[0] = 0x15;
    expect(parseClientHello(alert).kind).to.equal("not_tls");
    const huge = Buffer.from(hello);
    huge.writeUInt16BE(0x4001, 3);
    expect(parseClientHello(huge).kind).to.equal("not_tls");
    const longHello = Buffer.from(hello);
    longHello[6] = 0xff; // hello length above the record
    expect(parseClientHello(longHello).kind).to.equal("not_tls");
  });

  it("corrupting any single byte of the hello never throws and never yields a name that was not sent, except by changing that name", () => {
    for (let i = 5; i < hello.length; i++) {
      const b = Buffer.from(hello);
      b[i] = (b[i] as number) ^ 0xff;
      const r = parseClientHello(b);
      if (r.kind === "hello" && r.serverName !== undefined && r.serverName !== "api.example.com") {
        // Only a flipped byte inside the name itself changes it (and a flip makes it non-printable or another letter).
        const at = hello.indexOf(Buffer.from("API.Example.com"));
        expect(i, `byte ${i}`).to.be.within(at, at + "API.Example.com".length - 1);
      }
    }
  });

  it("random bytes behind a valid record header are refused or parsed without throwing", () => {
    for (let i = 0; i < 2000; i++) {
      const len = crypto.randomInt(4, 600);
      const b = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, len >> 8, len & 0xff, 0x01]), crypto.randomBytes(len - 1)]);
      expect(() => parseClientHello(b)).to.not.throw();
    }
  });
});
