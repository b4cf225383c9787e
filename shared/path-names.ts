/**
 * Validation of file names that arrive from elsewhere (a server's answer, a guest's tar) before
 * the host turns them into a path. A received name is accepted only as ONE path component, so
 * `path.join(dir, name)` can only ever name a direct child of `dir`.
 */
import { PaddockError } from "./errors.js";

/** Longest accepted component, in UTF-8 bytes (Linux NAME_MAX, see `man 3 pathconf`). */
export const NAME_MAX_BYTES = 255;

/**
 * Return `name` unchanged when it is a single, ordinary path component, else throw.
 *
 * Refused: the empty string, `.`, `..`, anything containing `/`, NUL or another ASCII control
 * character (0x00–0x1f, 0x7f: a newline or an escape sequence in a name would reach terminals
 * and line-based tools), and names longer than {@link NAME_MAX_BYTES} UTF-8 bytes. Everything
 * else (spaces, leading dots such as `.bashrc`, a backslash, which is an ordinary byte of a
 * Linux file name, non-ASCII letters) is accepted.
 *
 * @param name - the received name, already decoded to a string (e.g. from base64).
 * @param what - what the name is, for the error message (default `"name"`).
 * @returns `name`, the same string.
 * @throws PaddockError `ERR_CP_BAD_NAME` (502: the answer that carried the name is bad) when
 *   `name` is not a single component; the message shows the name JSON-quoted.
 */
export function assertSingleComponent(name: string, what = "name"): string {
  const reason = singleComponentProblem(name);
  if (reason !== undefined) throw new PaddockError("ERR_CP_BAD_NAME", `refusing ${what} ${JSON.stringify(name)}: ${reason}`);
  return name;
}

/**
 * Why `name` is not a single ordinary path component, or `undefined` when it is (the check
 * behind {@link assertSingleComponent}, without throwing).
 */
export function singleComponentProblem(name: string): string | undefined {
  if (name === "") return "it is empty";
  if (name === "." || name === "..") return "it is a relative directory reference";
  if (name.includes("/")) return "it contains a path separator";
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused here
  if (/[\u0000-\u001f\u007f]/.test(name)) return "it contains a NUL or control character";
  if (Buffer.byteLength(name, "utf8") > NAME_MAX_BYTES) return `it is longer than ${NAME_MAX_BYTES} bytes`;
  return undefined;
}
