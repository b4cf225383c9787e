/**
 * Environment variables as Paddock reads them: one rule for every `PADDOCK_*` setting, so the
 * CLI, the supervisor and a daemon agree on what a variable says.
 */

/**
 * The value of an environment variable, an empty one counting as unset (`PADDOCK_STATE_DIR=`
 * falls back to the next source, never to `""` resolved against the working or config dir). Pure.
 * @param v - the variable's value as `process.env` holds it.
 * @returns `v`, or undefined when it is undefined or empty.
 */
export function envValue(v: string | undefined): string | undefined {
  return v === undefined || v === "" ? undefined : v;
}
