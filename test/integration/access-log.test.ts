/**
 * The tenant daemon's access line (tenant-daemon/api/access-log.ts) on a real node:http server
 * of the daemon's request/response classes, with real clients: one answered, one that goes
 * away in the middle of its upload before any answer.
 */
import { expect } from "chai";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { PassThrough } from "node:stream";
import { createLogger } from "../../shared/logger.js";
import { accessLog } from "../../tenant-daemon/api/access-log.js";
import { createApiServer } from "../../tenant-daemon/api/http-util.js";

describe("tenant daemon access log (real server and clients)", () => {
  let server: http.Server;
  const lines: Array<Record<string, unknown>> = [];
  let port = 0;

  before(async () => {
    const stream = new PassThrough();
    stream.on("data", (b: Buffer) => {
      for (const l of b.toString("utf8").split("\n")) if (l.startsWith("{")) lines.push(JSON.parse(l) as Record<string, unknown>);
    });
    const log = accessLog(createLogger({ stream, level: "info" }));
    server = createApiServer((req, res) => {
      req.originalUrl = req.url ?? "";
      log(req, res);
      // /answered answers at once; /upload reads the body and never answers.
      if (req.url === "/answered") res.end("ok");
      else req.resume();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  async function lineFor(path: string): Promise<Record<string, unknown>> {
    for (let i = 0; i < 100; i++) {
      const l = lines.find((x) => x.msg === "request" && x.path === path);
      if (l !== undefined) return l;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no access line for ${path}: ${JSON.stringify(lines)}`);
  }

  it("an upload the client abandons before any answer is logged aborted, without a status (control: an answered request has its status)", async () => {
    await new Promise<void>((resolve, reject) => http.get({ port, host: "127.0.0.1", path: "/answered" }, (res) => res.resume().on("end", resolve)).on("error", reject));
    expect(await lineFor("/answered")).to.include({ status: 200 }).and.not.have.property("aborted");
    const req = http.request({ port, host: "127.0.0.1", path: "/upload", method: "POST", headers: { "content-length": "1000000" } });
    req.on("error", () => undefined);
    req.write(Buffer.alloc(1000));
    await new Promise((r) => setTimeout(r, 100));
    req.destroy();
    const l = await lineFor("/upload");
    expect(l).to.include({ aborted: true, method: "POST" });
    expect(l).to.not.have.property("status");
  });
});
