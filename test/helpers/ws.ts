/**
 * WebSocket helpers for tests of `/vm/{h}/forward` (spec §2.11).
 */
import type WebSocket from "ws";

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
