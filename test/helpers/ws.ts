/**
 * WebSocket helpers for the tests of the shell and forward endpoints (`/vm/{h}/shell`,
 * `/vm/{h}/forward`): open a socket, and echo bytes through a forward.
 */
import type http from "node:http";
import WebSocket from "ws";

/** A refused upgrade: the HTTP status and body the server answered instead. */
export interface RefusedUpgrade extends Error {
  status: number | undefined;
  body: string;
}

/**
 * Open a WebSocket to `url` with `headers` (e.g. the bearer token) and wait until it is open.
 * @throws RefusedUpgrade (`HTTP <status>: <body>`) when the server answers the upgrade with a
 *   plain HTTP response; the socket's own error when it cannot connect.
 */
export function openWs(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (_req, res: http.IncomingMessage) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => {
        ws.terminate();
        reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body }));
      });
    });
    ws.once("error", reject);
  });
}

/**
 * Send `sent` over `ws` in chunks of `chunkBytes` and collect binary messages until as many
 * bytes came back (an echo upstream behind the forward). Resolves with the received bytes.
 */
export async function echoThroughWs(ws: WebSocket, sent: Buffer, chunkBytes: number): Promise<Buffer> {
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) => {
    ws.on("message", (data: Buffer) => {
      got.push(data);
      n += data.length;
      if (n >= sent.length) resolve();
    });
  });
  for (let i = 0; i < sent.length; i += chunkBytes) ws.send(sent.subarray(i, i + chunkBytes));
  await done;
  return Buffer.concat(got);
}
