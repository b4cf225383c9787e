/**
 * The node (V8) flags every tenant daemon runs with: the supervisor puts them before the entry
 * (supervisor/daemon-process.ts), and the build makes the daemon's V8 code cache under the same
 * flags (scripts/build-daemon-bundle.ts), because V8 rejects a cache made under other flags.
 *
 * - `--max-semi-space-size=1` (MiB): an idle daemon otherwise lets its young generation grow to
 *   16 MiB per semi-space after a burst of requests and keeps it; with 200 daemons on a host that
 *   is most of their private memory. The cost is more frequent, cheaper scavenges under load.
 * - `--max-old-space-size=512` (MiB): a daemon's own state is small (VM records, streams in
 *   flight); a leak ends in a crash and a supervised restart (VMs are adopted) instead of taking
 *   the host's memory. 512 MiB is well above what a daemon with its VMs at a tenant's max_vms
 *   uses (docs/benchmarks.md, figures 7 and 13).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=1", "--max-old-space-size=512"]);
