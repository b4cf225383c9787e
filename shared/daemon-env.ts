/**
 * The environment a tenant daemon process runs with, beside the flags it runs with
 * (shared/daemon-node-flags.ts). Whoever starts a daemon process (the supervisor's spawn,
 * supervisor/daemon-process.ts; the `daemon purge` child, supervisor/tenant-lifecycle.ts; the
 * test and bench harness, scripts/lib/daemon-harness.ts) passes {@link daemonProcessEnv} as the
 * extension of its own environment.
 *
 * `NODE_EXTRA_CA_CERTS` is taken out and its value passed on as {@link DAEMON_EXTRA_CA_ENV}:
 * node 20 reads and parses that file at every process start, before any JavaScript runs
 * (https://nodejs.org/docs/latest-v20.x/api/cli.html#node_extra_ca_certsfile; ~57 ms of CPU per
 * start with a distribution's whole bundle, docs/performance.md "Daemon start, seventh look"),
 * and a daemon needs extra CAs for one thing only: its egress proxy verifying upstream TLS, which
 * reads the file on first use (tenant-daemon/proxy/upstream-cas.ts).
 */

/** The variable naming the PEM file of extra upstream CAs for a daemon's egress proxy. */
export const DAEMON_EXTRA_CA_ENV = "PADDOCK_EXTRA_CA_CERTS";

/**
 * The environment overlay for a daemon process started by a process whose environment is
 * `parent` (normally `process.env`): `own` (e.g. PADDOCK_STATE_DIR), plus `NODE_EXTRA_CA_CERTS`
 * set to `undefined` (child_process and execa, which extend the parent's environment with the
 * overlay, leave a variable whose value is `undefined` out) and {@link DAEMON_EXTRA_CA_ENV} set
 * to the parent's `NODE_EXTRA_CA_CERTS` when that is a non-empty string, else `undefined` (node
 * ignores an empty one as well). Pure; never throws.
 * @returns a new object; keys of `own` win over nothing (the two CA keys are always set last).
 */
export function daemonProcessEnv(parent: NodeJS.ProcessEnv, own: Readonly<Record<string, string>> = {}): Record<string, string | undefined> {
  const extra = parent.NODE_EXTRA_CA_CERTS;
  return { ...own, NODE_EXTRA_CA_CERTS: undefined, [DAEMON_EXTRA_CA_ENV]: extra !== undefined && extra !== "" ? extra : undefined };
}
