/**
 * Reading a small request body whole, with a size bound: the one reader of JSON control bodies
 * for the tenant daemon's own handlers (tenant-daemon/api/secrets-routes.ts) and the guest
 * agent (tenant-daemon/agent/http-util.ts). Data bodies (exec stdin, cp) are streamed and never
 * read whole.
 *
 * The guest agent bundles this file (scripts/build-agent-bundle.ts), so it imports node
 * builtins and shared/errors.ts only (.dependency-cruiser.cjs `agent-self-contained`).
 */
import { PaddockError } from "../errors.js";

/**
 * Read the whole body of `body` (a request or any stream of Buffers) into one Buffer.
 * Stops reading, and destroys the stream (the async iterator's return), at the first chunk
 * past `maxBytes`.
 * @param maxBytes largest body accepted, bytes.
 * @throws PaddockError ERR_BODY_TOO_LARGE (413) past `maxBytes`; the stream's own error otherwise.
 */
async function readBodyBounded(body: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > maxBytes) throw new PaddockError("ERR_BODY_TOO_LARGE", `request body larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Read a body as a JSON object, leniently: an empty (or all-white-space) body is `{}`.
 * @param maxBytes largest body accepted, bytes.
 * @returns the parsed object (never an array or null).
 * @throws PaddockError ERR_BODY_TOO_LARGE (413) past `maxBytes`; ERR_BODY_INVALID_JSON (400)
 *   when the text is not JSON or not a JSON object.
 */
export async function readJsonObjectBounded(body: AsyncIterable<Buffer>, maxBytes: number): Promise<Record<string, unknown>> {
  const text = (await readBodyBounded(body, maxBytes)).toString("utf8").trim();
  if (text === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new PaddockError("ERR_BODY_INVALID_JSON", "request body is not valid JSON", { cause: err });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new PaddockError("ERR_BODY_INVALID_JSON", "request body must be a JSON object");
  }
  return parsed as Record<string, unknown>;
}
