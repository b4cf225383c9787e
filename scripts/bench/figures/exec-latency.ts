/**
 * Figure 2: buffered exec of /bin/true in a running sandbox — through the tenant socket
 * (daemon → guest agent), against `runc exec` of the same and `nsenter` into the sandbox's
 * namespaces (the floor). Also measured to locate the cost: the same exec straight on the
 * guest agent's socket (no daemon hop), `GET /healthz` on the daemon socket (HTTP round trip
 * alone) and spawning /bin/true from node on the host.
 * Target: p50 < 15 ms.
 */
import { request } from "../../lib/http-client.js";
import type { BenchOptions, DaemonLab } from "../lib/context.js";
import { nsenterExec, runcExec, sandboxPid } from "../lib/runc-floor.js";
import { spawnTimed } from "../lib/procs.js";
import { fmt, row, signed, type FigureResult } from "../lib/report.js";
import { repeatTimed } from "../lib/stats.js";

export async function figureExec(lab: DaemonLab, opts: BenchOptions): Promise<FigureResult> {
  const n = opts.n * 3;
  const { d, probe } = lab;
  const q = "cmd=%2Fbin%2Ftrue&buffered=true";
  const check = async (p: Promise<{ status: number; text: string }>): Promise<void> => {
    const r = await p;
    if (r.status !== 200 || !/"exit_code":0/.test(r.text)) throw new Error(`exec failed (${r.status}): ${r.text.slice(0, 300)}`);
  };
  // Which path the agent serves exec on (/v1/exec behind the router, or /exec).
  let agentPath = "/v1/exec";
  if ((await request({ socketPath: lab.agentSocket }, "POST", `${agentPath}?${q}`)).status === 404) agentPath = "/exec";
  for (let i = 0; i < 3; i++) await check(d.post(`/vm/${probe}/exec?${q}`)); // warm-up
  const pid = await sandboxPid(lab.probeContainer);
  // Interleave the variants so load spikes from other users hit all of them alike.
  const socket: number[] = [], runc: number[] = [], nsenter: number[] = [], agent: number[] = [], health: number[] = [], spawnTrue: number[] = [];
  for (let i = 0; i < n; i++) {
    socket.push(...(await repeatTimed(1, () => check(d.post(`/vm/${probe}/exec?${q}`)))));
    runc.push((await runcExec(lab.probeContainer, ["/bin/true"])).ms);
    nsenter.push((await nsenterExec(pid, ["/bin/true"])).ms);
    agent.push(...(await repeatTimed(1, () => check(request({ socketPath: lab.agentSocket }, "POST", `${agentPath}?${q}`)))));
    health.push(...(await repeatTimed(1, () => d.get("/healthz"))));
    spawnTrue.push((await spawnTimed(["/bin/true"])).ms);
  }
  const rows = [
    row("f2.socket", "Paddock: POST /vm/h/exec /bin/true buffered (socket)", "ms", "paddock", socket, { vs: "f2.nsenter" }),
    row("f2.runc", "baseline: runc exec <id> /bin/true", "ms", "baseline", runc, { vs: "f2.nsenter" }),
    row("f2.nsenter", "floor: nsenter -t pid -m -u -i -n -p /bin/true", "ms", "baseline", nsenter),
    row("f2.agent", "cause: same exec on the guest agent's socket (no daemon)", "ms", "cause", agent, { vs: "f2.spawn" }),
    row("f2.healthz", "cause: GET /healthz on the daemon socket", "ms", "cause", health),
    row("f2.spawn", "cause: node spawn /bin/true on the host", "ms", "cause", spawnTrue),
  ];
  const by = (id: string): number => rows.find((r) => r.id === id)?.summary.p50 ?? NaN;
  const p50 = by("f2.socket");
  const met = p50 < 15;
  return {
    num: 2,
    title: "Buffered exec /bin/true: socket vs runc exec vs nsenter",
    rows,
    targets: [{
      text: "buffered exec p50 < 15 ms",
      met,
      measured: `${fmt(p50)} ms (runc exec ${fmt(by("f2.runc"))} ms, nsenter ${fmt(by("f2.nsenter"))} ms)`,
      ...(met ? {} : { cause: `agent alone ${fmt(by("f2.agent"))} ms (its spawn of /bin/true in the sandbox; a host node spawn costs ${fmt(by("f2.spawn"))} ms), daemon hop ${signed(p50 - by("f2.agent"))} ms (an HTTP round trip on the socket is ${fmt(by("f2.healthz"))} ms)` }),
    }],
    notes: [`n=${n} per variant, interleaved, after 3 warm-up execs; runc exec and nsenter are spawned from node (child_process.spawn), as the daemon would.`],
    chartLines: [{ unit: "ms", value: 15, label: "15 ms target" }],
  };
}
