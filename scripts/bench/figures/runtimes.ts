/**
 * Figures 9 and 10: the same sandbox on runc (`hypervisor: oci`) and on gVisor
 * (`hypervisor: gvisor`, runsc on the ptrace platform here: no KVM), measured in one run with the
 * two runtimes interleaved sample by sample, so the host's load hits both alike.
 *
 * Figure 9 is the Paddock-level half of figures 1, 2, 4, 5 and 7 on both runtimes (their
 * runc-only floors — `runc exec`, nsenter, `runc run` — have no gVisor counterpart): create →
 * agent ready, buffered exec of /bin/true, streamed exec throughput, cp in and out, and the
 * host memory and tasks of one idle VM. Figure 10 is syscall-heavy guest work, timed inside
 * the guest (`date +%s%N` around it, so exec overhead is not counted): compiling a small C
 * program with gcc, the program's own syscall loops, a Python file I/O loop, a shell fork/exec
 * file loop, 4 KiB writes with dd, and a `find` walk of /usr.
 *
 * Both daemons use the `debian-12-dev` image (`paddock image build debian-12-dev --packages
 * gcc,python3`, built by scripts/setup.sh): the default debian-12 image has neither gcc nor
 * python3, and installing them is a property of the image, not of the benchmark.
 */
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { TestDaemon, randomIsolatedRange } from "../../lib/daemon-harness.js";
import type { BenchOptions } from "../lib/context.js";
import { downloadCount, streamExec, uploadFile } from "../lib/http-load.js";
import { cgroupPids, memoryOf, mib } from "../lib/procs.js";
import { writeRandomFile } from "../lib/random-file.js";
import { fmt, row, type FigureResult, type Row } from "../lib/report.js";
import { nowMs } from "../lib/stats.js";

/** The runtimes compared, in the order rows are listed. */
export const BENCH_RUNTIMES = ["oci", "gvisor"] as const;
type Runtime = (typeof BENCH_RUNTIMES)[number];
const LABEL: Record<Runtime, string> = { oci: "runc", gvisor: "gVisor" };
/** The image with gcc and python3 (scripts/setup.sh builds it). */
export const DEV_IMAGE = "debian-12-dev";
const GROUP = "rt";

/** One runtime's daemon and its long-lived probe VM. */
interface RuntimeLab {
  runtime: Runtime;
  d: TestDaemon;
  probe: string;
}

/** Daemons started for these figures, destroyed by {@link stopRuntimeLabs}. */
export interface RuntimeLabs {
  labs: RuntimeLab[];
}

async function createVm(d: TestDaemon): Promise<string> {
  const r = await d.post(`/hostgroup/${GROUP}/nodes?wait=agent&timeout=180s`, {});
  if (r.status !== 201) throw new Error(`create failed (${r.status}): ${r.text}`);
  return (r.json as { hostname: string }).hostname;
}

async function deleteVm(d: TestDaemon, h: string): Promise<void> {
  const r = await d.del(`/hostgroup/${GROUP}/nodes/${h}`);
  if (r.status >= 300) throw new Error(`delete ${h} failed (${r.status}): ${r.text}`);
}

/** Buffered `sh -c script` as guest root. @returns stdout. @throws Error unless exit 0. */
async function sh(d: TestDaemon, h: string, script: string): Promise<string> {
  const q = new URLSearchParams([["cmd", "/bin/sh"], ["args", "-c"], ["args", script], ["buffered", "true"], ["uid", "0"]]);
  const r = await d.post(`/vm/${h}/exec?${q}`);
  const body = r.json as { stdout?: string; stderr?: string; exit_code?: number } | undefined;
  if (r.status !== 200 || body?.exit_code !== 0) throw new Error(`exec ${script.slice(0, 80)} failed (${r.status}): ${r.text.slice(0, 500)}`);
  return body.stdout ?? "";
}

/**
 * Start one daemon per runtime (1 vCPU, 1 GiB, 2 GiB sparse disk, isolated, the dev image) and
 * a probe VM in each. `onTenant` gets every tenant id (for the leak check). On failure every
 * daemon started is destroyed.
 */
export async function startRuntimeLabs(onTenant: (id: string, dir: string) => void): Promise<RuntimeLabs> {
  const labs: RuntimeLab[] = [];
  try {
    for (const runtime of BENCH_RUNTIMES) {
      const d = await TestDaemon.create({
        hostGroups: [{ name: GROUP, count: 0, vcpu: 1, ram_mb: 1024, storage: "image", storage_size: "2G", network: { mode: "isolated", range: randomIsolatedRange() } }],
        config: { hypervisor: runtime, image: DEV_IMAGE },
      });
      onTenant(d.tenantId, d.dir);
      labs.push({ runtime, d, probe: "" });
      await d.start();
      (labs[labs.length - 1] as RuntimeLab).probe = await createVm(d);
    }
    return { labs };
  } catch (err) {
    await stopRuntimeLabs({ labs });
    throw err;
  }
}

/** Stop and purge the daemons (and so their VMs). Never throws. */
export async function stopRuntimeLabs(l: RuntimeLabs): Promise<void> {
  for (const lab of l.labs) await lab.d.destroy().catch(() => undefined);
}

/** The VM's cgroup path (`linux.cgroupsPath` of its bundle), e.g. `/paddock/<t>/<h>`. */
async function vmCgroup(d: TestDaemon, h: string): Promise<string> {
  const spec = JSON.parse(await fs.readFile(path.join(d.runDir, "bundles", h, "config.json"), "utf8")) as { linux?: { cgroupsPath?: string } };
  return spec.linux?.cgroupsPath ?? `/paddock/${d.tenantId}/${h}`;
}

async function readNumber(file: string): Promise<number> {
  return Number((await fs.readFile(file, "utf8").catch(() => "NaN")).trim());
}

/** Host view of one VM: charged memory, RSS and private memory of its host processes, host tasks. */
async function vmHostFootprint(d: TestDaemon, h: string): Promise<{ chargedMiB: number; rssMiB: number; anonMiB: number; tasks: number }> {
  const cg = await vmCgroup(d, h);
  const m = await memoryOf(await cgroupPids(cg, "memory"));
  const charged = await readNumber(`/sys/fs/cgroup/memory${cg}/memory.usage_in_bytes`);
  const tasks = await readNumber(`/sys/fs/cgroup/pids${cg}/pids.current`);
  return { chargedMiB: mib(charged), rssMiB: mib(m.rssBytes), anonMiB: mib(m.anonBytes), tasks };
}

/** Rows of one metric for both runtimes: `<id>.oci` and `<id>.gvisor`, gVisor compared with runc. */
function pair(id: string, label: string, unit: string, samples: Record<Runtime, number[]>, extra: { higherIsBetter?: boolean; group?: string } = {}): Row[] {
  return BENCH_RUNTIMES.map((rt) => row(`${id}.${rt}`, `${LABEL[rt]}: ${label}`, unit, rt === "oci" ? "baseline" : "paddock", samples[rt], { ...extra, ...(rt === "gvisor" ? { vs: `${id}.oci` } : {}) }));
}

const empty = (): Record<Runtime, number[]> => ({ oci: [], gvisor: [] });

/** Figure 9: figures 1, 2, 4, 5 and 7 (Paddock's side) on runc and gVisor. */
export async function figureRuntimes(l: RuntimeLabs, opts: BenchOptions): Promise<FigureResult> {
  const create = empty(), exec = empty(), stream = empty(), ttfb = empty(), cpIn = empty(), cpOut = empty();
  const charged = empty(), rss = empty(), anon = empty(), tasks = empty();
  const q = "cmd=%2Fbin%2Ftrue&buffered=true";
  // 1. create → agent ready, then delete (interleaved); the fresh VM's footprint (7) after 2 s.
  for (let i = 0; i < opts.n; i++) {
    for (const { runtime, d } of l.labs) {
      const t0 = nowMs();
      const h = await createVm(d);
      create[runtime].push(nowMs() - t0);
      if (i < 3) {
        await new Promise((r) => setTimeout(r, 2000));
        const f = await vmHostFootprint(d, h);
        charged[runtime].push(f.chargedMiB);
        rss[runtime].push(f.rssMiB);
        anon[runtime].push(f.anonMiB);
        tasks[runtime].push(f.tasks);
      }
      await deleteVm(d, h);
    }
  }
  // 2. buffered exec /bin/true on the probe VMs, after 3 warm-up execs each.
  for (const { d, probe } of l.labs) for (let i = 0; i < 3; i++) await d.post(`/vm/${probe}/exec?${q}`);
  for (let i = 0; i < opts.n * 3; i++) {
    for (const { runtime, d, probe } of l.labs) {
      const t0 = nowMs();
      const r = await d.post(`/vm/${probe}/exec?${q}`);
      if (r.status !== 200 || !/"exit_code":0/.test(r.text)) throw new Error(`${runtime} exec failed (${r.status}): ${r.text.slice(0, 300)}`);
      exec[runtime].push(nowMs() - t0);
    }
  }
  // 4. streamed exec of --mb MiB on stdout; 5. cp of --mb MiB in and out (to /root: on the VM disk under both runtimes; gVisor's /tmp is sentry memory).
  const bytes = opts.mb * 2 ** 20;
  const argv = ["/bin/sh", "-c", `head -c ${bytes} /dev/zero | tr '\\0' a`];
  const streamPath = (h: string): string => `/vm/${h}/exec?${new URLSearchParams([["cmd", argv[0] as string], ...argv.slice(1).map((a) => ["args", a])])}`;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "pdk-rtcp-"));
  const src = path.join(dir, "src.bin");
  try {
    await writeRandomFile(src, bytes);
    const cpPath = (vm: string): string => `/vm/${vm}/cp?path=${encodeURIComponent("/root/bench-cp.bin")}&mode=binary`;
    for (let i = 0; i < 3; i++) {
      for (const { runtime, d, probe } of l.labs) {
        const target = { name: runtime, socketPath: d.socketPath };
        const s = await streamExec(target, streamPath(probe));
        if (s.status !== 200 || s.payloadBytes !== bytes || s.exitCode !== 0) throw new Error(`${runtime} stream: status ${s.status}, ${s.payloadBytes}/${bytes} bytes, exit ${s.exitCode}`);
        stream[runtime].push(bytes / 1e6 / (s.totalMs / 1000));
        ttfb[runtime].push(s.ttfbMs);
        const up = await uploadFile(target, cpPath(probe), src);
        if (up.status >= 300) throw new Error(`${runtime} cp in failed (${up.status}): ${up.text.slice(0, 300)}`);
        cpIn[runtime].push(bytes / 1e6 / (up.ms / 1000));
        const down = await downloadCount(target, cpPath(probe));
        if (down.status !== 200 || down.bytes !== bytes) throw new Error(`${runtime} cp out: status ${down.status}, ${down.bytes}/${bytes} bytes`);
        cpOut[runtime].push(bytes / 1e6 / (down.ms / 1000));
      }
    }
    for (const { d, probe } of l.labs) await sh(d, probe, "rm -f /root/bench-cp.bin");
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  const hb = { higherIsBetter: true };
  const rows = [
    ...pair("f9.create", "create → agent ready (wait=agent)", "ms", create, { group: "create" }),
    ...pair("f9.exec", "buffered exec /bin/true (socket)", "ms", exec, { group: "exec" }),
    ...pair("f9.stream", `streamed exec, ${opts.mb} MiB stdout`, "MB/s", stream, { ...hb, group: "throughput" }),
    ...pair("f9.stream-ttfb", "streamed exec, first stdout byte", "ms", ttfb, { group: "exec" }),
    ...pair("f9.cp-in", `cp in, ${opts.mb} MiB binary`, "MB/s", cpIn, { ...hb, group: "throughput" }),
    ...pair("f9.cp-out", `cp out, ${opts.mb} MiB binary`, "MB/s", cpOut, { ...hb, group: "throughput" }),
    ...pair("f9.vm-charged", "idle VM, cgroup memory charged", "MiB", charged, { group: "memory" }),
    ...pair("f9.vm-rss", "idle VM, RSS of its host processes", "MiB", rss, { group: "memory" }),
    ...pair("f9.vm-anon", "idle VM, private (RssAnon) of its host processes", "MiB", anon, { group: "memory" }),
    ...pair("f9.vm-tasks", "idle VM, host tasks (pids.current)", "count", tasks, { group: "tasks" }),
  ];
  const p50 = (id: string): number => rows.find((r) => r.id === id)?.summary.p50 ?? NaN;
  return {
    num: 9,
    title: "runc vs gVisor: create, exec, streaming, cp, idle VM footprint",
    rows,
    targets: [],
    notes: [
      `Same daemon build, same host group (1 vCPU, 1 GiB, image ${DEV_IMAGE}), one daemon per runtime, interleaved: create n=${opts.n} per runtime (footprint of the first 3 fresh VMs, 2 s after agent ready), exec n=${opts.n * 3}, stream/cp 3 each.`,
      `gVisor/runc p50: create ${fmt(p50("f9.create.gvisor") / p50("f9.create.oci"))}×, exec ${fmt(p50("f9.exec.gvisor") / p50("f9.exec.oci"))}×, stream ${fmt(p50("f9.stream.gvisor") / p50("f9.stream.oci"))}×, cp in ${fmt(p50("f9.cp-in.gvisor") / p50("f9.cp-in.oci"))}×, cp out ${fmt(p50("f9.cp-out.gvisor") / p50("f9.cp-out.oci"))}×.`,
      "gVisor runs on the ptrace platform here (no /dev/kvm): every guest syscall is a ptrace stop of the sentry, the slowest of its platforms. Under gVisor a VM's host processes are the sentry, the gofer and the ptrace stubs (the guest's processes live inside the sentry); under runc they are the guest's own processes.",
    ],
  };
}

/** A C program: `getppid` × N and open/fstat/close × M, each timed with CLOCK_MONOTONIC; prints ns per call. */
const SYSCALL_C = `#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(void) {
  const int n = 200000, m = 20000;
  double t0 = now();
  for (int i = 0; i < n; i++) syscall(SYS_getppid);
  double t1 = now();
  struct stat st;
  for (int i = 0; i < m; i++) { int fd = open("/etc/hostname", O_RDONLY); fstat(fd, &st); close(fd); }
  double t2 = now();
  printf("%.1f %.1f\\n", (t1 - t0) / n, (t2 - t1) / m);
  return 0;
}
`;

/** A Python loop: write, read back and remove 2000 files of 4 KiB, fsync-free. */
const PY_IO = "import os\nd='/root/pyio'\nos.makedirs(d,exist_ok=True)\nb=b'x'*4096\nfor i in range(2000):\n  p=f'{d}/{i}'\n  with open(p,'wb') as f: f.write(b)\n  with open(p,'rb') as f: f.read()\n  os.remove(p)\nos.rmdir(d)\n";

/** `script` timed inside the guest, ms (`date +%s%N` around it). */
async function guestMs(d: TestDaemon, h: string, script: string): Promise<number> {
  const out = await sh(d, h, `s=$(date +%s%N); { ${script}; } >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`);
  return Number(out.trim()) / 1000;
}

/** Figure 10: syscall-heavy guest work on runc and gVisor. */
export async function figureSyscalls(l: RuntimeLabs): Promise<FigureResult> {
  const compile = empty(), getppid = empty(), openClose = empty(), py = empty(), shLoop = empty(), dd = empty(), find = empty();
  for (const { d, probe } of l.labs) {
    await sh(d, probe, `cat > /root/sc.c <<'EOF'\n${SYSCALL_C}EOF\ncat > /root/pyio.py <<'EOF'\n${PY_IO}EOF\ngcc --version >/dev/null && python3 --version >/dev/null`);
  }
  const repeats = 3;
  for (let i = 0; i < repeats; i++) {
    for (const { runtime, d, probe } of l.labs) {
      compile[runtime].push(await guestMs(d, probe, "gcc -O2 -o /root/sc /root/sc.c"));
      const [a, b] = (await sh(d, probe, "/root/sc")).trim().split(/\s+/).map(Number) as [number, number];
      getppid[runtime].push(a);
      openClose[runtime].push(b);
      py[runtime].push(await guestMs(d, probe, "python3 /root/pyio.py"));
      shLoop[runtime].push(await guestMs(d, probe, "mkdir -p /root/shio && i=0; while [ $i -lt 300 ]; do echo $i > /root/shio/f$i; cat /root/shio/f$i; i=$((i+1)); done; rm -r /root/shio"));
      const ddMs = await guestMs(d, probe, "dd if=/dev/zero of=/root/dd.bin bs=4k count=12800 conv=fsync 2>/dev/null; rm -f /root/dd.bin");
      dd[runtime].push(50 * 1.048576 / (ddMs / 1000));
      find[runtime].push(await guestMs(d, probe, "find /usr -xdev | wc -l"));
    }
  }
  const rows = [
    ...pair("f10.gcc", "gcc -O2 of a 20-line C file", "ms", compile, { group: "work" }),
    ...pair("f10.python-io", "python3: write+read+remove 2000 × 4 KiB files", "ms", py, { group: "work" }),
    ...pair("f10.shell-io", "sh: 300 × (echo > file; cat file) (fork/exec per cat)", "ms", shLoop, { group: "work" }),
    ...pair("f10.find", "find /usr -xdev | wc -l", "ms", find, { group: "work" }),
    ...pair("f10.getppid", "getppid(2), per call", "ns", getppid, { group: "syscall" }),
    ...pair("f10.open", "open+fstat+close of /etc/hostname, per round", "ns", openClose, { group: "syscall" }),
    ...pair("f10.dd", "dd 50 MiB in 4 KiB writes + fsync to the VM disk", "MB/s", dd, { higherIsBetter: true, group: "throughput" }),
  ];
  const p50 = (id: string): number => rows.find((r) => r.id === id)?.summary.p50 ?? NaN;
  return {
    num: 10,
    title: "Syscall-heavy guest work: runc vs gVisor",
    rows,
    targets: [],
    notes: [
      `Timed inside the guest (date +%s%N around each command; the C program times its own loops with CLOCK_MONOTONIC), ${repeats} rounds interleaved between the runtimes, image ${DEV_IMAGE} (gcc 12, python3.11).`,
      `gVisor/runc p50: gcc ${fmt(p50("f10.gcc.gvisor") / p50("f10.gcc.oci"))}×, getppid ${fmt(p50("f10.getppid.gvisor") / p50("f10.getppid.oci"))}×, open/fstat/close ${fmt(p50("f10.open.gvisor") / p50("f10.open.oci"))}×, python file loop ${fmt(p50("f10.python-io.gvisor") / p50("f10.python-io.oci"))}×, shell fork/exec loop ${fmt(p50("f10.shell-io.gvisor") / p50("f10.shell-io.oci"))}×, find ${fmt(p50("f10.find.gvisor") / p50("f10.find.oci"))}×.`,
    ],
  };
}
