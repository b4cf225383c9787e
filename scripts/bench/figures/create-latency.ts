/**
 * Figure 1: sandbox create → agent ready (`wait=agent`) against the floor, `runc run` of an
 * identical bundle (lib/runc-floor.ts) running tini → /bin/true. Also measured, to name the
 * cause of a miss: each runc call on its own (create, start, state, delete), the storage set-up
 * a Paddock VM adds (sparse ext4 + mkfs + loop mount + overlay), and node's start-up inside a
 * sandbox (the guest agent is a node process), and the floor of any agent written in Node: the
 * same bundle running tini → node serving HTTP on a Unix socket, `runc run` until it listens.
 * Target: p50 ≤ 2× the floor and < 150 ms.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../../shared/exec.js";
import { GUEST_NODE_PATH } from "../../../tenant-daemon/runtime/oci-spec.js";
import { BENCH_GROUP, deleteVm, startDaemon, type BenchOptions, type DaemonLab } from "../lib/context.js";
import { FloorBundle, NODE_AGENT_FLOOR_ARGS, runcExec } from "../lib/runc-floor.js";
import { idmapBind, pinUserAndNetns, unpinNamespace } from "../../../tenant-daemon/runtime/nsutil.js";
import { fmt, row, type FigureResult } from "../lib/report.js";
import { nowMs, timed } from "../lib/stats.js";

/** Storage set-up of one Paddock VM, step by step (same commands as tenant-daemon/storage/vm-disk.ts). */
async function storageSteps(dir: string, lower: string, sizeBytes: number): Promise<{ mkfsMs: number; mountMs: number; umountMs: number }> {
  const img = path.join(dir, "disk.img");
  const disk = path.join(dir, "disk");
  const root = path.join(dir, "rootfs");
  await fs.mkdir(disk, { recursive: true });
  await fs.mkdir(root, { recursive: true });
  const t0 = nowMs();
  const h = await fs.open(img, "w");
  await h.truncate(sizeBytes);
  await h.close();
  await run("mkfs.ext4", ["-q", "-F", "-m", "0", "-L", "paddock-vm", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", img]);
  const mkfsMs = nowMs() - t0;
  const t1 = nowMs();
  await run("mount", ["-t", "ext4", "-o", "loop,noatime", img, disk]);
  await fs.mkdir(path.join(disk, "upper"));
  await fs.mkdir(path.join(disk, "work"));
  await run("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${disk}/upper,workdir=${disk}/work`, root]);
  const mountMs = nowMs() - t1;
  const t2 = nowMs();
  await run("umount", [root]);
  await run("umount", [disk]);
  const umountMs = nowMs() - t2;
  await fs.rm(img, { force: true });
  await fs.rm(disk, { recursive: true, force: true });
  await fs.rm(root, { recursive: true, force: true });
  return { mkfsMs, mountMs, umountMs };
}

/**
 * Creates on a daemon with a warm pool of 1: `steady` waits for the pool to be ready before
 * each timed create, `backToBack` does not. Each VM is deleted before the next create.
 * `daemonArgv`: the build the lab's daemon runs (the warm daemon is the same build).
 */
async function warmCreates(n: number, onTenant: (tenantId: string) => void, daemonArgv: readonly string[]): Promise<{ steady: number[]; backToBack: number[] }> {
  const { d } = await startDaemon({ warm_pool: { [BENCH_GROUP]: 1 } }, daemonArgv);
  onTenant(d.tenantId);
  const untilReady = async (): Promise<void> => {
    const deadline = Date.now() + 120_000;
    while ((await d.warmPool(BENCH_GROUP)).ready < 1) {
      if (Date.now() > deadline) throw new Error("the warm pool did not fill within 120 s");
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const once = async (): Promise<number> => {
    const [ms, r] = await timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=120s`, {}));
    if (r.status !== 201) throw new Error(`create wait=agent (warm pool) failed: ${r.text}`);
    await deleteVm(d, (r.json as { hostname: string }).hostname);
    return ms;
  };
  try {
    const steady: number[] = [];
    const backToBack: number[] = [];
    await untilReady();
    await once();
    for (let i = 0; i < n; i++) {
      await untilReady();
      steady.push(await once());
    }
    await untilReady();
    for (let i = 0; i < n; i++) backToBack.push(await once());
    return { steady, backToBack };
  } finally {
    await d.destroy();
  }
}

/** Figure 1. `onTenant` is told the tenant id of each extra daemon started (for the leak check). */
export async function figureCreate(lab: DaemonLab, opts: BenchOptions, onTenant: (tenantId: string) => void): Promise<FigureResult> {
  const { d } = lab;
  const n = opts.n;
  const waitAgent: number[] = [];
  const noWait: number[] = [];
  const del: number[] = [];
  // Warm-up (page cache, first-use paths); not counted.
  const [, w] = await timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=120s`, {}));
  if (w.status !== 201) throw new Error(`warm-up create failed: ${w.text}`);
  await deleteVm(d, (w.json as { hostname: string }).hostname);
  for (let i = 0; i < n; i++) {
    const [ms, r] = await timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes?wait=agent&timeout=120s`, {}));
    if (r.status !== 201) throw new Error(`create wait=agent failed: ${r.text}`);
    waitAgent.push(ms);
    const [dms] = await timed(() => deleteVm(d, (r.json as { hostname: string }).hostname));
    del.push(dms);
  }
  for (let i = 0; i < n; i++) {
    const [ms, r] = await timed(() => d.post(`/hostgroup/${BENCH_GROUP}/nodes`, {}));
    if (r.status !== 201) throw new Error(`create failed: ${r.text}`);
    noWait.push(ms);
    await deleteVm(d, (r.json as { hostname: string }).hostname);
  }

  const warm = await warmCreates(n, onTenant, d.daemonArgv);

  // The floor of a node agent: the floor bundle's runc run, its process node serving HTTP on a
  // Unix socket (nothing else), exiting once it listens — what any agent written in Node pays.
  const nodeFloor = await FloorBundle.prepare(path.join(opts.imageDir, "debian-12", "rootfs"), NODE_AGENT_FLOOR_ARGS);
  const nodeFloorRun: number[] = [];
  try {
    await nodeFloor.runOnce();
    for (let i = 0; i < n; i++) nodeFloorRun.push(await nodeFloor.runOnce());
  } finally {
    await nodeFloor.dispose();
  }

  const floor = await FloorBundle.prepare(path.join(opts.imageDir, "debian-12", "rootfs"));
  const floorRun: number[] = [];
  const steps = { create: [] as number[], start: [] as number[], state: [] as number[], del: [] as number[] };
  const storage = { mkfs: [] as number[], mount: [] as number[], umount: [] as number[] };
  try {
    await floor.runOnce();
    for (let i = 0; i < n; i++) floorRun.push(await floor.runOnce());
    for (let i = 0; i < n; i++) {
      const s = await floor.steps();
      steps.create.push(s.createMs);
      steps.start.push(s.startMs);
      steps.state.push(s.stateMs);
      steps.del.push(s.deleteMs);
    }
    const sdir = await fs.mkdtemp("/tmp/pdkstor-");
    try {
      for (let i = 0; i < Math.min(n, 5); i++) {
        const s = await storageSteps(sdir, path.join(opts.imageDir, "debian-12", "rootfs"), 2 ** 30);
        storage.mkfs.push(s.mkfsMs);
        storage.mount.push(s.mountMs);
        storage.umount.push(s.umountMs);
      }
    } finally {
      await run("umount", [path.join(sdir, "rootfs")], { allowFailure: true }).catch(() => undefined);
      await run("umount", [path.join(sdir, "disk")], { allowFailure: true }).catch(() => undefined);
      await fs.rm(sdir, { recursive: true, force: true });
    }
  } finally {
    await floor.dispose();
  }
  // The sandbox boundary's cost at the runtime: the same floor without it, and with each half.
  const boundary = { none: [] as number[], seccomp: [] as number[], userns: [] as number[] };
  for (const variant of ["none", "seccomp", "userns"] as const) {
    const b = await FloorBundle.prepare(path.join(opts.imageDir, "debian-12", "rootfs"), undefined, variant);
    try {
      await b.runOnce();
      for (let i = 0; i < n; i++) boundary[variant].push(await b.runOnce());
    } finally {
      await b.dispose();
    }
  }
  // What a Paddock boot adds for user namespaces: the userns+netns pin and the idmapped image bind.
  const nsDir = await fs.mkdtemp("/tmp/pdkns-");
  const pinMs: number[] = [];
  const idmapMs: number[] = [];
  try {
    const range = { uidStart: 1_800_065_536, size: 65_536 };
    await fs.mkdir(path.join(nsDir, "lower"));
    for (let i = 0; i < n; i++) {
      const netns = `pdkbench-ns-${process.pid}`;
      const t0 = nowMs();
      await pinUserAndNetns(path.join(nsDir, "userns"), `/var/run/netns/${netns}`, range);
      pinMs.push(nowMs() - t0);
      await unpinNamespace(path.join(nsDir, "userns"));
      await run("ip", ["netns", "del", netns], { allowFailure: true });
      const t1 = nowMs();
      await idmapBind(path.join(opts.imageDir, "debian-12", "rootfs"), path.join(nsDir, "lower"), range);
      idmapMs.push(nowMs() - t1);
      await run("umount", [path.join(nsDir, "lower")]);
    }
  } finally {
    await run("umount", [path.join(nsDir, "lower")], { allowFailure: true }).catch(() => undefined);
    await unpinNamespace(path.join(nsDir, "userns")).catch(() => undefined);
    await fs.rm(nsDir, { recursive: true, force: true });
  }
  const nodeStart: number[] = [];
  const trueExec: number[] = [];
  for (let i = 0; i < n; i++) {
    nodeStart.push((await runcExec(lab.probeContainer, [GUEST_NODE_PATH, "-e", "0"])).ms);
    trueExec.push((await runcExec(lab.probeContainer, ["/bin/true"])).ms);
  }

  const rows = [
    row("f1.wait-agent", "Paddock, no warm pool: POST nodes?wait=agent → agent ready (boot on demand)", "ms", "paddock", waitAgent, { vs: "f1.floor" }),
    row("f1.floor", "floor: runc run (same bundle, tini → /bin/true)", "ms", "baseline", floorRun),
    row("f1.floor-node", "floor of a node agent: runc run (same bundle, tini → node listening on a Unix socket)", "ms", "baseline", nodeFloorRun, { vs: "f1.floor" }),
    row("f1.warm", "Paddock, warm pool: POST nodes?wait=agent → agent ready, pool refilled before each", "ms", "paddock", warm.steady, { vs: "f1.floor" }),
    row("f1.warm-b2b", "Paddock, warm pool: the same back to back (create, delete, next create at once)", "ms", "info", warm.backToBack, { vs: "f1.floor" }),
    row("f1.no-wait", "Paddock: POST nodes (no wait) → 201", "ms", "info", noWait, { vs: "f1.floor" }),
    row("f1.delete", "Paddock: DELETE node", "ms", "info", del),
    row("f1.floor-bare", "boundary cost: runc run of the floor bundle without user/cgroup namespaces, seccomp or no_new_privs", "ms", "info", boundary.none),
    row("f1.floor-seccomp", "boundary cost: the same with the seccomp profile only", "ms", "info", boundary.seccomp, { vs: "f1.floor-bare" }),
    row("f1.floor-userns", "boundary cost: the same with the user and cgroup namespaces and no_new_privs only", "ms", "info", boundary.userns, { vs: "f1.floor-bare" }),
    row("f1.nsutil-pin", "boundary cost: paddock-nsutil pin (a VM's userns + netns)", "ms", "cause", pinMs),
    row("f1.nsutil-idmap", "boundary cost: paddock-nsutil idmap (a VM's idmapped image bind)", "ms", "cause", idmapMs),
    row("f1.runc-create", "cause: runc create (floor bundle)", "ms", "cause", steps.create),
    row("f1.runc-start", "cause: runc start", "ms", "cause", steps.start),
    row("f1.runc-state", "cause: runc state (one call)", "ms", "cause", steps.state),
    row("f1.runc-delete", "cause: runc delete -f", "ms", "cause", steps.del),
    row("f1.mkfs", "cause: storage: truncate 1 GiB + mkfs.ext4", "ms", "cause", storage.mkfs),
    row("f1.mount", "cause: storage: loop mount + overlay mount", "ms", "cause", storage.mount),
    row("f1.node-start", "cause: runc exec node -e 0 in a sandbox", "ms", "cause", nodeStart, { vs: "f1.true-exec" }),
    row("f1.true-exec", "cause: runc exec /bin/true in a sandbox", "ms", "cause", trueExec),
  ];
  const by = (id: string): number => rows.find((r) => r.id === id)?.summary.p50 ?? NaN;
  const p50 = by("f1.wait-agent");
  const fl = by("f1.floor");
  const cause =
    `p50 ${fmt(p50)} ms vs floor ${fmt(fl)} ms, of which ${fmt(p50 - by("f1.no-wait"))} ms is waiting for the agent after the sandbox runs (wait=agent minus no-wait create); per call measured: runc create ${fmt(by("f1.runc-create"))} + start ${fmt(by("f1.runc-start"))} + ` +
    `state ${fmt(by("f1.runc-state"))} + delete ${fmt(by("f1.runc-delete"))} ms; storage mkfs ${fmt(by("f1.mkfs"))} + mounts ${fmt(by("f1.mount"))} ms; ` +
    `node start-up in a sandbox ≈ ${fmt(by("f1.node-start") - by("f1.true-exec"))} ms (runc exec node −e 0 minus runc exec /bin/true) before the agent can listen`;
  const w50 = by("f1.warm");
  const warmCause = `p50 ${fmt(w50)} ms for a hand-out (state write + response + secret sync) vs floor ${fmt(fl)} ms; back to back ${fmt(by("f1.warm-b2b"))} ms`;
  const target = (label: string, v: number, why: string): FigureResult["targets"] => [
    { text: `create wait=agent p50 ≤ 2× floor (runc run), ${label}`, met: v <= 2 * fl, measured: `${fmt(v)} ms vs 2 × ${fmt(fl)} = ${fmt(2 * fl)} ms (${(v / fl).toFixed(2)}×)`, ...(v <= 2 * fl ? {} : { cause: why }) },
    { text: `create wait=agent p50 < 150 ms, ${label}`, met: v < 150, measured: `${fmt(v)} ms`, ...(v < 150 ? {} : { cause: why }) },
  ];
  return {
    num: 1,
    title: "Sandbox create → agent ready (wait=agent) vs runc run",
    rows,
    targets: [...target("warm pool (paddock.warm_pool: 1, the sandbox template's setting)", w50, warmCause), ...target("no warm pool (boot on demand)", p50, cause)],
    notes: [
      `n=${n} each after one warm-up; creates in sequence, each deleted before the next; the floor bundle is rendered by renderOciSpec (same binds, namespaces, user namespace over an idmapped image, seccomp, cgroup limits) over an overlay of the debian-12 image, with a fresh netns instead of Paddock's prepared one.`,
      "Boundary cost: f1.floor minus f1.floor-bare is what the user namespace, cgroup namespace, seccomp and no_new_privs cost runc per sandbox; a Paddock boot adds the nsutil pin and idmap rows on top (the pin runs in parallel with the disk).",
      "Warm pool: a second daemon with `paddock.warm_pool: { bench: 1 }`; 'refilled before each' waits for paddock_vm_warm{state=\"ready\"} = 1 on /metrics before timing a create (a create arriving when the pool is ready), 'back to back' does not wait (a create may find the pool still booting and boot its own).",
    ],
    chartLines: [{ unit: "ms", value: 150, label: "150 ms target" }, { unit: "ms", value: 2 * fl, label: "2× floor" }],
  };
}
