/**
 * Figure 11: cold fork of a 2 GiB disk with `--mb` MiB (default 100) written: `POST /vm/h/commit`
 * of the running VM (pause, fsfreeze, copy, thaw, resume) and `POST /vm/commits/{id}/fork`
 * (`wait=agent`: disk copy + boot + agent + fix-ups; `wait=none`: disk copy + boot), against the
 * plain copies of the same `.img` the daemon makes (`cp --reflink=auto`, which on ext4 copies the
 * data extents found with SEEK_DATA/SEEK_HOLE, and `cp --sparse=always`, which reads every byte
 * and punches holes) and a fresh create of the same size. Its own tenant daemon (one isolated
 * group with 2 GiB disks); every fork is deleted between samples, the commits (kept while their
 * source VM exists, as in Slicer) with the daemon at the end.
 */
import { promises as fs } from "node:fs";
import path from "node:path";
import { run } from "../../../shared/exec.js";
import { TestDaemon, randomIsolatedRange } from "../../lib/daemon-harness.js";
import { execBuffered, type BenchOptions } from "../lib/context.js";
import { row, type FigureResult } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

const GROUP = "fork";

async function timedPost(d: TestDaemon, p: string, body: unknown, status: number): Promise<{ ms: number; json: Record<string, unknown> }> {
  const t0 = nowMs();
  const r = await d.post(p, body);
  const ms = nowMs() - t0;
  if (r.status !== status) throw new Error(`POST ${p} answered ${r.status}: ${r.text.slice(0, 300)}`);
  return { ms, json: r.json as Record<string, unknown> };
}

async function del(d: TestDaemon, p: string): Promise<void> {
  const r = await d.del(p);
  if (r.status !== 200) throw new Error(`DELETE ${p} answered ${r.status}: ${r.text.slice(0, 300)}`);
}

/** ms of `cp <flags> src dst`, dst removed afterwards. */
async function cpMs(flags: readonly string[], src: string, dst: string): Promise<number> {
  const t0 = nowMs();
  await run("cp", [...flags, src, dst], { timeoutMs: 600_000 });
  const ms = nowMs() - t0;
  await fs.rm(dst, { force: true });
  return ms;
}

export async function figureColdFork(opts: BenchOptions, onTenant: (id: string) => void): Promise<FigureResult> {
  const n = Math.max(3, Math.min(opts.n, 10));
  const d = await TestDaemon.create({
    hostGroups: [{ name: GROUP, count: 0, vcpu: 1, ram_mb: 512, storage: "image", storage_size: "2G", network: { mode: "isolated", range: randomIsolatedRange() } }],
  });
  onTenant(d.tenantId);
  const commit: number[] = [], forkAgent: number[] = [], forkNone: number[] = [], create: number[] = [], cpExtents: number[] = [], cpSparse: number[] = [];
  const notes: string[] = [];
  try {
    await d.start();
    const src = (await timedPost(d, `/hostgroup/${GROUP}/nodes?wait=agent&timeout=120s`, { persistent: true }, 201)).json.hostname as string;
    await execBuffered(d, src, ["/bin/sh", "-c", `head -c ${opts.mb * 2 ** 20} /dev/urandom > /root/blob && sync`]);
    const img = path.join(d.stateDir, "disks", `${src}.img`);
    const st = await fs.stat(img);
    notes.push(`source disk: ${(st.size / 2 ** 30).toFixed(1)} GiB apparent, ${(st.blocks * 512 / 2 ** 20).toFixed(0)} MiB allocated (mkfs + ${opts.mb} MiB written).`);
    const scratch = await fs.mkdtemp(path.join(d.stateDir, "cp-"));
    for (let i = 0; i < n; i++) {
      const c = await timedPost(d, `/vm/${src}/commit`, {}, 200);
      commit.push(c.ms);
      const id = c.json.commit_id as string;
      const fa = await timedPost(d, `/vm/commits/${id}/fork?wait=agent&timeout=120s`, {}, 200);
      forkAgent.push(fa.ms);
      await del(d, `/hostgroup/${GROUP}/nodes/${fa.json.hostname as string}`);
      const fnone = await timedPost(d, `/vm/commits/${id}/fork?wait=none`, {}, 200);
      forkNone.push(fnone.ms);
      // Let its finalisation end before deleting it (wait for the agent through exec).
      await execBuffered(d, fnone.json.hostname as string, ["/bin/true"]).catch(() => undefined);
      await del(d, `/hostgroup/${GROUP}/nodes/${fnone.json.hostname as string}`);
      const cr = await timedPost(d, `/hostgroup/${GROUP}/nodes?wait=agent&timeout=120s`, {}, 201);
      create.push(cr.ms);
      await del(d, `/hostgroup/${GROUP}/nodes/${cr.json.hostname as string}`);
      // The same copy on the same file system, outside the daemon (source VM running; a floor).
      cpExtents.push(await cpMs(["--reflink=auto", "--sparse=auto"], img, path.join(scratch, "a.img")));
      cpSparse.push(await cpMs(["--reflink=never", "--sparse=always"], img, path.join(scratch, "b.img")));
    }
    await fs.rm(scratch, { recursive: true, force: true });
  } finally {
    await d.destroy();
  }
  return {
    num: 11,
    title: `Cold fork of a 2 GiB disk with ${opts.mb} MiB written: commit and fork vs the plain copies`,
    rows: [
      row("f11.commit", "Paddock: POST /vm/h/commit (running VM: pause, fsfreeze, copy, thaw, resume)", "ms", "paddock", commit, { vs: "f11.cp-extents" }),
      row("f11.cp-extents", "baseline: cp --reflink=auto (ext4: data extents via SEEK_DATA + copy_file_range)", "ms", "baseline", cpExtents),
      row("f11.cp-sparse", "alternative: cp --sparse=always (reads every byte, punches holes)", "ms", "cause", cpSparse),
      row("f11.fork-agent", "Paddock: POST /vm/commits/{id}/fork?wait=agent (copy, boot, agent, fix-ups)", "ms", "paddock", forkAgent, { vs: "f11.create" }),
      row("f11.fork-none", "Paddock: POST /vm/commits/{id}/fork?wait=none (copy, boot)", "ms", "paddock", forkNone),
      row("f11.create", "baseline: POST nodes?wait=agent, same size, no pool (mkfs or spare disk)", "ms", "baseline", create),
    ],
    targets: [],
    notes: [...notes, `${n} samples of each, interleaved; host file system ext4 (no reflink: --reflink=auto falls back to the extent copy).`],
  };
}
