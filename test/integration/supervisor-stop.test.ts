/**
 * A supervisor stop with a WebSocket open through the gateway: the stop ends the socket (and
 * with it the daemon's side) instead of waiting for the client to hang up. Tenant daemons are
 * played by test/fixtures/echo-daemon, whose `/vm/{h}/shell` upgrade says hello and echoes.
 */
import crypto from "node:crypto";
import { expect } from "chai";
import WebSocket from "ws";
import { TestSupervisor, echoDaemonConfig, randomTestPool } from "../helpers/supervisor.js";

describe("supervisor stop with an open WebSocket (integration)", function () {
  this.timeout(60_000);
  let sup: TestSupervisor | undefined;
  const id = `tst${crypto.randomBytes(3).toString("hex")}`;

  afterEach(async () => {
    await sup?.destroy([id]);
    sup = undefined;
  });

  it("closes a shell the client keeps open and stops at once", async () => {
    sup = await TestSupervisor.create({ config: (p) => ({ ...echoDaemonConfig(p), network: { pool: randomTestPool(), block_prefix: 24 } }) });
    await sup.start();
    const token = await sup.createTenant(id);
    const ws = new WebSocket(`ws://${sup.gateway}/vm/sbox-1/shell`, { headers: { authorization: `Bearer ${token}` } });
    const closed = new Promise<number>((resolve) => ws.once("close", (code: number) => resolve(code)));
    ws.on("error", () => undefined);
    const hello = await new Promise<string>((resolve, reject) => { ws.once("message", (d: Buffer) => resolve(d.toString())); ws.once("error", reject); });
    // Positive control: the shell is live through the gateway before the stop.
    expect(JSON.parse(hello)).to.include({ tenant: id, url: "/vm/sbox-1/shell" });
    // The client never closes: before the gateway ended upgraded sockets, this stop waited
    // for it (the test's timeout) because server.close() waits for every accepted socket.
    await sup.stop({ stopDaemons: false });
    // 1006: the connection went without a close frame (the gateway relays bytes; it cannot
    // put a frame of its own between the daemon's).
    expect(await closed).to.equal(1006);
  });
});
