/**
 * The lenient JSON body of the Slicer API's VM and commit routes (create, tags, shutdown,
 * commit, fork), read the way Express's `express.json({ type: () => true, limit: "1mb",
 * strict: false })` (body-parser 2, https://github.com/expressjs/body-parser#bodyparserjsonoptions)
 * read it before, with the same answers:
 *
 * - no body at all (neither `Content-Length` nor `Transfer-Encoding`): `req.body` stays undefined;
 *   an empty body is `{}`; any content type; any JSON value (`strict: false`).
 * - `Content-Encoding` gzip, deflate or br is inflated (the limit counts inflated bytes);
 *   another encoding is 400 `ERR_BODY_INVALID_JSON` `invalid JSON body: unsupported content
 *   encoding "x"`.
 * - the charset of `Content-Type` (default utf-8) must be a `utf-*` one node's TextDecoder
 *   knows (utf-8, utf-16le, utf-16be); else `invalid JSON body: unsupported charset "X"`. A BOM
 *   is dropped.
 * - past 1 MiB: 413 `ERR_BODY_TOO_LARGE` `request body too large: at most 1048576 bytes (…)`
 *   (body-parser said only `request body too large`); text that is not JSON:
 *   `invalid JSON body: <JSON.parse's message>`; a body that does not inflate (not the gzip,
 *   deflate or br it claims): `invalid JSON body: not valid <encoding> data (<zlib's message>)`
 *   (Express answered that one 500 ERR_INTERNAL: a client's error, so 400 here).
 *
 * On an error the rest of the body is read off before the answer, as body-parser did.
 */
import type { Readable, Transform } from "node:stream";
import zlib from "node:zlib";
import { PaddockError } from "../../shared/errors.js";
import type { ApiRequest, Handler } from "./http-util.js";

/** Largest JSON body, bytes (body-parser's `1mb`). */
export const JSON_BODY_LIMIT_BYTES = 1024 * 1024;

const invalid = (message: string, cause?: unknown): PaddockError => new PaddockError("ERR_BODY_INVALID_JSON", `invalid JSON body: ${message}`, cause === undefined ? {} : { cause });
const tooLarge = (): PaddockError => new PaddockError("ERR_BODY_TOO_LARGE", `request body too large: at most ${JSON_BODY_LIMIT_BYTES} bytes (1 MiB, counted after any Content-Encoding is undone)`);

/** The `charset` parameter of a `Content-Type`, lower-cased; undefined when absent. */
function charsetOf(contentType: string | undefined): string | undefined {
  const m = contentType === undefined ? null : /;\s*charset\s*=\s*(?:"([^"]*)"|([^;\s]*))/i.exec(contentType);
  const v = m === null ? undefined : (m[1] ?? m[2]);
  return v === undefined || v === "" ? undefined : v.toLowerCase();
}

/** The inflater of the body's `Content-Encoding`; undefined for identity. @throws the unsupported-encoding error. */
function inflaterOf(req: ApiRequest): Transform | undefined {
  const encoding = (req.headers["content-encoding"] ?? "identity").toLowerCase();
  switch (encoding) {
    case "identity": return undefined;
    case "gzip": return zlib.createGunzip();
    case "deflate": return zlib.createInflate();
    case "br": return zlib.createBrotliDecompress();
    default: throw invalid(`unsupported content encoding "${encoding}"`);
  }
}

/** Read off what is left of `req`, then settle (body-parser answers only after the whole request). */
function drain(req: ApiRequest): Promise<void> {
  if (req.readableEnded || req.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    req.once("end", resolve);
    req.once("close", resolve);
    req.resume();
  });
}

/** The body's text, decoded, at most {@link JSON_BODY_LIMIT_BYTES} bytes. */
async function readText(req: ApiRequest): Promise<string> {
  const charset = charsetOf(req.headers["content-type"]) ?? "utf-8";
  if (!charset.startsWith("utf-")) throw invalid(`unsupported charset "${charset.toUpperCase()}"`);
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(charset);
  } catch {
    throw invalid(`unsupported charset "${charset.toUpperCase()}"`);
  }
  const declared = Number(req.headers["content-length"]);
  if (req.headers["content-encoding"] === undefined && Number.isFinite(declared) && declared > JSON_BODY_LIMIT_BYTES) throw tooLarge();
  const inflater = inflaterOf(req);
  const stream: Readable = inflater === undefined ? req : req.pipe(inflater);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream) {
      total += (chunk as Buffer).length;
      if (total > JSON_BODY_LIMIT_BYTES) throw tooLarge();
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (inflater !== undefined) {
      req.unpipe(inflater);
      inflater.destroy();
    }
    // A body that is not the gzip/deflate/br it claims is the client's error, not the daemon's.
    if (inflater !== undefined && !(err instanceof PaddockError) && !req.readableAborted) {
      throw invalid(`not valid ${String(req.headers["content-encoding"])} data (${(err as Error).message})`, err);
    }
    throw err;
  }
  return decoder.decode(Buffer.concat(chunks));
}

/** Whether the request carries a body at all (body-parser's `hasBody`). */
function hasBody(req: ApiRequest): boolean {
  const length = req.headers["content-length"];
  return req.headers["transfer-encoding"] !== undefined || (length !== undefined && !Number.isNaN(Number(length)));
}

/**
 * `handler` behind the lenient JSON body reader: sets `req.body` (see the file header), then
 * runs `handler`.
 * @throws PaddockError ERR_BODY_TOO_LARGE (413), ERR_BODY_INVALID_JSON (400), after the rest
 *   of the body is read off.
 */
export function jsonBody(handler: Handler): Handler {
  return async (req, res) => {
    if (hasBody(req)) {
      let text: string;
      try {
        text = await readText(req);
      } catch (err) {
        await drain(req);
        throw err;
      }
      if (text.length === 0) req.body = {};
      else {
        try {
          req.body = JSON.parse(text) as unknown;
        } catch (err) {
          throw invalid((err as Error).message, err);
        }
      }
    }
    await handler(req, res);
  };
}
