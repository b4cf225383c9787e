/**
 * What `POST /vm/{h}/pause`, `/resume` and `/suspend` (docs/slicer-api.md "Pause and resume",
 * "Suspend and restore") add to the Slicer wire format: the body stays `OK`, and a request that
 * found the VM in that state already (nothing done) is answered with the header
 * {@link ALREADY_HEADER}, value the state it found; a pause or suspend that found the VM paused
 * or suspended by its host group's idle rule (tenant-daemon/vm/vm-idle.ts) adds
 * {@link IDLE_CLAIMED_HEADER}. The daemon sets them
 * (tenant-daemon/api/vm-routes.ts); the CLI reads it (cli/vm-lifecycle-commands.ts,
 * cli/vm-commit-commands.ts).
 */

/** Response header of a no-op pause, resume or suspend. Node lowercases names it reads. */
export const ALREADY_HEADER = "Paddock-Already";

/** The state a no-op found: `paused` (pause), `running` (resume), `suspended` (suspend). */
export type AlreadyState = "paused" | "running" | "suspended";

/**
 * The state a no-op answer says the VM was in, from the response's headers.
 * @param headers - Node's IncomingHttpHeaders (lowercased names).
 * @returns undefined when the header is absent (the request changed the VM, or an older daemon)
 *   or holds anything else.
 */
export function alreadyState(headers: Record<string, string | string[] | undefined>): AlreadyState | undefined {
  const v = headers[ALREADY_HEADER.toLowerCase()];
  return v === "paused" || v === "running" || v === "suspended" ? v : undefined;
}

/**
 * Response header of a `POST /vm/{h}/pause` or `/suspend` that found the VM paused or suspended
 * by its host group's idle rule: the pause or suspend is the client's now, so requests no longer
 * wake the VM (they answer 409 `ERR_VM_PAUSED` on a paused VM) until a resume or restore. Value:
 * the idle action that had been taken, `pause` or `suspend`. Sent with {@link ALREADY_HEADER}.
 */
export const IDLE_CLAIMED_HEADER = "Paddock-Idle-Claimed";

/**
 * The idle action a pause or suspend took over from the idle rule, from the response's headers.
 * @param headers - Node's IncomingHttpHeaders (lowercased names).
 * @returns undefined when the header is absent (the VM was not idled, or an older daemon) or
 *   holds anything else.
 */
export function idleClaimed(headers: Record<string, string | string[] | undefined>): "pause" | "suspend" | undefined {
  const v = headers[IDLE_CLAIMED_HEADER.toLowerCase()];
  return v === "pause" || v === "suspend" ? v : undefined;
}
