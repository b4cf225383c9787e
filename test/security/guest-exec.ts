/**
 * Driving REAL VMs of a test daemon from the security tests: create with `wait=agent` and
 * buffered exec over the daemon's Slicer API socket.
 */
import { call } from "../integration/agent-fixture.js";
import type { TestDaemon } from "../helpers/daemon.js";

/** A buffered exec result (`POST /vm/{h}/exec?buffered=true`). */
export interface ExecResult {
  stdout: string;
  stderr: string;
  exit_code: number;
}

/** Buffered exec of `argv` in VM `h` of daemon `d` as guest `uid`; throws on a non-200 answer. */
export async function execIn(d: TestDaemon, h: string, argv: string[], uid = 0): Promise<ExecResult> {
  const q = [`cmd=${encodeURIComponent(argv[0] as string)}`, ...argv.slice(1).map((a) => `args=${encodeURIComponent(a)}`), `uid=${uid}`, "buffered=true"].join("&");
  const r = await call(d.socketPath, "POST", `/vm/${h}/exec?${q}`);
  if (r.status !== 200) throw new Error(`exec ${argv.join(" ")} in ${h}: HTTP ${r.status} ${r.text}`);
  const j = r.json() as ExecResult;
  return { stdout: String(j.stdout ?? ""), stderr: String(j.stderr ?? ""), exit_code: Number(j.exit_code) };
}

/** `/bin/sh -c script` in the VM. */
export const sh = (d: TestDaemon, h: string, script: string, uid = 0): Promise<ExecResult> => execIn(d, h, ["/bin/sh", "-c", script], uid);

/** Create a VM in `group` and wait for its agent; returns its hostname. */
export async function createVm(d: TestDaemon, group: string, body: Record<string, unknown> = {}): Promise<string> {
  const wait = body.userdata !== undefined ? "userdata" : "agent";
  const r = await call(d.socketPath, "POST", `/hostgroup/${group}/nodes?wait=${wait}&timeout=120s`, { body: JSON.stringify(body) });
  if (r.status !== 201) throw new Error(`create in ${group}: HTTP ${r.status} ${r.text}`);
  return (r.json() as { hostname: string }).hostname;
}
