/**
 * Figure 8: N concurrent creates (`wait=agent`) in one tenant — 20 by default, 50 with
 * `--full`: wall time, per-create latency, errors (must be 0) and distinct addresses (must be
 * N), against N concurrent `runc run`s of the floor bundle, and of the floor of a node agent
 * (the same bundle running node until it listens on a Unix socket: lib/runc-floor.ts
 * NODE_AGENT_FLOOR_ARGS). Then all N are deleted at once.
 */
import path from "node:path";
import { BENCH_GROUP, deleteVm, type BenchOptions, type DaemonLab } from "../lib/context.js";
import { FloorBundle, NODE_AGENT_FLOOR_ARGS } from "../lib/runc-floor.js";
import { fmt, row, type FigureResult } from "../lib/report.js";
import { nowMs, timed } from "../lib/stats.js";

export async function figureScale(lab: DaemonLab, opts: BenchOptions): Promise<FigureResult> {
  const count = opts.full ? 50 : 20;
  const { d } = lab;
  const t0 = nowMs();
  const results = await Promise.all(
    Array.from({ length: count }, () => timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=300s`, {}).catch((err: unknown) => ({ status: 0, text: String(err), json: undefined, headers: {} })))),
  );
  const wallMs = nowMs() - t0;
  const ok = results.filter(([, r]) => r.status === 201);
  const errors = results.length - ok.length;
  const hosts = ok.map(([, r]) => (r.json as { hostname: string }).hostname);
  const ips = new Set(ok.map(([, r]) => (r.json as { ip?: string }).ip).filter(Boolean));
  const firstErrors = results.filter(([, r]) => r.status !== 201).slice(0, 3).map(([, r]) => `${r.status} ${r.text.slice(0, 200)}`);
  const t1 = nowMs();
  const delResults = await Promise.allSettled(hosts.map((h) => deleteVm(d, h)));
  const delWallMs = nowMs() - t1;
  const delErrors = delResults.filter((r) => r.status === "rejected").length;

  const floor = await FloorBundle.prepare(path.join(opts.imageDir, "debian-12", "rootfs"));
  let floorWall = NaN;
  let floorEach: number[] = [];
  try {
    const f0 = nowMs();
    floorEach = await Promise.all(Array.from({ length: count }, () => floor.runOnce()));
    floorWall = nowMs() - f0;
  } finally {
    await floor.dispose();
  }
  const nodeFloor = await FloorBundle.prepare(path.join(opts.imageDir, "debian-12", "rootfs"), NODE_AGENT_FLOOR_ARGS);
  let nodeFloorWall = NaN;
  try {
    const f0 = nowMs();
    await Promise.all(Array.from({ length: count }, () => nodeFloor.runOnce()));
    nodeFloorWall = nowMs() - f0;
  } finally {
    await nodeFloor.dispose();
  }
  return {
    num: 8,
    title: `Scale: ${count} concurrent creates in one tenant`,
    rows: [
      row("f8.wall", `Paddock: wall time, ${count} concurrent creates wait=agent`, "ms", "paddock", [wallMs], { vs: "f8.floor-wall", group: "wall time" }),
      row("f8.floor-wall", `floor: wall time, ${count} concurrent runc run`, "ms", "baseline", [floorWall], { group: "wall time" }),
      row("f8.floor-node-wall", `floor of a node agent: wall time, ${count} concurrent runc run to a bare node listening`, "ms", "baseline", [nodeFloorWall], { vs: "f8.floor-wall", group: "wall time" }),
      row("f8.each", "Paddock: each create's latency (concurrent)", "ms", "paddock", ok.map(([ms]) => ms), { vs: "f8.floor-each", group: "each" }),
      row("f8.floor-each", "floor: each runc run's latency (concurrent)", "ms", "baseline", floorEach, { group: "each" }),
      row("f8.delete-wall", `Paddock: wall time, ${count} concurrent deletes`, "ms", "info", [delWallMs], { group: "wall time" }),
    ],
    targets: [
      { text: `${count} concurrent creates: 0 errors`, met: errors === 0, measured: `${errors} errors${firstErrors.length ? ` (${firstErrors.join("; ")})` : ""}` },
      { text: `${count} distinct addresses`, met: ips.size === count, measured: `${ips.size} distinct of ${ok.length} created` },
    ],
    notes: [`wall ${fmt(wallMs)} ms for ${count} (${fmt((count / wallMs) * 1000)} creates/s); ${delErrors} delete errors; deletes took ${fmt(delWallMs)} ms wall.`],
  };
}
