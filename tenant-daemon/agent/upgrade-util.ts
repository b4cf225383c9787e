/**
 * HTTP upgrade plumbing of the guest agent: the daemon opens `/v1/shell` and `/v1/forward`
 * with `Connection: Upgrade` on the agent's socket; after `101` the raw socket carries the
 * session (shell frames, or the forwarded bytes). Errors before the upgrade are ordinary
 * HTTP responses in the Slicer error shape, which the daemon relays to its client.
 */
import type { Duplex } from "node:stream";
import { STATUS_CODES } from "node:http";
import { errorResponse } from "../../shared/errors.js";

/** The `Upgrade` token the daemon and agent use (not WebSocket: the daemon ends the WebSocket). */
export const AGENT_UPGRADE_PROTOCOL = "paddock-stream";

/** Answer `101 Switching Protocols` on a raw upgraded socket, with `headers` (the agent's proof header). */
export function acceptUpgrade(socket: Duplex, headers: Readonly<Record<string, string>> = {}): void {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${AGENT_UPGRADE_PROTOCOL}\r\n${extra}\r\n`);
}

/** Answer an error as a complete HTTP response on a socket that was not upgraded, then close it. */
export function rejectUpgrade(socket: Duplex, err: unknown, headers: Readonly<Record<string, string>> = {}): void {
  const { status, body } = errorResponse(err);
  writeHttpError(socket, status, JSON.stringify(body), headers);
}

/** Write `status` + JSON `text` as an HTTP/1.1 response and end the socket. */
export function writeHttpError(socket: Duplex, status: number, text: string, extraHeaders: Readonly<Record<string, string>> = {}): void {
  if (socket.destroyed) return;
  const extra = Object.entries(extraHeaders).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n${extra}Connection: close\r\n\r\n${text}`,
  );
}
