/**
 * Figure 13: density — tenants and VMs on one host. A real supervisor (`paddock up`, the lab of
 * lib/supervisor-lab.ts) grows to 10 and 50 tenants (`--full`: 10, 50, 100, 200) with 2.5 small
 * VMs per tenant spread round-robin (500 at 200 tenants), and at each step measures:
 *
 * - memory: each idle tenant daemon's RSS and private memory (RssAnon), a sample of VMs' private
 *   memory (agent + tini), the supervisor's RSS (the host's used memory over the start goes to
 *   the notes only: other users' work on the shared host moves it too);
 * - latency at that density: tenant create → ready, VM create (`wait=agent`) and buffered exec
 *   `/bin/true` through the gateway, and `GET /nodes` through the gateway (p50/p95);
 * - a supervisor crash (SIGKILL) and restart until every daemon is adopted (same pid, its
 *   tenant answering through the gateway);
 * - idle CPU after the restart, with every daemon adopted and nothing asked: the supervisor's,
 *   each daemon's, and a sample of VMs' (their processes' user + system time per second);
 * - host counts: tasks, nftables tables, network namespaces, the supervisor's open fds.
 *
 * At the top step every tenant is deleted (4 at a time) and the wall time reported. The tenants
 * use the lab's `density` template: the minimal image, 1 vCPU / 256 MiB / 256 MiB sparse disk
 * VMs, no warm pool, and a pids budget of 96 per tenant (the host's pid_max bounds the sum of
 * tenant budgets: supervisor/tenant-provisioning.ts checkPidsBudget).
 */
import crypto from "node:crypto";
import { promises as fs } from "node:fs";
import type { BenchOptions } from "../lib/context.js";
import { SupervisorLab, type LabTenant } from "../lib/supervisor-lab.js";
import { anonBytes, memoryOf, mib, rssBytes } from "../lib/procs.js";
import { idleCpuMsPerS } from "./footprint-vms.js";
import { sandboxPids } from "../lib/runc-floor.js";
import { fmt, row, type FigureResult, type Row } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";
import { run } from "../../../shared/exec.js";
import { request } from "../../lib/http-client.js";
import { pool } from "../lib/pool.js";

/** VMs per tenant, spread round-robin (500 VMs over 200 tenants). */
const VMS_PER_TENANT = 2.5;
/** Creates in flight (tenants and VMs) on the 2-core machine. */
const CONCURRENCY = 4;

/** The lab's tenant template (supervisor/tenant-template.ts format). */
export const DENSITY_TEMPLATE = `paddock_template:
  description: bench density - small API-launched VMs, no warm pool
  overridable:
    sbox:
      max_vcpu: 1
      max_ram_mb: 256
      max_storage_size: 256M
  limits:
    max_vms: 8
    max_vcpu: 8
    max_ram_bytes: 2147483648
    max_disk_bytes: 2147483648
    max_pids: 96
config:
  host_groups:
    - name: sbox
      count: 0
      vcpu: 1
      ram_mb: 256
      storage: image
      storage_size: 256M
      network:
        mode: isolated
        drop: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        allow: ["0.0.0.0/0"]
  image: debian-12
  hypervisor: oci
  graceful_shutdown: true
`;

async function hostUsedBytes(): Promise<number> {
  const text = await fs.readFile("/proc/meminfo", "utf8");
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return (kb("MemTotal") - kb("MemAvailable")) * 1024;
}

async function hostCounts(supPid: number): Promise<{ tasks: number; nftTables: number; netns: number; supFds: number }> {
  const loadavg = await fs.readFile("/proc/loadavg", "utf8");
  const tasks = Number(/\d+\/(\d+)/.exec(loadavg)?.[1] ?? NaN);
  // Counts only: a slow nft (it stalled past 30 s at 50 tenants on the loaded host) must not end the figure.
  const count = async (argv: string[]): Promise<number> => {
    const r = await run(argv[0] as string, argv.slice(1), { allowFailure: true, timeoutMs: 120_000 }).catch(() => undefined);
    return r ? r.stdout.split("\n").filter(Boolean).length : NaN;
  };
  const fds = await fs.readdir(`/proc/${supPid}/fd`).then((l) => l.length, () => NaN);
  // `nft list flowtables` prints every table's header and fetches no rules: `nft list tables`
  // decodes every rule of every table (~10 s of CPU at 200 tenants; shared/nft-cli.ts).
  const tables = await run("nft", ["list", "flowtables"], { allowFailure: true, timeoutMs: 120_000 }).catch(() => undefined);
  const nftTables = tables ? tables.stdout.split("\n").filter((l) => l.startsWith("table ")).length : NaN;
  return { tasks, nftTables, netns: await count(["ip", "netns", "list"]), supFds: fds };
}

interface LabVm {
  tenant: LabTenant;
  hostname: string;
}

/** Figure 13 (rows `f13.t<tenants>.<what>` per step, read back by scripts/bench/write-docs.ts for the curve). */
export async function figureDensity(opts: BenchOptions, onTenantIds: (ids: string[]) => void, log: (msg: string) => void): Promise<FigureResult> {
  const steps = opts.densitySteps ?? (opts.full ? [10, 50, 100, 200] : [10]);
  const rows: Row[] = [];
  const notes: string[] = [];
  const tenants: LabTenant[] = [];
  const vms: LabVm[] = [];
  const usedAtStart = await hostUsedBytes();
  const lab = await SupervisorLab.start(opts.imageDir, { blockPrefix: 26, templates: { density: DENSITY_TEMPLATE } });
  const gw = (t: LabTenant): { target: { host: string; port: number }; headers: Record<string, string> } => ({ target: { host: "127.0.0.1", port: lab.gatewayPort }, headers: { authorization: `Bearer ${t.token}` } });
  const pick = <T>(xs: readonly T[]): T => xs[crypto.randomInt(0, xs.length)] as T;
  let deleteWall = NaN;
  const deleteEach: number[] = [];
  // A step that fails ends the growth, but what the earlier steps measured is kept and everything
  // is still deleted (and timed): at 200 tenants an hour of measuring is not thrown away.
  let failure: string | undefined;
  try {
    try {
      for (const n of steps) {
      const label = `${n} tenants`;
      // 1. Tenants up to n.
      log(`figure 13: growing to ${n} tenants`);
      const newIds = Array.from({ length: n - tenants.length }, (_, i) => `dn${crypto.randomBytes(2).toString("hex")}${tenants.length + i}`.slice(0, 12));
      const created = await pool(CONCURRENCY, newIds.map((id) => async () => {
        const r = await lab.createTenant(id, {}, "density");
        tenants.push(r.tenant);
        return r.readyMs;
      }));
      // 2. VMs up to n × 2.5, round-robin over the tenants.
      const wantVms = Math.round(n * VMS_PER_TENANT);
      log(`figure 13: growing to ${wantVms} VMs`);
      const vmJobs = Array.from({ length: wantVms - vms.length }, (_, i) => {
        const t = tenants[(vms.length + i) % tenants.length] as LabTenant;
        return async (): Promise<number> => {
          const g = gw(t);
          const t0 = nowMs();
          const r = await request(g.target, "POST", "/hostgroup/sbox/nodes?wait=agent&timeout=180s", "{}", { ...g.headers, "content-type": "application/json" });
          if (r.status !== 201) throw new Error(`VM create in ${t.id} failed (${r.status}): ${r.text.slice(0, 300)}`);
          vms.push({ tenant: t, hostname: (r.json as { hostname: string }).hostname });
          return nowMs() - t0;
        };
      });
      const vmCreate = await pool(CONCURRENCY, vmJobs);
      // 3. Exec and gateway latency at this density (random VMs / tenants, one at a time).
      const exec: number[] = [];
      for (let i = 0; i < 30; i++) {
        const v = pick(vms);
        const g = gw(v.tenant);
        const t0 = nowMs();
        const r = await request(g.target, "POST", `/vm/${v.hostname}/exec?cmd=/bin/true&buffered=true&uid=0`, undefined, g.headers);
        exec.push(nowMs() - t0);
        if (r.status !== 200) throw new Error(`exec on ${v.tenant.id}/${v.hostname} failed (${r.status}): ${r.text.slice(0, 300)}`);
      }
      const gateway: number[] = [];
      for (let i = 0; i < 100; i++) {
        const g = gw(pick(tenants));
        const t0 = nowMs();
        const r = await request(g.target, "GET", "/nodes", undefined, g.headers);
        gateway.push(nowMs() - t0);
        if (r.status !== 200) throw new Error(`GET /nodes through the gateway failed (${r.status})`);
      }
      // 4. Memory, after the creates settled.
      await new Promise((r) => setTimeout(r, 2000));
      const pids = new Map<string, number>();
      for (const t of tenants) pids.set(t.id, await lab.daemonPid(t.id));
      const dRss: number[] = [], dAnon: number[] = [];
      for (const pid of pids.values()) {
        dRss.push(mib(await rssBytes(pid)));
        dAnon.push(mib(await anonBytes(pid)));
      }
      const vmAnon: number[] = [];
      for (const v of [...vms].sort(() => Math.random() - 0.5).slice(0, 20)) {
        const m = await memoryOf(await sandboxPids(`pdk-${v.tenant.id}-${v.hostname}`));
        vmAnon.push(mib(m.anonBytes));
      }
      const supRss = mib(await rssBytes(lab.pid));
      const counts = await hostCounts(lab.pid);
      // 5. Supervisor crash → restart → every daemon adopted (same pid, answering via the gateway).
      log(`figure 13: supervisor crash and restart with ${n} daemons`);
      const t0 = nowMs();
      const upMs = await lab.crashAndRestart();
      const pending = new Set(tenants.map((t) => t.id));
      const deadline = nowMs() + 600_000;
      while (pending.size > 0) {
        for (const t of tenants) {
          if (!pending.has(t.id)) continue;
          const r = await lab.admin("GET", `/tenants/${t.id}`);
          const d = (r.json as { daemon?: { pid?: number; state?: string } } | undefined)?.daemon;
          if (d?.state !== "running") continue;
          if (d.pid !== pids.get(t.id)) throw new Error(`tenant ${t.id}: daemon pid ${pids.get(t.id)} was not adopted (now ${d.pid})`);
          const g = gw(t);
          if ((await request(g.target, "GET", "/nodes", undefined, g.headers).catch(() => undefined))?.status === 200) pending.delete(t.id);
        }
        if (pending.size > 0) {
          if (nowMs() > deadline) throw new Error(`${pending.size} daemons not adopted 600 s after the supervisor restart`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      const adoptMs = nowMs() - t0;
      // 6. Idle CPU with every daemon adopted (the supervisor polls adopted pids) and nothing asked.
      await new Promise((r) => setTimeout(r, 3000));
      const sampled = [...vms].sort(() => Math.random() - 0.5).slice(0, 20);
      const sampledPids = await Promise.all(sampled.map((v) => sandboxPids(`pdk-${v.tenant.id}-${v.hostname}`)));
      const daemonPids = [...pids.values()];
      const [supCpu, daemonsCpu, vmsCpu] = await Promise.all([idleCpuMsPerS([lab.pid]), idleCpuMsPerS(daemonPids), idleCpuMsPerS(sampledPids.flat())]);
      const created50 = created.length ? created : [NaN];
      rows.push(
        row(`f13.t${n}.daemon-anon`, `${label}: tenant daemon private (RssAnon), each`, "MiB", "paddock", dAnon, { group: "memory per tenant / VM" }),
        row(`f13.t${n}.daemon-rss`, `${label}: tenant daemon RSS, each`, "MiB", "info", dRss, { group: "memory per tenant / VM" }),
        row(`f13.t${n}.vm-anon`, `${label}: VM private (agent + tini), ${vmAnon.length} sampled of ${vms.length}`, "MiB", "paddock", vmAnon, { group: "memory per tenant / VM" }),
        row(`f13.t${n}.sup-rss`, `${label}: supervisor RSS`, "MiB", "paddock", [supRss], { group: "supervisor" }),
        row(`f13.t${n}.tenant-create`, `${label}: tenant create → ready (${created.length} created in this step, ${CONCURRENCY} at a time)`, "ms", "paddock", created50, { group: "create" }),
        row(`f13.t${n}.vm-create`, `${label}: VM create wait=agent via gateway (${vmCreate.length} in this step, ${CONCURRENCY} at a time)`, "ms", "paddock", vmCreate.length ? vmCreate : [NaN], { group: "create" }),
        row(`f13.t${n}.exec`, `${label}: buffered exec /bin/true via gateway, ${vms.length} VMs`, "ms", "paddock", exec, { group: "request" }),
        row(`f13.t${n}.gateway`, `${label}: GET /nodes via gateway`, "ms", "paddock", gateway, { group: "request" }),
        row(`f13.t${n}.sup-up`, `${label}: supervisor SIGKILL → restarted admin API`, "ms", "info", [upMs], { group: "supervisor restart" }),
        row(`f13.t${n}.sup-cpu`, `${label}: supervisor idle CPU, every daemon adopted (3 windows of 10 s)`, "ms/s", "paddock", supCpu, { group: "idle CPU" }),
        row(`f13.t${n}.daemon-cpu`, `${label}: tenant daemon idle CPU, each (all ${daemonPids.length} together ÷ ${daemonPids.length}, same windows)`, "ms/s", "paddock", daemonsCpu.map((c) => c / daemonPids.length), { group: "idle CPU" }),
        row(`f13.t${n}.vm-cpu`, `${label}: VM idle CPU (agent + tini), each (${sampled.length} sampled together ÷ ${sampled.length}, same windows)`, "ms/s", "paddock", vmsCpu.map((c) => c / Math.max(1, sampled.length)), { group: "idle CPU" }),
        row(`f13.t${n}.adopt-all`, `${label}: supervisor SIGKILL → all ${n} daemons adopted and answering`, "ms", "paddock", [adoptMs], { group: "supervisor restart" }),
      );
      notes.push(`${label}, ${vms.length} VMs: ${counts.tasks} host tasks, ${counts.nftTables} nftables tables, ${counts.netns} network namespaces (whole host, other users included), supervisor ${counts.supFds} open fds; host used memory (MemTotal − MemAvailable) +${fmt(mib((await hostUsedBytes()) - usedAtStart))} MiB over the start of the figure, other users' work included.`);
      }
    } catch (err) {
      failure = (err as Error).message.slice(0, 600);
      log(`figure 13 stopped growing at ${tenants.length} tenants / ${vms.length} VMs: ${failure}`);
      notes.push(`**Stopped growing** at ${tenants.length} tenants and ${vms.length} VMs: ${failure}`);
    }
    // 6. Delete everything (4 at a time): every tenant's VMs, disks, links, table and cgroup.
    log(`figure 13: deleting ${tenants.length} tenants and ${vms.length} VMs`);
    const t1 = nowMs();
    deleteEach.push(...(await pool(CONCURRENCY, tenants.map((t) => () => lab.deleteTenant(t.id)))));
    deleteWall = nowMs() - t1;
    const top = tenants.length;
    rows.push(
      row("f13.delete-each", `admin DELETE of a tenant with its VMs (${tenants.length}, ${CONCURRENCY} at a time)`, "ms", "paddock", deleteEach, { group: "delete" }),
      row("f13.delete-all", `delete all ${top} tenants and ${vms.length} VMs, wall`, "ms", "paddock", [deleteWall], { group: "delete all" }),
    );
  } finally {
    onTenantIds(lab.createdIds);
    await lab.stop();
  }
  notes.push(`Template \`density\` (scripts/bench/figures/density.ts): image debian-12, VMs of 1 vCPU / 256 MiB / 256 MiB sparse disk, isolated network, no warm pool, tenant pids budget 96; tenant blocks are /26s of a free /18 of 198.18.0.0/15 (256 blocks). ${lab.overlapRetries} tenant create(s) retried because another user's network overlapped the block.`);
  notes.push("Supervisor restart: SIGKILL (a crash; the daemons keep running) and `paddock up` again; the time includes waiting for the killed supervisor's ownership lock to go stale. Adopted means the registry shows the same daemon pid running and the tenant answers GET /nodes through the new gateway.");
  return {
    num: 13, title: `Density: tenants and VMs on one host (${steps.join(", ")} tenants; ${VMS_PER_TENANT} VMs per tenant)`, rows, targets: [], notes,
    ...(failure !== undefined && rows.length === 0 ? { error: failure } : {}),
  };
}
